"""Reading finished runs for a summary: run directories, their config and summary.json, their setting.

A run's *setting* is its resolved config without ``name``, ``out_dir``, ``train.seed`` and the
fields that do not change a result (device, paths, logging); a teacher checkpoint inside another
run directory counts by that run's setting, so a per-seed chain stays one setting.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gkl.utils.errors import InputError

__all__ = ["IGNORED_FIELDS", "RunRecord", "expand_run_dirs", "read_run", "run_weights", "setting_stem"]

#: config fields that never change a result; ignored when grouping runs into settings.
IGNORED_FIELDS = (
    ("name",),
    ("out_dir",),
    ("train", "seed"),
    ("train", "device"),
    ("train", "progress"),
    ("train", "log_every"),
    ("train", "eval_every"),
    ("train", "checkpoint_every"),
    ("data", "root"),
    ("data", "num_workers"),
    ("data", "download"),
)
_SEED_SUFFIX = re.compile(r"[_-]s(?:eed)?\d+$")


# ----------------------------------------------------------------------------- reading runs


@dataclass
class RunRecord:
    """One finished run: its directory, name, seed, setting key and summary.json."""

    run_dir: Path
    name: str
    seed: int
    key: str
    config: dict[str, Any]
    summary: dict[str, Any]


def setting_stem(name: str) -> str:
    """A run name without its seed suffix (``kd_t4_seed3`` -> ``kd_t4``; ``_s3``, ``-seed3`` too)."""
    return _SEED_SUFFIX.sub("", name) or name


def run_weights(config: Mapping[str, Any]) -> str:
    """The weights a run evaluates (its ``train.ema.evaluate``), what ``gkl evaluate`` uses by default."""
    ema = (config.get("train") or {}).get("ema") or {}
    return str(ema.get("evaluate", "raw"))


def expand_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories from ``paths``: a run directory (with config.yaml) as is, a directory
    holding run directories (e.g. a sweep's output) as its runs. Duplicates are dropped."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise InputError(f"{path}: no such run directory")
        if (path / "config.yaml").is_file():
            found.append(path)
            continue
        children = sorted(p.parent for p in path.glob("*/config.yaml"))
        if not children:
            children = sorted(p.parent for p in path.glob("*/*/config.yaml"))
        if not children:
            raise InputError(f"{path}: not a gkl run directory (no config.yaml) and holds none")
        found.extend(children)
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _pop(config: dict[str, Any], dotted: tuple[str, ...]) -> None:
    node: Any = config
    for part in dotted[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(dotted[-1], None)


def _setting_config(config: dict[str, Any]) -> dict[str, Any]:
    reduced = json.loads(json.dumps(config, default=str))
    for dotted in IGNORED_FIELDS:
        _pop(reduced, dotted)
    teacher = reduced.get("teacher")
    if isinstance(teacher, dict) and teacher.get("checkpoint"):
        ckpt = Path(str(teacher["checkpoint"]))
        parent = ckpt.parent.name
        if (ckpt.parent / "config.yaml").is_file() or setting_stem(parent) != parent:
            # a checkpoint of another run (or of one seed of a teacher): count it by the teacher's setting
            teacher["checkpoint"] = f"run:{setting_stem(ckpt.parent.name)}/{ckpt.name}"
    return reduced


def read_run(run_dir: Path) -> RunRecord | str:
    """The run's record, or the reason it is skipped (a string) when it has not finished."""
    config_path, summary_path = run_dir / "config.yaml", run_dir / "summary.json"
    if not config_path.is_file():
        raise InputError(f"{run_dir}: not a gkl run directory (no config.yaml)")
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise InputError(f"{config_path}: unreadable YAML ({str(err).splitlines()[0]})") from None
    if not summary_path.is_file():
        return "unfinished (no summary.json)"
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return "unfinished (summary.json unreadable)"
    if summary.get(f"last_{summary.get('select_metric', 'top1')}") is None:
        return "no evaluation in summary.json"
    seed = int(config.get("train", {}).get("seed", 0))
    name = str(config.get("name", run_dir.name))
    setting = _setting_config(config)
    return RunRecord(
        run_dir=run_dir, name=name, seed=seed, key=json.dumps(setting, sort_keys=True), config=config, summary=summary
    )
