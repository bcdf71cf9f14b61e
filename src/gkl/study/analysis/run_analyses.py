"""``gkl analyze {scores,margins,tsne,features}`` on run directories: PNG + JSON per analysis.

A run is a run directory (its ``config.yaml`` rebuilds model and evaluation data) or a checkpoint
file inside one (``RUN/best.pt``, ``RUN/checkpoint.pt``). What an analysis reads of a run comes from
the run's task (``Task.analysis`` -> :class:`gkl.tasks.analysis.AnalysisView`): an image classifier's
logits and penultimate features, a segmentation model's per-pixel logits and head features, a CLIP
model's image-text logits over the zero-shot class prompts and its image embeddings. A kind without
an ``analysis`` is refused in one line. Adversarial analyses attack with PGD-10 (l∞, step ε/4, random
start), which needs one label per image and inputs in [0, 1] (classifier runs with
``data.normalize: false``, as the adversarial recipes); the task refuses the attack otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gkl.tasks.analysis import AnalysisView
from gkl.utils.errors import InputError

from .features import Attack, iterate_rows
from .plots import attack_title, plot_class_scores, plot_feature_curves, plot_margins, plot_tsne
from .scores import per_class_scores_and_margins
from .tsne import tsne_embedding

__all__ = ["LoadedRun", "load_run", "analyze_scores", "analyze_margins", "analyze_tsne", "analyze_features"]

CHECKPOINTS = {"best": "best.pt", "last": "checkpoint.pt"}
PGD_STEPS = 10


@dataclass
class LoadedRun:
    """A run as the analyses see it: its task's view of the checkpoint, a display name and the checkpoint."""

    name: str
    run_dir: Path
    checkpoint: Path
    kind: str
    view: AnalysisView

    @property
    def num_classes(self) -> int:
        return self.view.num_classes


def _locate(run: str | Path, which: str) -> tuple[Path, Path]:
    """(run directory, checkpoint file) of a run directory or a checkpoint inside one; one-line errors."""
    path = Path(run)
    if path.is_file():
        run_dir, ckpt = path.parent, path
    else:
        if which not in CHECKPOINTS:
            raise InputError(f"--which must be one of {', '.join(CHECKPOINTS)}, got {which!r}")
        run_dir, ckpt = path, path / CHECKPOINTS[which]
    if not (run_dir / "config.yaml").is_file():
        raise InputError(f"{run}: not a run directory or a checkpoint inside one (no {run_dir / 'config.yaml'})")
    return run_dir, ckpt


def load_run(run: str | Path, *, which: str = "best", analysis: str = "scores", attack: bool = False) -> LoadedRun:
    """The run's task's view of its checkpoint (``which``: best.pt or checkpoint.pt; ``attack``: the view
    will be attacked with PGD); an InputError naming the missing file, saying that the run's kind has no
    ``analysis``, or that an attack does not apply to it, otherwise."""
    from gkl.config import load_run_config
    from gkl.tasks import get_task
    from gkl.utils.distributed import resolve_device

    run_dir, ckpt = _locate(run, which)
    cfg = load_run_config(run_dir)
    task = get_task(cfg.kind)
    if task.analysis is None:
        raise InputError(
            f"{run}: gkl analyze {analysis} has nothing to read in a {cfg.kind} run (its task gives no class "
            f"scores or features); it is evaluated by its {task.evaluation}: gkl evaluate {run_dir}"
        )
    if not ckpt.is_file():
        raise InputError(f"{run}: no checkpoint to analyse ({ckpt} is missing)")
    view = task.analysis(cfg, ckpt, resolve_device("auto"), attack=attack)
    return LoadedRun(name=run_dir.name, run_dir=run_dir, checkpoint=ckpt, kind=cfg.kind, view=view)


def _checkpoint_label(ckpt: Path) -> str:
    return {v: k for k, v in CHECKPOINTS.items()}.get(ckpt.name, ckpt.name)


def _name_runs(loaded: Sequence[LoadedRun]) -> None:
    """Distinct display names: the run folder's name, with its parent folder when two runs' folders share
    a name, and the checkpoint (``best``, ``last``) when one run is given twice."""
    for run in loaded:
        twins = [r for r in loaded if r.run_dir.name == run.run_dir.name]
        if len(twins) > 1 and len({r.run_dir.resolve() for r in twins}) > 1:
            run.name = f"{run.run_dir.parent.name}/{run.run_dir.name}"
    twice = [sum(r.name == run.name for r in loaded) > 1 for run in loaded]
    for run, repeated in zip(loaded, twice):
        if repeated:
            run.name = f"{run.name} ({_checkpoint_label(run.checkpoint)})"


def _pgd(run: LoadedRun, eps: float, steps: int = PGD_STEPS) -> Attack:
    from gkl.attacks import PGD

    if not eps > 0:
        raise InputError(f"--eps must be > 0, got {eps}")
    return PGD(run.view.model, eps=eps, step_size=eps / 4, steps=steps, random_start="uniform")


def _write(out_dir: Path, stem: str, payload: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def _values(t: torch.Tensor) -> list[float | None]:
    return [None if v != v else float(v) for v in t.tolist()]


def _class_names(run: LoadedRun) -> list[str]:
    names = run.view.class_names
    return list(names) if names else [str(c) for c in range(run.num_classes)]


def _per_class(run: LoadedRun, attack: Attack | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    view = run.view
    rows = iterate_rows(view.model, view.data, view.outputs, attack=attack)
    try:
        return per_class_scores_and_margins(rows, view.num_classes)
    except ValueError as err:
        raise InputError(f"{run.run_dir}: {err}") from None


def analyze_scores(runs: Sequence[str | Path], out_dir: Path, *, which: str = "best") -> dict[str, Path]:
    """Class-mean true-class scores of each run on one plot (GKL Fig. 3): scores.png, scores.json."""
    if not runs:
        raise InputError("scores: give at least one run")
    loaded = [load_run(run, which=which, analysis="scores") for run in runs]
    _name_runs(loaded)
    scores = {run.name: _per_class(run)[0] for run in loaded}
    payload = {
        run.name: {
            "run": str(run.checkpoint),
            "example": run.view.example,
            "scores": run.view.scores,
            "classes": _class_names(run),
            "per_class": _values(scores[run.name]),
            "mean": float(scores[run.name][~torch.isnan(scores[run.name])].mean()),
        }
        for run in loaded
    }
    example = " / ".join(sorted({run.view.example for run in loaded}))
    what = " / ".join(sorted({run.view.scores for run in loaded}))
    return {
        "json": _write(out_dir, "scores", payload),
        "png": plot_class_scores(scores, out_dir / "scores.png", example=example, what=what),
    }


def analyze_margins(
    run_a: str | Path,
    run_b: str | Path,
    out_dir: Path,
    *,
    adversarial: bool = False,
    eps: float = 8 / 255,
    which: str = "best",
) -> dict[str, Path]:
    """Per-class mean margins (Eq. 14) of two runs and their per-class differences (Fig. 4c)."""
    if adversarial and not eps > 0:
        raise InputError(f"--eps must be > 0, got {eps}")
    loaded = [load_run(run, which=which, analysis="margins", attack=adversarial) for run in (run_a, run_b)]
    _name_runs(loaded)
    a_run, b_run = loaded
    if a_run.name == b_run.name:
        raise InputError("margins: give two different runs (or two checkpoints of one run)")
    if _class_names(a_run) != _class_names(b_run):
        raise InputError(
            f"margins: {a_run.name} and {b_run.name} score different classes "
            f"({a_run.num_classes} and {b_run.num_classes}); compare runs on the same data"
        )
    attacks = [_pgd(run, eps) if adversarial else None for run in loaded]
    a, b = (_per_class(run, attack)[1] for run, attack in zip(loaded, attacks))
    title = attack_title(eps, PGD_STEPS) if adversarial else "natural examples (no attack)"
    payload = {
        "adversarial": adversarial,
        "attack": {"name": "PGD", "norm": "linf", "eps": eps, "steps": PGD_STEPS, "step_size": eps / 4}
        if adversarial
        else None,
        "eps": eps if adversarial else None,
        "example": a_run.view.example,
        "classes": _class_names(a_run),
        a_run.name: _values(a),
        b_run.name: _values(b),
        "difference_b_minus_a": _values(b - a),
    }
    stem = "margins_adv" if adversarial else "margins"
    png = plot_margins(
        {a_run.name: a, b_run.name: b},
        out_dir / f"{stem}.png",
        class_names=_class_names(a_run),
        title=f"mean margin per class, over {a_run.view.example}s; {title}",
    )
    return {"json": _write(out_dir, stem, payload), "png": png}


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
    """t-SNE of the features of ``classes`` random classes, natural (+ adversarial) (Fig. 4a/b)."""
    if adversarial and not eps > 0:
        raise InputError(f"--eps must be > 0, got {eps}")
    loaded = load_run(run, which=which, analysis="tsne", attack=adversarial)
    if not 1 <= classes <= loaded.num_classes:
        raise InputError(f"--classes must be in [1, {loaded.num_classes}], got {classes}")
    attack = _pgd(loaded, eps) if adversarial else None
    view = loaded.view
    result = tsne_embedding(
        view.model,
        view.data,
        classes=classes,
        attack=attack,
        num_classes=view.num_classes,
        seed=seed,
        max_per_class=max_per_class,
        max_iter=max_iter,
        outputs=view.outputs,
    )
    stem = f"tsne_{loaded.name}" + ("_adv" if adversarial else "")
    title = f"{loaded.name}: {view.features}" + (f"\n{attack_title(eps, PGD_STEPS)}" if adversarial else "")
    payload = {"run": str(loaded.run_dir), "example": view.example, "eps": eps if adversarial else None, **result}
    return {
        "json": _write(out_dir, stem, payload),
        "png": plot_tsne(result, out_dir / f"{stem}.png", class_names=view.class_names, title=title),
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


def _feature_run(run: str | Path) -> Path:
    """The run directory of ``run``; a run of a kind that cannot log feature statistics is refused in one
    line (before its metrics are read)."""
    from gkl.config import load_run_config
    from gkl.tasks import get_task

    run_dir, _ = _locate(run, "best")
    cfg = load_run_config(run_dir)
    if not get_task(cfg.kind).feature_statistics:
        raise InputError(
            f"{run}: gkl analyze features plots what train.log_feature_stats logs, and a {cfg.kind} run cannot "
            "log it (it needs a model giving (batch, classes) logits through an nn.Linear classifier)"
        )
    return run_dir


def analyze_features(runs: Sequence[str | Path], out_dir: Path) -> dict[str, Path]:
    """The feature-statistics curves of runs trained with ``train.log_feature_stats: true``."""
    curves = {}
    for run in runs:
        run_dir = _feature_run(run)
        records = read_feature_records(run_dir)
        if not records:
            raise InputError(
                f"{run}: metrics.jsonl has no feature statistics (train the run with train.log_feature_stats=true)"
            )
        name = run_dir.name if run_dir.name not in curves else f"{run_dir.parent.name}/{run_dir.name}"
        curves[name] = records
    return {"json": _write(out_dir, "features", curves), "png": plot_feature_curves(curves, out_dir / "features.png")}
