"""The package's layers (docs/architecture.md): the core imports no experiment, and no import cycle
exists between modules or packages, counting the imports written inside functions."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "sail"

CORE = ("config", "io", "plotting", "objectives", "loop", "sft", "policies", "sampling", "optim", "spectral", "oracles", "data", "models", "train", "theory")
"""The core: what trains and certifies any policy."""
ABOVE_CORE = ("em", "tasks", "bench", "cli")
"""Experiments, benchmarks and the command line, which may import the core but not be imported by it."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ``sail`` modules that ``name`` imports anywhere in its file (top level or in functions)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(".") if node.level else node.module or ""
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        hits = [t for t in targets if t in modules and t != name]
        if hits:
            found.add(max(hits, key=len))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_belongs_to_a_layer():
    tops = {_top(name) for name in _modules()} - {""}
    assert tops <= set(CORE) | set(ABOVE_CORE), tops - set(CORE) - set(ABOVE_CORE)


def test_the_core_imports_no_experiment_benchmark_or_command_line():
    wrong = [
        f"{name} imports {target}"
        for name, targets in _graph().items()
        if _top(name) in CORE
        for target in targets
        if _top(target) in ABOVE_CORE
    ]
    assert not wrong, wrong


def test_no_import_cycle_between_modules():
    assert _cycles(_graph()) == []


def test_no_import_cycle_between_packages():
    packages: dict[str, set[str]] = {}
    for name, targets in _graph().items():
        packages.setdefault(_top(name), set()).update(_top(t) for t in targets if _top(t) != _top(name))
    assert _cycles(packages) == []


@pytest.mark.parametrize(
    "source,expected",
    [
        ("from sail.loop import sail_step", {"sail.loop"}),
        ("def f():\n    from sail import loop", {"sail.loop"}),
        ("from . import base", {"sail.sampling.base"}),
        ("from ..loop import SailConfig", {"sail.loop"}),
        ("import numpy", set()),
    ],
)
def test_the_import_reader_sees_deferred_and_relative_imports(tmp_path, source, expected):
    """Negative control of the scanner: imports inside functions and relative imports are counted."""
    path = tmp_path / "fast.py"
    path.write_text(source)
    modules = {"sail.loop": None, "sail.sampling.base": None, "sail.sampling.fast": None}
    assert _imports("sail.sampling.fast", path, modules) == expected


def test_the_cycle_finder_finds_a_cycle_through_three_modules():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
