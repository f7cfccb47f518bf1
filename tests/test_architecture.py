"""The package's layout keeps its promises: no import cycles (lazy imports inside functions count too),
and no module outside a method's own file decides anything by a method's name."""

from __future__ import annotations

import ast
from pathlib import Path

import deepclust
from deepclust.methods import METHODS

PACKAGE = Path(deepclust.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its body (a package means its __init__;
    importing ``a.b.c`` runs ``a``, ``a.b`` and ``a.b.c``)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name.split(".") if is_package else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here[:len(here) - node.level + 1] if node.level else []
                root = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{root}.{a.name}" if f"{root}.{a.name}" in modules else root for a in node.names]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                edges |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules.keys()
        # A module's own ancestor packages are always initialised before it runs: not a dependency.
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        graph[name] = edges - ancestors
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    graph = _import_graph()
    assert "deepclust.pipeline.run" in graph and "deepclust.report.page" in graph
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_no_module_compares_method_names():
    """``method == "dec"`` or ``name in ("dec", "idec")`` outside the method's class is a trait in the
    wrong place: ask the class (``deepclust.traits``) instead."""
    names = set(METHODS)
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    values = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
                    hits = [v.value for v in values if isinstance(v, ast.Constant) and v.value in names]
                    if hits:
                        offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} compares with {hits}")
    assert offenders == []


def test_every_relative_import_names_a_module_of_the_package():
    """Lazy imports inside functions run only on some paths: a moved module must not break them."""
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    missing = []
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = here[:len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if target not in modules:
                    missing.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports {target}")
    assert missing == []
