"""The package's layering: no import cycle between modules, and imports point one way only.

Every ``import`` in ``src/sst`` is read from the source (including imports inside functions, which
would otherwise hide a cycle). Units (top-level modules or subpackages) are ranked; a module may
import only from its own unit or from a unit of a lower rank (see ../shared/DESIGN.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. Units of one rank never import each other.
LAYERS: list[set[str]] = [
    {"errors"},  # the error types
    {"schema", "atomic"},  # plain Python
    {"shards"},  # sharded (FSDP2) tensors seen whole; torch only
    {"registry", "spectral", "hyperbolic", "optim", "devices"},  # torch-only maths, registries, devices
    {"methods", "models", "data"},  # methods know spectral/optim; models know hyperbolic
    {"tasks"},  # a task = data + model + objective
    {"config", "checkpoint", "sizing"},  # run configs (read the registries), checkpoint files, memory estimates
    {"build"},  # config -> task, model, method
    {"train", "inference"},  # the loop wires everything; inference never imports training
    {"integrations"},  # bridges to transformers.Trainer, PEFT-style files, lm-evaluation-harness
    {"cli"},  # parses and calls
    {"__init__", "__main__"},  # the public API
]
RANK = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in (SRC / "sst").rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The sst modules that ``path`` imports anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "sst"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sst":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return {m for m in found if m in modules}


def unit_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def test_every_unit_has_a_rank(graph):
    assert {unit_of(m) for m in graph} <= set(RANK), sorted({unit_of(m) for m in graph} - set(RANK))


def wrong_way(graph: dict[str, set[str]]) -> list[str]:
    """Edges from a unit to one of the same or a higher rank (the package root may import anything)."""
    wrong = []
    for module, targets in graph.items():
        for target in targets:
            a, b = unit_of(module), unit_of(target)
            if module != "sst" and a != b and RANK[b] >= RANK[a]:
                wrong.append(f"{module} -> {target}")
    return sorted(wrong)


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """One description per back edge found by a depth-first search (empty: the graph is acyclic)."""
    done: set[str] = set()
    found = []

    def visit(path: list[str]) -> None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt in path:
                found.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(path + [nxt])
        done.add(path[-1])

    for module in sorted(graph):
        if module not in done:
            visit([module])
    return found


def test_imports_point_downwards(graph):
    assert not wrong_way(graph), "wrong-way imports: " + ", ".join(wrong_way(graph))


def test_no_import_cycles(graph):
    assert not cycles(graph), "import cycles: " + "; ".join(cycles(graph))


def test_the_checker_catches_what_it_should(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from sst.methods import sst\n    import sst.train.loop\n")
    assert imports_of(source, all_modules()) == {"sst.methods.sst", "sst.train.loop"}
    assert wrong_way({"sst.spectral.linear": {"sst.methods.sst"}}) == ["sst.spectral.linear -> sst.methods.sst"]
    assert wrong_way({"sst.train.loop": {"sst.inference.merge"}})  # same rank, other unit
    assert not wrong_way({"sst.methods.sst": {"sst.spectral.linear", "sst.methods.base"}})
    assert cycles({"sst.a": {"sst.b"}, "sst.b": {"sst.c"}, "sst.c": {"sst.a"}}) == ["sst.a -> sst.b -> sst.c -> sst.a"]
    assert not cycles({"sst.a": {"sst.b", "sst.c"}, "sst.b": {"sst.c"}, "sst.c": set()})
