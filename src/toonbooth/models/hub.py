"""Fetch catalog models from the Hugging Face Hub into an AUTOMATIC1111-layout models folder.

Uses `huggingface_hub.hf_hub_download` (single files) and `snapshot_download(allow_patterns=...)`
(config folders, diffusers folders) with `local_dir`, so files land directly in
`<models_dir>/<A1111 folder>/` (configs in `<config_dir>/<arch>/`). Every file with a known hash is
verified after download (sha256, sha256 prefix, A1111 legacy hash, size) and deleted on mismatch.

Before any transfer one HEAD request with a short timeout checks that the hub answers, so an
offline machine gets an `OfflineError` naming the files and where to put them by hand within
seconds instead of after the library's retries. `HF_HUB_OFFLINE=1` (or `offline=True`, e.g. from
`Settings.offline`) fails immediately without any network access.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import ModelError, OfflineError
from .catalog import CatalogEntry, CatalogFile, get_entry
from .probe import HashCache, a1111_legacy_hash, sha256_file

_TRUE = {"1", "true", "yes", "on"}


def env_offline() -> bool:
    """True when `HF_HUB_OFFLINE` is set to a true value in the environment."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def verify_sha256(path: str | Path, expected: str, hash_cache: HashCache | None = None) -> str:
    """Check that the sha256 of `path` equals `expected` (64 hex) or starts with it (a prefix of at least
    8 hex digits). Returns the actual sha256; raises `ModelError` naming both on mismatch."""
    want = expected.strip().lower()
    if len(want) < 8 or any(c not in "0123456789abcdef" for c in want):
        raise ModelError(f"expected hash {expected!r} is not a sha256 or a sha256 prefix of >= 8 hex digits")
    actual = hash_cache.get(path, "sha256") if hash_cache is not None else sha256_file(path)
    if not actual.startswith(want):
        raise ModelError(
            f"{Path(path).name}: sha256 is {actual}, expected {want}{'' if len(want) == 64 else '…'}"
        )
    return actual


def verify_catalog_file(path: str | Path, expected: CatalogFile, hash_cache: HashCache | None = None) -> None:
    """Check a file against everything its catalog record knows (size, sha256 or prefix, legacy hash)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path} is missing")
    if expected.size is not None and path.stat().st_size != expected.size:
        raise ModelError(f"{path.name}: size is {path.stat().st_size} bytes, expected {expected.size}")
    if expected.sha256:
        verify_sha256(path, expected.sha256, hash_cache)
    elif expected.sha256_prefix:
        verify_sha256(path, expected.sha256_prefix, hash_cache)
    if expected.legacy_hash:
        legacy = hash_cache.get(path, "legacy") if hash_cache is not None else a1111_legacy_hash(path)
        if legacy != expected.legacy_hash:
            raise ModelError(f"{path.name}: A1111 legacy hash is {legacy}, expected {expected.legacy_hash}")


def _file_url(entry: CatalogEntry, f: CatalogFile, endpoint: str) -> str:
    rel = f"{f.subfolder}/{f.filename}" if f.subfolder else f.filename
    return f"{endpoint.rstrip('/')}/{entry.repo_id}/resolve/{entry.revision or 'main'}/{rel}"


_ADDABLE_KINDS = ("checkpoint", "controlnet", "lora", "embedding", "vae")  # what `toonbooth models add` takes


def _literal_patterns(entry: CatalogEntry) -> bool:
    """True when the entry's snapshot patterns are exactly its listed files (no wildcards)."""
    if not entry.allow_patterns or not entry.files:
        return False
    rel = {f"{f.subfolder}/{f.filename}" if f.subfolder else f.filename for f in entry.files}
    return not any(c in p for p in entry.allow_patterns for c in "*?[") and set(entry.allow_patterns) == rel


def manual_instructions(entry: CatalogEntry, dest: Path, endpoint: str = "https://huggingface.co") -> str:
    """Where to get an entry's files by hand and where to put them (one URL and target per file when the
    files are known)."""
    if entry.repo_id is None:
        files = ", ".join(f.filename for f in entry.files)
        return f"Get {files} from {entry.homepage or 'its publisher'} and run `toonbooth models add PATH`"
    if entry.allow_patterns and not _literal_patterns(entry):
        return (
            f"On a connected machine download the files matching {entry.allow_patterns} from "
            f"{endpoint.rstrip('/')}/{entry.repo_id}/tree/{entry.revision or 'main'} and copy them, keeping "
            f"their sub-folders, into {dest}/"
        )
    if len(entry.files) > 1:
        steps = "; ".join(
            f"{_file_url(entry, f, endpoint)} -> {dest / (f'{f.subfolder}/{f.filename}' if f.subfolder else f.filename)}"
            for f in entry.files
        )
        return f"On a connected machine download each file and put it there: {steps}"
    urls = " ".join(_file_url(entry, f, endpoint) for f in entry.files)
    tail = " (or run `toonbooth models add PATH`)" if entry.kind in _ADDABLE_KINDS else ""
    return f"On a connected machine download {urls} and put it in {dest}/{tail}"


def _expected_paths(entry: CatalogEntry, dest: Path) -> list[Path]:
    return [dest / f.subfolder / f.filename if f.subfolder else dest / f.filename for f in entry.files]


def _present(entry: CatalogEntry, dest: Path, hash_cache: HashCache | None) -> list[Path] | None:
    """The installed files if the entry is already complete and verified, else None."""
    if entry.allow_patterns:
        marker = dest / "model_index.json" if entry.kind == "config" else None
        needed = [marker] if marker is not None else _expected_paths(entry, dest)
        if not all(p.is_file() for p in needed):
            return None
        for f, p in zip(entry.files, _expected_paths(entry, dest), strict=True):
            try:
                verify_catalog_file(p, f, hash_cache)
            except ModelError:
                return None
        return _listing(dest)
    paths = _expected_paths(entry, dest)
    if not paths or not all(p.is_file() for p in paths):
        return None
    for f, p in zip(entry.files, paths, strict=True):
        try:
            verify_catalog_file(p, f, hash_cache)
        except ModelError:
            return None
    return paths


def _listing(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _check_reachable(entry: CatalogEntry, dest: Path, endpoint: str, timeout: float) -> None:
    """One HEAD request with a short timeout: OfflineError if the hub does not answer, ModelError if it
    answers that the repo or file does not exist / is gated."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import get_hf_file_metadata

    probe_file = entry.files[0] if entry.files else CatalogFile(filename="model_index.json")
    url = _file_url(entry, probe_file, endpoint)
    try:
        get_hf_file_metadata(url, timeout=timeout, endpoint=endpoint)
    except hf_errors.OfflineModeIsEnabled as exc:
        raise OfflineError(
            f"cannot download {entry.name}: huggingface_hub is in offline mode. {manual_instructions(entry, dest, endpoint)}"
        ) from exc
    except (hf_errors.RepositoryNotFoundError, hf_errors.GatedRepoError, hf_errors.EntryNotFoundError) as exc:
        raise ModelError(
            f"the hub refused {entry.repo_id}/{probe_file.filename} ({type(exc).__name__}): it may be gated "
            f"(log in with `hf auth login` after accepting its licence) or moved. {manual_instructions(entry, dest, endpoint)}"
        ) from exc
    except hf_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is not None and 400 <= status < 500:
            raise ModelError(f"the hub answered {status} for {url}: {exc}") from exc
        raise OfflineError(
            f"cannot download {entry.name}: the hub did not answer properly ({exc}). {manual_instructions(entry, dest, endpoint)}"
        ) from exc
    except Exception as exc:  # connection refused, DNS failure, timeout (httpx / OS errors)
        raise OfflineError(
            f"cannot download {entry.name}: the model hub at {endpoint} is not reachable "
            f"({type(exc).__name__}: {exc}). {manual_instructions(entry, dest, endpoint)}"
        ) from exc


def _only_this_endpoint() -> None:
    """huggingface_hub (>= 1.x) builds its user agent from an "agent harnesses" list it fetches from its
    *default* endpoint, even when a download goes to a mirror (HF_ENDPOINT / `endpoint=`): an air-gapped or
    mirrored install would still contact the public hub once per process. Give it the empty list up front so
    the only host contacted is the endpoint of the pull. (Private attribute: skipped if the library changes.)"""
    try:
        from huggingface_hub.utils import _detect_agent
    except ImportError:  # older huggingface_hub: no such fetch
        return
    if hasattr(_detect_agent, "_registry") and getattr(_detect_agent, "_registry", None) is None:
        _detect_agent._registry = getattr(_detect_agent, "_EMPTY_REGISTRY", {})


def pull(
    entry: CatalogEntry | str,
    models_dir: str | Path,
    progress: bool = True,
    offline: bool | None = None,
    config_dir: str | Path | None = None,
    *,
    force: bool = False,
    timeout: float = 5.0,
    endpoint: str | None = None,
    hash_cache: HashCache | None = None,
) -> list[Path]:
    """Download catalog `entry` into `models_dir` (configs into `config_dir`, default `<models_dir>/configs`).

    Returns the installed files. Already installed, verified files are returned without network
    access (unless `force`). Raises `ModelError` for entries not on the hub (with where to get
    them) and on hash mismatch (the bad file is deleted), `OfflineError` when offline or the hub is
    unreachable (within about `timeout` seconds)."""
    # 1. Check inputs
    if isinstance(entry, str):
        entry = get_entry(entry)
    models_dir = Path(models_dir).expanduser()
    dest = entry.install_dir(models_dir, Path(config_dir).expanduser() if config_dir is not None else None)
    if entry.repo_id is None:
        raise ModelError(
            f"{entry.name} ({', '.join(f.filename for f in entry.files)}) is not on the model hub. {entry.source_note} "
            f"Once you have the file, run `toonbooth models add PATH` (it goes to {dest}/)."
        )
    if not force:
        present = _present(entry, dest, hash_cache)
        if present is not None:
            return present
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    if offline is None:
        offline = env_offline()
    if offline:
        raise OfflineError(
            f"cannot download {entry.name} from {entry.repo_id}: offline mode is on (HF_HUB_OFFLINE=1 or the "
            f"`offline` setting). {manual_instructions(entry, dest, endpoint)}"
        )

    # 2. Reach the hub quickly (and only the endpoint asked for)
    _only_this_endpoint()
    _check_reachable(entry, dest, endpoint, timeout)

    # 3. Download
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if entry.allow_patterns:
            snapshot_download(
                entry.repo_id, revision=entry.revision, allow_patterns=list(entry.allow_patterns),
                local_dir=dest, etag_timeout=timeout, endpoint=endpoint,
            )  # fmt: skip
            paths = _expected_paths(entry, dest)
        else:
            paths = [
                Path(
                    hf_hub_download(
                        entry.repo_id,
                        f.filename,
                        subfolder=f.subfolder,
                        revision=entry.revision,
                        local_dir=dest,
                        etag_timeout=timeout,
                        endpoint=endpoint,
                    )  # fmt: skip
                )
                for f in entry.files
            ]
    except (ModelError, OfflineError):
        raise
    except Exception as exc:
        raise OfflineError(
            f"download of {entry.name} from {entry.repo_id} failed ({type(exc).__name__}: {exc}). "
            f"{manual_instructions(entry, dest, endpoint)}"
        ) from exc
    finally:
        if not progress and not was_disabled:
            enable_progress_bars()

    # 4. Verify
    for f, p in zip(entry.files, paths, strict=True):
        try:
            verify_catalog_file(p, f, hash_cache)
        except ModelError as exc:
            p.unlink(missing_ok=True)
            raise ModelError(f"downloaded {p.name} failed verification and was deleted: {exc}") from exc
    return _listing(dest) if entry.allow_patterns else paths
