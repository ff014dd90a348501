"""AUTOMATIC1111 prompt styles: `styles.csv` (columns `name`, `prompt`, `negative_prompt`), read from the
models folder and the data folder, applied as A1111 does (`modules/styles.py`).

Applying a style: when its text holds `{prompt}`, that placeholder is replaced by the prompt so far;
otherwise the style text is appended after `", "` (empty parts are left out). Styles apply in the order
given, to the prompt and the negative prompt alike. A file that is not CSV with a `name` column is
refused with its path; rows without a name are skipped (A1111's separators).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import InputError, ModelError

STYLES_FILE = "styles.csv"
MAX_STYLES_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str
    negative_prompt: str
    path: str


def style_files(folders: Iterable[Path]) -> list[Path]:
    """`styles.csv` in each folder that has one (models folder first, then the data folder)."""
    return [Path(f) / STYLES_FILE for f in folders if (Path(f) / STYLES_FILE).is_file()]


def read_styles(path: Path) -> list[PromptStyle]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read prompt styles {path}: {exc}") from exc
    if len(data) > MAX_STYLES_BYTES:
        raise ModelError(f"prompt styles file {path} is over {MAX_STYLES_BYTES} bytes")
    text = data.decode("utf-8-sig", errors="replace")
    reader = csv.DictReader(io.StringIO(text), skipinitialspace=True)
    if reader.fieldnames is None or "name" not in reader.fieldnames:
        raise ModelError(f"{path}: not an A1111 styles.csv (needs a header with name,prompt,negative_prompt)")
    out = []
    for row in reader:
        name = (row.get("name") or "").strip()
        if not name:
            continue
        out.append(PromptStyle(name, row.get("prompt") or "", row.get("negative_prompt") or "", str(path)))
    return out


def load_styles(folders: Iterable[Path]) -> dict[str, PromptStyle]:
    """All styles by name; a name defined in several files keeps its first definition."""
    styles: dict[str, PromptStyle] = {}
    for path in style_files(folders):
        for style in read_styles(path):
            styles.setdefault(style.name, style)
    return styles


def merge_prompt(style_text: str, prompt: str) -> str:
    """A1111 `merge_prompts`: `{prompt}` placeholder, else `prompt, style` without empty parts."""
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", prompt)
    return ", ".join(p for p in (prompt.strip(), style_text.strip()) if p)


def apply_styles(
    prompt: str, negative_prompt: str, names: list[str], styles: dict[str, PromptStyle], *, field: str = "styles",
    strict: bool = True,
) -> tuple[str, str, list[str]]:  # fmt: skip
    """(prompt, negative prompt, warnings) with the named styles applied in order. An unknown name is an
    InputError naming `field` when `strict`, else a warning (A1111 skips unknown styles)."""
    warnings: list[str] = []
    for i, name in enumerate(names):
        style = styles.get(name)
        if style is None:
            known = ", ".join(sorted(styles)) or "(none: add a styles.csv to the models or data folder)"
            message = f"unknown prompt style {name!r}; known: {known}"
            if strict:
                raise InputError(f"{field}.{i}", message, name)
            warnings.append(message + " — generated without it")
            continue
        prompt = merge_prompt(style.prompt, prompt)
        negative_prompt = merge_prompt(style.negative_prompt, negative_prompt)
    return prompt, negative_prompt, warnings


def style_folders(settings) -> list[Path]:
    """Where `styles.csv` is looked for: the models folder(s), then the data folder."""
    return [Path(settings.resolved_models_dir), *[Path(p) for p in settings.extra_model_dirs],
            Path(settings.resolved_data_dir)]  # fmt: skip
