"""One place names a kind: the task registry. No module of ``src/gkl`` outside ``gkl/tasks/`` spells a
registered task's kind or CLI verb as a string (an AST scan of every string constant but docstrings).

A string equal to a kind name counts, and so does a kind quoted inside a message (``"kind 'ssl' ..."``).
Where such a string means something else (the config section ``train:``, a dataset split called
"train"), :data:`EXCEPTIONS` names the file and the string with the reason; the list only shrinks
(an entry that no longer matches fails :func:`test_every_exception_is_still_needed`).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from gkl.tasks import list_tasks

SRC = Path(__file__).resolve().parents[1] / "src" / "gkl"

_SECTION_TRAIN = "the config section `train:` (TrainSettings), not the kind"
_SPLIT_TRAIN = "the name of a dataset's training split (folder/file/key), not the kind"
#: (file under src/gkl, string) -> why it is not a kind there
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("settings/train.py", "train"): "owner of TrainSettings' value errors (`train.epochs: expected ...`): "
    + _SECTION_TRAIN,
    ("config.py", "train"): "the common key `train:` (its select defaults, its place in config.yaml): "
    + _SECTION_TRAIN,
    ("engine/resume.py", "train"): "resume compares the `train` settings: " + _SECTION_TRAIN,
    ("study/runs.py", "train"): "`train.seed`, `train.device` ... of the recorded config: " + _SECTION_TRAIN,
    ("engine/trainer.py", "train"): "the `train` statistics of an epoch (the training split's loss and accuracy) "
    "in the metrics record, not the kind",
    ("engine/logging.py", "train"): "the `train` statistics of an epoch in metrics.jsonl/summary.json (the training "
    "split's loss and accuracy), not the kind",
    ("doctor/checks.py", "train"): "the `train` statistics (the loss) of a run's summary, not the kind",
    ("data/cifar.py", "train"): _SPLIT_TRAIN,
    ("data/imagenet.py", "train"): _SPLIT_TRAIN,
    ("data/imagenet_lt.py", "train"): _SPLIT_TRAIN,
    ("data/segmentation/folders.py", "train"): _SPLIT_TRAIN + " (and the Cityscapes/VOC class 'train')",
    ("settings/ssl.py", "ssl"): "owner of SSLSettings' value errors (`ssl.p_cutoff: ...`): the config section `ssl:`",
    ("settings/distill.py", "distill"): "owner of the distill settings' errors: the config section `distill:`",
    ("settings/clip.py", "clip_distill"): "owner of ClipDistillSettings' errors: the config section `clip_distill:`",
    ("settings/clip.py", "train"): "the key `clip_data.train` (the training pairs' file), not the kind",
    ("settings/segmentation.py", "segmentation"): "owner of SegmentationSettings' errors: the config "
    "section `segmentation:`",
    ("models/registry.py", "segmentation"): "the input kind of segmentation models (dense labels), not the task",
    ("models/segmentation.py", "segmentation"): "input_kind= of the registered segmentation models",
    ("data/registry.py", "segmentation"): "the input kind of segmentation datasets",
    ("data/segmentation/folders.py", "segmentation"): "DatasetInfo.input_kind of the folder datasets",
    ("data/segmentation/digit_scenes.py", "segmentation"): "DatasetInfo.input_kind of digit_scenes",
}


def task_names() -> set[str]:
    """Every registered kind and CLI verb."""
    return {name for task in list_tasks() for name in (task.name, task.command)}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def kind_strings(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every string constant of ``source`` that is a name of ``names`` or quotes one."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    quoted = re.compile(r"['\"`](" + "|".join(map(re.escape, sorted(names))) + r")['\"`]")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            if node.value in names:
                found.append((node.lineno, node.value))
            else:
                found.extend((node.lineno, m.group(1)) for m in quoted.finditer(node.value))
    return sorted(found)


def scan() -> dict[tuple[str, str], list[int]]:
    """``{(file, name): [lines]}`` for the modules outside gkl/tasks/."""
    names = task_names()
    hits: dict[tuple[str, str], list[int]] = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("tasks/"):
            continue
        for line, name in kind_strings(path.read_text(encoding="utf-8"), names):
            hits.setdefault((rel, name), []).append(line)
    return hits


def test_the_registry_has_the_shipped_kinds() -> None:
    names = task_names()
    assert {"train", "distill", "adv_train", "ssl", "segmentation", "clip_train", "clip_distill"} <= names
    assert {"adv-train", "ssl-train", "seg-train", "clip-train", "clip-distill"} <= names


def test_no_module_outside_the_tasks_names_a_kind() -> None:
    hits = scan()
    new = {key: lines for key, lines in hits.items() if key not in EXCEPTIONS}
    assert not new, "a kind is named outside gkl.tasks (ask the registry instead):\n" + "\n".join(
        f"src/gkl/{rel}:{lines} {name!r}" for (rel, name), lines in sorted(new.items())
    )


def test_every_exception_is_still_needed() -> None:
    stale = set(EXCEPTIONS) - set(scan())
    assert not stale, f"no longer found, remove from EXCEPTIONS: {sorted(stale)}"


def test_the_scan_finds_a_kind_comparison_and_a_quoted_kind() -> None:
    names = task_names()
    source = (
        '"""Module docstring naming kind \'distill\' is fine."""\n'
        "def f(cfg):\n"
        '    if cfg.kind == "clip_distill":\n'
        "        raise ValueError(f\"use gkl {cfg.x}: kind 'ssl' only\")\n"
        '    return {"seg-train": 1}\n'
    )
    assert kind_strings(source, names) == [(3, "clip_distill"), (4, "ssl"), (5, "seg-train")]
