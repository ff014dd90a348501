"""DESIGN.md's one non-negotiable rule: imports only point down the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "toonbooth"
ORDER = ["core", "models", "vision", "nets", "engines", "training", "runtime", "api", "ui", "cli"]
RANK = {name: i for i, name in enumerate(ORDER)}
# api, ui and cli are siblings at the top: the api mounts the ui, and `toonbooth serve` (cli) starts
# the api; nothing else crosses between them (the ui never imports api routes, the api never the cli)
SIBLINGS_ALLOWED = {("api", "ui"), ("cli", "api"), ("cli", "ui")}


def _layer_of_module(parts: list[str]) -> str | None:
    if len(parts) >= 2 and parts[0] == "toonbooth" and parts[1] in RANK:
        return parts[1]
    return None


def _imports(path: Path) -> list[tuple[int, list[str]]]:
    rel = path.relative_to(PKG.parent).with_suffix("").parts
    pkg_parts = list(rel[:-1]) if path.name != "__init__.py" else list(rel[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append((node.lineno, alias.name.split(".")))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                mod = base + (node.module.split(".") if node.module else [])
                if not node.module:
                    for alias in node.names:
                        out.append((node.lineno, mod + [alias.name]))
                    continue
            else:
                mod = (node.module or "").split(".")
            out.append((node.lineno, mod))
    return out


def violations() -> list[str]:
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(PKG.parent).parts
        src_layer = parts[1] if len(parts) > 2 else None
        if src_layer not in RANK:
            continue
        for lineno, target in _imports(path):
            dst = _layer_of_module(target)
            if dst is None or dst == src_layer:
                continue
            if (src_layer, dst) in SIBLINGS_ALLOWED:
                continue
            if RANK[dst] > RANK[src_layer] or (RANK[src_layer] >= RANK["api"] and RANK[dst] >= RANK["api"]):
                bad.append(f"{path.relative_to(PKG.parent)}:{lineno} ({src_layer}) imports {'.'.join(target)} ({dst})")
    return bad


def engine_cross_imports() -> list[str]:
    bad = []
    engines = PKG / "engines"
    for path in sorted(engines.glob("*.py")):
        for lineno, target in _imports(path):
            if len(target) >= 3 and target[:2] == ["toonbooth", "engines"] and target[2] not in ("base", path.stem):
                bad.append(f"engines/{path.name}:{lineno} imports engine {'.'.join(target)}")
    return bad


def test_imports_point_down():
    assert violations() == []


def test_engines_do_not_import_each_other():
    assert engine_cross_imports() == []


def test_core_is_torch_free():
    for path in (PKG / "core").rglob("*.py"):
        for _lineno, target in _imports(path):
            assert target[0] not in ("torch", "diffusers", "transformers", "peft"), f"{path.name} imports {target}"


def test_checker_catches_an_upward_import(tmp_path, monkeypatch):
    # the checker itself must fail on a planted violation
    fake = PKG / "core" / "_layer_probe_tmp.py"
    fake.write_text("from ..engines import base\n")
    try:
        assert any("_layer_probe_tmp" in v for v in violations())
    finally:
        fake.unlink()


@pytest.mark.parametrize("layer", ["core", "models", "vision", "engines", "runtime", "cli"])
def test_layer_packages_exist(layer):
    assert (PKG / layer / "__init__.py").is_file()
