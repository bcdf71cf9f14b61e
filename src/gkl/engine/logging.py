"""Run logging: console + ``train.log``, ``metrics.jsonl``, TensorBoard scalars and a progress bar.

Only the main process (rank 0) writes; other ranks get no-op writers.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

LOGGER_NAME = "gkl.train"


def setup_logger(run_dir: Path | None, *, is_main: bool) -> logging.Logger:
    """The ``gkl.train`` logger writing to the console and ``run_dir/train.log`` on rank 0."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if getattr(handler, "_gkl_handler", False):
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not is_main:
        logger.addHandler(_tagged(logging.NullHandler()))
        return logger
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    console = _tagged(logging.StreamHandler(sys.stderr))
    console.setFormatter(formatter)
    logger.addHandler(console)
    if run_dir is not None:
        file_handler = _tagged(logging.FileHandler(run_dir / "train.log", encoding="utf-8"))
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)
    return logger


def _tagged(handler: logging.Handler) -> logging.Handler:
    handler._gkl_handler = True  # type: ignore[attr-defined]
    return handler


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class MetricsWriter:
    """Appends one JSON object per epoch to ``metrics.jsonl`` and mirrors scalars to TensorBoard."""

    def __init__(
        self, run_dir: Path, *, enabled: bool, tensorboard: bool = True, purge_step: int | None = None
    ) -> None:
        """``purge_step``: on resume, the first epoch to be re-run; TensorBoard events from that
        step on (written by the interrupted run) are discarded so curves are not duplicated."""
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional (extra "logging")
                logging.getLogger(LOGGER_NAME).info("tensorboard not installed; skipping tb/ scalars")
            else:
                self._tb = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=purge_step)

    def truncate_after(self, epoch: int, step: int | None = None) -> None:
        """Drop records after the checkpoint (a resumed run rewrites them): records whose ``step``
        is after ``step`` when both are known, else whose epoch is after ``epoch``."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if step and "step" in record:
                keep = int(record["step"]) <= step
            else:
                keep = int(record.get("epoch", 0)) <= epoch
            if keep:
                kept.append(line)
        self.path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")

    def write(self, record: dict[str, Any], step: int | None = None) -> None:
        """Append ``record``; TensorBoard scalars at x = ``step`` (default: ``record["epoch"]``)."""
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(_json_safe(record), sort_keys=False) + "\n")
        if self._tb is not None:
            step = int(record["epoch"]) if step is None else int(step)
            for name, value in _flatten(record).items():
                if name not in ("epoch", "step"):
                    self._tb.add_scalar(name, value, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def on_terminal(enabled: bool) -> bool:
    """Whether a progress bar shows: ``enabled`` (``train.progress``) and the console (stderr) is a
    terminal; in a log file, a pipe or a sweep's run log the step and epoch lines stand instead."""
    return enabled and sys.stderr.isatty()


def progress(iterable: Iterable, *, total: int | None, desc: str, enabled: bool) -> Iterable:
    """A tqdm progress bar when ``enabled`` (rank 0, ``train.progress`` and a terminal: :func:`on_terminal`),
    else the iterable itself. The bar counts batches on the host: it adds no device synchronisation."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


class RunLoggers:
    """Where every metrics line goes: ``metrics.jsonl`` (+ TensorBoard) and the trackers of
    ``train.loggers`` (W&B, MLflow), on rank 0 only."""

    def __init__(
        self, run_dir: Path, names: Iterable[str], *, is_main: bool, config: Any, purge_step: int | None
    ) -> None:
        names = list(names)
        self.metrics = MetricsWriter(
            run_dir, enabled=is_main, tensorboard="tensorboard" in names, purge_step=purge_step
        )
        self.trackers: list[Any] = []
        if not is_main:
            return
        if "wandb" in names:
            from gkl.engine.trackers import WandbTracker

            self.trackers.append(WandbTracker(run_dir, config=config))
        if "mlflow" in names:
            from gkl.engine.trackers import MlflowTracker

            self.trackers.append(MlflowTracker(run_dir, params=config))

    def write(self, record: dict[str, Any], step: int) -> None:
        self.metrics.write(record, step=step)
        for tracker in self.trackers:
            tracker.log(record, step=step)

    def close(self) -> None:
        self.metrics.close()
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []


def epoch_line(record: dict[str, Any], *, metric: str, by_steps: bool) -> str:
    """The ``train.log`` line of a metrics record: epoch (step), lr, loss, train accuracy, the
    selected metric of each evaluated split, the best value and the time."""
    parts = [f"epoch {record['epoch']}"]
    if by_steps:
        parts.append(f"step {record['step']}")
    parts.append(f"lr {record['lr']:.5g}")
    train = record.get("train")
    if train is not None:
        loss = train.get("loss", float("nan"))
        parts.append(f"loss {loss:.4f}" + _terms(train, loss))
        if "acc" in train:
            parts.append(f"train_acc {train['acc']:.2f}")
    for key, label in (
        ("eval", metric),
        ("ema_eval", f"ema_{metric}"),
        ("val", f"val_{metric}"),
        ("ema_val", f"ema_val_{metric}"),
    ):
        if key in record and isinstance(record[key].get(metric), (int, float)):
            parts.append(f"{label} {record[key][metric]:.2f}")
    if record.get("best") is not None:
        parts.append(f"best {record['best']:.2f}@{record['best_epoch']}")
    parts.append(f"{record['time']:.1f}s")
    return " | ".join(parts)


def _terms(train: dict[str, Any], loss: float) -> str:
    """`` (name value, ...)``: the epoch's loss terms and objective metrics besides the total loss and the
    accuracy (e.g. SSL's ``sup_ce``, ``unsup``, ``mask_ratio``, ``pseudo_acc``); empty when the only one
    is the loss itself (a single term)."""
    extra = {k: v for k, v in train.items() if k not in ("loss", "acc") and isinstance(v, (int, float))}
    if not extra or (len(extra) == 1 and next(iter(extra.values())) == loss):
        return ""
    return " (" + ", ".join(f"{name} {value:.4g}" for name, value in extra.items()) + ")"


def step_line(epoch: int, in_epoch: int, steps_per_epoch: int, loss: float, means: dict[str, float]) -> str:
    """The progress line of a logging step: the step's loss and the epoch's running means so far."""
    running = ", ".join(f"{name} {value:.4g}" for name, value in means.items())
    return f"epoch {epoch} step {in_epoch}/{steps_per_epoch} loss {loss:.4f}" + (f" ({running})" if running else "")
