"""DESIGN.md's one non-negotiable rule: imports only point down the layers; and no import cycle between
the modules of one layer.

Both checks read the source with `ast` (nothing is imported) and take the package root as a parameter,
so the tests that prove the checks fail plant their offending files in a copy of `src/toonbooth` under
`tmp_path`, never in `src/`.

What counts for a cycle: the imports a module runs when it is imported, i.e. the statements of the
module body (also inside module-level `if` / `try` / `with` blocks and class bodies), but not those in
functions (a lazy import inside a function is the usual way to break a cycle) nor those under
`if TYPE_CHECKING:` (never run). `from pkg import name` is an edge to the submodule `pkg.name` when
there is one, otherwise to `pkg`; the implicit import of parent packages is not an edge (a package's
`__init__` importing its own submodules is not a cycle).
"""

from __future__ import annotations

import ast
import functools
import shutil
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


def _module_name(path: Path, pkg: Path) -> list[str]:
    """`pkg/core/errors.py` -> [toonbooth, core, errors]; a package's `__init__.py` -> the package."""
    parts = list(path.relative_to(pkg.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_nodes(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements run when the module is imported: into `if` / `try` / `with` / class bodies, not
    into functions, and not into `if TYPE_CHECKING:` (its `else` runs, so it is kept)."""
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                out += _top_level_nodes(node.body)
            out += _top_level_nodes(node.orelse)
        elif isinstance(node, ast.Try | ast.TryStar):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                out += _top_level_nodes(block)
        elif isinstance(node, ast.With | ast.ClassDef):
            out += _top_level_nodes(node.body)
    return out


@functools.cache
def _parse(text: str) -> ast.Module:
    """Parsed once per distinct source text (the copies under tmp_path reuse the trees of src/)."""
    return ast.parse(text)


def _imports(path: Path, pkg: Path, top_level: bool = False) -> list[tuple[int, list[str]]]:
    """(line, dotted target as parts) of each import in `path`. `from X import a` gives X and X.a (the
    latter may be a name, not a module: callers look it up). `top_level`: only those run at import."""
    tree = _parse(path.read_text(encoding="utf-8"))
    rel = list(path.relative_to(pkg.parent).with_suffix("").parts)
    pkg_parts = rel[:-1]  # the package the module lives in (for __init__.py: the package itself)
    nodes = _top_level_nodes(tree.body) if top_level else list(ast.walk(tree))
    out: list[tuple[int, list[str]]] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append((node.lineno, alias.name.split(".")))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                mod = base + (node.module.split(".") if node.module else [])
            else:
                mod = (node.module or "").split(".")
            if node.module:
                out.append((node.lineno, mod))
            out += [(node.lineno, mod + [alias.name]) for alias in node.names if alias.name != "*"]
    return out


def violations(pkg: Path) -> list[str]:
    """Imports (anywhere in a module, lazy ones too) that point up the layers, in the package `pkg`."""
    bad = []
    for path in sorted(pkg.rglob("*.py")):
        parts = path.relative_to(pkg.parent).parts
        src_layer = parts[1] if len(parts) > 2 else None
        if src_layer not in RANK:
            continue
        for lineno, target in _imports(path, pkg):
            dst = _layer_of_module(target)
            if dst is None or dst == src_layer:
                continue
            if (src_layer, dst) in SIBLINGS_ALLOWED:
                continue
            if RANK[dst] > RANK[src_layer] or (RANK[src_layer] >= RANK["api"] and RANK[dst] >= RANK["api"]):
                bad.append(
                    f"{path.relative_to(pkg.parent)}:{lineno} ({src_layer}) imports {'.'.join(target)} ({dst})"
                )
    return sorted(set(bad))


def import_graph(pkg: Path) -> dict[str, dict[str, int]]:
    """module -> {imported module of the same layer: line}, from the imports run at import time."""
    modules = {".".join(_module_name(p, pkg)): p for p in sorted(pkg.rglob("*.py"))}
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        layer = _layer_of_module(name.split("."))
        edges = graph.setdefault(name, {})
        if layer is None:
            continue
        for lineno, target in _imports(path, pkg, top_level=True):
            dotted = ".".join(target)
            if dotted not in modules or dotted == name or _layer_of_module(target) != layer:
                continue
            edges.setdefault(dotted, lineno)
    return graph


def import_cycles(pkg: Path) -> list[str]:
    """Each cycle of module-level imports within one layer, as `a:LINE -> b:LINE -> a` (Tarjan's strongly
    connected components; one cycle shown per component)."""
    graph = import_graph(pkg)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)

    out = []
    for comp in sorted(components):
        path = _shortest_cycle(graph, comp[0], set(comp))
        shown = [
            f"{a.removeprefix('toonbooth.')}:{graph[a][b]}" for a, b in zip(path, path[1:], strict=False)
        ]
        out.append(" -> ".join([*shown, path[-1].removeprefix("toonbooth.")]))
    return out


def _shortest_cycle(graph: dict[str, dict[str, int]], start: str, members: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one strongly connected component (breadth first)."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w in members and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{start} is on no cycle")


def engine_cross_imports(pkg: Path) -> list[str]:
    bad = []
    for path in sorted((pkg / "engines").glob("*.py")):
        for lineno, target in _imports(path, pkg):
            if (
                len(target) >= 3
                and target[:2] == ["toonbooth", "engines"]
                and target[2] not in ("base", path.stem)
            ):
                bad.append(f"engines/{path.name}:{lineno} imports engine {'.'.join(target)}")
    return sorted(set(bad))


@pytest.fixture()
def pkg_copy(tmp_path) -> Path:
    """A copy of src/toonbooth to plant offending files in."""
    dst = tmp_path / "src" / "toonbooth"
    shutil.copytree(PKG, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


def test_imports_point_down():
    assert violations(PKG) == []


def test_no_import_cycle_within_a_layer():
    assert import_cycles(PKG) == []


def test_engines_do_not_import_each_other():
    assert engine_cross_imports(PKG) == []


def test_core_is_torch_free():
    for path in (PKG / "core").rglob("*.py"):
        for _lineno, target in _imports(path, PKG):
            assert target[0] not in ("torch", "diffusers", "transformers", "peft"), (
                f"{path.name} imports {target}"
            )


def test_checker_catches_an_upward_import(pkg_copy):
    assert violations(pkg_copy) == violations(PKG) == []
    (pkg_copy / "core" / "_layer_probe.py").write_text("from ..engines import base\n")
    (pkg_copy / "vision" / "_layer_probe.py").write_text("def f():\n    from toonbooth import nets\n")
    assert violations(pkg_copy) == [
        "toonbooth/core/_layer_probe.py:1 (core) imports toonbooth.engines (engines)",
        "toonbooth/core/_layer_probe.py:1 (core) imports toonbooth.engines.base (engines)",
        "toonbooth/vision/_layer_probe.py:2 (vision) imports toonbooth.nets (nets)",  # lazy ones count here
    ]
    assert not (PKG / "core" / "_layer_probe.py").exists()


def test_cycle_checker_catches_a_planted_cycle(pkg_copy):
    vision = pkg_copy / "vision"
    # a three-module cycle: `from . import x`, a relative `from .y import`, an absolute import
    (vision / "_cyc_a.py").write_text("from . import _cyc_b\n")
    (vision / "_cyc_b.py").write_text('"""doc"""\n\nfrom ._cyc_c import X\n')
    (vision / "_cyc_c.py").write_text("import toonbooth.vision._cyc_a\n\nX = 1\n")
    # not cycles: a lazy import in a function, one under TYPE_CHECKING, and across two layers
    (vision / "_lazy_a.py").write_text("from . import _lazy_b\n")
    (vision / "_lazy_b.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from . import _lazy_a\n\n\n"
        "def f():\n    from ._lazy_a import g\n"
    )
    (pkg_copy / "core" / "_up.py").write_text("from ..vision import _cross\n")
    (vision / "_cross.py").write_text("from ..core import _up\n")
    assert import_cycles(pkg_copy) == [
        "vision._cyc_a:1 -> vision._cyc_b:3 -> vision._cyc_c:1 -> vision._cyc_a"
    ]
    # the same pair of modules inside one layer, with the import under `else:` of TYPE_CHECKING: a cycle
    (vision / "_lazy_b.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    pass\nelse:\n    from . import _lazy_a\n"
    )
    assert "vision._lazy_a:1 -> vision._lazy_b:6 -> vision._lazy_a" in import_cycles(pkg_copy)


@pytest.mark.parametrize("layer", ["core", "models", "vision", "engines", "runtime", "cli"])
def test_layer_packages_exist(layer):
    assert (PKG / layer / "__init__.py").is_file()
