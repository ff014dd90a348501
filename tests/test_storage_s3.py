"""S3 storage against a real S3 API server on loopback (moto's server mode), through boto3."""

from __future__ import annotations

import hashlib
import io
import socket

import pytest
from PIL import Image

from toonbooth.core.errors import InputError
from toonbooth.core.settings import Settings
from toonbooth.core.specs import AvatarSpec
from toonbooth.runtime.service import Service
from toonbooth.runtime.storage_s3 import S3Storage, StorageError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def s3_settings(tmp_path, endpoint: str, bucket: str, **kw) -> Settings:
    return Settings(
        home=tmp_path / "home",
        data_dir=tmp_path / "data",
        device="cpu",
        storage="s3",
        s3_endpoint_url=endpoint,
        s3_bucket=bucket,
        s3_region="eu-west-1",
        s3_access_key_id="test-key",
        s3_secret_access_key="test-secret",
        s3_create_bucket=True,
        **kw,
    )


def test_put_get_exists_delete(tmp_path, s3_endpoint):
    store = S3Storage(s3_settings(tmp_path, s3_endpoint, "tb-basic"))
    data = b"\x89PNG some bytes"
    ref = store.put(data)
    assert ref == "blob:" + hashlib.sha256(data).hexdigest()
    assert store.put(data) == ref  # idempotent
    assert store.exists(ref) and store.get(ref) == data and store.local_path(ref) is None
    keys = [o["Key"] for o in store.client.list_objects_v2(Bucket="tb-basic")["Contents"]]
    assert keys == ["toonbooth/blobs/" + ref[5:]]
    assert store.delete(ref) and not store.exists(ref) and not store.delete(ref)
    with pytest.raises(InputError, match="`image`: no stored blob"):
        store.get(ref, field="image")
    with pytest.raises(InputError, match="`ref`"):
        store.get("blob:../../etc/passwd")
    assert not store.exists("not-a-ref")


def test_bucket_is_not_created_unless_asked_and_corruption_is_caught(tmp_path, s3_endpoint):
    settings = s3_settings(tmp_path, s3_endpoint, "tb-missing").model_copy(update={"s3_create_bucket": False})
    store = S3Storage(settings)
    with pytest.raises(StorageError):
        store.put(b"x")
    good = S3Storage(s3_settings(tmp_path, s3_endpoint, "tb-corrupt"))
    ref = good.put(b"original")
    good.client.put_object(Bucket="tb-corrupt", Key="toonbooth/blobs/" + ref[5:], Body=b"replaced")
    with pytest.raises(StorageError, match="does not match its sha256"):
        good.get(ref)


def test_unreachable_endpoint_is_a_storage_error(tmp_path):
    settings = s3_settings(tmp_path, f"http://127.0.0.1:{free_port()}", "tb-none").model_copy(
        update={"s3_create_bucket": False}
    )
    store = S3Storage(settings)
    with pytest.raises(StorageError, match="cannot be reached|failed"):
        store.put(b"x")


def test_service_jobs_keep_uploads_and_results_in_the_bucket(tmp_path, s3_endpoint, sample_photo_path):
    settings = s3_settings(tmp_path, s3_endpoint, "tb-service")
    photo = Image.open(sample_photo_path).convert("RGB").resize((64, 64))
    buf = io.BytesIO()
    photo.save(buf, "PNG")
    with Service(settings) as svc:
        assert isinstance(svc.storage, S3Storage)
        ref = svc.put_upload(buf.getvalue(), "alice")
        rec = svc.wait(svc.submit(AvatarSpec(image=ref, backend="classic"), "alice").id, "alice", timeout=60)
        assert rec.state == "completed", rec.error
        result = svc.read_output(rec.id, "alice", "avatar")
        assert Image.open(io.BytesIO(result)).size == (512, 512)  # classic avatar: at least 512 px
        keys = {o["Key"] for o in svc.storage.client.list_objects_v2(Bucket="tb-service")["Contents"]}
        assert keys == {"toonbooth/blobs/" + ref[5:], "toonbooth/blobs/" + rec.output.outputs[0].ref[5:]}
        assert not (settings.resolved_data_dir / "blobs").exists()  # nothing on local disk
