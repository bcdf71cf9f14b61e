"""The import rule of docs/architecture.md, checked on the source: every ``import gkl...`` is parsed (ast).

A package may import only packages on lower rows of the table (plus torch, the standard
library and third-party packages). Imports inside functions ("lazy" imports) are held to
the same rule, so they cannot hide a cycle; the sanctioned exceptions are the config
layer's name check against the model and dataset registries (upward, inside a function) and
the task builders' imports of the implementation below them (downward, inside a function, so
that reading a task's declaration, as the config does, stays cheap).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "gkl"

#: Layer of each top-level name under ``gkl`` (module or package).
LAYER_OF = {
    "utils": "utils",
    "losses": "losses",
    "settings": "settings",
    "metrics": "metrics",
    "models": "models",
    "data": "data",
    "attacks": "attacks",
    "objectives": "objectives",
    "engine": "engine",
    "config": "config",
    "config_schema": "config",
    "study": "study",
    "runner": "runner",
    "tasks": "tasks",
    "commands": "commands",
    "cli": "commands",
    "evaluate": "evaluate",  # evaluation of a run directory (its task's evaluation, robustness)
    "ssl": "task_losses",
    "clip": "task_losses",  # loss wrappers of an application (SSL consistency, CLIP)
    "lm": "task_losses",  # token-level LM distillation losses (token_loss, the fused linear loss)
    "integrations": "task_losses",  # other libraries' trainers around those losses (transformers.Trainer)
    "recipes": "config",  # recipe lookup by name (the `gkl recipes` command is gkl.commands.recipes)
    "doctor": "doctor",  # `gkl doctor`: short demo runs of every task with each GPU feature
}

#: What each layer may import (besides itself), as the table in docs/architecture.md says.
ALLOWED: dict[str, set[str]] = {
    "utils": set(),
    "losses": {"utils"},
    "settings": {"utils"},
    "task_losses": {"utils", "losses"},
    "metrics": {"utils", "losses", "settings"},
    "models": {"utils", "settings"},
    "data": {"utils", "settings"},
    "attacks": {"utils", "losses", "settings"},
    "objectives": {"utils", "losses", "settings", "metrics", "attacks", "task_losses"},
    "engine": {"utils", "losses", "settings", "metrics", "objectives.base"},
    # the tasks: one declaration per kind (read by the config) and its builder (above the engine)
    "tasks": {
        "utils",
        "losses",
        "task_losses",
        "settings",
        "metrics",
        "models",
        "data",
        "attacks",
        "objectives",
        "engine",
    },
    # the config reads the task registry (kinds, their sections and checks)
    "config": {"utils", "settings", "tasks"},
    # evaluation of a run directory: its config, its task's evaluation, the attacks
    "evaluate": {
        "utils",
        "losses",
        "task_losses",
        "settings",
        "metrics",
        "models",
        "data",
        "attacks",
        "objectives",
        "engine",
        "tasks",
        "config",
    },
    # studies: study files, launchers, summaries, plots and analyses of finished runs
    "study": {
        "utils",
        "losses",
        "task_losses",
        "settings",
        "metrics",
        "models",
        "data",
        "attacks",
        "objectives",
        "engine",
        "tasks",
        "config",
    },
    "runner": {
        "utils",
        "losses",
        "task_losses",
        "settings",
        "metrics",
        "models",
        "data",
        "attacks",
        "objectives",
        "engine",
        "config",
        "tasks",
    },
    # gkl doctor: trains the demo runs (runner) and attacks one (evaluate)
    "doctor": {
        "utils",
        "losses",
        "task_losses",
        "settings",
        "metrics",
        "models",
        "data",
        "attacks",
        "objectives",
        "engine",
        "config",
        "tasks",
        "runner",
        "evaluate",
    },
    "commands": set(LAYER_OF.values()),
}
#: Imports allowed only inside a function: the config layer checks names against the registries.
LAZY_ONLY: dict[str, set[str]] = {"config": {"models", "data"}}
#: Function-level imports of lower layers that are sanctioned: a task module is imported whenever a
#: config is read, so its builder and evaluation import the implementation when they run.
LAZY_DOWNWARD: dict[str, set[str]] = {
    "tasks": ALLOWED["tasks"],
    "study": ALLOWED["study"],
    "evaluate": ALLOWED["evaluate"],
    "doctor": ALLOWED["doctor"],  # gkl doctor imports the runs' machinery only when it runs them
}

#: Violations that exist on this branch in files owned by other work, with who removes them.
#: The test fails when an entry is no longer true, so the list only shrinks.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, e.g. gkl.engine.trainer
    target: str  # imported module, e.g. gkl.objectives.base
    lazy: bool  # inside a function
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def _edges(path: Path) -> list[Edge]:
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    edges: list[Edge] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                edges.extend(
                    Edge(module, a.name, lazy, child.lineno) for a in child.names if a.name.split(".")[0] == "gkl"
                )
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(child, module, is_package)
                if target.split(".")[0] == "gkl":
                    for alias in child.names:  # `from gkl.objectives import base` imports a module
                        sub = f"{target}.{alias.name}"
                        edges.append(Edge(module, sub if _is_module(sub) else target, lazy, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return edges


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return LAYER_OF.get(parts[1]) if len(parts) > 1 else None


def _allowed(edge: Edge) -> bool:
    source, target = _layer(edge.source), _layer(edge.target)
    if target is None or source is None or source == target:
        return True
    allowed = ALLOWED[source]
    if target in allowed:
        return True
    if edge.target in ("gkl.objectives.base", "gkl.objectives") and "objectives.base" in allowed:
        return True
    return edge.lazy and target in LAZY_ONLY.get(source, set())


def _all_edges() -> list[Edge]:
    return [edge for path in sorted(SRC.rglob("*.py")) for edge in _edges(path)]


def _violations() -> dict[tuple[str, str], Edge]:
    return {(e.source, e.target): e for e in _all_edges() if not _allowed(e)}


def test_every_module_belongs_to_a_layer() -> None:
    names = {p.name.removesuffix(".py") for p in SRC.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    names.discard("__init__")
    assert names <= set(LAYER_OF), f"add {sorted(names - set(LAYER_OF))} to the table in docs/architecture.md"


def test_imports_follow_the_layer_table() -> None:
    new = {key: edge for key, edge in _violations().items() if key not in KNOWN_VIOLATIONS}
    message = "\n".join(
        f"{e.source} imports {e.target} (line {e.line}{', inside a function' if e.lazy else ''}): "
        f"{_layer(e.source)} may import {sorted(ALLOWED[_layer(e.source)])}"
        for e in new.values()
    )
    assert not new, "import rule of docs/architecture.md broken:\n" + message


def test_known_violations_are_still_real() -> None:
    stale = set(KNOWN_VIOLATIONS) - set(_violations())
    assert not stale, f"fixed: remove {sorted(stale)} from KNOWN_VIOLATIONS"


def test_no_cross_package_lazy_import_below_the_commands() -> None:
    """Function-level imports of another gkl package hide cycles; only the sanctioned ones remain."""
    lazy = [
        e
        for e in _all_edges()
        if e.lazy
        and _layer(e.source) != "commands"
        and _layer(e.target) not in (None, _layer(e.source))
        and _layer(e.target) not in LAZY_ONLY.get(_layer(e.source), set())
        and _layer(e.target) not in LAZY_DOWNWARD.get(_layer(e.source), set())
    ]
    assert not lazy, "\n".join(f"{e.source}:{e.line} imports {e.target} inside a function" for e in lazy)


def test_losses_import_only_torch_and_utils() -> None:
    for path in sorted((SRC / "losses").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= {"torch", "gkl"} | set(sys.stdlib_module_names), (path.name, roots)
        for edge in _edges(path):
            assert _layer(edge.target) in ("losses", "utils"), (path.name, edge)


@pytest.mark.parametrize(
    "source, target, lazy, ok",
    [
        ("gkl.engine.trainer", "gkl.objectives.base", False, True),
        ("gkl.engine.trainer", "gkl.objectives.distill", False, False),
        ("gkl.config", "gkl.models", True, True),
        ("gkl.config", "gkl.models", False, False),
        ("gkl.attacks.pgd", "gkl.objectives.base", False, False),
        ("gkl.settings.distill", "gkl.losses", False, False),
        ("gkl.cli", "gkl.runner", False, True),
        ("gkl.config", "gkl.tasks", False, True),
        ("gkl.tasks.segmentation", "gkl.runner", True, False),
        ("gkl.tasks.segmentation", "gkl.config", False, False),
        ("gkl.tasks.distill", "gkl.objectives.distill", True, True),
        ("gkl.runner", "gkl.tasks", False, True),
    ],
)
def test_the_rule_itself(source: str, target: str, lazy: bool, ok: bool) -> None:
    assert _allowed(Edge(source, target, lazy, 1)) is ok
