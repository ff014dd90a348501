"""registry.py, catalog.py and hub.py: A1111-folder scanning, name resolution, owners, add(), configs,
the catalog, and hub pulls (offline behaviour and verification only: nothing is downloaded)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from netspy import record_network
from test_probe import (
    controlnet_diffusers_sdxl,
    controlnet_original,
    lora_kohya_sd15,
    lora_kohya_sdxl,
    lora_loha_sd15,
    sd15_checkpoint,
    sdxl_checkpoint,
    write,
)
from toonbooth.core.errors import (
    InputError,
    ModelError,
    ModelNotFoundError,
    OfflineError,
    UnsafeModelFormatError,
)
from toonbooth.models import catalog, hub
from toonbooth.models.probe import a1111_legacy_hash, probe_file, sha256_file
from toonbooth.models.registry import ModelRegistry


def _diffusers_pipeline(
    folder: Path, cross_attention_dim: int, addition: str | None, weights: bool = True
) -> Path:
    (folder / "unet").mkdir(parents=True)
    cls = "StableDiffusionXLPipeline" if addition else "StableDiffusionPipeline"
    (folder / "model_index.json").write_text(
        json.dumps({"_class_name": cls, "unet": ["diffusers", "UNet2DConditionModel"]})
    )
    cfg = {
        "_class_name": "UNet2DConditionModel",
        "cross_attention_dim": cross_attention_dim,
        "in_channels": 4,
    }
    if addition:
        cfg["addition_embed_type"] = addition
    (folder / "unet" / "config.json").write_text(json.dumps(cfg))
    if weights:
        write(folder / "unet" / "diffusion_pytorch_model.safetensors", {"conv_in.weight": (4, 4, 3, 3)})
    return folder


@pytest.fixture()
def models(tmp_path: Path) -> Path:
    """An A1111 models folder with one file of each kind, a misplaced LoRA, a pickle, a link loop and user folders."""
    m = tmp_path / "models"
    write(m / "Stable-diffusion" / "samaritan3dCartoon_v40SDXL.safetensors", sdxl_checkpoint())
    write(m / "Stable-diffusion" / "sub" / "my-sd15.safetensors", sd15_checkpoint())
    write(m / "Stable-diffusion" / "model.safetensors", lora_kohya_sdxl())  # a LoRA under a checkpoint name
    (m / "Stable-diffusion" / "old.ckpt").write_bytes(b"\x80\x02}q\x00.")
    (m / "Stable-diffusion" / "broken.safetensors").write_bytes(b"\x05\x00")
    (m / "Stable-diffusion" / "preview.png").write_bytes(b"\x89PNG")
    write(m / "Lora" / "memoji-07.safetensors", lora_kohya_sdxl(), metadata={"ss_output_name": "memoji"})
    write(m / "Lora" / "style15.safetensors", lora_kohya_sd15())
    write(m / "LyCORIS" / "loha.safetensors", lora_loha_sd15())
    write(m / "ControlNet" / "diffusers_xl_canny_full.safetensors", controlnet_diffusers_sdxl())
    write(m / "ControlNet" / "control_sd15_canny.safetensors", controlnet_original())
    write(m / "embeddings" / "bad-hands.safetensors", {"emb_params": (2, 768)})
    write(
        m / "VAE" / "vae.safetensors",
        {"encoder.conv_in.weight": (8, 3, 3, 3), "decoder.conv_in.weight": (8, 4, 3, 3)},
    )
    write(m / "loose-lora.safetensors", lora_kohya_sd15())
    _diffusers_pipeline(m / "diffusers" / "my-sdxl", 2048, "text_time")
    _diffusers_pipeline(m / "diffusers" / "configs-only", 768, None, weights=False)
    cn = m / "diffusers" / "control_v11p_sd15_canny"
    cn.mkdir(parents=True)
    (cn / "config.json").write_text(
        json.dumps({"_class_name": "ControlNetModel", "cross_attention_dim": 768})
    )
    write(cn / "diffusion_pytorch_model.safetensors", {"conv_in.weight": (4, 4, 3, 3)})
    os.symlink(m / "Lora", m / "Lora" / "loop")  # a link loop must not hang the scan
    write(m / "users" / "alice" / "Lora" / "alice-style.safetensors", lora_kohya_sdxl())
    write(m / "users" / "bob" / "Lora" / "bob-style.safetensors", lora_kohya_sdxl())
    return m


@pytest.fixture()
def reg(models: Path, tmp_path: Path) -> ModelRegistry:
    return ModelRegistry([models], config_dir=models / "configs", hash_cache=tmp_path / "cache")


# ----------------------------------------------------------------------------------------------
# Scanning
# ----------------------------------------------------------------------------------------------


def test_scan_identifies_every_file_by_keys(reg: ModelRegistry) -> None:
    entries = {(e.owner, e.name): e for e in reg.scan()}
    got = {
        name: (e.kind, e.arch, e.layout, e.source) for (owner, name), e in entries.items() if owner is None
    }
    assert got["samaritan3dCartoon_v40SDXL"] == ("checkpoint", "sdxl", "original", "folder")
    assert got["my-sd15"] == ("checkpoint", "sd15", "original", "folder")
    assert got["model"] == ("lora", "sdxl", "kohya", "folder")  # keys win over the folder
    assert got["memoji-07"] == ("lora", "sdxl", "kohya", "folder")
    assert got["loha"] == ("lora", "sd15", "lycoris", "folder")
    assert got["diffusers_xl_canny_full"] == ("controlnet", "sdxl", "diffusers", "folder")
    assert got["control_sd15_canny"] == ("controlnet", "sd15", "original", "folder")
    assert got["bad-hands"] == ("embedding", "sd15", "a1111-sd15", "folder")
    assert got["vae"] == ("vae", "unknown", "original", "folder")
    assert got["loose-lora"] == ("lora", "sd15", "kohya", "folder")
    assert got["my-sdxl"] == ("checkpoint", "sdxl", "diffusers", "diffusers-folder")
    assert got["control_v11p_sd15_canny"] == ("controlnet", "sd15", "diffusers", "diffusers-folder")
    assert entries[(None, "model")].details["misplaced"] == "found in Stable-diffusion/ but its keys say lora"
    assert entries[(None, "my-sd15")].relpath == "sub/my-sd15.safetensors"
    assert entries[(None, "memoji-07")].aliases == ["memoji"]
    assert entries[(None, "samaritan3dCartoon_v40SDXL")].catalog_name == "samaritan-3d-cartoon-sdxl"
    assert entries[(None, "control_v11p_sd15_canny")].catalog_name == "control_v11p_sd15_canny"
    # refused files carry the reason; previews are ignored; the loop is entered once
    assert "never unpickles" in entries[(None, "old")].refused
    assert "broken.safetensors" in entries[(None, "broken")].refused
    assert "no UNet weights" in entries[(None, "configs-only")].refused
    assert "preview" not in got
    assert sum(1 for (o, n) in entries if n == "memoji-07") == 1
    assert entries[("alice", "alice-style")].owner == "alice"


def test_list_filters_kind_owner_and_refused(reg: ModelRegistry) -> None:
    loras = [e.name for e in reg.list("lora")]
    assert loras == sorted(loras, key=str.lower)
    assert set(loras) == {"loha", "loose-lora", "memoji-07", "model", "style15"}
    assert {e.name for e in reg.list("lora", owner="alice")} == set(loras) | {"alice-style"}
    assert "old" not in {e.name for e in reg.list()}
    assert {"old", "broken", "configs-only"} <= {e.name for e in reg.list(include_refused=True)}
    missing = {e.name: e for e in reg.list(include_catalog=True) if e.source == "catalog"}
    assert "memoji" not in missing  # installed as memoji-07.safetensors
    assert (
        missing["stable-diffusion-v1-5"].details["install"] == "toonbooth models pull stable-diffusion-v1-5"
    )


def test_second_user_never_sees_first_users_models(reg: ModelRegistry) -> None:
    assert reg.get("alice-style", owner="alice").owner == "alice"
    with pytest.raises(ModelNotFoundError) as exc:
        reg.get("alice-style", kind="lora", owner="bob")
    listing = str(exc.value).split("Known lora names:")[1]
    assert "alice-style" not in listing and "bob-style" in listing
    with pytest.raises(ModelNotFoundError):
        reg.get("bob-style")  # anonymous: shared only
    assert all(e.owner in (None, "bob") for e in reg.list(owner="bob", include_refused=True))
    with pytest.raises(InputError, match="owner"):
        reg.list(owner="../alice")


# ----------------------------------------------------------------------------------------------
# Name resolution
# ----------------------------------------------------------------------------------------------


def test_get_by_stem_filename_relpath_and_titles(reg: ModelRegistry, models: Path) -> None:
    sam = models / "Stable-diffusion" / "samaritan3dCartoon_v40SDXL.safetensors"
    assert reg.get("samaritan3dCartoon_v40SDXL").path == sam
    assert reg.get("samaritan3dCartoon_v40SDXL.safetensors", kind="checkpoint").path == sam
    assert reg.get("SAMARITAN3DCARTOON_V40SDXL").path == sam  # case-insensitive fallback
    # A1111 titles: the hash part is ignored when the name matches (the seed's exact strings)
    assert reg.get("samaritan3dCartoon_v40SDXL.safetensors [1b8fca3fee]", kind="checkpoint").path == sam
    cn = reg.get("diffusers_xl_canny_full [2b69fca4]", kind="controlnet")
    assert cn.path == models / "ControlNet" / "diffusers_xl_canny_full.safetensors"
    assert reg.get("control_sd15_canny(deadbeef)").kind == "controlnet"
    assert reg.get("sub/my-sd15").arch == "sd15"
    assert reg.get("sub/my-sd15.safetensors").arch == "sd15"


def test_get_by_catalog_name_alias_and_lora_alias(reg: ModelRegistry, models: Path) -> None:
    assert reg.get("samaritan-3d-cartoon-sdxl").name == "samaritan3dCartoon_v40SDXL"
    assert reg.get("Samaritan").name == "samaritan3dCartoon_v40SDXL"  # catalog alias
    memoji = reg.get("memoji", kind="lora")  # the seed's <lora:memoji:1>: ss_output_name alias
    assert memoji.path == models / "Lora" / "memoji-07.safetensors"
    assert reg.get("memoji-07").path == memoji.path
    assert reg.get("control_v11p_sd15_canny").source == "diffusers-folder"
    with pytest.raises(ModelNotFoundError, match="toonbooth models pull stable-diffusion-v1-5"):
        reg.get("sd15", kind="checkpoint")


def test_get_by_hash(reg: ModelRegistry) -> None:
    entry = reg.get("my-sd15")
    full = reg.sha256(entry)
    assert entry.title == f"sub/my-sd15.safetensors [{full[:10]}]"
    assert reg.get(full[:10]).name == "my-sd15"
    assert reg.get(f"renamed-elsewhere [{full[:10]}]").name == "my-sd15"
    assert reg.short_hash(entry) == full[:10]


def test_get_paths_and_hub_ids(reg: ModelRegistry, models: Path) -> None:
    folder = reg.get(str(models / "diffusers" / "my-sdxl"))
    assert (folder.source, folder.kind, folder.arch) == ("diffusers-folder", "checkpoint", "sdxl")
    with pytest.raises(ModelNotFoundError):
        reg.get(str(models / "diffusers" / "my-sdxl"), allow_paths=False)
    with pytest.raises(ModelError, match="not a diffusers model"):
        reg.get(str(models / "Lora"))
    hub_entry = reg.get("stabilityai/stable-diffusion-xl-base-1.0")
    assert (hub_entry.source, hub_entry.repo_id, hub_entry.path) == (
        "hub",
        "stabilityai/stable-diffusion-xl-base-1.0",
        None,
    )
    assert hub_entry.location == "stabilityai/stable-diffusion-xl-base-1.0"
    cn_hub = reg.get("lllyasviel/control_v11p_sd15_canny")
    assert (cn_hub.kind, cn_hub.arch, cn_hub.catalog_name) == (
        "controlnet",
        "sd15",
        "control_v11p_sd15_canny",
    )


def test_unknown_name_lists_known_names_of_that_kind(reg: ModelRegistry) -> None:
    with pytest.raises(ModelNotFoundError) as exc:
        reg.get("nonexistent-model", kind="controlnet")
    msg = str(exc.value)
    assert "nonexistent-model" in msg
    assert "control_sd15_canny" in msg and "diffusers_xl_canny_full" in msg
    assert "memoji-07" not in msg  # only that kind's names
    with pytest.raises(InputError, match="model"):
        reg.get("   ")


def test_refused_and_ambiguous(reg: ModelRegistry) -> None:
    with pytest.raises(UnsafeModelFormatError, match="never unpickles"):
        reg.get("old")
    with pytest.raises(ModelError, match="broken.safetensors"):
        reg.get("broken")
    with pytest.raises(ModelError, match="config-only"):
        reg.get("configs-only")


def test_multiple_model_dirs_and_owned_entries_first(models: Path, tmp_path: Path) -> None:
    extra = tmp_path / "sd-webui-controlnet-models"
    write(
        extra / "control_v11p_sd15_openpose.safetensors", controlnet_original()
    )  # flat folder, kind from keys
    write(models / "users" / "alice" / "Lora" / "memoji-07.safetensors", lora_kohya_sd15())
    reg = ModelRegistry([models, extra], config_dir=models / "configs", hash_cache=None)
    assert reg.get("control_v11p_sd15_openpose").kind == "controlnet"
    assert reg.get("memoji-07", owner="alice").owner == "alice"
    assert reg.get("memoji-07").owner is None


# ----------------------------------------------------------------------------------------------
# add() and config folders
# ----------------------------------------------------------------------------------------------


def test_add_copies_into_the_right_folder(reg: ModelRegistry, models: Path, tmp_path: Path) -> None:
    src = write(tmp_path / "downloads" / "new-style.safetensors", lora_kohya_sd15())
    entry = reg.add(src)
    assert entry.path == models / "Lora" / "new-style.safetensors"
    assert (entry.kind, entry.arch, entry.source) == ("lora", "sd15", "folder")
    assert sha256_file(entry.path) == sha256_file(src)
    assert reg.get("new-style").path == entry.path
    assert reg.add(src).path == entry.path  # same file again: no error, no duplicate
    assert len([e for e in reg.list("lora") if e.name == "new-style"]) == 1
    ckpt = reg.add(
        write(tmp_path / "downloads" / "m.safetensors", sdxl_checkpoint()), name="renamed", link=True
    )
    assert ckpt.path == models / "Stable-diffusion" / "renamed.safetensors"
    owned = reg.add(src, kind="lora", owner="carol")
    assert owned.path == models / "users" / "carol" / "Lora" / "new-style.safetensors"
    assert owned.owner == "carol"
    with pytest.raises(ModelNotFoundError):
        reg.get("renamed", kind="lora")  # it is a checkpoint


def test_add_refusals(reg: ModelRegistry, tmp_path: Path) -> None:
    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(UnsafeModelFormatError, match="never unpickles"):
        reg.add(ckpt)
    with pytest.raises(ModelError, match="no known model family"):
        reg.add(write(tmp_path / "odd.safetensors", {"foo": (2,)}))
    with pytest.raises(InputError, match="is a lora by its tensor names, not a checkpoint"):
        reg.add(write(tmp_path / "l.safetensors", lora_kohya_sd15()), kind="checkpoint")
    with pytest.raises(InputError, match="no such file"):
        reg.add(tmp_path / "missing.safetensors")
    with pytest.raises(InputError, match="already exists"):
        reg.add(write(tmp_path / "memoji-07.safetensors", lora_kohya_sd15()))
    with pytest.raises(InputError, match="name"):
        reg.add(write(tmp_path / "ok.safetensors", lora_kohya_sd15()), name="../escape")


def test_config_folder(reg: ModelRegistry, models: Path) -> None:
    with pytest.raises(ModelError) as exc:
        reg.config_folder("sdxl")
    assert "toonbooth models pull sdxl-base-config" in str(exc.value)
    assert str(models / "configs" / "sdxl") in str(exc.value)
    with pytest.raises(ModelError, match="toonbooth models pull sd15-config"):
        reg.config_folder("sd15")
    with pytest.raises(ModelError, match="toonbooth models pull sd15-inpainting-config"):
        reg.config_folder("sd15-inpainting")
    with pytest.raises(ModelError, match="no catalog entry"):
        reg.config_folder("sd2")
    (models / "configs" / "sdxl").mkdir(parents=True)
    (models / "configs" / "sdxl" / "model_index.json").write_text("{}")
    assert reg.config_folder("sdxl") == models / "configs" / "sdxl"


# ----------------------------------------------------------------------------------------------
# Catalog
# ----------------------------------------------------------------------------------------------


def test_catalog_lookup_and_recipes() -> None:
    assert catalog.get_entry("SAMARITAN-3D-CARTOON-SDXL").kind == "checkpoint"
    assert catalog.get_entry("memoji-07").name == "memoji"
    assert catalog.get_entry("memoji-07.safetensors").name == "memoji"
    assert catalog.get_entry("diffusers_xl_canny_full.safetensors").arch == "sdxl"
    with pytest.raises(ModelNotFoundError) as exc:
        catalog.get_entry("no-such-model")
    assert "samaritan-3d-cartoon-sdxl" in str(exc.value) and "sdxl-base-config" in str(exc.value)
    assert catalog.recipes()["memoji"] == [
        "samaritan-3d-cartoon-sdxl",
        "diffusers_xl_canny_full",
        "memoji",
        "sdxl-base-config",
    ]
    assert [e.name for e in catalog.recipe_entries("sd15")] == [
        "stable-diffusion-v1-5",
        "control_v11p_sd15_canny",
        "sd15-config",
    ]
    # the seed's ControlNet hash is A1111's legacy hash, not a sha256 prefix
    canny = catalog.get_entry("diffusers_xl_canny_full").files[0]
    assert canny.legacy_hash == "2b69fca4" and not canny.sha256.startswith("2b69fca4")
    assert catalog.find_by_hash("2b69fca4")[0].name == "diffusers_xl_canny_full"
    assert catalog.find_by_hash("1b8fca3fee")[0].name == "samaritan-3d-cartoon-sdxl"
    cfg = catalog.get_entry("sdxl-base-config")
    assert cfg.install_dir(Path("/m")) == Path("/m/configs/sdxl")
    assert cfg.install_dir(Path("/m"), Path("/c")) == Path("/c/sdxl")
    assert not any(p.endswith(".safetensors") or p == "*" for p in cfg.allow_patterns)
    for e in catalog.entries():  # every entry says where it comes from and under which licence
        assert e.licence and e.source_note
        how = ("toonbooth models add", "toonbooth models convert", "pip package")  # toon studio: convert / pip
        assert e.repo_id is not None or any(h in e.source_note for h in how)


def test_catalog_file_hash_validation() -> None:
    with pytest.raises(ValueError, match="sha256"):
        catalog.CatalogFile(filename="x", sha256="1234")
    with pytest.raises(ValueError, match="legacy_hash"):
        catalog.CatalogFile(filename="x", legacy_hash="xyz12345")


# ----------------------------------------------------------------------------------------------
# Hub pulls (no downloads)
# ----------------------------------------------------------------------------------------------


def test_pull_offline_fails_fast_with_instructions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    network = record_network(monkeypatch)
    with pytest.raises(OfflineError) as exc:
        hub.pull("diffusers_xl_canny_full", tmp_path / "models")
    assert network == []  # fails fast: refused before any lookup or connection, nothing to wait for
    msg = str(exc.value)
    assert "diffusers_xl_canny_full.safetensors" in msg
    assert str(tmp_path / "models" / "ControlNet") in msg
    with pytest.raises(OfflineError, match="model_index.json"):
        hub.pull(catalog.get_entry("sdxl-base-config"), tmp_path / "models", offline=True)


def test_pull_unreachable_hub_is_offline_error_within_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # huggingface_hub builds its user agent from a registry it fetches from its own ENDPOINT (not the
    # `endpoint` passed to it): point that at the closed port too, so nothing leaves the machine
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    network = record_network(monkeypatch)
    probes: list[float] = []
    real_probe = huggingface_hub.get_hf_file_metadata

    def probe(url, *args, **kwargs):
        probes.append(kwargs["timeout"])
        return real_probe(url, *args, **kwargs)

    def no_download(*args, **kwargs):
        raise AssertionError("a download was started after the hub did not answer")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", probe)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    with pytest.raises(OfflineError) as exc:  # a closed loopback port: refused at once
        hub.pull(
            "stable-diffusion-v1-5",
            tmp_path / "models",
            offline=False,
            endpoint="http://127.0.0.1:9",
            timeout=2,
        )
    # within seconds by construction: one probe bounded by the 2 s timeout, no download, no retry loop
    assert probes == [2]
    assert network and set(network) <= {"lookup 127.0.0.1:9", "connect 127.0.0.1:9"}, network
    assert "not reachable" in str(exc.value)
    assert "v1-5-pruned-emaonly.safetensors" in str(exc.value)
    assert not (tmp_path / "models" / "Stable-diffusion" / "v1-5-pruned-emaonly.safetensors").exists()


def test_pull_entry_not_on_hub_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as exc:
        hub.pull("memoji", tmp_path, offline=False)
    assert not isinstance(exc.value, OfflineError)
    assert "toonbooth models add" in str(exc.value) and "drive.google.com" in str(exc.value)


def test_pull_returns_installed_verified_files_without_network(tmp_path: Path) -> None:
    models = tmp_path / "models"
    local = write(models / "Lora" / "thing.safetensors", lora_kohya_sd15())
    entry = catalog.CatalogEntry(
        name="thing", kind="lora", arch="sd15", repo_id="someone/thing", a1111_folder="Lora",
        files=[catalog.CatalogFile(filename="thing.safetensors", sha256=sha256_file(local),
                                   legacy_hash=a1111_legacy_hash(local), size=local.stat().st_size)],
        licence="test", source_note="test",
    )  # fmt: skip
    assert hub.pull(entry, models, offline=True) == [local]
    wrong = entry.model_copy(
        update={"files": [catalog.CatalogFile(filename="thing.safetensors", sha256="0" * 64)]}
    )
    with pytest.raises(OfflineError):  # present but wrong: it would download again, and cannot
        hub.pull(wrong, models, offline=True)


def test_verify_functions(tmp_path: Path) -> None:
    p = write(tmp_path / "f.safetensors", {"emb_params": (1, 768)})
    full = sha256_file(p)
    assert hub.verify_sha256(p, full) == full
    assert hub.verify_sha256(p, full[:8].upper()) == full
    with pytest.raises(ModelError, match="expected"):
        hub.verify_sha256(p, "deadbeef")
    with pytest.raises(ModelError, match="not a sha256"):
        hub.verify_sha256(p, "abc")
    hub.verify_catalog_file(
        p, catalog.CatalogFile(filename=p.name, sha256_prefix=full[:12], size=p.stat().st_size)
    )
    with pytest.raises(ModelError, match="size"):
        hub.verify_catalog_file(p, catalog.CatalogFile(filename=p.name, size=1))
    with pytest.raises(ModelError, match="legacy hash"):
        hub.verify_catalog_file(p, catalog.CatalogFile(filename=p.name, legacy_hash="00000000"))


# ----------------------------------------------------------------------------------------------
# The real tiny model set (models/tiny.py) in A1111 layout
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    from toonbooth.models.tiny import make_tiny_set

    root = tmp_path_factory.mktemp("tiny-models")
    return root, make_tiny_set(root)


TINY_EXPECTED = {
    "sdxl": ("checkpoint", "sdxl", "original"),
    "sd15": ("checkpoint", "sd15", "original"),
    "sd15-inpainting": ("checkpoint", "sd15", "original"),
    "controlnet-sdxl-canny": ("controlnet", "sdxl", "diffusers"),
    "controlnet-sd15-canny": ("controlnet", "sd15", "original"),
    "lora-memoji": ("lora", "sdxl", "kohya"),
    "lora-sdxl-style-peft": ("lora", "sdxl", "peft"),
    "lora-sd15-style": ("lora", "sd15", "kohya"),
    # emb_params of width 32: the width is the only SD1-vs-SD2 sign, and 32 is neither
    "embedding-sd15": ("embedding", "unknown", "a1111-sd15"),
    "embedding-sdxl": ("embedding", "sdxl", "a1111-sdxl"),
}


def test_tiny_set_files_probe_as_what_they_are(tiny_set: tuple[Path, dict[str, Path]]) -> None:
    root, written = tiny_set
    files = {k: p for k, p in written.items() if p.is_file()}
    assert set(files) == set(TINY_EXPECTED)  # every single file of the set is checked
    for key, path in files.items():
        r = probe_file(path)
        assert (r.kind, r.arch, r.layout) == TINY_EXPECTED[key], key
        assert r.inpainting == (key == "sd15-inpainting"), key
    reg = ModelRegistry([root], config_dir=root / "configs", hash_cache=None)
    by_path = {e.path: e for e in reg.list(include_refused=True)}
    for key, path in files.items():
        e = by_path[path]
        assert (e.kind, e.arch, e.layout, e.refused) == (*TINY_EXPECTED[key], None), key
    folder = reg.get(str(written["diffusers-sdxl"]))
    assert (folder.kind, folder.arch, folder.source) == ("checkpoint", "sdxl", "diffusers-folder")
    assert reg.get("tiny-sdxl", kind="checkpoint").source == "folder"  # the single file wins over the folder
    assert reg.config_folder("sdxl") == written["config-sdxl"]
    assert reg.config_folder("sd15") == written["config-sd15"]
    assert reg.config_folder("sd15-inpainting") == written["config-sd15-inpainting"]
