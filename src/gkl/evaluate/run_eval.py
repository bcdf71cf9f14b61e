"""Evaluate a finished (or running) run directory: last and best epoch, clean and robust.

Backs ``gkl evaluate RUN_DIR``. The run's own ``config.yaml`` says which dataset and
model to rebuild; ``key=value`` overrides can point it elsewhere (e.g. ``data.root``).
The run's task (:mod:`gkl.tasks`) evaluates it: ``Task.evaluate``; ``--robust`` is for the
tasks whose runs are classifiers with inputs in [0, 1] (``Task.robust_evaluation``).

Every evaluation is appended as one JSON line to ``RUN_DIR/evaluations.jsonl``
(:func:`append_evaluation`); that file is only ever appended to, so no earlier
evaluation (a robust one, another ``--weights``...) is lost. :func:`read_evaluations`
reads it back.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gkl.config import load_run_config
from gkl.tasks import get_task
from gkl.utils.errors import InputError

CHECKPOINT_FILES = {"last": "checkpoint.pt", "best": "best.pt"}
EVALUATIONS_FILE = "evaluations.jsonl"


def check_writable(path: Path) -> None:
    """InputError naming ``path`` unless it can be created or appended to (nothing is written)."""
    path = Path(path)
    parent = path.parent
    if path.exists():
        if not path.is_file():
            raise InputError(f"cannot write the evaluation to {path}: it exists and is not a file")
        if not os.access(path, os.W_OK):
            raise InputError(f"cannot write the evaluation to {path}: the file is not writable")
        return
    if not parent.is_dir():
        raise InputError(f"cannot write the evaluation to {path}: {parent} is not an existing directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write the evaluation to {path}: directory {parent} is not writable")


def append_evaluation(run_dir: Path, record: dict[str, Any]) -> Path:
    """Append ``record`` as one JSON line to ``run_dir/evaluations.jsonl`` (one write, fsync'd)."""
    path = Path(run_dir) / EVALUATIONS_FILE
    line = json.dumps(record, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        if size:  # a line cut short by a kill must not swallow this record
            with open(path, "rb") as handle:
                handle.seek(size - 1)
                if handle.read(1) != b"\n":
                    line = "\n" + line
        data = line.encode()
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {path} ({written} of {len(data)} bytes)")
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_evaluations(run_dir: Path) -> list[dict[str, Any]]:
    """All evaluations recorded in ``run_dir/evaluations.jsonl``, oldest first (a torn line is skipped)."""
    path = Path(run_dir) / EVALUATIONS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill while it was written
    return records


def save_fallback(report: dict[str, Any], run_dir: Path) -> Path | None:
    """Write ``report`` to a new file in ``run_dir`` or, failing that, the temp directory; None if both fail."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for folder, prefix in ((Path(run_dir), "evaluation-unsaved-"), (Path(tempfile.gettempdir()), "gkl-evaluation-")):
        try:
            fd, name = tempfile.mkstemp(prefix=f"{prefix}{stamp}-", suffix=".json", dir=folder)
            with os.fdopen(fd, "w") as handle:
                json.dump(report, handle, indent=2, default=str)
            return Path(name)
        except OSError:
            continue
    return None


def evaluate_run(
    run_dir: Path,
    *,
    overrides: Sequence[str] = (),
    which: Sequence[str] = ("last", "best"),
    weights: str | None = None,
    robust: dict[str, Any] | None = None,
    shifted: tuple[str, str] | None = None,
) -> tuple[dict[str, Any], str]:
    """Evaluate the run's ``last`` (checkpoint.pt) and/or ``best`` (best.pt) weights.

    ``shifted = (dataset, data_root)`` evaluates an ImageNet-1k classifier on ImageNet-R or
    ImageNet-Sketch instead of the run's test set (:mod:`gkl.evaluate.shifted`).

    ``weights`` picks the raw or the EMA weights of the last checkpoint (default: what the
    run tracked); best.pt holds the weights the run tracked. ``robust`` holds keyword
    arguments of :func:`gkl.evaluate.robust.evaluate_robustness` (eps_list, attacks, ...).
    Every option is checked before any evaluation starts. Returns the JSON-ready report
    and a printable table; recording it is the caller's job (:func:`append_evaluation`).
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir, overrides)
    unknown = [w for w in which if w not in CHECKPOINT_FILES]
    if unknown or not which:
        raise InputError(f"--which: expected a subset of {sorted(CHECKPOINT_FILES)}, got {list(which)}")
    weights = weights or cfg.train.ema.evaluate
    if weights not in ("raw", "ema"):
        raise InputError(f"--weights: expected 'raw' or 'ema', got {weights!r}")
    task = get_task(cfg.kind)
    if robust is not None and shifted is not None:
        raise InputError("--robust and --dataset: evaluate one of them at a time")
    if shifted is not None:
        from gkl.evaluate.shifted import check_shifted_options

        check_shifted_options(cfg, run_dir, shifted[0])
    if robust is not None and not task.robust_evaluation:
        raise InputError(
            f"{run_dir}: --robust evaluates classifiers; this is a {cfg.kind} run (evaluated by its {task.evaluation})"
        )
    if robust is not None:
        from gkl.evaluate.robust import check_options

        if cfg.data.normalize:
            raise InputError(
                f"{run_dir}: robust evaluation needs inputs in [0, 1] with normalisation inside the model; "
                "this run used data.normalize=true"
            )
        try:
            check_options(batch_size=cfg.data.eval_batch_size, **robust)
        except ValueError as err:
            raise InputError(f"robust evaluation options: {err}") from None
    paths = {name: run_dir / CHECKPOINT_FILES[name] for name in which}
    for name, path in paths.items():
        if not path.is_file():
            raise InputError(f"no {name} checkpoint in {run_dir}: {path} is missing")
    if shifted is not None:
        from gkl.evaluate.shifted import evaluate_shifted_run

        dataset, data_root = shifted
        return evaluate_shifted_run(
            cfg, run_dir, paths, dataset=dataset, data_root=data_root, weights=weights, overrides=overrides
        )
    attack = None
    if robust is not None:
        from gkl.evaluate.robust import evaluate_robustness

        attack = functools.partial(evaluate_robustness, **robust)
    report, table = task.evaluate(cfg, run_dir, paths, weights=weights, overrides=overrides, robust=attack)
    if robust is not None:
        report["robust_options"] = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in robust.items()}
    return report, table
