"""The one training loop shared by every task and objective.

The loop counts optimizer steps (``step`` from 1). Epoch ``e`` (from 1) covers steps
``(e-1)·S+1 .. e·S`` with ``S = len(train_loader) // accumulate_steps``; a run lasts
``train.epochs`` epochs or ``train.iterations`` steps. At the start of every epoch the
engine re-seeds from ``(seed, e, rank)`` and calls ``train_loader.set_epoch(e)``; every step
runs the objective on ``accumulate_steps`` batches (:mod:`gkl.objectives.base`), checks the
loss terms once, and steps the optimizer with the LR of that step (:class:`LRSchedule`). At
the end of an epoch: ``objective.on_epoch_end(e)``, EMA, evaluation and checkpoint when due
(or every N steps with ``eval_every_steps``/``checkpoint_every_steps``); ``metrics.jsonl``
before the checkpoint. With ``train.log_feature_stats`` the evaluation of the test split also
records the feature statistics of the model and of the objective's teacher
(:mod:`gkl.metrics.features`). A checkpoint written mid-epoch resumes exactly: the consumed batches
of the epoch are drawn again and skipped, then the saved RNG state is restored.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
import yaml
from torch import nn

from gkl.engine.amp import MixedPrecision
from gkl.engine.checkpoint import (
    BEST_NAME,
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CHECKPOINT_VERSION,
    atomic_save,
    layout_mismatch,
    model_layout,
    read_checkpoint,
    remove_stale_temporaries,
)
from gkl.engine.collapse import CollapseMonitor, chance_level
from gkl.engine.ema import ModelEMA
from gkl.engine.errors import CollapseError, NonFiniteLossError, TrainingStopped
from gkl.engine.lock import RunLock
from gkl.engine.logging import MetricsWriter, progress, setup_logger
from gkl.engine.optim import build_optimizer
from gkl.engine.resume import resume_changes
from gkl.engine.run_dir import read_run_record, record_stop, write_config, write_run_record
from gkl.engine.schedules import LRSchedule, scaled_base_lr
from gkl.engine.seeding import capture_rng_state, epoch_seed, restore_rng_state, seed_everything, set_deterministic
from gkl.losses import value_checks
from gkl.metrics.classification import ClassificationEvaluator
from gkl.metrics.features import watch_feature_statistics
from gkl.objectives.base import Objective, StepOutput
from gkl.settings.train import TrainSettings
from gkl.utils.distributed import DistInfo, all_reduce_sum, barrier, resolve_device
from gkl.utils.errors import InputError
from gkl.utils.modules import find_classifier

__all__ = ["CollapseError", "NonFiniteLossError", "Trainer", "TrainingStopped", "move_to_device",
           "per_process_batch_size"]

# Config keys a resume may change besides the tolerant train fields (a run folder or data set may move).
DEFAULT_TOLERANT_CONFIG_KEYS: tuple[str, ...] = ("out_dir", "name", "data.root", "data.num_workers")


def per_process_batch_size(loader: Any) -> int | None:
    """The loader's batch size per process: ``loader.batch_size``, else that of a wrapped
    ``loader.loader`` (a DataLoader inside a wrapper with ``set_epoch``), else None."""
    for candidate in (loader, getattr(loader, "loader", None)):
        size = getattr(candidate, "batch_size", None)
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            return size
    return None


def move_to_device(batch: Any, device: torch.device, *, channels_last: bool = False) -> Any:
    """``batch`` with every tensor moved to ``device`` (recursing into tuples, lists and dicts);
    with ``channels_last`` 4-D floating tensors (images) also get the NHWC memory format."""
    if isinstance(batch, torch.Tensor):
        moved = batch.to(device, non_blocking=True)
        if channels_last and moved.ndim == 4 and moved.is_floating_point():
            moved = moved.contiguous(memory_format=torch.channels_last)
        return moved
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(b, device, channels_last=channels_last) for b in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(b, device, channels_last=channels_last) for b in batch)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device, channels_last=channels_last) for k, v in batch.items()}
    return batch




class Trainer:
    """Trains ``model`` with ``objective`` (optimizer and LR schedule by config, AMP, DDP, EMA,
    gradient accumulation, evaluation by task, checkpoints).

    Args:
        model: the model to train (plain module; wrapped in DDP here when ``dist.world_size > 1``,
            then in ``torch.compile`` with ``settings.compile``).
        objective: an :class:`~gkl.objectives.base.Objective`; it receives the (wrapped) model and
            the batch exactly as the train loader yields it, moved to the device.
        train_loader: iterable of batches with ``__len__`` and ``set_epoch(epoch)``; it shards the
            training set across ranks itself. Needs a ``batch_size`` attribute (per process; or a
            wrapped DataLoader as ``.loader``) when ``settings.optim.reference_batch_size`` is set.
        eval_loader: this rank's part of the test/eval set (the evaluator sums over ranks), or None.
        settings: :class:`TrainSettings`.
        run_dir: directory for config.yaml, run.json, train.log, metrics.jsonl, tb/,
            checkpoint.pt, best.pt, summary.json.
        config: the resolved config dict written to config.yaml and stored in checkpoints.
        class_groups: ``{"many": [...], "medium": [...], "few": [...]}`` for group accuracies
            (used by the default classification evaluator).
        dist: from :func:`gkl.utils.distributed.init_distributed`; None = single process
            on ``settings.device``.
        num_classes: logits width; inferred from the first evaluation batch when None
            (classification evaluator only).
        evaluator: an :class:`~gkl.metrics.base.Evaluator`; default: classification
            (top-1/top-5/per-class/groups).
        val_loader: a validation split; when given, ``settings.select_metric`` is taken on it
            (best.pt, collapse) while ``eval_loader`` is still evaluated and reported.
        param_lr_scales: LR multiplier by model parameter name (default 1), e.g. the 10x heads of a
            segmentation model. The optimizer also trains ``objective.trainable_param_groups()``.
        resume_tolerant_keys: dotted ``config`` keys that may differ on resume
            (default :data:`DEFAULT_TOLERANT_CONFIG_KEYS`).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        objective: Objective,
        train_loader: Iterable,
        eval_loader: Iterable | None,
        settings: TrainSettings,
        run_dir: str | Path,
        config: dict | None = None,
        class_groups: Mapping[str, Sequence[int]] | None = None,
        dist: DistInfo | None = None,
        num_classes: int | None = None,
        evaluator: Any = None,
        val_loader: Iterable | None = None,
        param_lr_scales: Mapping[str, float] | None = None,
        resume_tolerant_keys: Sequence[str] = DEFAULT_TOLERANT_CONFIG_KEYS,
    ) -> None:
        if not isinstance(settings, TrainSettings):
            raise ValueError(f"settings: expected a TrainSettings, got {type(settings).__name__}")
        if not isinstance(model, nn.Module):
            raise ValueError(f"model: expected an nn.Module, got {type(model).__name__}")
        if not isinstance(objective, Objective):
            raise ValueError(f"objective: expected a gkl.objectives.base.Objective, got {type(objective).__name__}")
        if not hasattr(train_loader, "set_epoch") or not hasattr(train_loader, "__len__"):
            raise ValueError("train_loader: expected an iterable with __len__ and set_epoch(epoch)")
        if config is not None:
            if not isinstance(config, dict):
                raise ValueError(f"config: expected a dict or None, got {type(config).__name__}")
            try:
                yaml.safe_dump(config)
            except yaml.YAMLError as error:
                raise ValueError(f"config: expected plain YAML values (dict/list/str/number/bool/None): {error}") from None
        self.settings = settings
        self.dist = dist if dist is not None else DistInfo(device=resolve_device(settings.device))
        if settings.sync_bn and self.dist.distributed and self.dist.device.type != "cuda":
            raise ValueError("sync_bn: SyncBatchNorm needs CUDA devices (it fails on CPU/gloo); "
                             "set train.sync_bn=false on CPU")
        self.device = self.dist.device
        self.run_dir = Path(run_dir)
        self.config = config
        self.class_groups = {k: list(v) for k, v in class_groups.items()} if class_groups else None
        self.num_classes = num_classes
        self.evaluator = evaluator
        self.train_loader = train_loader
        self.eval_loader = eval_loader
        self.val_loader = val_loader
        self.resume_tolerant_keys = tuple(resume_tolerant_keys)
        if self.dist.is_main:
            self._prepare_run_dir()
        barrier(self.dist)
        self.logger = setup_logger(self.run_dir, is_main=self.dist.is_main)

        # ---- length of the run in optimizer steps
        k = settings.accumulate_steps
        if len(train_loader) < k:
            raise InputError(f"train.accumulate_steps: {k} micro-batches per step, but the train loader "
                             f"has only {len(train_loader)} batches per epoch")
        self.steps_per_epoch = len(train_loader) // k
        if settings.iterations is not None:
            self.total_steps = settings.iterations
        else:
            self.total_steps = settings.epochs * self.steps_per_epoch
        self.epochs = -(-self.total_steps // self.steps_per_epoch)

        if settings.deterministic:
            set_deterministic(True)
        seed_everything(epoch_seed(settings.seed, 0, self.dist.rank))

        self.model = model.to(self.device)
        if settings.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.objective = objective.to(self.device)
        if settings.sync_bn and self.dist.distributed:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model: nn.Module = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        else:
            self.train_model = self.model
        self._ddp = self.train_model if self.dist.distributed else None
        if settings.compile:
            self.train_model = torch.compile(self.train_model)

        extra_groups = self.objective.trainable_param_groups()
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.parameters += [p for group in extra_groups for p in group["params"] if p.requires_grad]
        opt = settings.optim
        base_lr = opt.lr
        if opt.reference_batch_size is not None:
            batch_size = per_process_batch_size(train_loader)
            if batch_size is None:
                raise ValueError("train_loader: needs an integer batch_size attribute (per process) "
                                 "for optim.reference_batch_size (LR scaling)")
            base_lr = scaled_base_lr(opt.lr, global_batch_size=batch_size * self.dist.world_size * k,
                                     reference_batch_size=opt.reference_batch_size)
        self.optimizer = build_optimizer(self.model, opt, base_lr=base_lr, lr_scales=param_lr_scales,
                                         extra_groups=extra_groups)
        self.schedule = LRSchedule(self.optimizer, base_lr=base_lr, steps_per_epoch=self.steps_per_epoch,
                                   total_steps=self.total_steps, settings=settings.schedule)
        self.amp = MixedPrecision(settings.amp, self.device)
        self.objective.use_grad_scaler(self.amp.scaler)  # AWP scales its proxy backward with it
        self.ema = ModelEMA(self.model, settings.ema.decay) if settings.ema.decay is not None else None

        self.step = 0  # optimizer steps done
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_step: int | None = None
        # with a validation split: the test (eval) value of the selected metric at the best-val epoch
        self.eval_at_best: float | None = None
        self.last_checkpoint_epoch: int | None = None
        self.last_checkpoint_step: int | None = None
        self.resume_changed: list[str] = []
        self.collapse = CollapseMonitor(metric=settings.select_metric, chance=None,
                                        patience=settings.collapse_patience, margin=settings.collapse_margin)
        self._metrics: MetricsWriter | None = None
        self._trackers: list[Any] = []
        self._stats: dict[str, Any] | None = None
        self._resume_state: dict[str, Any] | None = None
        self.feature_teacher: nn.Module | None = None
        self._teacher_features: dict[str, float] | None = None  # the frozen teacher's, measured once
        if settings.log_feature_stats:
            self.feature_teacher = self.objective.teacher_model()
            for role, net in (("model", self.model), ("teacher", self.feature_teacher)):
                try:
                    if net is not None:
                        find_classifier(net)
                except ValueError as error:
                    raise InputError(f"train.log_feature_stats: the {role} has no classifier to read "
                                     f"penultimate features from ({error})") from None

    # ------------------------------------------------------------------ compatibility
    @property
    def best_top1(self) -> float | None:
        """The best value of the selected metric (``top1`` by default)."""
        return self.best_value

    def _prepare_run_dir(self) -> None:
        """Create the run directory; an unusable one (a file, read-only) is an InputError naming it."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"out_dir: cannot create the run directory {self.run_dir} "
                             f"({error.strerror or error})") from None
        if not self.run_dir.is_dir() or not os.access(self.run_dir, os.W_OK | os.X_OK):
            raise InputError(f"out_dir: the run directory {self.run_dir} is not a writable directory")

    # ------------------------------------------------------------------ paths
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    @property
    def best_path(self) -> Path:
        return self.run_dir / BEST_NAME

    # ------------------------------------------------------------------ fit
    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train for ``settings.epochs`` epochs or ``settings.iterations`` steps; with ``resume``
        continue from ``run_dir/checkpoint.pt`` if present (also from a mid-epoch checkpoint).

        Returns the summary (also written to ``summary.json``): ``epochs``, ``steps``,
        ``select_metric``, ``select_split``, ``best`` (value), ``best_epoch``, ``best_step``,
        ``last`` (last value of the selected metric); for ``top1`` also ``last_top1`` and
        ``best_top1``; ``final`` (last evaluation(s)), ``train`` (last epoch's train statistics),
        ``collapsed`` (the collapse record or None).

        Rank 0 holds ``run_dir/.lock`` while training (a second concurrent run of the folder
        refuses); the losses' per-call value checks are off meanwhile (the engine checks the
        loss terms once per step) and restored afterwards.
        """
        lock = RunLock(self.run_dir) if self.dist.is_main else None
        if lock is not None:
            lock.acquire()
        try:
            with value_checks(False):
                return self._fit(resume)
        finally:
            if lock is not None:
                lock.release()

    def _open_loggers(self, resumed_step: int | None) -> None:
        names = self.settings.loggers
        self._metrics = MetricsWriter(self.run_dir, enabled=self.dist.is_main, tensorboard="tensorboard" in names,
                                      purge_step=None if resumed_step is None else self._log_step(resumed_step + 1))
        self._trackers = []
        if not self.dist.is_main:
            return
        if "wandb" in names:
            from gkl.engine.trackers import WandbTracker

            self._trackers.append(WandbTracker(self.run_dir, config=self.config))
        if "mlflow" in names:
            from gkl.engine.trackers import MlflowTracker

            self._trackers.append(MlflowTracker(self.run_dir, params=self.config))

    def _close_loggers(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
        for tracker in self._trackers:
            tracker.close()
        self._trackers = []

    def _by_steps(self) -> bool:
        s = self.settings
        return s.iterations is not None or s.eval_every_steps is not None or s.checkpoint_every_steps is not None

    def _log_step(self, step: int) -> int:
        """The x-axis of TensorBoard/trackers: the epoch for epoch-based runs, else the global step."""
        return step if self._by_steps() else self.epoch_of(step)

    def epoch_of(self, step: int) -> int:
        return (step - 1) // self.steps_per_epoch + 1

    def _fit(self, resume: bool) -> dict[str, Any]:
        if self.dist.is_main:
            for tmp in remove_stale_temporaries(self.run_dir):
                self.logger.info("removed %s left by an interrupted save", tmp.name)
        if self.checkpoint_path.exists():
            if not resume:
                raise InputError(f"run_dir: {self.run_dir} already holds {CHECKPOINT_NAME}; "
                                 "pass resume=True (gkl: --resume) to continue it or choose a new run_dir")
            self.load_checkpoint(self.checkpoint_path)
            self.logger.info("resuming from %s (epoch %d); global step %d", self.checkpoint_path,
                             self.last_checkpoint_epoch, self.step)
            if self.resume_changed:
                self.logger.info("changed on resume: %s", ", ".join(self.resume_changed))
        elif resume:
            self.logger.info("no checkpoint in %s; starting from step 1", self.run_dir)
        barrier(self.dist)  # every rank has read run.json and the checkpoint before rank 0 rewrites them
        resumed = self.step > 0
        self._open_loggers(self.step if resumed else None)
        if self.dist.is_main:
            write_config(self.run_dir, self.config)
            write_run_record(self.run_dir, seed=self.settings.seed, world_size=self.dist.world_size,
                             resumed_from_epoch=self.last_checkpoint_epoch if resumed else None,
                             changed=self.resume_changed)
            self._metrics.truncate_after(self.last_checkpoint_epoch or 0, step=self.step if resumed else 0)
        final: dict[str, Any] = {}
        train_stats: dict[str, Any] = {}
        finished_before = self.step >= self.total_steps
        stop: dict[str, Any] = {"reason": "exception"}
        epoch = self.epoch_of(self.step + 1) if not finished_before else self.epochs
        try:
            while self.step < self.total_steps:
                epoch = self.epoch_of(self.step + 1)
                train_stats, final = self._run_epoch(epoch, final)
            stop = {"reason": "finished", "epoch": self.epochs, "step": self.total_steps}
        except NonFiniteLossError as error:
            stop = {"reason": "non-finite", "epoch": epoch, "message": str(error)}
            raise
        except CollapseError as error:
            stop = {"reason": "collapse", "epoch": epoch, "message": str(error)}
            raise
        except KeyboardInterrupt:
            stop = {"reason": "interrupted", "epoch": epoch}
            raise
        except BaseException as error:
            stop = {"reason": "exception", "epoch": epoch, "message": f"{type(error).__name__}: {error}"}
            raise
        finally:
            self._close_loggers()
            self._record_stop(stop)
        if not final and finished_before and self._has_eval():
            final = self._evaluate()  # resumed a finished run: report its final state again
        summary = self._summary(final, train_stats)
        if self.dist.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n",
                                                        encoding="utf-8")
        barrier(self.dist)
        return summary

    def _summary(self, final: dict[str, Any], train_stats: dict[str, Any]) -> dict[str, Any]:
        last = final.get("selected") if final else None
        summary: dict[str, Any] = {
            "epochs": self.epochs,
            "steps": self.total_steps,
            "select_metric": self.settings.select_metric,
            "select_mode": self.settings.select_mode,
            "select_split": "val" if self.val_loader is not None else "eval",
            "last": last,
            "best": self.best_value,
            "best_epoch": self.best_epoch,
            "best_step": self.best_step,
        }
        metric = self.settings.select_metric  # e.g. top1: last_top1, best_val_top1, test_top1_at_best_val
        if self.val_loader is None:
            summary[f"last_{metric}"] = last
            summary[f"best_{metric}"] = self.best_value  # selected on the test (eval) set itself
        else:  # model selection on the validation split; the test metric at the last and best-val epoch
            summary[f"last_{metric}"] = (final.get("eval") or {}).get(metric)
            summary[f"best_val_{metric}"] = self.best_value
            summary[f"test_{metric}_at_best_val"] = self.eval_at_best
        summary["final"] = {k: v for k, v in final.items() if k in ("eval", "ema_eval", "val", "ema_val")}
        summary["train"] = train_stats
        summary["collapsed"] = self.collapse.flag
        return summary

    def _has_eval(self) -> bool:
        return self.eval_loader is not None or self.val_loader is not None

    def _due(self, every_epochs: int, every_steps: int | None, *, epoch_end: bool) -> bool:
        """Whether an evaluation/checkpoint is due after the current step."""
        if self.step >= self.total_steps:
            return True
        if every_steps is not None:
            return self.step % every_steps == 0
        return epoch_end and self.epoch_of(self.step) % every_epochs == 0

    # ------------------------------------------------------------------ one epoch
    def _new_stats(self) -> dict[str, Any]:
        zero = lambda: torch.zeros((), dtype=torch.float64, device=self.device)  # noqa: E731
        return {"terms": {}, "metrics": {}, "seen": zero(), "correct": zero(), "scored": zero()}

    def _run_epoch(self, epoch: int, final: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run the remaining steps of ``epoch``; returns (train stats, last evaluation)."""
        k = self.settings.accumulate_steps
        first_step = (epoch - 1) * self.steps_per_epoch + 1
        done_in_epoch = self.step - (first_step - 1)
        end_step = min(epoch * self.steps_per_epoch, self.total_steps)
        started = time.perf_counter()
        seed_everything(epoch_seed(self.settings.seed, epoch, self.dist.rank))
        self.train_loader.set_epoch(epoch)
        self.objective.train()
        self.train_model.train()
        if done_in_epoch == 0 or self._stats is None:
            self._stats = self._new_stats()
        show_bar = self.dist.is_main and self.settings.progress
        batches: Any = progress(self.train_loader, total=len(self.train_loader), desc=f"epoch {epoch}",
                                enabled=show_bar)
        iterator = iter(batches)
        if done_in_epoch:
            # mid-epoch resume: draw the consumed batches again (same order: same seed and epoch),
            # drop them, then continue from the saved RNG state
            for _ in range(done_in_epoch * k):
                next(iterator)
            if self._resume_state is not None:
                restore_rng_state(self._resume_state, self.device)
        self._resume_state = None
        log_every = self.settings.log_every
        lr = self.schedule.lr_at(max(self.step, first_step))
        try:
            while self.step < end_step:
                step = self.step + 1
                lr = self.schedule.apply(step)
                loss = self._optimizer_step(iterator, epoch, step, step - first_step + 1)
                self.step = step
                in_epoch = step - first_step + 1
                if log_every and in_epoch % log_every == 0 and self.dist.is_main:
                    value = loss.item()
                    if show_bar and hasattr(batches, "set_postfix_str"):
                        batches.set_postfix_str(f"loss {value:.4f}")
                    elif not show_bar:
                        self.logger.info("epoch %d step %d/%d loss %.4f", epoch, in_epoch,
                                         self.steps_per_epoch, value)
                if step < end_step:
                    final = self._step_events(epoch, lr, final, started) or final
        finally:
            if hasattr(batches, "close"):
                batches.close()
        # ---- end of the epoch (or of the run, mid-epoch for an iteration-based run)
        train_stats = self._reduce_epoch_stats(self._stats)
        self._sync_buffers()
        self.objective.on_epoch_end(epoch)
        if self.ema is not None and self.settings.ema.every == "epoch":
            self.ema.update(self.model)
        record: dict[str, Any] = {"epoch": epoch, "step": self.step, "lr": lr, "train": train_stats}
        collapsed = None
        if self._due(self.settings.eval_every, self.settings.eval_every_steps, epoch_end=True) and self._has_eval():
            final, collapsed = self._evaluate_into(record, epoch)
        record["time"] = time.perf_counter() - started
        # the metrics line first: a kill before the checkpoint re-runs this epoch and rewrites it
        self._write_record(record)
        self._stats = None
        if self._due(self.settings.checkpoint_every, self.settings.checkpoint_every_steps, epoch_end=True):
            self.save_checkpoint(epoch)
        self.logger.info(self._epoch_line(record))
        if collapsed is not None and self.settings.stop_on_collapse:
            raise CollapseError(self._collapse_message(collapsed))
        return train_stats, final

    def _step_events(self, epoch: int, lr: float, final: dict[str, Any], started: float) -> dict[str, Any] | None:
        """Mid-epoch evaluation/checkpoint every N steps."""
        s = self.settings
        evaluate = s.eval_every_steps is not None and self.step % s.eval_every_steps == 0 and self._has_eval()
        save = s.checkpoint_every_steps is not None and self.step % s.checkpoint_every_steps == 0
        if not (evaluate or save):
            return None
        result = None
        collapsed = None
        if evaluate:
            self._sync_buffers()
            record: dict[str, Any] = {"epoch": epoch, "step": self.step, "lr": lr}
            result, collapsed = self._evaluate_into(record, epoch)
            record["time"] = time.perf_counter() - started
            self._write_record(record)
            self.logger.info(self._epoch_line(record))
            self.objective.train()
            self.train_model.train()
        if save:
            self.save_checkpoint(epoch - 1)
        if collapsed is not None and s.stop_on_collapse:
            raise CollapseError(self._collapse_message(collapsed))
        return result

    def _write_record(self, record: dict[str, Any]) -> None:
        assert self._metrics is not None
        self._metrics.write(record, step=self._log_step(self.step))
        for tracker in self._trackers:
            tracker.log(record, step=self._log_step(self.step))

    def _call_objective(self, batch: Any, epoch: int, step: int) -> StepOutput:
        return self.objective(self.train_model, batch, epoch=epoch, step=step)

    def _optimizer_step(self, iterator: Iterator, epoch: int, step: int, in_epoch: int) -> torch.Tensor:
        """One optimizer step over ``accumulate_steps`` micro-batches; returns the (unscaled) loss."""
        k = self.settings.accumulate_steps
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float32, device=self.device)
        for micro in range(k):
            batch = move_to_device(next(iterator), self.device, channels_last=self.settings.channels_last)
            sync = self._ddp is None or micro == k - 1
            context = contextlib.nullcontext() if sync else self._ddp.no_sync()
            with context:
                with self.amp.autocast():
                    out = self._call_objective(batch, epoch, step)
                if not isinstance(out, StepOutput):
                    raise TypeError(f"objective {type(self.objective).__name__} returned "
                                    f"{type(out).__name__}, expected StepOutput")
                self._check_finite(out.losses, epoch, in_epoch, step)
                loss = out.total().float()
                self.amp.backward(loss / k if k > 1 else loss)
            self._accumulate_stats(out, loss, batch)
            total = total + loss.detach() / k
        self.amp.step(self.optimizer, self.parameters, self.settings.clip_grad_norm)
        self.objective.after_optimizer_step()
        if self.ema is not None and self.settings.ema.every == "step":
            self.ema.update(self.model)
        return total

    def _accumulate_stats(self, out: StepOutput, loss: torch.Tensor, batch: Any) -> None:
        stats = self._stats
        assert stats is not None
        targets = out.targets
        n_value = out.batch_size
        if n_value is None:
            if out.logits is not None:
                n_value = out.logits.shape[0]
            elif targets is not None:
                n_value = targets.shape[0]
            else:
                n_value = 1
        n = float(n_value)
        stats["seen"] += n
        for name, term in out.losses.items():
            stats["terms"].setdefault(name, torch.zeros((), dtype=torch.float64, device=self.device))
            stats["terms"][name] += term.detach().double() * n
        stats["terms"].setdefault("loss", torch.zeros((), dtype=torch.float64, device=self.device))
        stats["terms"]["loss"] += loss.detach().double() * n
        if (out.logits is not None and targets is not None and targets.ndim == 1 and out.logits.ndim == 2
                and targets.shape[0] == out.logits.shape[0]):
            stats["correct"] += (out.logits.detach().argmax(dim=1) == targets).sum().double()
            stats["scored"] += n
        for name, value in out.metrics.items():
            stats["metrics"][name] = stats["metrics"].get(name, 0.0) + float(value) * n

    def _reduce_epoch_stats(self, stats: dict[str, Any]) -> dict[str, Any]:
        names = sorted(stats["terms"])
        metric_names = sorted(stats["metrics"])
        packed = torch.stack([*(stats["terms"][k] for k in names),
                              *(torch.tensor(stats["metrics"][k], dtype=torch.float64, device=self.device)
                                for k in metric_names),
                              stats["seen"], stats["correct"], stats["scored"]])
        all_reduce_sum(packed, self.dist)
        values = packed.tolist()
        total_seen, total_correct, total_scored = values[-3:]
        result: dict[str, Any] = {}
        denominator = max(total_seen, 1.0)
        for i, name in enumerate(names):
            result[name] = values[i] / denominator
        for j, name in enumerate(metric_names):
            result[name] = values[len(names) + j] / denominator
        if total_scored > 0:
            result["acc"] = 100.0 * total_correct / total_scored
        return result

    def _check_finite(self, losses: dict[str, torch.Tensor], epoch: int, in_epoch: int, step: int) -> None:
        """One host sync: all terms stacked, ``isfinite``, all-reduced so every rank stops together."""
        if not losses:
            raise ValueError(f"objective {type(self.objective).__name__} returned no loss terms")
        names = list(losses)
        for name in names:
            term = losses[name]
            if not isinstance(term, torch.Tensor) or term.numel() != 1:
                raise ValueError(f"objective {type(self.objective).__name__}: loss term {name!r} must be a "
                                 f"scalar tensor, got {getattr(term, 'shape', type(term).__name__)}")
        values = torch.stack([losses[k].detach().float().reshape(()) for k in names])
        bad = (~torch.isfinite(values)).float()
        all_reduce_sum(bad, self.dist)
        if not bool(bad.any()):
            return
        index = int(torch.nonzero(bad)[0])
        local = values[index].item()
        value = f"{local}" if not math.isfinite(local) else "non-finite on another rank"
        raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, step {in_epoch}: "
                                 f"term '{names[index]}' = {value} (global step {step}); {self._where()}")

    def _sync_buffers(self) -> None:
        """Under DDP, give every rank rank 0's buffers (BatchNorm statistics) at the epoch end.

        DDP broadcasts them at the start of every forward, so training is unchanged; without this the
        last forward of the epoch leaves per-rank statistics that evaluation and EMA would use.
        """
        if not self.dist.distributed:
            return
        import torch.distributed as torch_dist

        for buffer in self.model.buffers():
            torch_dist.broadcast(buffer, 0)

    # ------------------------------------------------------------------ stop reasons and collapse
    def _record_stop(self, stop: dict[str, Any]) -> None:
        """Say in train.log (and run.json) why the run stopped."""
        if not self.dist.is_main:
            return
        stop = {**stop, "last_checkpoint_epoch": self.last_checkpoint_epoch,
                "last_checkpoint_step": self.last_checkpoint_step}
        reason = stop["reason"]
        if reason == "finished":
            if self.settings.iterations is not None:
                self.logger.info("run finished: %d steps", self.total_steps)
            else:
                self.logger.info("run finished: %d epochs", self.epochs)
        elif reason == "interrupted":
            self.logger.warning("run interrupted during epoch %s; last checkpoint: epoch %s, step %s",
                                stop.get("epoch"), self.last_checkpoint_epoch, self.last_checkpoint_step)
        else:
            self.logger.error("run stopped (%s) during epoch %s: %s", reason, stop.get("epoch"),
                              stop.get("message", ""))
        try:
            record_stop(self.run_dir, stop)
        except OSError as error:  # never hide the reason of the stop behind a failed write
            self.logger.error("could not record the stop in run.json: %s", error)

    def _watch_collapse(self, epoch: int, value: float) -> dict[str, Any] | None:
        if self.collapse.chance is None and self.settings.select_mode == "max":
            self.collapse.chance = chance_level(self.collapse.metric, self.num_classes)
        flag = self.collapse.update(epoch, value, step=self.step if self._by_steps() else None)
        if flag is not None:
            self.logger.warning("collapse: %s = %.2f has been at chance level (%.2f + margin %.2f) for %d "
                                "evaluations since epoch %d, after having been above it",
                                flag["metric"], flag["value"], flag["chance"], flag["margin"],
                                flag["evaluations"], flag["since_epoch"])
        return flag

    def _collapse_message(self, flag: dict[str, Any]) -> str:
        return (f"collapse at epoch {flag['epoch']}: {flag['metric']} = {flag['value']:.2f} has been at chance "
                f"level {flag['chance']:.2f} (+ margin {flag['margin']:.2f}) for {flag['evaluations']} "
                f"evaluations since epoch {flag['since_epoch']} (train.stop_on_collapse is set); "
                f"{self._where()}")

    def _where(self) -> str:
        if self.last_checkpoint_step is not None:
            return (f"the last good checkpoint ({self.checkpoint_path}, epoch "
                    f"{self.last_checkpoint_epoch}{self._mid_epoch_note()}) is intact")
        return "no checkpoint has been written yet"

    def _mid_epoch_note(self) -> str:
        if self.last_checkpoint_step is None or self.last_checkpoint_step % self.steps_per_epoch == 0:
            return ""
        return f" + {self.last_checkpoint_step % self.steps_per_epoch} steps, global step {self.last_checkpoint_step}"

    # ------------------------------------------------------------------ evaluation
    def _get_evaluator(self) -> Any:
        if self.evaluator is None:
            if self.num_classes is None:
                self.num_classes = self._infer_num_classes()
            self.evaluator = ClassificationEvaluator(self.num_classes, self.class_groups)
        elif self.num_classes is None:
            self.num_classes = getattr(self.evaluator, "num_classes", None)
        return self.evaluator

    def _evaluate(self) -> dict[str, Any]:
        """Evaluate the raw model (and the EMA model) on the eval (and val) split.

        ``selected`` is ``select_metric`` of the model ``ema.evaluate`` names, on the val split
        when one is given, else on the eval split.
        """
        evaluator = self._get_evaluator()
        kwargs = dict(device=self.device, dist=self.dist)
        result: dict[str, Any] = {}
        feature_split = "eval" if self.eval_loader is not None else "val"
        for split, loader in (("eval", self.eval_loader), ("val", self.val_loader)):
            if loader is None:
                continue
            if self.settings.log_feature_stats and split == feature_split:
                result[split], result["features"] = self._evaluate_with_features(evaluator, loader, split, kwargs)
            else:
                result[split] = evaluator(self.model, loader, **kwargs)
            if self.ema is not None:
                result[f"ema_{split}"] = evaluator(self.ema.module, loader, **kwargs)
        split = "val" if self.val_loader is not None else "eval"
        key = f"ema_{split}" if self.settings.ema.evaluate == "ema" else split
        metric = self.settings.select_metric
        if metric not in result[key]:
            raise InputError(f"train.select_metric: the evaluator returns no {metric!r} "
                             f"(it returns {sorted(k for k, v in result[key].items() if isinstance(v, (int, float)))})")
        result["selected"] = float(result[key][metric])
        result["selected_from"] = key
        return result

    def _evaluate_with_features(self, evaluator: Any, loader: Iterable, split: str,
                                kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The evaluation of ``split`` with the feature statistics of the model (and the teacher, fed the
        same inputs; measured at the first evaluation only, since it is frozen) read by hooks."""
        teacher = self.feature_teacher if self._teacher_features is None else None
        with watch_feature_statistics(self.model, teacher) as meters:
            metrics = evaluator(self.model, loader, **kwargs)
        features: dict[str, Any] = {"split": split, "student": meters["student"].result(self.dist)}
        if teacher is not None:
            self._teacher_features = meters["teacher"].result(self.dist)
        if self._teacher_features is not None:
            features["teacher"] = self._teacher_features
        return metrics, features

    def _evaluate_into(self, record: dict[str, Any], epoch: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
        result = self._evaluate()
        value = result["selected"]
        better = (self.best_value is None or
                  (value > self.best_value if self.settings.select_mode == "max" else value < self.best_value))
        if better:
            self.best_value, self.best_epoch, self.best_step = value, epoch, self.step
            if self.val_loader is not None and "eval" in result:
                self.eval_at_best = float(result["eval"][self.settings.select_metric])
            if self.dist.is_main:
                use_ema = self.settings.ema.evaluate == "ema"
                weights = (self.ema.module if use_ema else self.model).state_dict()
                atomic_save({"model": weights, "epoch": int(epoch), self.settings.select_metric: value},
                            self.best_path)
        for key in ("eval", "ema_eval", "val", "ema_val"):
            if key in result:
                record[key] = {k: v for k, v in result[key].items() if k != "per_class"}
        if "features" in result:
            record["features"] = result["features"]
        record["select"] = {"metric": self.settings.select_metric, "split": result["selected_from"],
                            "value": value}
        record["best"] = self.best_value
        record["best_epoch"] = self.best_epoch
        if self.settings.select_metric == "top1" and self.val_loader is None:
            record["best_top1"] = self.best_value
        collapsed = self._watch_collapse(epoch, value)
        if collapsed is not None:
            record["collapsed"] = collapsed
        return result, collapsed

    @torch.no_grad()
    def _infer_num_classes(self) -> int:
        loader = self.eval_loader if self.eval_loader is not None else self.val_loader
        images, _ = next(iter(loader))
        was_training = self.model.training
        self.model.eval()
        try:
            logits = self.model(images.to(self.device))
        finally:
            self.model.train(was_training)
        return int(logits.shape[1])

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self, epoch: int) -> dict[str, Any]:
        """Everything needed to continue after global step ``self.step`` (``epoch`` = completed epochs)."""
        mid_epoch = self.step % self.steps_per_epoch != 0 and self.step < self.total_steps
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "epoch": epoch,
            "step": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.amp.state_dict(),
            "objective": self.objective.checkpoint_state(),
            "rng": capture_rng_state(self.device),
            "epoch_stats": self._stats_state() if mid_epoch else None,
            "best": {"value": self.best_value, "top1": self.best_value, "epoch": self.best_epoch,
                     "step": self.best_step, "eval_at_best": self.eval_at_best},
            "collapse": self.collapse.state_dict(),
            "num_classes": self.num_classes,
            "world_size": self.dist.world_size,
            "settings": self.settings.to_dict(),
            "config": self.config,
        }

    def _stats_state(self) -> dict[str, Any] | None:
        if self._stats is None:
            return None
        stats = self._stats
        return {"terms": {k: v.detach().cpu() for k, v in stats["terms"].items()},
                "metrics": dict(stats["metrics"]),
                "seen": stats["seen"].cpu(), "correct": stats["correct"].cpu(), "scored": stats["scored"].cpu()}

    def save_checkpoint(self, epoch: int) -> None:
        """Rank 0 writes ``checkpoint.pt`` atomically; all ranks then agree it exists."""
        if self.dist.is_main:
            atomic_save(self.checkpoint_state(epoch), self.checkpoint_path)
        barrier(self.dist)
        self.last_checkpoint_epoch = epoch
        self.last_checkpoint_step = self.step

    def load_checkpoint(self, path: str | Path) -> int:
        """Restore every piece of state from a checkpoint of a matching run; returns its epoch.

        Settings outside the tolerated ones (:mod:`gkl.engine.resume`) must match; after a stop on a
        non-finite loss ``optim.lr``, ``clip_grad_norm``, ``amp`` and ``schedule`` may change
        (listed in ``self.resume_changed``).
        """
        path = Path(path)
        state = read_checkpoint(path, map_location=self.device)
        self.resume_changed = self._check_matches(state, path)
        changed = set(self.resume_changed)
        try:
            self.model.load_state_dict(state["model"])
            if self.ema is not None:
                if state["ema"] is None:
                    raise InputError(f"{path}: checkpoint has no EMA state but train.ema.decay is set")
                self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            epoch = int(state["epoch"])
            step = int(state.get("step", epoch * self.steps_per_epoch))
            saved_spe = state.get("steps_per_epoch", self.steps_per_epoch)
            if step % max(saved_spe, 1) != 0 and saved_spe != self.steps_per_epoch:
                raise InputError(f"{path}: a mid-epoch checkpoint of {saved_spe} steps per epoch cannot resume "
                                 f"with {self.steps_per_epoch} (batch size, world size or data changed)")
            if saved_spe != self.steps_per_epoch:
                step = epoch * self.steps_per_epoch
            if not any(k.startswith("train.schedule") for k in changed) and "last_epoch" not in state["schedule"]:
                self.schedule.load_state_dict(state["schedule"])
            self.schedule.last_step = step
            if "train.amp" in changed and (state["scaler"] is None) != (self.amp.scaler is None):
                if self.amp.scaler is not None:
                    self.logger.info("amp changed on resume: starting a fresh GradScaler")
            else:
                self.amp.load_state_dict(state["scaler"])
            self.objective.load_checkpoint_state(state["objective"])
            best = state["best"]
            self.best_value = best.get("value", best.get("top1"))
            self.best_epoch = best["epoch"]
            self.best_step = best.get("step")
            self.eval_at_best = best.get("eval_at_best")
        except (KeyError, TypeError, IndexError) as error:
            raise InputError(f"{path}: damaged training checkpoint ({type(error).__name__}: {error})") from None
        self.collapse.load_state_dict(state.get("collapse"))
        if self.num_classes is None:
            self.num_classes = state.get("num_classes")
        self.step = step
        self.last_checkpoint_epoch = epoch
        self.last_checkpoint_step = step
        if step % self.steps_per_epoch != 0 and step < self.total_steps:
            # mid-epoch: the epoch's statistics so far; the RNG state is restored after the skip
            saved = state.get("epoch_stats")
            if saved is not None:
                dev = self.device
                self._stats = {"terms": {k: v.to(dev) for k, v in saved["terms"].items()},
                               "metrics": dict(saved["metrics"]), "seen": saved["seen"].to(dev),
                               "correct": saved["correct"].to(dev), "scored": saved["scored"].to(dev)}
            self._resume_state = state["rng"]
        else:
            restore_rng_state(state["rng"], self.device)
        if state["world_size"] != self.dist.world_size:
            self.logger.warning("checkpoint was written with world_size %d, resuming with %d: "
                                "the data order differs from an uninterrupted run",
                                state["world_size"], self.dist.world_size)
        return self.last_checkpoint_epoch

    def _check_matches(self, state: dict, path: Path) -> list[str]:
        problem = layout_mismatch(model_layout(self.model.state_dict()), model_layout(state["model"]))
        if problem:
            raise InputError(f"{path}: checkpoint model does not match this model: {problem}")
        stopped = read_run_record(self.run_dir).get("stopped") or {}
        return resume_changes(settings=self.settings.to_dict(), saved_settings=state["settings"],
                              config=self.config, saved_config=state["config"],
                              tolerant_config_keys=self.resume_tolerant_keys,
                              after_non_finite=stopped.get("reason") == "non-finite", path=path)

    # ------------------------------------------------------------------ logging
    def _epoch_line(self, record: dict[str, Any]) -> str:
        parts = [f"epoch {record['epoch']}"]
        if self._by_steps():
            parts.append(f"step {record['step']}")
        parts.append(f"lr {record['lr']:.5g}")
        train = record.get("train")
        if train is not None:
            parts.append(f"loss {train.get('loss', float('nan')):.4f}")
            if "acc" in train:
                parts.append(f"train_acc {train['acc']:.2f}")
        metric = self.settings.select_metric
        for key, label in (("eval", metric), ("ema_eval", f"ema_{metric}"), ("val", f"val_{metric}"),
                           ("ema_val", f"ema_val_{metric}")):
            if key in record and isinstance(record[key].get(metric), (int, float)):
                parts.append(f"{label} {record[key][metric]:.2f}")
        if record.get("best") is not None:
            parts.append(f"best {record['best']:.2f}@{record['best_epoch']}")
        parts.append(f"{record['time']:.1f}s")
        return " | ".join(parts)
