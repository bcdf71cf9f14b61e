"""The one training loop shared by every task and objective.

The loop counts optimizer steps (``step`` from 1). Epoch ``e`` (from 1) covers steps
``(e-1)·S+1 .. e·S`` with ``S = len(train_loader) // accumulate_steps``; a run lasts
``train.epochs`` epochs or ``train.iterations`` steps. At the start of every epoch the
engine re-seeds from ``(seed, e, rank)`` and calls ``train_loader.set_epoch(e)``; every step
runs the objective on ``accumulate_steps`` batches (:mod:`gkl.objectives.base`), checks the
loss terms once (the step's only host synchronisation), and steps the optimizer with the LR of
that step (:class:`LRSchedule`). At the end of an epoch: ``objective.on_epoch_end(e)``, EMA,
evaluation (:mod:`gkl.engine.evaluation`, best checkpoint and collapse watch in
:mod:`gkl.engine.selection`) and checkpoint (:mod:`gkl.engine.train_state`) when due (or every
N steps with ``eval_every_steps``/``checkpoint_every_steps``); ``metrics.jsonl`` before the
checkpoint. A checkpoint written mid-epoch resumes exactly: the consumed batches of the epoch are
drawn again and skipped, then the saved RNG state is restored.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gkl.engine.amp import MixedPrecision
from gkl.engine.batches import TrainLoader, move_to_device
from gkl.engine.cadence import Cadence
from gkl.engine.checkpoint import BEST_NAME, CHECKPOINT_NAME, atomic_save, remove_stale_temporaries
from gkl.engine.ema import ModelEMA
from gkl.engine.errors import CollapseError, NonFiniteLossError
from gkl.engine.evaluation import RunEvaluation
from gkl.engine.lock import RunLock
from gkl.engine.logging import RunLoggers, epoch_line, on_terminal, progress, setup_logger, step_line
from gkl.engine.resume import DEFAULT_TOLERANT_CONFIG_KEYS
from gkl.engine.run_dir import log_stop, prepare_run_dir, stop_record, write_config, write_run_record
from gkl.engine.seeding import epoch_seed, restore_rng_state, seed_everything, set_deterministic
from gkl.engine.selection import BestCheckpoint, collapse_message
from gkl.engine.setup import broadcast_buffers, build_optimization, check_trainer_arguments, wrap_model
from gkl.engine.train_state import checkpoint_state, gather_rank_states, restore_checkpoint, resume_point
from gkl.engine.train_stats import TrainStats, first_non_finite
from gkl.losses import value_checks
from gkl.objectives.base import Objective, StepOutput
from gkl.settings.train import TrainSettings
from gkl.utils.distributed import DistInfo, barrier, resolve_device
from gkl.utils.errors import InputError

__all__ = ["Trainer"]


class Trainer:
    """Trains ``model`` with ``objective`` (optimizer and LR schedule by config, AMP, DDP, EMA,
    gradient accumulation, evaluation by the task's evaluator, checkpoints).

    Args:
        model: the model to train (plain module; wrapped in DDP here when ``dist.world_size > 1``,
            then in ``torch.compile`` with ``settings.compile``).
        objective: an :class:`~gkl.objectives.base.Objective`; it receives the (wrapped) model and
            the batch exactly as the train loader yields it, moved to the device.
        train_loader: iterable of batches with ``__len__`` and ``set_epoch(epoch)``; it shards the
            training set across ranks itself. Needs a ``batch_size`` attribute (per process; or a
            wrapped DataLoader as ``.loader``) when ``settings.optim.reference_batch_size`` is set.
        eval_loader: the test/eval split (the evaluator combines the ranks), or None.
        evaluator: the task's :class:`~gkl.metrics.base.Evaluator` (required; None only when there is
            no eval and no val loader). Its optional ``chance_level(metric)`` enables the collapse watch.
        settings: :class:`TrainSettings`.
        run_dir: directory for config.yaml, run.json, train.log, metrics.jsonl, tb/,
            checkpoint.pt, best.pt, summary.json.
        config: the resolved config dict written to config.yaml and stored in checkpoints.
        dist: from :func:`gkl.utils.distributed.init_distributed`; None = single process
            on ``settings.device``.
        val_loader: a validation split; when given, ``settings.select_metric`` is taken on it
            (best.pt, collapse) while ``eval_loader`` is still evaluated and reported.
        param_lr_scales: LR multiplier by model parameter name (default 1), e.g. the 10x heads of a
            segmentation model. The optimizer also trains ``objective.trainable_param_groups()``.
        resume_tolerant_keys: dotted ``config`` keys that may differ on resume
            (default :data:`gkl.engine.resume.DEFAULT_TOLERANT_CONFIG_KEYS`).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        objective: Objective,
        train_loader: TrainLoader,
        eval_loader: Iterable | None,
        evaluator: Any,
        settings: TrainSettings,
        run_dir: str | Path,
        config: dict | None = None,
        dist: DistInfo | None = None,
        val_loader: Iterable | None = None,
        param_lr_scales: Mapping[str, float] | None = None,
        resume_tolerant_keys: Sequence[str] = DEFAULT_TOLERANT_CONFIG_KEYS,
    ) -> None:
        check_trainer_arguments(model, objective, train_loader, settings, config)
        self.settings = settings
        self.dist = dist if dist is not None else DistInfo(device=resolve_device(settings.device))
        if settings.sync_bn and self.dist.distributed and self.dist.device.type != "cuda":
            raise ValueError(
                "sync_bn: SyncBatchNorm needs CUDA devices (it fails on CPU/gloo); set train.sync_bn=false on CPU"
            )
        self.device = self.dist.device
        self.run_dir = Path(run_dir)
        self.config = config
        self.train_loader = train_loader
        self.evaluation = RunEvaluation(
            evaluator, eval_loader=eval_loader, val_loader=val_loader, settings=settings, dist=self.dist
        )
        self.resume_tolerant_keys = tuple(resume_tolerant_keys)
        if self.dist.is_main:
            prepare_run_dir(self.run_dir)
        barrier(self.dist)
        self.logger = setup_logger(self.run_dir, is_main=self.dist.is_main)

        self.cadence = Cadence(settings, len(train_loader))
        self.steps_per_epoch, self.total_steps = self.cadence.steps_per_epoch, self.cadence.total_steps
        self.epochs = self.cadence.epochs

        if settings.deterministic:
            set_deterministic(True)
        seed_everything(epoch_seed(settings.seed, 0, self.dist.rank))
        self.model, self.train_model, self._ddp = wrap_model(model, settings, self.dist)
        self.objective = objective.to(self.device)
        self.parameters, self.optimizer, self.schedule = build_optimization(
            self.model,
            self.objective,
            train_loader=train_loader,
            settings=settings,
            dist=self.dist,
            steps_per_epoch=self.steps_per_epoch,
            total_steps=self.total_steps,
            param_lr_scales=param_lr_scales,
        )
        self.amp = MixedPrecision(settings.amp, self.device)
        self.objective.use_grad_scaler(self.amp.scaler)  # AWP scales its proxy backward with it
        self.ema = ModelEMA.from_settings(self.model, settings.ema, steps=self.total_steps, epochs=self.epochs)

        self.step = 0  # optimizer steps done
        self.best = BestCheckpoint(
            self.best_path,
            settings,
            chance=self.evaluation.chance_level(),
            has_val=val_loader is not None,
            is_main=self.dist.is_main,
            logger=self.logger,
        )
        self.last_checkpoint_epoch: int | None = None
        self.last_checkpoint_step: int | None = None
        self.resume_changed: list[str] = []
        self.stats: TrainStats | None = None  # running statistics of the current epoch
        self._loggers: RunLoggers | None = None
        self._resume_rng: dict[str, Any] | None = None
        if settings.log_feature_stats:
            self.evaluation.feature_teacher = self.objective.teacher_model()
            self.evaluation.check_feature_models(self.model)

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
        ``select_metric``, ``select_mode``, ``select_split``, ``last``, ``best`` (values of the
        selected metric), ``best_epoch``, ``best_step``, the metric-named fields (e.g. ``last_top1``,
        ``best_top1``; with a validation split ``best_val_top1``, ``test_top1_at_best_val``), ``final``
        (last evaluation(s)), ``train`` (last epoch's train statistics) and ``collapsed``.

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

    def _start(self, resume: bool) -> bool:
        """Clean up, resume if asked, open the loggers, write config.yaml/run.json; whether it resumed."""
        if self.dist.is_main:
            for tmp in remove_stale_temporaries(self.run_dir):
                self.logger.info("removed %s left by an interrupted save", tmp.name)
        if self.checkpoint_path.exists():
            if not resume:
                raise InputError(
                    f"run_dir: {self.run_dir} already holds {CHECKPOINT_NAME}; "
                    "pass resume=True (gkl: --resume) to continue it or choose a new run_dir"
                )
            self.load_checkpoint(self.checkpoint_path)
            self.logger.info(
                "resuming from %s (epoch %d); global step %d",
                self.checkpoint_path,
                self.last_checkpoint_epoch,
                self.step,
            )
            if self.resume_changed:
                self.logger.info("changed on resume: %s", ", ".join(self.resume_changed))
        elif resume:
            self.logger.info("no checkpoint in %s; starting from step 1", self.run_dir)
        barrier(self.dist)  # every rank has read run.json and the checkpoint before rank 0 rewrites them
        resumed = self.step > 0
        self._loggers = RunLoggers(
            self.run_dir,
            self.settings.loggers,
            is_main=self.dist.is_main,
            config=self.config,
            purge_step=self.cadence.log_x(self.step + 1) if resumed else None,
        )
        if self.dist.is_main:
            write_config(self.run_dir, self.config)
            write_run_record(
                self.run_dir,
                seed=self.settings.seed,
                world_size=self.dist.world_size,
                resumed_from_epoch=self.last_checkpoint_epoch if resumed else None,
                changed=self.resume_changed,
            )
            self._loggers.metrics.truncate_after(self.last_checkpoint_epoch or 0, step=self.step if resumed else 0)
        return resumed

    def _fit(self, resume: bool) -> dict[str, Any]:
        self._start(resume)
        final: dict[str, Any] = {}
        train_stats: dict[str, Any] = {}
        finished_before = self.step >= self.total_steps
        stop: dict[str, Any] = {"reason": "exception"}
        epoch = self.cadence.epoch_of(self.step + 1) if not finished_before else self.epochs
        try:
            while self.step < self.total_steps:
                epoch = self.cadence.epoch_of(self.step + 1)
                train_stats, final = self._run_epoch(epoch, final)
            stop = {"reason": "finished", "epoch": self.epochs, "step": self.total_steps}
        except BaseException as error:
            stop = stop_record(error, epoch)
            raise
        finally:
            if self._loggers is not None:
                self._loggers.close()
            if self.dist.is_main:
                finished = (
                    f"run finished: {self.total_steps} steps"
                    if self.settings.iterations is not None
                    else f"run finished: {self.epochs} epochs"
                )
                log_stop(
                    self.run_dir,
                    {
                        **stop,
                        "last_checkpoint_epoch": self.last_checkpoint_epoch,
                        "last_checkpoint_step": self.last_checkpoint_step,
                    },
                    self.logger,
                    finished=finished,
                )
        if not final and finished_before and self.evaluation.enabled:
            final = self._evaluate()  # resumed a finished run: report its final state again
        summary = self._summary(final, train_stats)
        if self.dist.is_main:
            (self.run_dir / "summary.json").write_text(
                json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8"
            )
        barrier(self.dist)
        return summary

    def _summary(self, final: dict[str, Any], train_stats: dict[str, Any]) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "steps": self.total_steps,
            "select_metric": self.settings.select_metric,
            "select_mode": self.settings.select_mode,
            "select_split": self.evaluation.select_split,
            **self.best.summary_fields(final),
            "final": {k: v for k, v in final.items() if k in ("eval", "ema_eval", "val", "ema_val")},
            "train": train_stats,
            "collapsed": self.best.collapse.flag,
        }

    # ------------------------------------------------------------------ one epoch
    def _run_epoch(self, epoch: int, final: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run the remaining steps of ``epoch``; returns (train stats, last evaluation)."""
        first_step = (epoch - 1) * self.steps_per_epoch + 1
        done_in_epoch = self.step - (first_step - 1)
        end_step = min(epoch * self.steps_per_epoch, self.total_steps)
        started = time.perf_counter()
        seed_everything(epoch_seed(self.settings.seed, epoch, self.dist.rank))
        self.train_loader.set_epoch(epoch)
        self.objective.train()
        self.train_model.train()
        if done_in_epoch == 0 or self.stats is None:
            self.stats = TrainStats(self.device)
        show_bar = self.dist.is_main and on_terminal(self.settings.progress)
        batches: Any = progress(
            self.train_loader, total=len(self.train_loader), desc=f"epoch {epoch}", enabled=show_bar
        )
        iterator = iter(batches)
        if done_in_epoch:
            # mid-epoch resume: draw the consumed batches again (same order: same seed and epoch),
            # drop them, then continue from the saved RNG state
            for _ in range(done_in_epoch * self.settings.accumulate_steps):
                next(iterator)
            if self._resume_rng is not None:
                restore_rng_state(self._resume_rng, self.device)
        self._resume_rng = None
        lr = self.schedule.lr_at(max(self.step, first_step))
        try:
            while self.step < end_step:
                step = self.step + 1
                lr = self.schedule.apply(step)
                loss = self._optimizer_step(iterator, epoch, step, step - first_step + 1)
                self.step = step
                self._log_progress(loss, epoch, step - first_step + 1, batches if show_bar else None)
                if step < end_step:
                    final = self._step_events(epoch, lr, started) or final
        finally:
            if hasattr(batches, "close"):
                batches.close()
        return self._end_epoch(epoch, lr, final, started)

    def _log_progress(self, loss: torch.Tensor, epoch: int, in_epoch: int, bar: Any) -> None:
        """Every ``log_every`` steps, rank 0 shows the step's loss and the epoch's running means
        (read with one ``tolist()``: the only host transfer of a logging step)."""
        if not (self.cadence.logging_step(in_epoch) and self.dist.is_main):
            return
        assert self.stats is not None  # _run_epoch starts the epoch's statistics
        means = self.stats.reduce(None, extra=[loss])
        value = means.pop("extra")[0]
        if bar is not None:
            if hasattr(bar, "set_postfix_str"):
                bar.set_postfix_str(f"loss {value:.4f}")
        else:
            self.logger.info(step_line(epoch, in_epoch, self.steps_per_epoch, value, means))

    def _end_epoch(
        self, epoch: int, lr: float, final: dict[str, Any], started: float
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """End of the epoch (or of the run, mid-epoch for an iteration-based run): statistics, hooks,
        EMA, evaluation, the metrics line, **then** the checkpoint (a kill between the two re-runs the
        epoch and rewrites its line)."""
        assert self.stats is not None  # _run_epoch starts the epoch's statistics
        train_stats = self.stats.reduce(self.dist)
        broadcast_buffers(self.model, self.dist)
        self.objective.on_epoch_end(epoch)
        if self.ema is not None and self.settings.ema.every == "epoch":
            self.ema.update(self.model)
        record: dict[str, Any] = {"epoch": epoch, "step": self.step, "lr": lr, "train": train_stats}
        collapsed = None
        if self.cadence.evaluation_due(self.step, epoch_end=True) and self.evaluation.enabled:
            final, collapsed = self._evaluate_into(record, epoch)
        self._write_record(record, started)
        self.stats = None
        if self.cadence.checkpoint_due(self.step, epoch_end=True):
            self.save_checkpoint(epoch)
        self._log_record(record, collapsed)
        return train_stats, final

    def _step_events(self, epoch: int, lr: float, started: float) -> dict[str, Any] | None:
        """Mid-epoch evaluation/checkpoint every N steps; the evaluation result or None."""
        s = self.settings
        evaluate = s.eval_every_steps is not None and self.step % s.eval_every_steps == 0 and self.evaluation.enabled
        save = s.checkpoint_every_steps is not None and self.step % s.checkpoint_every_steps == 0
        if not (evaluate or save):
            return None
        result = None
        collapsed = None
        record: dict[str, Any] = {"epoch": epoch, "step": self.step, "lr": lr}
        if evaluate:
            broadcast_buffers(self.model, self.dist)
            result, collapsed = self._evaluate_into(record, epoch)
            self._write_record(record, started)
            self.objective.train()
            self.train_model.train()
        if save:
            self.save_checkpoint(epoch - 1)
        if evaluate:
            self._log_record(record, collapsed)
        return result

    def _write_record(self, record: dict[str, Any], started: float) -> None:
        """The metrics line (metrics.jsonl, TensorBoard, trackers), timed from ``started``."""
        record["time"] = time.perf_counter() - started
        assert self._loggers is not None
        self._loggers.write(record, step=self.cadence.log_x(self.step))

    def _log_record(self, record: dict[str, Any], collapsed: dict[str, Any] | None) -> None:
        """The record's train.log line; then the collapse stop when ``train.stop_on_collapse`` is set."""
        self.logger.info(epoch_line(record, metric=self.settings.select_metric, by_steps=self.cadence.by_steps))
        if collapsed is not None and self.settings.stop_on_collapse:
            raise CollapseError(collapse_message(collapsed, self._where()))

    def _optimizer_step(self, iterator: Iterator, epoch: int, step: int, in_epoch: int) -> torch.Tensor:
        """One optimizer step over ``accumulate_steps`` micro-batches; returns the (unscaled) loss.
        One host synchronisation per micro-batch: the finite check of its loss terms."""
        k = self.settings.accumulate_steps
        stats = self.stats
        assert stats is not None  # _run_epoch starts the epoch's statistics
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float32, device=self.device)
        for micro in range(k):
            batch = move_to_device(next(iterator), self.device, channels_last=self.settings.channels_last)
            # DDP all-reduces the gradients on the last micro-batch only
            ddp = self._ddp if micro != k - 1 else None
            with ddp.no_sync() if ddp is not None else contextlib.nullcontext():
                with self.amp.autocast():
                    out = self.objective(self.train_model, batch, epoch=epoch, step=step)
                if not isinstance(out, StepOutput):
                    raise TypeError(
                        f"objective {type(self.objective).__name__} returned {type(out).__name__}, expected StepOutput"
                    )
                self._check_finite(out.losses, epoch, in_epoch, step)
                loss = out.total().float()
                self.amp.backward(loss / k if k > 1 else loss)
            stats.add(out, loss)
            total = total + loss.detach() / k
        self.amp.step(self.optimizer, self.parameters, self.settings.clip_grad_norm)
        self.objective.after_optimizer_step()
        if self.ema is not None and self.settings.ema.every == "step":
            self.ema.update(self.model)
        return total

    def _check_finite(self, losses: dict[str, torch.Tensor], epoch: int, in_epoch: int, step: int) -> None:
        bad = first_non_finite(losses, self.dist, type(self.objective).__name__)
        if bad is not None:
            raise NonFiniteLossError(
                f"non-finite loss at epoch {epoch}, step {in_epoch}: term '{bad[0]}' = "
                f"{bad[1]} (global step {step}); {self._where()}"
            )

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self) -> dict[str, Any]:
        return self.evaluation(self.model, self.ema.module if self.ema is not None else None)

    def _evaluate_into(self, record: dict[str, Any], epoch: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Evaluate, update best.pt and the collapse watch, fill ``record``; (result, collapse record)."""
        result = self._evaluate()
        # (TrainSettings: evaluate="ema" needs ema.decay, so self.ema exists)
        best_model = self.ema.module if self.ema is not None and self.settings.ema.evaluate == "ema" else self.model
        collapsed = self.best.observe(
            result,
            record,
            epoch=epoch,
            step=self.step,
            weights=best_model.state_dict,
            collapse_step=self.step if self.cadence.by_steps else None,
        )
        return result, collapsed

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self, epoch: int) -> dict[str, Any]:
        """Everything needed to continue after global step ``self.step`` (:mod:`gkl.engine.train_state`)."""
        return checkpoint_state(self, epoch)

    def save_checkpoint(self, epoch: int) -> None:
        """Rank 0 writes ``checkpoint.pt`` atomically (mid-epoch with every rank's rank-local state);
        all ranks then agree it exists."""
        ranks = gather_rank_states(self)
        if self.dist.is_main:
            atomic_save(checkpoint_state(self, epoch, ranks), self.checkpoint_path)
        barrier(self.dist)
        self.last_checkpoint_epoch = epoch
        self.last_checkpoint_step = self.step

    def load_checkpoint(self, path: str | Path) -> int:
        """Restore every piece of state from a checkpoint of a matching run; returns its epoch.

        Settings outside the tolerated ones (:mod:`gkl.engine.resume`) must match; after a stop on a
        non-finite loss ``optim.lr``, ``clip_grad_norm``, ``amp`` and ``schedule`` may change
        (listed in ``self.resume_changed``).
        """
        restored = restore_checkpoint(self, Path(path))
        self.resume_changed = restored.changed
        self.step = restored.step
        self.last_checkpoint_epoch, self.last_checkpoint_step = restored.epoch, restored.step
        if restored.rng is not None:  # mid-epoch: statistics so far; the RNG state is restored after the skip
            self.stats = restored.stats
            self._resume_rng = restored.rng
        return restored.epoch

    def _where(self) -> str:
        return resume_point(
            self.checkpoint_path, self.last_checkpoint_epoch, self.last_checkpoint_step, self.steps_per_epoch
        )
