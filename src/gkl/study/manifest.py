"""Reading a sweep's ``study.json`` back: each run's setting name, the study's order, published numbers.

``gkl sweep`` writes ``<out_dir>/study.json`` (:func:`gkl.study.execute.run_sweep`): the settings
in study order, every run with its setting, the published numbers (``paper``), their
``source`` and each setting's robust evaluation (``evaluate``, :mod:`gkl.study.evaluation`).
``gkl summarize`` labels a run by the setting it finds there (the folder holding the run
directory), so its rows carry the study's names in the study's order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gkl.study.evaluation import StudyEvaluation

__all__ = ["StudyManifest", "manifest_of"]

MANIFEST = "study.json"


@dataclass
class StudyManifest:
    """What ``study.json`` says: run folder name -> setting, the settings' order, paper numbers, source."""

    path: Path
    setting_of: dict[str, str] = field(default_factory=dict)
    settings: list[str] = field(default_factory=list)
    paper: dict[str, dict[str, float]] = field(default_factory=dict)
    source: str | None = None
    evaluations: dict[str, StudyEvaluation] = field(default_factory=dict)  #: setting -> its ``evaluate:``

    def order(self, setting: str | None) -> int:
        """The setting's place in the study; a run the study does not list comes after its settings."""
        return self.settings.index(setting) if setting in self.settings else len(self.settings)


def _read(path: Path) -> StudyManifest | None:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        return None
    manifest = StudyManifest(path=path, settings=[str(s) for s in data.get("settings") or []])
    for run in data["runs"]:
        if isinstance(run, dict) and run.get("run_dir") and run.get("setting"):
            manifest.setting_of[Path(str(run["run_dir"])).name] = str(run["setting"])
    paper = data.get("paper")
    if isinstance(paper, dict):
        manifest.paper = {
            str(s): {str(m): float(v) for m, v in numbers.items()}
            for s, numbers in paper.items()
            if isinstance(numbers, dict)
        }
    source = data.get("source")
    manifest.source = source if isinstance(source, str) else None
    evaluate = data.get("evaluate")
    for setting, block in (evaluate if isinstance(evaluate, dict) else {}).items():
        try:
            manifest.evaluations[str(setting)] = StudyEvaluation.from_json(block)
        except (KeyError, TypeError, ValueError):  # an entry edited by hand: no robust columns for it
            continue
    return manifest


def manifest_of(run_dir: Path, cache: dict[Path, StudyManifest | None]) -> StudyManifest | None:
    """The manifest of the sweep folder ``run_dir`` is in (its ``study.json``), or None."""
    folder = run_dir.resolve().parent
    if folder not in cache:
        path = folder / MANIFEST
        cache[folder] = _read(path) if path.is_file() else None
    return cache[folder]
