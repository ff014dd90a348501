"""The model catalog: the known models of toonbooth's recipes, where they come from, where they go.

Every fact below was read from a public page and is cited in the entry's `source_note`; hashes that
could not be read from a public page are left `None` (never guessed). Where a sha256 is given it is
the Git-LFS oid shown on the Hugging Face file page (for the seed's files it also agrees with the
short hash the seed's own A1111 client sends).

Sources:
- My Memoji seed README and client (`App.js`): base checkpoint
  `samaritan3dCartoon_v40SDXL.safetensors [1b8fca3fee]`, LoRA `memoji-07.safetensors` (Google Drive),
  ControlNet `diffusers_xl_canny_full [2b69fca4]` from `lllyasviel/sd_control_collection`.
  `2b69fca4` is sd-webui-controlnet's model-name hash, i.e. A1111's *legacy* `model_hash` (sha256 of
  64 KiB at offset 1 MiB), not a prefix of the file's sha256 (which is 80664d80…).
- https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0 (CreativeML Open RAIL++-M)
- https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5 and .../stable-diffusion-inpainting (CreativeML OpenRAIL-M)
- https://huggingface.co/lllyasviel/control_v11p_sd15_canny (OpenRAIL)
- https://huggingface.co/facebook/sam-vit-base, .../sam-vit-large, .../sam-vit-huge (Apache-2.0; Segment
  Anything, Kirillov et al. 2023, in transformers format: config.json, preprocessor_config.json,
  model.safetensors; the safetensors were added to each repo by a later "Adding `safetensors` variant" commit)
- LaMa (Suvorov et al., WACV 2022; https://github.com/advimman/lama, Apache-2.0). The authors publish the
  Lightning checkpoint (`big-lama.zip` with `models/best.ckpt`) on Yandex Disk, mirrored as a zip at
  https://huggingface.co/smartywu/big-lama; IOPaint / lama-cleaner use a TorchScript export `big-lama.pt`
  (GitHub release of Sanster/models). The catalog pulls that TorchScript file from the hub copy
  https://huggingface.co/gaspardbruno/BigLama, pinned to the commit that uploaded it; the same sha256 and size
  appear on an independent copy (datasets/dputilov/exp), and the download is verified against them.
- https://huggingface.co/Helsinki-NLP/opus-mt-ko-en (Apache-2.0; OPUS-MT, Tiedemann & Thottingal, EAMT 2020):
  MarianMT ko->en, 77.9 M parameters; the default branch has `pytorch_model.bin` (312 MB, tensors only) and
  no safetensors (those exist only in the bot PR refs/pr/2, which is not pinned here).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from ..core.errors import ModelNotFoundError

CatalogKind = Literal[
    "checkpoint", "controlnet", "lora", "embedding", "vae", "config", "sam", "lama",
    "translate",  # webtoon: MarianMT prompt translator
]
CatalogArch = Literal["sdxl", "sd15", "sd2", "sdxl-refiner", "sam", "lama", "marian"]
A1111Folder = Literal[
    "Stable-diffusion", "ControlNet", "Lora", "embeddings", "VAE", "configs", "diffusers", "SAM", "LaMa",
    "MarianMT",  # webtoon: <models>/MarianMT/<name>/ (not an A1111 folder; toonbooth's own)
]

_HEX = re.compile(r"^[0-9a-f]+$")


class CatalogFile(BaseModel):
    """One file of a catalog entry, with what is known to check it after download."""

    filename: str = Field(description="File name in the repository (and on disk).")
    subfolder: str | None = Field(None, description="Folder inside the repository, if any.")
    sha256: str | None = Field(None, description="Full sha256 (64 hex); None when no public page states it.")
    sha256_prefix: str | None = Field(
        None, description="Leading hex digits of the sha256 when only a short hash is known (>= 8 digits)."
    )
    legacy_hash: str | None = Field(
        None, description="A1111 legacy model_hash (8 hex: sha256 of 64 KiB at offset 1 MiB), if known."
    )
    size: int | None = Field(None, ge=0, description="Size in bytes, if known.")

    @field_validator("sha256", "sha256_prefix", "legacy_hash")
    @classmethod
    def _hex(cls, v: str | None, info) -> str | None:
        if v is None:
            return v
        v = v.lower()
        lengths = {"sha256": (64, 64), "sha256_prefix": (8, 64), "legacy_hash": (8, 8)}[info.field_name]
        if not _HEX.match(v) or not lengths[0] <= len(v) <= lengths[1]:
            raise ValueError(f"{info.field_name} must be {lengths[0]}-{lengths[1]} hex digits, got {v!r}")
        return v


class CatalogEntry(BaseModel):
    """A known model: where it is published, which files, where it goes in an A1111 models folder."""

    name: str
    kind: CatalogKind
    arch: CatalogArch
    repo_id: str | None = Field(
        None, description="Hugging Face repo id; None = not on the hub (user adds it)."
    )
    revision: str | None = Field(None, description="Pinned revision, if any (else the default branch).")
    files: list[CatalogFile] = Field(default_factory=list)
    allow_patterns: list[str] | None = Field(
        None, description="Download these repo paths (snapshot) instead of the single files in `files`."
    )
    a1111_folder: A1111Folder = Field(
        description="Folder under the models folder (configs: the config folder)."
    )
    install_subdir: str | None = Field(
        None,
        description="Sub-folder under `a1111_folder` for multi-file entries (diffusers folders, configs).",
    )
    aliases: list[str] = Field(default_factory=list)
    licence: str
    source_note: str
    homepage: str | None = None

    def install_dir(self, models_dir: Path, config_dir: Path | None = None) -> Path:
        """Where this entry's files go. Configs go to `config_dir` (default `<models_dir>/configs`)."""
        if self.kind == "config":
            base = Path(config_dir) if config_dir is not None else Path(models_dir) / "configs"
        else:
            base = Path(models_dir) / self.a1111_folder
        return base / self.install_subdir if self.install_subdir else base

    @property
    def primary_file(self) -> CatalogFile | None:
        return self.files[0] if self.files else None


_SDXL_CONFIG_PATTERNS = [
    "model_index.json",
    "*/config.json",
    "scheduler/*.json",
    "tokenizer/*",
    "tokenizer_2/*",
]
_SAM_FILES = ["config.json", "preprocessor_config.json", "model.safetensors"]


def _sam_entry(size: str, sha256: str, nbytes_note: str) -> CatalogEntry:
    """A Segment Anything checkpoint of the facebook/sam-vit-* family in transformers format."""
    name = f"sam-vit-{size}"
    return CatalogEntry(
        name=name,
        kind="sam",
        arch="sam",
        repo_id=f"facebook/{name}",
        files=[
            CatalogFile(filename="config.json"),
            CatalogFile(filename="preprocessor_config.json"),
            CatalogFile(filename="model.safetensors", sha256=sha256),
        ],
        allow_patterns=list(_SAM_FILES),
        a1111_folder="SAM",
        install_subdir=name,
        aliases=[f"sam-vit-{size[0]}"],
        licence=f"Apache-2.0 (model card of facebook/{name}).",
        source_note=(
            f"Segment Anything ViT-{size[0].upper()} image encoder + prompt encoder + mask decoder, transformers "
            f"`SamModel` / `SamProcessor` format ({nbytes_note}). Only config.json, preprocessor_config.json and "
            "model.safetensors are fetched (the repo also has pytorch_model.bin and tf_model.h5, which are not "
            "used). sha256 of model.safetensors from its LFS details on the repo's file page; the two JSON "
            "files have no published hash. Installed as a save_pretrained folder <models>/SAM/" + name + "/, "
            "where the anime studio finds it for sam_model 'facebook/" + name + "' or '" + name + "'."
        ),
        homepage=f"https://huggingface.co/facebook/{name}",
    )


_SD15_CONFIG_PATTERNS = [
    "model_index.json",
    "*/config.json",
    "scheduler/*.json",
    "tokenizer/*",
    "feature_extractor/*.json",
]

_OPUS_MT_FILES = [
    "config.json", "generation_config.json", "tokenizer_config.json", "source.spm", "target.spm", "vocab.json",
    "pytorch_model.bin",
]
OPUS_MT_KO_EN = CatalogEntry(
    name="opus-mt-ko-en",
    kind="translate",
    arch="marian",
    repo_id="Helsinki-NLP/opus-mt-ko-en",
    files=[CatalogFile(filename=f) for f in _OPUS_MT_FILES],
    allow_patterns=list(_OPUS_MT_FILES),
    a1111_folder="MarianMT",
    install_subdir="opus-mt-ko-en",
    aliases=["ko-en", "korean"],
    licence="Apache-2.0 (model card of Helsinki-NLP/opus-mt-ko-en).",
    source_note=(
        "Korean -> English MarianMT (OPUS-MT, transformer-align, SentencePiece spm32k/spm32k; Tatoeba kor-eng "
        "BLEU 41.3 on its card), about 312 MB: the fp32 pytorch_model.bin of the default branch, which holds "
        "only tensors and is read with torch.load(weights_only=True). No sha256 is pinned: none was read from a "
        "public page. Installed as a transformers folder <models>/MarianMT/opus-mt-ko-en/; every studio that "
        "takes a prompt translates Korean (Hangul) prompts with it before CLIP sees them."
    ),
    homepage="https://huggingface.co/Helsinki-NLP/opus-mt-ko-en",
)

CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name="samaritan-3d-cartoon-sdxl",
        kind="checkpoint",
        arch="sdxl",
        repo_id="gabrielgrant/samaritan-3d-cartoon",
        files=[
            CatalogFile(
                filename="samaritan3dCartoon_v40SDXL.safetensors",
                sha256="1b8fca3feeea6ddfb170bd937981145f0431ad5b686491d658b76492ef8e370b",
                size=6938043538,
            )
        ],
        a1111_folder="Stable-diffusion",
        aliases=["samaritan3dCartoon_v40SDXL", "samaritan"],
        licence=(
            "Not verified. Samaritan 3d Cartoon by PromptSharingSamaritan is published on Civitai "
            "(https://civitai.com/models/81270); as an SDXL derivative it is expected to carry CreativeML "
            "Open RAIL++-M, but the Civitai licence page could not be read here — check it before use."
        ),
        source_note=(
            "Seed base checkpoint (My Memoji README: ./Stable-diffusion/samaritan3dCartoon_v40SDXL.safetensors; "
            "client: 'samaritan3dCartoon_v40SDXL.safetensors [1b8fca3fee]'). Original: Civitai model 81270, "
            "version 4.0 SDXL. Hub copy: gabrielgrant/samaritan-3d-cartoon (README: 'Mirror of "
            "https://civitai.com/models/81270/samaritan-3d-cartoon'); its LFS sha256 1b8fca3fee… matches the "
            "seed's A1111 short hash, and the download is verified against it."
        ),
        homepage="https://civitai.com/models/81270/samaritan-3d-cartoon",
    ),
    CatalogEntry(
        name="diffusers_xl_canny_full",
        kind="controlnet",
        arch="sdxl",
        repo_id="lllyasviel/sd_control_collection",
        files=[
            CatalogFile(
                filename="diffusers_xl_canny_full.safetensors",
                sha256="80664d80e3f233371cb6921110d0a6b7a40c01571905463f9dde5637e7894ed3",
                legacy_hash="2b69fca4",
                size=2502139104,
            )
        ],
        a1111_folder="ControlNet",
        aliases=["sdxl-canny"],
        licence=(
            "Not stated on the sd_control_collection page as read here; the SDXL canny ControlNet it repackages "
            "was released by the diffusers team under the SDXL licence (CreativeML Open RAIL++-M) — verify."
        ),
        source_note=(
            "Seed ControlNet (README link: huggingface.co/lllyasviel/sd_control_collection/blob/main/"
            "diffusers_xl_canny_full.safetensors; client model name 'diffusers_xl_canny_full [2b69fca4]'). "
            "2b69fca4 is A1111's legacy model_hash as shown by sd-webui-controlnet. sha256 and size from the LFS "
            "pointers of two byte-identical public copies (licyk/sd_control_collection, ashleykleynhans/"
            "a1111-models); the lllyasviel page itself was not readable here. Diffusers key layout in one file."
        ),
        homepage="https://huggingface.co/lllyasviel/sd_control_collection",
    ),
    CatalogEntry(
        name="memoji",
        kind="lora",
        arch="sdxl",
        repo_id=None,
        files=[CatalogFile(filename="memoji-07.safetensors")],
        a1111_folder="Lora",
        aliases=["memoji-07"],
        licence="Not stated by the seed project (My Memoji); ask its authors before redistributing.",
        source_note=(
            "Seed LoRA (trained on 2748 memoji images over Samaritan SDXL), distributed only through the seed's "
            "Google Drive folder https://drive.google.com/drive/folders/10c-bRDNM-EAHATRaCPTQ3ZGfspJUgASs "
            "(README: ./Lora/memoji-07.safetensors). Not on the model hub; no public hash. Download it by hand "
            "and run `toonbooth models add memoji-07.safetensors`. The seed's client calls it <lora:memoji:1>."
        ),
        homepage="https://drive.google.com/drive/folders/10c-bRDNM-EAHATRaCPTQ3ZGfspJUgASs",
    ),
    CatalogEntry(
        name="sdxl-base-config",
        kind="config",
        arch="sdxl",
        repo_id="stabilityai/stable-diffusion-xl-base-1.0",
        allow_patterns=_SDXL_CONFIG_PATTERNS,
        a1111_folder="configs",
        install_subdir="sdxl",
        aliases=["sdxl-config"],
        licence="CreativeML Open RAIL++-M (stable-diffusion-xl-base-1.0 model card).",
        source_note=(
            "Configs and tokenizers only (no weights): what diffusers' from_single_file needs, as "
            "`config=<folder>`, to load an SDXL single-file checkpoint without contacting the hub."
        ),
        homepage="https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0",
    ),
    CatalogEntry(
        name="sd15-config",
        kind="config",
        arch="sd15",
        repo_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
        allow_patterns=_SD15_CONFIG_PATTERNS,
        a1111_folder="configs",
        install_subdir="sd15",
        aliases=["sd15-base-config"],
        licence="CreativeML OpenRAIL-M (stable-diffusion-v1-5 model card).",
        source_note=(
            "Configs and tokenizer only (no weights) for offline single-file loading of SD1.5-family checkpoints."
        ),
        homepage="https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5",
    ),
    CatalogEntry(
        name="sd15-inpainting-config",
        kind="config",
        arch="sd15",
        repo_id="stable-diffusion-v1-5/stable-diffusion-inpainting",
        allow_patterns=_SD15_CONFIG_PATTERNS,
        a1111_folder="configs",
        install_subdir="sd15-inpainting",
        licence="CreativeML OpenRAIL-M (stable-diffusion-inpainting model card).",
        source_note=(
            "Configs and tokenizer only (no weights) of the SD1.5 inpainting pipeline (9-channel UNet): what "
            "single-file loading of SD1.5 inpainting checkpoints needs offline."
        ),
        homepage="https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-inpainting",
    ),
    CatalogEntry(
        name="stable-diffusion-v1-5",
        kind="checkpoint",
        arch="sd15",
        repo_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
        files=[
            CatalogFile(
                filename="v1-5-pruned-emaonly.safetensors",
                sha256="6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
                size=4265146304,
            )
        ],
        a1111_folder="Stable-diffusion",
        aliases=["sd15", "v1-5-pruned-emaonly"],
        licence="CreativeML OpenRAIL-M (stable-diffusion-v1-5 model card).",
        source_note=(
            "SD1.5 base, single file in original layout. sha256 and size from the file's LFS pointer as shown on "
            "several public copies (e.g. Comfy-Org/stable-diffusion-v1-5-archive, Cristiants/comfyui)."
        ),
        homepage="https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5",
    ),
    CatalogEntry(
        name="control_v11p_sd15_canny",
        kind="controlnet",
        arch="sd15",
        repo_id="lllyasviel/control_v11p_sd15_canny",
        files=[
            CatalogFile(filename="config.json"),
            CatalogFile(
                filename="diffusion_pytorch_model.safetensors",
                sha256="be713fb941fc7c625f0c7d816b6a19115783a665f3049a8974f127e0c075d9a9",
            ),
        ],
        allow_patterns=["config.json", "diffusion_pytorch_model.safetensors"],
        a1111_folder="diffusers",
        install_subdir="control_v11p_sd15_canny",
        aliases=["sd15-canny"],
        licence="OpenRAIL (model card of lllyasviel/control_v11p_sd15_canny).",
        source_note=(
            "ControlNet 1.1 canny for SD1.5 in diffusers folder layout (config.json + weights); sha256 from the "
            "LFS details of diffusion_pytorch_model.safetensors on the repo's page. Installed as a diffusers "
            "folder under <models>/diffusers/."
        ),
        homepage="https://huggingface.co/lllyasviel/control_v11p_sd15_canny",
    ),
    _sam_entry(
        "base",
        "892c410e496344e527255ccdcb2cb7244a609acb5389c7c4fdba1288f861c579",
        "about 375 MB; the default",
    ),
    _sam_entry("large", "a57e1b13cd1545938dfcbc9fb26df7f60de6650237a9383382a874a623564b81", "about 1.25 GB"),
    _sam_entry("huge", "edfb0462392541fca9af44ff039bfb32dbd0c939997f3abb77a26e23af7afd7c", "about 2.56 GB"),
    CatalogEntry(
        name="big-lama",
        kind="lama",
        arch="lama",
        repo_id="gaspardbruno/BigLama",
        revision="2bda1164365cebd245b0ae9ba23763f0f140d76c",
        files=[
            CatalogFile(
                filename="big-lama.pt",
                sha256="344c77bbcb158f17dd143070d1e789f38a66c04202311ae3a258ef66667a9ea9",
                size=205669692,
            )
        ],
        a1111_folder="LaMa",
        aliases=["lama"],
        licence=(
            "Apache-2.0 (LaMa, https://github.com/advimman/lama). The hub copy's card says MIT, which is not the "
            "upstream licence; the upstream Apache-2.0 applies to the weights."
        ),
        source_note=(
            "Big-LaMa inpainting generator as the TorchScript export `big-lama.pt` that IOPaint / lama-cleaner use "
            "(`module(image, mask)`; believed to be the file of the Sanster/models GitHub release, which is not on "
            "the hub). FORMAT: TorchScript is a serialized program (code), not plain weights: toonbooth loads it "
            "only from the operator's models folder <models>/LaMa/, never from an upload. Hub copy "
            "gaspardbruno/BigLama, pinned to the commit that uploaded it; sha256 and size from that commit's LFS "
            "pointer, and the same pointer is on an independent copy (datasets/dputilov/exp). Other copies "
            "(fashn-ai/LaMa, signature-ai/big-lama, okaris/simple-lama) were not hash-checked here. The authors' "
            "original Lightning `best.ckpt` (zip at smartywu/big-lama) is a pickle; convert either format to "
            "`big-lama.safetensors` on a trusted machine (docs/models.md) and drop it into <models>/LaMa/: the "
            "safetensors file is preferred over the .pt when both are there."
        ),
        homepage="https://github.com/advimman/lama",
    ),
    OPUS_MT_KO_EN,
)

RECIPES: dict[str, list[str]] = {
    "memoji": ["samaritan-3d-cartoon-sdxl", "diffusers_xl_canny_full", "memoji", "sdxl-base-config"],
    "sd15": ["stable-diffusion-v1-5", "control_v11p_sd15_canny", "sd15-config"],
    "anime": ["sam-vit-base", "big-lama", "stable-diffusion-v1-5", "control_v11p_sd15_canny", "sd15-config"],
    # webtoon backgrounds (the pose half adds its DWPose / AnimateAnyone entries to this list)
    "webtoon": ["opus-mt-ko-en", "stable-diffusion-v1-5", "sd15-config"],
}


def _norm(name: str) -> str:
    return name.strip().lower()


def _strip_suffix(name: str) -> str:
    return name[: -len(".safetensors")] if name.lower().endswith(".safetensors") else name


def entries() -> list[CatalogEntry]:
    return list(CATALOG)


def find_entry(name: str) -> CatalogEntry | None:
    """The entry whose name, alias, primary file name (with or without suffix) or repo id is `name`."""
    key = _norm(name)
    bare = _norm(_strip_suffix(name.strip()))
    for entry in CATALOG:
        names = {_norm(entry.name), *(_norm(a) for a in entry.aliases)}
        if entry.primary_file is not None and entry.kind != "config" and entry.install_subdir is None:
            names.add(_norm(entry.primary_file.filename))
            names.add(_norm(_strip_suffix(entry.primary_file.filename)))
        if key in names or bare in names:
            return entry
    for entry in CATALOG:
        if entry.repo_id and entry.kind != "config" and _norm(entry.repo_id) == key:
            return entry
    return None


def get_entry(name: str) -> CatalogEntry:
    """The catalog entry called `name` (case-insensitive; aliases and file names accepted)."""
    entry = find_entry(name)
    if entry is None:
        known = ", ".join(e.name for e in CATALOG)
        raise ModelNotFoundError(
            f"no catalog model called {name!r}; known: {known}; recipes: {', '.join(RECIPES)}"
        )
    return entry


def recipes() -> dict[str, list[str]]:
    """Named groups of catalog entries that one studio needs together."""
    return {k: list(v) for k, v in RECIPES.items()}


def recipe_entries(name: str) -> list[CatalogEntry]:
    """The catalog entries of recipe `name` (case-insensitive)."""
    key = _norm(name)
    if key not in RECIPES:
        raise ModelNotFoundError(f"no recipe called {name!r}; known: {', '.join(RECIPES)}")
    return [get_entry(n) for n in RECIPES[key]]


def find_by_hash(value: str) -> tuple[CatalogEntry, CatalogFile] | None:
    """The catalog file whose sha256 starts with `value` (>= 8 hex) or whose legacy hash is `value`."""
    v = value.strip().lower()
    if not _HEX.match(v) or len(v) < 8:
        return None
    for entry in CATALOG:
        for f in entry.files:
            if f.sha256 and f.sha256.startswith(v):
                return entry, f
            if (p := f.sha256_prefix) and (p.startswith(v) or v.startswith(p)):
                return entry, f
            if f.legacy_hash and f.legacy_hash == v:
                return entry, f
    return None
