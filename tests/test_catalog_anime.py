"""The anime-me recipe in the model catalog: SAM (facebook/sam-vit-*) and big-lama entries, their install
locations (<models>/SAM/<name>/, <models>/LaMa/), `models pull anime` offline (fast, per-file instructions),
and hand-placed tiny files found by the registry and picked by the anime engine's `auto` backend."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from netspy import record_network
from toonbooth.core.errors import OfflineError
from toonbooth.core.settings import Settings
from toonbooth.core.specs import AnimeSpec
from toonbooth.engines import anime
from toonbooth.models import catalog, hub
from toonbooth.models.cache import ModelCache
from toonbooth.models.probe import sha256_file
from toonbooth.models.registry import ModelRegistry
from toonbooth.runtime.context import JobContext
from toonbooth.runtime.families import default_families, model_manager
from toonbooth.runtime.storage_local import LocalStorage

ANIME = ["sam-vit-base", "big-lama", "stable-diffusion-v1-5", "control_v11p_sd15_canny", "sd15-config"]
SAM_FILES = ["config.json", "preprocessor_config.json", "model.safetensors"]


@pytest.fixture(scope="module")
def placed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with a tiny SAM and a tiny LaMa placed by hand where the catalog installs them."""
    from safetensors.torch import save_file

    from toonbooth.nets.lama import LamaConfig, build_lama
    from toonbooth.vision.segment import build_tiny_sam

    models = tmp_path_factory.mktemp("anime-models")
    sam, processor = build_tiny_sam(seed=3)
    sam.save_pretrained(models / "SAM" / "sam-vit-base")
    processor.save_pretrained(models / "SAM" / "sam-vit-base")
    lama = build_lama(LamaConfig.tiny(), seed=0)
    (models / "LaMa").mkdir()
    sd = {f"generator.{k}": v.contiguous() for k, v in lama.generator.state_dict().items()}
    save_file(sd, str(models / "LaMa" / "big-lama.safetensors"))
    return models


def _ctx(models_dir: Path, home: Path) -> JobContext:
    settings = Settings(home=home, models_dir=models_dir, data_dir=home / "data", device="cpu")
    return JobContext(settings, model_manager(settings, cache=ModelCache(max_items=2)), LocalStorage(home / "data"))


# ----------------------------------------------------------------------------------------------
# Catalog entries and the recipe
# ----------------------------------------------------------------------------------------------


def test_anime_recipe_and_perception_entries() -> None:
    assert catalog.recipes()["anime"] == ANIME
    assert [e.name for e in catalog.recipe_entries("ANIME")] == ANIME
    m = Path("/m")
    for size in ("base", "large", "huge"):
        sam = catalog.get_entry(f"sam-vit-{size}")
        assert (sam.kind, sam.repo_id, sam.a1111_folder) == ("sam", f"facebook/sam-vit-{size}", "SAM")
        assert [f.filename for f in sam.files] == SAM_FILES and sam.allow_patterns == SAM_FILES
        assert sam.install_dir(m) == m / "SAM" / f"sam-vit-{size}"
        # only the weights have a published hash; the JSON files are left unverified (None), never guessed
        assert [f.sha256 is not None for f in sam.files] == [False, False, True]
        assert "Apache-2.0" in sam.licence
    assert catalog.get_entry("facebook/sam-vit-base").name == "sam-vit-base"
    assert catalog.get_entry("sam-vit-b").name == "sam-vit-base"
    lama = catalog.get_entry("big-lama")
    assert (lama.kind, lama.a1111_folder, lama.install_dir(m)) == ("lama", "LaMa", m / "LaMa")
    assert lama.files[0].filename == "big-lama.pt" and len(lama.files[0].sha256 or "") == 64
    assert lama.revision and len(lama.revision) == 40  # pinned to the commit whose LFS pointer was read
    assert "TorchScript" in lama.source_note and "code" in lama.source_note
    assert (
        catalog.get_entry("big-lama.pt").name == "big-lama" and catalog.get_entry("lama").name == "big-lama"
    )
    # a SAM folder's first file (config.json) is not a name of the entry
    assert catalog.find_entry("config.json") is None
    assert catalog.find_by_hash("892c410e")[0].name == "sam-vit-base"


# ----------------------------------------------------------------------------------------------
# Pulling offline
# ----------------------------------------------------------------------------------------------


def test_pull_anime_offline_fails_fast_with_per_file_instructions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models = tmp_path / "models"
    messages: dict[str, str] = {}
    network = record_network(monkeypatch)
    for entry in catalog.recipe_entries("anime"):
        with pytest.raises(OfflineError) as exc:
            hub.pull(entry, models)
        messages[entry.name] = str(exc.value)
    assert network == []  # fails fast: every entry refused before any lookup or connection
    sam_msg = messages["sam-vit-base"]
    for f in SAM_FILES:  # one URL and one target per file
        url = f"https://huggingface.co/facebook/sam-vit-base/resolve/main/{f}"
        assert f"{url} -> {models / 'SAM' / 'sam-vit-base' / f}" in sam_msg
    lama_msg = messages["big-lama"]
    rev = catalog.get_entry("big-lama").revision
    assert f"https://huggingface.co/gaspardbruno/BigLama/resolve/{rev}/big-lama.pt" in lama_msg
    assert str(models / "LaMa") in lama_msg
    assert "models add" not in sam_msg and "models add" not in lama_msg  # `models add` takes neither kind
    assert "v1-5-pruned-emaonly.safetensors" in messages["stable-diffusion-v1-5"]
    assert "toonbooth models add" in messages["stable-diffusion-v1-5"]
    assert not (models / "SAM").exists() and not (models / "LaMa").exists()  # nothing half-written


def test_cli_models_pull_anime_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from toonbooth.cli.main import app

    env = {"TOONBOOTH_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    network = record_network(monkeypatch)
    res = CliRunner().invoke(
        app, ["--models-dir", str(tmp_path / "models"), "models", "pull", "anime"], env=env
    )
    assert network == []  # fails fast: no lookup, no connection
    assert res.exit_code == 2, res.output
    for name in ANIME:
        assert f"failed {name}: " in res.output
    assert "facebook/sam-vit-base/resolve/main/model.safetensors" in res.output


def test_pull_returns_installed_sam_folder_without_network(placed: Path) -> None:
    """The SAM entry's install check (all three files, the weights hash) against a placed folder."""
    folder = placed / "SAM" / "sam-vit-base"
    (folder / "preprocessor_config.json").write_text((folder / "processor_config.json").read_text())
    try:
        entry = catalog.get_entry("sam-vit-base")
        tiny = entry.model_copy(
            update={
                "files": [
                    *entry.files[:2],
                    catalog.CatalogFile(
                        filename="model.safetensors", sha256=sha256_file(folder / "model.safetensors")
                    ),
                ]
            }
        )
        got = hub.pull(tiny, placed, offline=True)
        assert {p.name for p in got} >= set(SAM_FILES) and all(p.parent == folder for p in got)
        with pytest.raises(OfflineError):  # the real entry's hash does not match the tiny weights
            hub.pull(entry, placed, offline=True)
    finally:
        (folder / "preprocessor_config.json").unlink()


# ----------------------------------------------------------------------------------------------
# Hand-placed files: registry and engine
# ----------------------------------------------------------------------------------------------


def test_registry_finds_placed_sam_and_lama(placed: Path, tmp_path: Path) -> None:
    reg = ModelRegistry([placed], tmp_path / "configs", families=default_families())
    by_kind = {e.kind: e for e in reg.scan()}
    sam, lama = by_kind["sam"], by_kind["lama"]
    assert (sam.name, sam.layout, sam.catalog_name, sam.usable) == (
        "sam-vit-base",
        "transformers",
        "sam-vit-base",
        True,
    )
    assert (lama.name, lama.layout, lama.catalog_name, lama.usable) == (
        "big-lama",
        "safetensors",
        "big-lama",
        True,
    )
    assert reg.get("sam-vit-base").path == placed / "SAM" / "sam-vit-base"
    assert reg.get("facebook/sam-vit-base").path == placed / "SAM" / "sam-vit-base"
    assert reg.get("big-lama", kind="lama").path == placed / "LaMa" / "big-lama.safetensors"
    listed = {e.name: e for e in reg.list(include_catalog=True)}
    assert listed["sam-vit-base"].source == "folder"  # installed: not listed again as a catalog entry
    assert listed["sam-vit-large"].source == "catalog" and listed["sam-vit-large"].arch == "unknown"


def test_registry_refuses_unusable_perception_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    models = tmp_path / "models"
    pickled = models / "SAM" / "facebook" / "sam-vit-large"  # org/name layout is scanned too
    pickled.mkdir(parents=True)
    (pickled / "config.json").write_text('{"model_type": "sam"}')
    (pickled / "preprocessor_config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    other = models / "SAM" / "not-sam"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "vit"}')
    (models / "LaMa").mkdir()
    save_file({"weight": torch.zeros(2)}, str(models / "LaMa" / "wrong.safetensors"))
    entries = {e.name: e for e in ModelRegistry([models], tmp_path / "c", families=default_families()).scan()}
    assert "never unpickles" in (entries["facebook/sam-vit-large"].refused or "")
    assert "model_type 'vit'" in (entries["not-sam"].refused or "")
    assert "no LaMa FFC generator keys" in (entries["wrong"].refused or "")


def test_engine_auto_picks_neural_segment_and_inpaint(placed: Path, tmp_path: Path) -> None:
    ctx = _ctx(placed, tmp_path / "home")
    spec = AnimeSpec(image="x" * 64, backend="auto")  # defaults: facebook/sam-vit-base, big-lama
    plan = anime.choose_backends(spec, ctx.models, None)
    assert (plan.segment, plan.inpaint, plan.character) == ("sam", "lama", "toon")
    assert ctx.models.path("sam", spec.sam_model) == placed / "SAM" / "sam-vit-base"
    assert ctx.models.entry(spec.lama_model, "lama").layout == "safetensors"
    assert plan.reasons["segment"] == plan.reasons["inpaint"] == "weights present"
    segmenter = ctx.models.load("sam", spec.sam_model)
    assert type(segmenter).__name__ == "SamSegmenter"
    module = ctx.models.load("lama", spec.lama_model)
    out = module(torch.rand(1, 3, 64, 64), torch.zeros(1, 1, 64, 64))
    assert out.shape == (1, 3, 64, 64)


def test_engine_uses_pulled_torchscript_lama_from_models_folder(tmp_path: Path) -> None:
    """What `models pull big-lama` installs (<models>/LaMa/big-lama.pt, TorchScript) is what the engine loads;
    a converted big-lama.safetensors next to it wins, in the engine and in the registry alike."""
    from safetensors.torch import save_file

    from toonbooth.nets.lama import LamaConfig, build_lama

    models = tmp_path / "models"
    (models / "LaMa").mkdir(parents=True)
    lama = build_lama(LamaConfig.tiny(), seed=1).eval()
    x, m = torch.rand(1, 3, 64, 64), torch.zeros(1, 1, 64, 64)
    torch.jit.trace(lama, (x, m), check_trace=False).save(str(models / "LaMa" / "big-lama.pt"))
    ctx = _ctx(models, tmp_path / "home")
    plan = anime.choose_backends(AnimeSpec(image="x" * 64, backend="auto"), ctx.models, None)
    assert plan.inpaint == "lama" and ctx.models.entry("big-lama", "lama").layout == "torchscript"
    assert ctx.models.load("lama", "big-lama")(x, m).shape == (1, 3, 64, 64)
    reg = ModelRegistry([models], tmp_path / "c", families=default_families())
    assert reg.get("big-lama", kind="lama").layout == "torchscript"
    sd = {f"generator.{k}": v.contiguous() for k, v in lama.generator.state_dict().items()}
    save_file(sd, str(models / "LaMa" / "big-lama.safetensors"))
    ctx.models.registry.scan()
    assert ctx.models.entry("big-lama", "lama").layout == "safetensors"
    reg.scan()
    assert reg.get("big-lama", kind="lama").layout == "safetensors"
    assert reg.get("lama").layout == "safetensors"  # the catalog alias resolves to the same file


def test_models_doc_lists_every_catalog_entry_and_recipe() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text(encoding="utf-8")
    for entry in catalog.entries():
        assert f"`{entry.name}`" in doc, entry.name
        for f in entry.files:
            if f.sha256:
                assert f.sha256[:8] in doc, (entry.name, f.filename)
    for name in catalog.recipes():
        assert f"`{name}`" in doc, name
