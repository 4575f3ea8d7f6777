"""The layout of ``workers.landscape`` shows its pipelines, and its imports point down.

Layers (bench/README.md, "Layout"): ``geometry`` < ``convex`` < ``census``, ``training``.
A module may import from its own subpackage or from a lower layer, never sideways or up,
and no chain of imports (module-level or inside functions) comes back to where it started.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "workers" / "landscape"
LAYER = {"geometry": 0, "convex": 1, "census": 2, "training": 2}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The modules of workers.landscape that ``path`` imports, anywhere in its body."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import mod`` imports the submodule mod when there is one
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 else None


def test_every_module_sits_in_a_layer():
    loose = [m for m in _graph() if m != "workers.landscape" and _layer(m) not in LAYER]
    assert loose == [], f"modules outside geometry/convex/census/training: {loose}"


def test_imports_point_down_or_within():
    wrong = []
    for module, targets in _graph().items():
        here = _layer(module)
        for target in targets:
            there = _layer(target)
            if here is None or there is None or here == there:
                continue
            if LAYER[there] >= LAYER[here]:
                wrong.append(f"{module} -> {target}")
    assert wrong == [], "imports sideways or up:\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph = _graph()
    # a package's __init__ (its facade) imports its own modules; a module importing a sibling
    # does not run through the facade, so facade edges are left out of the module graph
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_cycle_and_a_sideways_import(tmp_path, monkeypatch):
    """The checks above can fail: a planted cycle and a planted sideways import are caught."""
    fake = tmp_path / "workers" / "landscape"
    for pkg in ("census", "training"):
        (fake / pkg).mkdir(parents=True)
        (fake / pkg / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "census" / "a.py").write_text("from . import b\n")
    (fake / "census" / "b.py").write_text("def f():\n    from .a import x\n")
    (fake / "training" / "c.py").write_text("from ..census import a\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    try:
        test_no_import_cycles()
    except AssertionError as error:
        assert "census.a -> workers.landscape.census.b" in str(error)
    else:
        raise AssertionError("the planted cycle was not found")
    try:
        test_imports_point_down_or_within()
    except AssertionError as error:
        assert "training.c -> workers.landscape.census" in str(error)
    else:
        raise AssertionError("the planted sideways import was not found")
