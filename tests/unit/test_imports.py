"""The shape of the code: no import cycles, recipes are leaves, no branching on the task name.

Every import counts, also those inside functions (a lazy import is still a dependency); only
``if TYPE_CHECKING:`` blocks are left out. A package's ``__init__`` is a module of its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "greentune"
RECIPES = "greentune.train.recipes"


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The greentune module an import names (``from a.b import c`` may name module a.b.c)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    package = module.split(".")
                    if path.name != "__init__.py":
                        package = package[:-1]
                    package = package[: len(package) - child.level + 1]
                    base = ".".join([*package, base] if base else package)
                # ``from a import b`` depends on module a.b when b is one, else on a
                names = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                    for a in child.names
                ]
            for name in names:
                target = _resolve(name) if name.startswith("greentune") else None
                if target and target != module:
                    found.add(target)
            visit(child)

    visit(tree)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                connect(w)
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

    for v in sorted(GRAPH):
        if v not in index:
            connect(v)
    return out


def test_the_walker_sees_the_whole_package():
    assert len(MODULES) > 80
    assert "greentune.tasks.forecast.predictor" in GRAPH["greentune.tasks.forecast"]
    assert "greentune.train.recipes.forecast" in GRAPH["greentune.train.recipes"]
    # lazy imports count: the CLI's commands import the recipes' runner inside a function
    assert "greentune.train.run" in GRAPH["greentune.cli.commands"]


def test_no_import_cycles():
    assert _cycles() == []


def test_the_walker_finds_a_cycle(monkeypatch):
    monkeypatch.setitem(GRAPH, "greentune.errors", {"greentune.registry"})
    assert ["greentune.errors", "greentune.registry"] in _cycles()


def test_recipes_are_leaves():
    """Nothing outside greentune.train imports a recipe (torchtune's rule)."""
    offenders = {
        m: sorted(t for t in targets if t.startswith(RECIPES))
        for m, targets in GRAPH.items()
        if not m.startswith("greentune.train")
    }
    assert {m: t for m, t in offenders.items() if t} == {}


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        # energy/ builds on the leaves only: errors, registry, config, atomic I/O, the fault
        # points, the run lock and the one rank helper (DESIGN.md; distributed.ranks imports
        # nothing of greentune)
        (
            "greentune.energy",
            {
                "greentune.errors",
                "greentune.registry",
                "greentune.config",
                "greentune.io",
                "greentune.faults",
                "greentune.runlock",
                "greentune.procs",
                "greentune.distributed.ranks",
            },
        ),
        ("greentune.registry", {"greentune.errors"}),
        ("greentune.typed", {"greentune.errors"}),
        ("greentune.config", {"greentune.errors", "greentune.typed"}),
        ("greentune.results", set()),
        ("greentune.io", {"greentune.errors", "greentune.faults"}),
        ("greentune.faults", set()),
        ("greentune.procs", set()),
        ("greentune.runlock", {"greentune.errors"}),
        ("greentune.distributed.ranks", set()),
    ],
)
def test_foundations_import_only_foundations(package, allowed):
    for module, targets in GRAPH.items():
        if module == package or module.startswith(package + "."):
            outside = {t for t in targets if not t.startswith(package)} - allowed
            assert outside == set(), module


def test_only_tasks_and_recipes_name_a_task():
    """No branch on 'forecast' / 'classify' outside the task folders and their recipes: a new
    task is a folder and a recipe, not an edit of every command."""
    task_names = {"forecast", "classify"}
    offenders = []
    for module, path in MODULES.items():
        if module.startswith(("greentune.tasks", RECIPES)):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                values = [node.left, *node.comparators]
                if any(isinstance(v, ast.Constant) and v.value in task_names for v in values):
                    offenders.append(f"{module}:{node.lineno}")
    assert offenders == []
