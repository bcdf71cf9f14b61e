"""``gkl analyze {scores,margins,tsne,features}`` on run directories: PNG + JSON per analysis.

A run is a run directory (its ``config.yaml`` rebuilds model and test set) or a checkpoint
file inside one (``RUN/best.pt``, ``RUN/checkpoint.pt``). The test split is used, with the
run's own preprocessing. Adversarial analyses attack with PGD-10 (l∞, step ε/4), which
needs inputs in [0, 1] (runs with ``data.normalize: false``, as the adversarial recipes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gkl.utils.errors import InputError

from .features import Attack
from .plots import plot_class_scores, plot_feature_curves, plot_margins, plot_tsne
from .scores import class_margins, class_mean_scores
from .tsne import tsne_embedding

__all__ = ["LoadedRun", "load_run", "analyze_scores", "analyze_margins", "analyze_tsne", "analyze_features"]

CHECKPOINTS = {"best": "best.pt", "last": "checkpoint.pt"}


@dataclass
class LoadedRun:
    """A model rebuilt from a run, its test set and a display name."""

    name: str
    run_dir: Path
    model: nn.Module
    test_set: Any
    num_classes: int
    normalize: bool
    class_names: Sequence[str] | None


def load_run(run: str | Path, *, which: str = "best") -> LoadedRun:
    """Model (weights of ``which``: best.pt or checkpoint.pt) and test set of a run; InputError naming
    the missing file otherwise."""
    from gkl.config import load_run_config
    from gkl.data import build_dataset
    from gkl.models import create_model, load_weights
    from gkl.tasks import get_task

    path = Path(run)
    if path.is_file():
        run_dir, ckpt = path.parent, path
    else:
        if which not in CHECKPOINTS:
            raise InputError(f"--which must be one of {', '.join(CHECKPOINTS)}, got {which!r}")
        run_dir, ckpt = path, path / CHECKPOINTS[which]
    if not (run_dir / "config.yaml").is_file():
        raise InputError(f"{run}: not a run directory or a checkpoint inside one (no {run_dir / 'config.yaml'})")
    if not ckpt.is_file():
        raise InputError(f"{run}: no checkpoint to analyse ({ckpt} is missing)")
    cfg = load_run_config(run_dir)
    task = get_task(cfg.kind)
    if not task.robust_evaluation:  # the classifier tasks; the analyses read class logits of a registry model
        raise InputError(
            f"{run}: gkl analyze works on classifier runs; this is a {cfg.kind} run (evaluated by its "
            f"{task.evaluation}: gkl evaluate {run_dir})"
        )
    test_set = build_dataset(cfg.data.name, cfg.data.root, False, normalize=cfg.data.normalize)
    info = test_set.info  # type: ignore[attr-defined]  # registry builders attach .info; Dataset declares none
    model = create_model(cfg.model.name, info.num_classes, **cfg.model.kwargs)
    load_weights(model, ckpt)
    model.eval()
    return LoadedRun(
        name=run_dir.name,
        run_dir=run_dir,
        model=model,
        test_set=test_set,
        num_classes=info.num_classes,
        normalize=cfg.data.normalize,
        class_names=info.class_names,
    )


def _pgd(run: LoadedRun, eps: float, steps: int = 10) -> Attack:
    from gkl.attacks import PGD

    if run.normalize:
        raise InputError(
            f"{run.run_dir}: --adversarial needs a run trained on inputs in [0, 1] "
            "(data.normalize: false); this run normalises its inputs"
        )
    if not eps > 0:
        raise InputError(f"--eps must be > 0, got {eps}")
    return PGD(run.model, eps=eps, step_size=eps / 4, steps=steps, random_start="uniform")


def _write(out_dir: Path, stem: str, payload: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def _values(t: torch.Tensor) -> list[float | None]:
    return [None if v != v else float(v) for v in t.tolist()]


def analyze_scores(runs: Sequence[str | Path], out_dir: Path, *, which: str = "best") -> dict[str, Path]:
    """Class-mean true-class scores of each run on one plot (GKL Fig. 3): scores.png, scores.json."""
    if not runs:
        raise InputError("scores: give at least one run")
    scores = {}
    for run in runs:
        loaded = load_run(run, which=which)
        scores[loaded.name] = class_mean_scores(loaded.model, loaded.test_set, num_classes=loaded.num_classes)
    payload = {name: {"per_class": _values(v), "mean": float(v[~torch.isnan(v)].mean())} for name, v in scores.items()}
    return {"json": _write(out_dir, "scores", payload), "png": plot_class_scores(scores, out_dir / "scores.png")}


def analyze_margins(
    run_a: str | Path,
    run_b: str | Path,
    out_dir: Path,
    *,
    adversarial: bool = False,
    eps: float = 8 / 255,
    which: str = "best",
) -> dict[str, Path]:
    """Per-class mean margins (Eq. 14) of two runs and their sorted differences (Fig. 4c)."""
    margins = {}
    for run in (run_a, run_b):
        loaded = load_run(run, which=which)
        attack = _pgd(loaded, eps) if adversarial else None
        margins[loaded.name] = class_margins(
            loaded.model, loaded.test_set, attack=attack, num_classes=loaded.num_classes
        )
    if len(margins) < 2:
        raise InputError("margins: give two different runs")
    (name_a, a), (name_b, b) = margins.items()
    payload = {
        "adversarial": adversarial,
        "eps": eps if adversarial else None,
        name_a: _values(a),
        name_b: _values(b),
        "difference_b_minus_a": _values(b - a),
    }
    stem = "margins_adv" if adversarial else "margins"
    return {"json": _write(out_dir, stem, payload), "png": plot_margins(margins, out_dir / f"{stem}.png")}


def analyze_tsne(
    run: str | Path,
    out_dir: Path,
    *,
    classes: int = 5,
    adversarial: bool = False,
    eps: float = 8 / 255,
    seed: int = 0,
    which: str = "best",
    max_per_class: int = 200,
    max_iter: int = 1000,
) -> dict[str, Path]:
    """t-SNE of penultimate features of ``classes`` random classes, natural (+ adversarial) (Fig. 4a/b)."""
    loaded = load_run(run, which=which)
    if not 1 <= classes <= loaded.num_classes:
        raise InputError(f"--classes must be in [1, {loaded.num_classes}], got {classes}")
    attack = _pgd(loaded, eps) if adversarial else None
    result = tsne_embedding(
        loaded.model,
        loaded.test_set,
        classes=classes,
        attack=attack,
        num_classes=loaded.num_classes,
        seed=seed,
        max_per_class=max_per_class,
        max_iter=max_iter,
    )
    stem = f"tsne_{loaded.name}" + ("_adv" if adversarial else "")
    return {
        "json": _write(out_dir, stem, {"run": str(loaded.run_dir), "eps": eps if adversarial else None, **result}),
        "png": plot_tsne(result, out_dir / f"{stem}.png", class_names=loaded.class_names, title=loaded.name),
    }


def read_feature_records(run_dir: Path) -> list[dict[str, Any]]:
    """Per-epoch ``features`` entries of a run's metrics.jsonl (written with train.log_feature_stats)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise InputError(f"{run_dir}: no metrics.jsonl")
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            if isinstance(entry.get("features"), dict) and "student" in entry["features"]:
                records.append({"epoch": entry["epoch"], **entry["features"]})
    return records


def analyze_features(runs: Sequence[str | Path], out_dir: Path) -> dict[str, Path]:
    """The feature-statistics curves of runs trained with ``train.log_feature_stats: true``."""
    curves = {}
    for run in runs:
        records = read_feature_records(Path(run))
        if not records:
            raise InputError(
                f"{run}: metrics.jsonl has no feature statistics (train the run with train.log_feature_stats=true)"
            )
        curves[Path(run).name] = records
    return {"json": _write(out_dir, "features", curves), "png": plot_feature_curves(curves, out_dir / "features.png")}
