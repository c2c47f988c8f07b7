"""The package layering of ARCHITECTURE.md holds: no import cycle between tuneforge's packages.

Every ``import tuneforge.x`` / ``from tuneforge.x import ...`` in the source, including imports
inside functions (the CLI imports lazily), is an arrow from the importing package to package x.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tuneforge"


def _package(path: Path) -> str:
    """``cli`` for src/tuneforge/cli/x.py, ``atomic`` for src/tuneforge/atomic.py."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def import_graph() -> dict[str, set[str]]:
    """Package -> the other tuneforge packages it imports."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        source = _package(path)
        targets = graph.setdefault(source, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                if parts[0] == "tuneforge" and len(parts) > 1 and parts[1] != source:
                    targets.add(parts[1])
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of packages (first = last), or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target, [*path, target])):
                return cycle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return None


def test_no_import_cycle_between_packages():
    graph = import_graph()
    assert {"generation", "rag", "train", "plan", "serve"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_planner_never_imports_training():
    graph = import_graph()
    assert "train" not in graph["plan"]
    assert {"train", "serve", "evaluate", "cli"}.isdisjoint(graph["data"])


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
