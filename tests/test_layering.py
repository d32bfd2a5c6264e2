"""The package's layers: every module imports only from its own stage or a lower one, and no
module imports itself back through others.

Every import counts, including function-local and ``TYPE_CHECKING`` ones: a local import hides
a dependency from the import-time graph, not from the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import clipsam

SRC = Path(clipsam.__file__).resolve().parent

LAYERS = ("errors", "config", "io", "models", "postprocess", "proposals", "saliency", "pipelines",
          "eval", "train", "apps")
"""Low to high. ``postprocess`` (mask and box geometry on arrays) sits below the stages that use
it; ``eval`` (metrics, data sets, oracle, harness) below ``train``, which scores its validation
and calibration with the one Dice of :mod:`clipsam.eval.metrics`. The package root and ``api``
are app-level modules, in the ``apps`` layer."""
APP_LEVEL = {"clipsam", "clipsam.api"}


def module_name(path: Path) -> str:
    parts = ("clipsam", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def layer(module: str) -> str:
    """The layer of a clipsam module (``clipsam.models.sam.vit`` -> ``models``)."""
    if module in APP_LEVEL:
        return "apps"
    return module.split(".")[1]


def imported(module: str, source: str, is_package: bool, known: set[str]) -> list[tuple[str, int]]:
    """(clipsam module, line) for every import in ``source``; ``from a import b`` names the
    submodule ``a.b`` when there is one."""
    found = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in known else base, node.lineno))
    return [(name, line) for name, line in found if name == "clipsam"
            or name.startswith("clipsam.")]


def import_graph() -> dict[str, list[tuple[str, int]]]:
    modules = all_modules()
    known = set(modules)
    return {name: imported(name, path.read_text(encoding="utf-8"), path.name == "__init__.py",
                           known)
            for name, path in modules.items()}


def upward(module: str, imports: list[tuple[str, int]]) -> list[str]:
    """The imports of ``module`` that reach a higher layer."""
    own = LAYERS.index(layer(module))
    return [f"{module}:{line} imports {target} ({layer(module)} < {layer(target)})"
            for target, line in imports if LAYERS.index(layer(target)) > own]


def cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    edges = {m: sorted({t for t, _ in targets if t in graph and t != m})
             for m, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_every_module_belongs_to_a_layer():
    unknown = sorted(m for m in all_modules() if layer(m) not in LAYERS)
    assert not unknown, f"add these stages to LAYERS: {unknown}"


def test_no_module_imports_a_higher_layer():
    violations = [v for module, imports in import_graph().items() for v in upward(module, imports)]
    assert not violations, "\n".join(violations)


def test_no_import_cycles():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize(("source", "count"), [
    ("from clipsam.train.weak import train_weak", 1),
    ("def run():\n    from clipsam.apps import cli\n", 1),
    ("import clipsam.eval.metrics", 1),
    ("from ..pipelines import registry", 1),
    ("from clipsam.io.atomic import write_atomic\nfrom . import segmenter", 0),
])
def test_the_checker_sees_upward_imports_wherever_they_are(source, count):
    imports = imported("clipsam.models.weak_net", source, False, set(all_modules()))
    assert len(imports) == source.count("import")
    assert len(upward("clipsam.models.weak_net", imports)) == count


def test_the_checker_finds_a_cycle():
    graph = {"clipsam.a": [("clipsam.b", 1)], "clipsam.b": [("clipsam.c", 3)],
             "clipsam.c": [("clipsam.a", 2)], "clipsam.d": [("clipsam.a", 1)]}
    assert cycles(graph) == [["clipsam.a", "clipsam.b", "clipsam.c"]]
