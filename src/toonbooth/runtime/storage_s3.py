"""Blob storage in an S3 bucket (AWS S3 or any S3 API: MinIO, Ceph, R2, moto), through boto3.

Objects are `<s3_prefix><sha256>` — content-addressed like the local store, so no user-controlled
name reaches a key. Reads verify the sha256 of what came back. Endpoint, bucket, region and keys come
from `Settings` (`TOONBOOTH_S3_*`); without keys boto3's own credential chain is used (env, profile,
instance role). Follows the boto3 S3 client reference (put_object / get_object / head_object).
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..core.errors import InputError, ToonboothError
from ..core.settings import Settings
from .storage_base import Storage, parse_ref


class StorageError(ToonboothError):
    """The object store could not be reached or refused a request."""

    http_status = 503


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class S3Storage(Storage):
    def __init__(self, settings: Settings, *, client: Any | None = None):
        if not settings.s3_bucket:
            raise ToonboothError("storage=s3 needs a bucket: set TOONBOOTH_S3_BUCKET")
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self.client = client or self._make_client(settings)
        if settings.s3_create_bucket:
            self._ensure_bucket(settings.s3_region)

    @staticmethod
    def _make_client(settings: Settings) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            signature_version="s3v4",
            retries={"max_attempts": 3, "mode": "standard"},
            # custom endpoints (MinIO, moto, ...) rarely have per-bucket DNS names
            s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
        )
        secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
        return boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret,
            config=config,
        )

    def _ensure_bucket(self, region: str | None) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError(f"S3 bucket {self.bucket!r} cannot be used: {exc}") from exc
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        self.client.create_bucket(**kwargs)

    def _key(self, digest: str) -> str:
        return f"{self.prefix}{digest}"

    def put(self, data: bytes, content_type: str | None = None) -> str:
        digest = hashlib.sha256(data).hexdigest()
        wanted = content_type or "application/octet-stream"
        head = self._head_object(digest)
        if head is None or (content_type and head.get("ContentType") != wanted):
            self._call(
                "put_object",
                Bucket=self.bucket,
                Key=self._key(digest),
                Body=bytes(data),
                ContentType=wanted,
            )
        return f"blob:{digest}"

    def content_type(self, ref: str) -> str | None:
        head = self._head_object(parse_ref(ref))
        if head is None:
            return None
        value = head.get("ContentType")
        return None if value in (None, "application/octet-stream") else value

    def presigned_url(self, ref: str, *, filename: str, content_type: str, expires_s: int = 3600) -> str | None:
        """A GET URL signed for `expires_s` that makes S3 answer with this content type and file name."""
        params = {
            "Bucket": self.bucket, "Key": self._key(parse_ref(ref)), "ResponseContentType": content_type,
            "ResponseContentDisposition": f'attachment; filename="{filename}"',
        }  # fmt: skip
        return self._call("generate_presigned_url", ClientMethod="get_object", Params=params, ExpiresIn=expires_s)

    def get(self, ref: str, field: str = "ref") -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        digest = parse_ref(ref, field)
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(digest))
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise InputError(field, f"no stored blob {ref}", ref) from None
            raise StorageError(f"S3 get of {ref} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 get of {ref} failed: {exc}") from exc
        data = obj["Body"].read()
        if hashlib.sha256(data).hexdigest() != digest:
            raise StorageError(f"S3 object for {ref} does not match its sha256 (corrupted or replaced)")
        return data

    def _head(self, digest: str) -> bool:
        return self._head_object(digest) is not None

    def _head_object(self, digest: str) -> dict[str, Any] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(digest))
        except ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(f"S3 head of {digest} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 at {self.client.meta.endpoint_url} cannot be reached: {exc}") from exc

    def exists(self, ref: str) -> bool:
        try:
            digest = parse_ref(ref)
        except InputError:
            return False
        return self._head(digest)

    def delete(self, ref: str) -> bool:
        digest = parse_ref(ref)
        if not self._head(digest):
            return False
        self._call("delete_object", Bucket=self.bucket, Key=self._key(digest))
        return True

    def _call(self, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 {method} on bucket {self.bucket!r} failed: {exc}") from exc
