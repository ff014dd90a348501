"""Webtoon background job: toonbooth's engine vs the same denoising loop written as plain diffusers calls, the
Korean translation's cost, and the classic filter on a 1-megapixel photo. Prints JSON.

- `neural`: the `background` job (img2img from a photo and txt2img from a prompt, one style LoRA at 0.8,
  DPM++ 2M Karras) through the runtime's one execution path (`runtime.execute`: plan, translation check,
  pipeline, PNG encoding, storage) vs stock `StableDiffusion(Img2Img)Pipeline` calls on the same loaded
  modules, scheduler, LoRA, sizes, steps and seed. The prompts are English and short (one CLIP chunk with the
  tiny one-character-per-token tokenizer) and preset `none`, so both encode the same tokens; the ratio is
  ours / stock (median of `--repeats` interleaved runs after a warm-up).
- `translate_s`: the job's translation step on a Korean prompt (`nets.prompt_translate`, beam 4; on the
  tiny translator unless `--full-marian`, which times a random-weight MarianMT of opus-mt-ko-en's shape:
  d_model 512, 6+6 layers, vocab 65 001 — the real model's decoding cost, not its words).
- `classic`: `vision.webtoon_bg.webtoon_background` on the sample photo upscaled to 1152x864 (~1 MP), and the
  whole classic job (decode, filter, PNG encode, store).

    .venv/bin/python bench/background.py [--repeats 5] [--steps 20] [--side 128] [--full-marian]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
PROMPT_EN = "a rainy alley, neon signs"
PROMPT_KO = "비 오는 날의 골목, 네온 간판"
NEGATIVE = "people, person, text, blurry"


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _median(values) -> float:
    return round(statistics.median(values), 4)


def full_size_marian(folder: Path, tiny_folder: Path) -> None:
    """A random-weight MarianMT with opus-mt-ko-en's dimensions, using the tiny tokenizer files."""
    import shutil

    import torch
    from transformers import MarianConfig, MarianMTModel

    folder.mkdir(parents=True, exist_ok=True)
    pad = json.loads((tiny_folder / "vocab.json").read_text(encoding="utf-8"))["<pad>"]  # the tokenizer's ids
    for name in ("source.spm", "target.spm", "vocab.json", "tokenizer_config.json"):
        shutil.copy(tiny_folder / name, folder / name)
    config = MarianConfig(
        vocab_size=65001, decoder_vocab_size=65001, d_model=512, encoder_layers=6, decoder_layers=6,
        encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
        max_position_embeddings=512, pad_token_id=pad, decoder_start_token_id=pad, eos_token_id=0,
        bos_token_id=0, scale_embedding=True, activation_function="swish", share_encoder_decoder_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = MarianMTModel(config).eval()
    # the same output space as the tiny translator (its tokenizer cannot spell the other 64 k ids); the
    # LM head still computes all 65 001 logits, as the real model's does
    tiny_bias = MarianMTModel.from_pretrained(str(tiny_folder)).final_logits_bias
    with torch.no_grad():
        model.final_logits_bias.fill_(-1e4)
        model.final_logits_bias[:, : tiny_bias.shape[1]] = tiny_bias
    model.save_pretrained(folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--side", type=int, default=128, help="photo long side / txt2img size (multiple of 8)")
    ap.add_argument("--full-marian", action="store_true", help="time a random MarianMT of the real model's shape")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (tiny models: 1 is fastest)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
    from PIL import Image

    from toonbooth.core.settings import Settings
    from toonbooth.core.specs import parse_job_spec
    from toonbooth.models import sd
    from toonbooth.models.samplers import make_scheduler
    from toonbooth.models.tiny import make_tiny_set
    from toonbooth.nets.translate import save_tiny_marian
    from toonbooth.runtime.context import JobContext
    from toonbooth.runtime.execute import execute
    from toonbooth.runtime.families import model_manager
    from toonbooth.runtime.storage_local import LocalStorage
    from toonbooth.vision.webtoon_bg import webtoon_background

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tmp = Path(tempfile.mkdtemp(prefix="tb-bench-bg-"))
    make_tiny_set(tmp / "models")
    save_tiny_marian(tmp / "tiny-marian")
    if args.full_marian:
        full_size_marian(tmp / "models" / "MarianMT" / "opus-mt-ko-en", tmp / "tiny-marian")
    else:
        import shutil

        shutil.copytree(tmp / "tiny-marian", tmp / "models" / "MarianMT" / "opus-mt-ko-en")
    settings = Settings(home=tmp, models_dir=tmp / "models", data_dir=tmp / "data", device=device)
    models = model_manager(settings)
    storage = LocalStorage(settings.resolved_data_dir)
    side = args.side
    photo = Image.open(ROOT / "assets" / "sample_face.png").convert("RGB").resize((side, side * 3 // 4))
    photo_ref = storage.put(_png(photo))

    def spec(route: str, prompt: str):
        raw = {"kind": "background", "prompt": prompt, "negative_prompt": NEGATIVE, "preset": "none",
               "styles": [{"name": "tiny-sd15-style", "weight": 0.8}],
               "diffusion": {"checkpoint": "tiny-sd15", "steps": args.steps, "seed": 7, "strength": 0.6}}  # fmt: skip
        if route == "img2img":
            raw.update(image=photo_ref, max_side=side)
        else:
            raw.update(width=side, height=side)
        return parse_job_spec(raw)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def ours(route: str, prompt: str = PROMPT_EN) -> float:
        s = spec(route, prompt)
        t0 = time.perf_counter()
        execute(s, JobContext(settings, models, storage))
        sync()
        return time.perf_counter() - t0

    # stock: the same calls as plain diffusers on the same (cached) modules, the LoRA active
    ours("img2img")  # loads and caches the base pipeline, activates the LoRA
    base, _ = sd.base_pipeline(models, "tiny-sd15", "sd15")
    sd.apply_loras(models, base, [("tiny-sd15-style", 0.8)])
    stocks = {"img2img": StableDiffusionImg2ImgPipeline(**base.components),
              "txt2img": StableDiffusionPipeline(**base.components)}  # fmt: skip
    for p in stocks.values():
        p.scheduler = make_scheduler("DPM++ 2M", base._toonbooth_scheduler_config, "Karras")
        p.set_progress_bar_config(disable=True)
    w, h = side, side * 3 // 4

    def stock(route: str) -> float:
        t0 = time.perf_counter()
        kwargs = dict(prompt=PROMPT_EN, negative_prompt=NEGATIVE, num_inference_steps=args.steps, guidance_scale=7.0,
                      generator=torch.Generator("cpu").manual_seed(7))  # fmt: skip
        if route == "img2img":
            img = stocks[route](image=photo.resize((w, h)), strength=0.6, **kwargs).images[0]
        else:
            img = stocks[route](height=side, width=side, **kwargs).images[0]
        img.tobytes()
        sync()
        return time.perf_counter() - t0

    result: dict = {"bench": "background", "device": device, "torch": torch.__version__, "steps": args.steps,
                    "repeats": args.repeats, "side": side, "threads": torch.get_num_threads(),
                    "load_average": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    neural: dict = {}
    for route in ("img2img", "txt2img"):
        ours(route)
        stock(route)  # warm-up both
        runs_ours, runs_stock = [], []
        for _ in range(args.repeats):  # interleaved so drift hits both equally
            runs_ours.append(ours(route))
            runs_stock.append(stock(route))
        neural[route] = {"ours_s": _median(runs_ours), "stock_diffusers_s": _median(runs_stock),
                         "ratio_ours_over_stock": round(_median(runs_ours) / _median(runs_stock), 4)}  # fmt: skip
    result["neural"] = neural
    # the translation's cost: the job's translation step on a Korean prompt (the translator loaded once)
    from toonbooth.nets.prompt_translate import PromptText, translate_job_prompts

    translate_job_prompts(models, [PromptText("prompt", PROMPT_KO)])
    korean = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        translate_job_prompts(models, [PromptText("prompt", f"{PROMPT_KO} {i}")])  # new text: no memo hit
        sync()
        korean.append(time.perf_counter() - t0)
    result["translate_s"] = _median(korean)
    result["neural"]["txt2img"]["with_translation_s"] = round(neural["txt2img"]["ours_s"] + _median(korean), 4)
    result["translator"] = "random MarianMT, opus-mt-ko-en shape" if args.full_marian else "tiny MarianMT"

    # classic: the filter on ~1 MP and the whole job
    big = Image.open(ROOT / "assets" / "sample_face.png").convert("RGB").resize((1152, 864), Image.Resampling.LANCZOS)
    webtoon_background(big)
    filt = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        webtoon_background(big, colors=12, line_width=2, line_detail=0.5, smooth=3, line_tone=0.1)
        filt.append(time.perf_counter() - t0)
    big_ref = storage.put(_png(big))
    job = parse_job_spec({"kind": "background", "image": big_ref, "backend": "classic"})
    execute(job, JobContext(settings, models, storage))
    jobs = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        execute(job, JobContext(settings, models, storage))
        jobs.append(time.perf_counter() - t0)
    result["classic"] = {"photo": [1152, 864], "filter_s": _median(filt), "job_s": _median(jobs)}
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
