"""The package's import graph: no circles, and no arrow from a lower layer to a higher one.

Every import of ``mapspec/`` (module level and inside functions) is read from the source's AST.
``LAYERS`` lists the layers bottom first; a module belongs to the layer of the longest prefix that
names it.  A module may import its own layer or any layer below, never one above; and no module
may reach itself again through imports (a circle), whatever the layers.

Run ``python tests/test_layers.py`` for the whole report.
"""

from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mapspec"

# Bottom first.  Each entry: module name prefixes (without "mapspec.").
LAYERS = [
    # ground floor: errors, the lazy-registry helper, files and paths, dtype names, packaged resources
    ("errors", "registry", "files", "durable", "paths", "dtypes", "resources"),
    # numbers: exact arithmetic, kernels
    ("numeric", "kernels"),
    # what mapspec knows about each framework (Caffe, MXNet, GGUF), their reference executors and the
    # graph conversion between them: one package, no file formats, no spec
    ("frameworks",),
    # transforms and what is computed from their table
    ("transforms", "rawblocks", "coverage", "stacking"),
    # checkpoint formats
    ("formats",),
    # models for verify and the examples
    ("models",),
    # the spec language and its loader (YAML with places, expressions, conditions, patterns, the schema,
    # template builtins, the family picker; checks names against the format, transform, runner and model
    # tables), and the command-line value syntax
    ("language", "options"),
    # the engine (engine.steps, what a plan is made of, is imported by outtype, which engine.execute calls)
    # and what plans or writes with it
    ("engine", "companions", "parallel", "guard", "progress", "invert", "inverse_tables", "catalog"),
    # verification (runs both sides, compares)
    ("verify",),
    # tools on top: spec drafting, examples
    ("draft", "example"),
    # the command line and the public API
    ("cli", "docgen", "__main__", ""),
]


@functools.lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(mods: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(importer, imported, line) for every import of one mapspec module by another."""
    return list(_imports(tuple(mods.items())))


@functools.lru_cache(maxsize=None)
def _imports(items) -> tuple:
    mods = dict(items)
    edges = []
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.append((name, target, node.lineno))
    return tuple(edges)


def layer_of(module: str) -> int:
    rel = module[len("mapspec."):] if module.startswith("mapspec.") else ""
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if rel == p or rel.startswith(p + ".") or (p == "" and rel == ""):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    if best is None:
        raise AssertionError(f"mapspec.{rel} is in no layer: add it to LAYERS in {__file__}")
    return best[0]


def upward(edges) -> list[str]:
    return [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)}) at line {n}"
            for a, b, n in edges if layer_of(b) > layer_of(a)]


def circles(edges) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    graph: dict[str, set] = {}
    for a, b, _ in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


# Circles not yet taken apart: none may be added; remove an entry when its circle is gone.
KNOWN_CIRCLES: list = []


def test_no_import_circles():
    assert [c for c in circles(imports(modules())) if c not in KNOWN_CIRCLES] == []


def test_no_upward_imports():
    assert upward(imports(modules())) == []


def test_the_checker_sees_a_circle_and_an_upward_arrow():
    """The checks themselves: a made-up circle and a made-up upward arrow are found."""
    edges = [("mapspec.numeric", "mapspec.engine", 1), ("mapspec.engine", "mapspec.numeric", 2)]
    assert circles(edges) == [["mapspec.engine", "mapspec.numeric"]]
    assert upward(edges) == ["mapspec.numeric (layer 1) imports mapspec.engine (layer 7) at line 1"]


if __name__ == "__main__":
    found = imports(modules())
    print("\n".join(" <-> ".join(c) for c in circles(found)) or "no circles")
    print("\n".join(upward(found)) or "no upward imports")
    sys.exit(0)
