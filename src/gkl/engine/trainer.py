"""The one training loop shared by every objective.

Per epoch ``e`` (from 1): re-seed from ``(seed, e, rank)``, set the epoch's LR,
``train_loader.set_epoch(e)``, run the step protocol of
:mod:`gkl.objectives.base` on every batch, ``objective.on_epoch_end(e)``, EMA
update, evaluation, ``metrics.jsonl`` record, atomic checkpoint (rank 0).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
import yaml
from torch import nn

from gkl.engine.amp import MixedPrecision
from gkl.engine.checkpoint import (
    BEST_NAME,
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CHECKPOINT_VERSION,
    layout_mismatch,
    load_checkpoint,
    model_layout,
    remove_stale_temporaries,
    save_best,
    atomic_save,
)
from gkl.engine.collapse import CollapseMonitor, chance_level
from gkl.engine.errors import CollapseError, NonFiniteLossError, TrainingStopped
from gkl.engine.guards import loss_value_checks
from gkl.engine.lock import RunLock
from gkl.engine.resume import resume_changes
from gkl.utils.distributed import DistInfo, all_reduce_sum, barrier, resolve_device
from gkl.engine.ema import ModelEMA
from gkl.engine.logging import MetricsWriter, progress, setup_logger
from gkl.engine.run_dir import read_run_record, record_stop, write_config, write_run_record
from gkl.engine.schedules import EpochLRSchedule, scaled_base_lr
from gkl.engine.seeding import capture_rng_state, epoch_seed, restore_rng_state, seed_everything, set_deterministic
from gkl.settings.train import TrainSettings
from gkl.utils.errors import InputError
from gkl.evaluate.accuracy import evaluate_classifier
from gkl.objectives.base import Objective, StepOutput, unwrap_model


__all__ = ["CollapseError", "NonFiniteLossError", "Trainer", "TrainingStopped", "per_process_batch_size"]

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


class Trainer:
    """Trains ``model`` with ``objective`` (SGD, per-epoch LR schedule, AMP, DDP, EMA, checkpoints).

    Args:
        model: the model to train (plain module; wrapped in DDP here when ``dist.world_size > 1``).
        objective: an :class:`~gkl.objectives.base.Objective`; it receives the (wrapped) model.
        train_loader: iterable of ``(images, labels)`` with ``__len__`` and ``set_epoch(epoch)``;
            it shards the training set across ranks itself. Needs a ``batch_size`` attribute
            (per process; or a wrapped DataLoader as ``.loader``) when
            ``settings.optim.reference_batch_size`` is set.
        eval_loader: iterable of ``(images, labels)`` over the whole (unsharded) eval set, or None.
        settings: :class:`TrainSettings`.
        run_dir: directory for config.yaml, run.json, train.log, metrics.jsonl, tb/,
            checkpoint.pt, best.pt, summary.json.
        config: the resolved config dict written to config.yaml and stored in checkpoints.
        class_groups: ``{"many": [...], "medium": [...], "few": [...]}`` for group accuracies.
        dist: from :func:`gkl.utils.distributed.init_distributed`; None = single process
            on ``settings.device``.
        num_classes: logits width; inferred from the first evaluation batch when None.
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
        self.train_loader = train_loader
        self.eval_loader = eval_loader
        self.resume_tolerant_keys = tuple(resume_tolerant_keys)
        if self.dist.is_main:
            self._prepare_run_dir()
        barrier(self.dist)
        self.logger = setup_logger(self.run_dir, is_main=self.dist.is_main)

        if settings.deterministic:
            set_deterministic(True)
        seed_everything(epoch_seed(settings.seed, 0, self.dist.rank))

        self.model = model.to(self.device)
        self.objective = objective.to(self.device)
        if settings.sync_bn and self.dist.distributed:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model: nn.Module = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        else:
            self.train_model = self.model

        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        opt = settings.optim
        self.optimizer = torch.optim.SGD(self.parameters, lr=opt.lr, momentum=opt.momentum,
                                         weight_decay=opt.weight_decay, nesterov=opt.nesterov)
        base_lr = opt.lr
        if opt.reference_batch_size is not None:
            batch_size = per_process_batch_size(train_loader)
            if batch_size is None:
                raise ValueError("train_loader: needs an integer batch_size attribute (per process) "
                                 "for optim.reference_batch_size (LR scaling)")
            base_lr = scaled_base_lr(opt.lr, global_batch_size=batch_size * self.dist.world_size,
                                     reference_batch_size=opt.reference_batch_size)
        self.schedule = EpochLRSchedule(self.optimizer, base_lr=base_lr, epochs=settings.epochs,
                                        settings=settings.schedule)
        self.amp = MixedPrecision(settings.amp, self.device)
        self.ema = ModelEMA(self.model, settings.ema.decay) if settings.ema.decay is not None else None

        self.best_top1: float | None = None
        self.best_epoch: int | None = None
        self.last_checkpoint_epoch: int | None = None
        self.resume_changed: list[str] = []
        self.collapse = CollapseMonitor(metric="top1", chance=None, patience=settings.collapse_patience,
                                        margin=settings.collapse_margin)
        self._metrics: MetricsWriter | None = None

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
        """Train to ``settings.epochs``; with ``resume`` continue from ``run_dir/checkpoint.pt`` if present.

        Returns the summary (also written to ``summary.json``): ``last_top1``,
        ``best_top1``, ``best_epoch``, ``epochs``, ``final`` (last evaluation(s)),
        ``train`` (last epoch's train statistics), ``collapsed`` (the collapse record or None).

        Rank 0 holds ``run_dir/.lock`` while training (a second concurrent run of the folder
        refuses); the losses' per-call value checks are off meanwhile (the engine checks the
        loss terms once per step) and restored afterwards.
        """
        lock = RunLock(self.run_dir) if self.dist.is_main else None
        if lock is not None:
            lock.acquire()
        try:
            with loss_value_checks(False):
                return self._fit(resume)
        finally:
            if lock is not None:
                lock.release()

    def _fit(self, resume: bool) -> dict[str, Any]:
        start_epoch = 1
        if self.dist.is_main:
            for tmp in remove_stale_temporaries(self.run_dir):
                self.logger.info("removed %s left by an interrupted save", tmp.name)
        if self.checkpoint_path.exists():
            if not resume:
                raise InputError(f"run_dir: {self.run_dir} already holds {CHECKPOINT_NAME}; "
                                 "pass resume=True (gkl: --resume) to continue it or choose a new run_dir")
            self.load_checkpoint(self.checkpoint_path)
            start_epoch = self.last_checkpoint_epoch + 1
            self.logger.info("resuming from %s (epoch %d)", self.checkpoint_path, self.last_checkpoint_epoch)
            if self.resume_changed:
                self.logger.info("changed on resume: %s", ", ".join(self.resume_changed))
        elif resume:
            self.logger.info("no checkpoint in %s; starting from epoch 1", self.run_dir)
        barrier(self.dist)  # every rank has read run.json and the checkpoint before rank 0 rewrites them
        resumed = start_epoch > 1
        self._metrics = MetricsWriter(self.run_dir, enabled=self.dist.is_main,
                                      purge_step=start_epoch if resumed else None)
        if self.dist.is_main:
            write_config(self.run_dir, self.config)
            write_run_record(self.run_dir, seed=self.settings.seed, world_size=self.dist.world_size,
                             resumed_from_epoch=start_epoch - 1 if resumed else None,
                             changed=self.resume_changed)
            self._metrics.truncate_after(start_epoch - 1)
        final: dict[str, Any] = {}
        train_stats: dict[str, Any] = {}
        last_top1: float | None = None
        stop: dict[str, Any] = {"reason": "exception"}
        epoch = start_epoch
        try:
            for epoch in range(start_epoch, self.settings.epochs + 1):
                started = time.perf_counter()
                seed_everything(epoch_seed(self.settings.seed, epoch, self.dist.rank))
                lr = self.schedule.start_epoch(epoch)
                self.train_loader.set_epoch(epoch)
                train_stats = self._train_epoch(epoch)
                self._sync_buffers()
                self.objective.on_epoch_end(epoch)
                if self.ema is not None and self.settings.ema.every == "epoch":
                    self.ema.update(self.model)
                record: dict[str, Any] = {"epoch": epoch, "lr": lr, "train": train_stats}
                collapsed = None
                if self._should(epoch, self.settings.eval_every) and self.eval_loader is not None:
                    final = self._evaluate_and_track(epoch)
                    last_top1 = final["tracked_top1"]
                    for key in ("eval", "ema_eval"):
                        if key in final:
                            record[key] = {k: v for k, v in final[key].items() if k != "per_class"}
                    record["best_top1"] = self.best_top1
                    record["best_epoch"] = self.best_epoch
                    collapsed = self._watch_collapse(epoch, last_top1)
                    if collapsed is not None:
                        record["collapsed"] = collapsed
                record["time"] = time.perf_counter() - started
                # the metrics line first: a kill before the checkpoint re-runs this epoch and rewrites it
                self._metrics.write(record)
                if self._should(epoch, self.settings.checkpoint_every):
                    self.save_checkpoint(epoch)
                self.logger.info(self._epoch_line(record))
                if collapsed is not None and self.settings.stop_on_collapse:
                    raise CollapseError(self._collapse_message(collapsed))
            stop = {"reason": "finished", "epoch": self.settings.epochs}
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
            self._metrics.close()
            self._record_stop(stop)
        if not final and start_epoch > self.settings.epochs and self.eval_loader is not None:
            final = self._evaluate()  # resumed a finished run: report its final state again
            last_top1 = final["tracked_top1"]
        summary = {
            "epochs": self.settings.epochs,
            "last_top1": last_top1,
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "final": {k: v for k, v in final.items() if k in ("eval", "ema_eval")},
            "train": train_stats,
            "collapsed": self.collapse.flag,
        }
        if self.dist.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n",
                                                        encoding="utf-8")
        barrier(self.dist)
        return summary

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

    def _record_stop(self, stop: dict[str, Any]) -> None:
        """Say in train.log (and run.json) why the run stopped."""
        if not self.dist.is_main:
            return
        stop = {**stop, "last_checkpoint_epoch": self.last_checkpoint_epoch}
        reason = stop["reason"]
        if reason == "finished":
            self.logger.info("run finished: %d epochs", self.settings.epochs)
        elif reason == "interrupted":
            self.logger.warning("run interrupted during epoch %s; last checkpoint: epoch %s",
                                stop.get("epoch"), self.last_checkpoint_epoch)
        else:
            self.logger.error("run stopped (%s) during epoch %s: %s", reason, stop.get("epoch"),
                              stop.get("message", ""))
        try:
            record_stop(self.run_dir, stop)
        except OSError as error:  # never hide the reason of the stop behind a failed write
            self.logger.error("could not record the stop in run.json: %s", error)

    def _watch_collapse(self, epoch: int, value: float) -> dict[str, Any] | None:
        if self.collapse.chance is None:
            self.collapse.chance = chance_level(self.collapse.metric, self.num_classes)
        flag = self.collapse.update(epoch, value)
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
        if self.last_checkpoint_epoch is not None:
            return (f"the last good checkpoint ({self.checkpoint_path}, epoch "
                    f"{self.last_checkpoint_epoch}) is intact")
        return "no checkpoint has been written yet"

    def _should(self, epoch: int, every: int) -> bool:
        return epoch % every == 0 or epoch == self.settings.epochs

    # ------------------------------------------------------------------ one epoch
    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        self.objective.train()
        self.train_model.train()
        device = self.device
        term_sums: dict[str, torch.Tensor] = {}
        metric_sums: dict[str, float] = {}
        seen = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.float64, device=device)
        scored = torch.zeros((), dtype=torch.float64, device=device)
        show_bar = self.dist.is_main and self.settings.progress
        batches = progress(self.train_loader, total=len(self.train_loader), desc=f"epoch {epoch}", enabled=show_bar)
        log_every = self.settings.log_every
        for step, (images, labels) in enumerate(batches, start=1):
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            with self.amp.autocast():
                out = self.objective(self.train_model, images, labels, epoch=epoch)
            if not isinstance(out, StepOutput):
                raise TypeError(f"objective {type(self.objective).__name__} returned "
                                f"{type(out).__name__}, expected StepOutput")
            self._check_finite(out.losses, epoch, step)
            loss = out.total().float()
            self.optimizer.zero_grad(set_to_none=True)
            self.amp.backward_and_step(loss, self.optimizer, self.parameters, self.settings.clip_grad_norm)
            self.objective.after_optimizer_step()
            if self.ema is not None and self.settings.ema.every == "step":
                self.ema.update(self.model)
            n = float(labels.shape[0])
            seen += n
            for name, term in out.losses.items():
                term_sums.setdefault(name, torch.zeros((), dtype=torch.float64, device=device))
                term_sums[name] += term.detach().double() * n
            term_sums.setdefault("loss", torch.zeros((), dtype=torch.float64, device=device))
            term_sums["loss"] += loss.detach().double() * n
            if out.logits is not None and labels.ndim == 1:
                correct += (out.logits.detach().argmax(dim=1) == labels).sum().double()
                scored += n
            for name, value in out.metrics.items():
                metric_sums[name] = metric_sums.get(name, 0.0) + float(value) * n
            if log_every and step % log_every == 0 and self.dist.is_main:
                message = f"epoch {epoch} step {step}/{len(self.train_loader)} loss {loss.item():.4f}"
                if show_bar and hasattr(batches, "set_postfix_str"):
                    batches.set_postfix_str(f"loss {loss.item():.4f}")
                elif not show_bar:
                    self.logger.info(message)
        if hasattr(batches, "close"):
            batches.close()
        return self._reduce_epoch_stats(term_sums, metric_sums, seen, correct, scored)

    def _reduce_epoch_stats(self, term_sums: dict[str, torch.Tensor], metric_sums: dict[str, float],
                            seen: torch.Tensor, correct: torch.Tensor, scored: torch.Tensor) -> dict[str, Any]:
        names = sorted(term_sums)
        metric_names = sorted(metric_sums)
        packed = torch.stack([*(term_sums[k] for k in names),
                              *(torch.tensor(metric_sums[k], dtype=torch.float64, device=self.device)
                                for k in metric_names),
                              seen, correct, scored])
        all_reduce_sum(packed, self.dist)
        values = packed.tolist()
        total_seen, total_correct, total_scored = values[-3:]
        stats: dict[str, Any] = {}
        denominator = max(total_seen, 1.0)
        for i, name in enumerate(names):
            stats[name] = values[i] / denominator
        for j, name in enumerate(metric_names):
            stats[name] = values[len(names) + j] / denominator
        if total_scored > 0:
            stats["acc"] = 100.0 * total_correct / total_scored
        return stats

    def _check_finite(self, losses: dict[str, torch.Tensor], epoch: int, step: int) -> None:
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
        all_reduce_sum(bad, self.dist)  # every rank stops together
        if not bool(bad.any()):
            return
        index = int(torch.nonzero(bad)[0])
        local = values[index].item()
        value = f"{local}" if not math.isfinite(local) else "non-finite on another rank"
        where = self._where()
        raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, step {step}: "
                                 f"term '{names[index]}' = {value}; {where}")

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self) -> dict[str, Any]:
        """Evaluate the raw model (and the EMA model); ``tracked_top1`` is the one ``ema.evaluate`` names."""
        if self.num_classes is None:
            self.num_classes = self._infer_num_classes()
        kwargs = dict(num_classes=self.num_classes, device=self.device, class_groups=self.class_groups,
                      dist=self.dist)
        result: dict[str, Any] = {"eval": evaluate_classifier(self.model, self.eval_loader, **kwargs)}
        if self.ema is not None:
            result["ema_eval"] = evaluate_classifier(self.ema.module, self.eval_loader, **kwargs)
        use_ema = self.settings.ema.evaluate == "ema"
        tracked = result["ema_eval" if use_ema else "eval"]["top1"]
        result["tracked_top1"] = tracked
        return result

    def _evaluate_and_track(self, epoch: int) -> dict[str, Any]:
        result = self._evaluate()
        tracked = result["tracked_top1"]
        use_ema = self.settings.ema.evaluate == "ema"
        if self.best_top1 is None or tracked > self.best_top1:
            self.best_top1, self.best_epoch = tracked, epoch
            if self.dist.is_main:
                weights = (self.ema.module if use_ema else self.model).state_dict()
                save_best(self.best_path, weights, epoch=epoch, top1=tracked)
        return result

    @torch.no_grad()
    def _infer_num_classes(self) -> int:
        images, _ = next(iter(self.eval_loader))
        was_training = self.model.training
        self.model.eval()
        try:
            logits = self.model(images.to(self.device))
        finally:
            self.model.train(was_training)
        return int(logits.shape[1])

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self, epoch: int) -> dict[str, Any]:
        """Everything needed to continue after ``epoch``."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.amp.state_dict(),
            "objective": self.objective.checkpoint_state(),
            "rng": capture_rng_state(self.device),
            "best": {"top1": self.best_top1, "epoch": self.best_epoch},
            "collapse": self.collapse.state_dict(),
            "num_classes": self.num_classes,
            "world_size": self.dist.world_size,
            "settings": self.settings.to_dict(),
            "config": self.config,
        }

    def save_checkpoint(self, epoch: int) -> None:
        """Rank 0 writes ``checkpoint.pt`` atomically; all ranks then agree it exists."""
        if self.dist.is_main:
            atomic_save(self.checkpoint_state(epoch), self.checkpoint_path)
        barrier(self.dist)
        self.last_checkpoint_epoch = epoch

    def load_checkpoint(self, path: str | Path) -> int:
        """Restore every piece of state from a checkpoint of a matching run; returns its epoch.

        Settings outside the tolerated ones (:mod:`gkl.engine.resume`) must match; after a stop on a
        non-finite loss ``optim.lr``, ``clip_grad_norm``, ``amp`` and ``schedule`` may change
        (listed in ``self.resume_changed``).
        """
        path = Path(path)
        state = load_checkpoint(path, map_location=self.device)
        self.resume_changed = self._check_matches(state, path)
        changed = set(self.resume_changed)
        try:
            self.model.load_state_dict(state["model"])
            if self.ema is not None:
                if state["ema"] is None:
                    raise InputError(f"{path}: checkpoint has no EMA state but train.ema.decay is set")
                self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            if any(k.startswith("train.schedule") for k in changed):
                self.schedule.last_epoch = int(state["schedule"].get("last_epoch", state["epoch"]))
            else:
                self.schedule.load_state_dict(state["schedule"])
            if "train.amp" in changed and (state["scaler"] is None) != (self.amp.scaler is None):
                if self.amp.scaler is not None:
                    self.logger.info("amp changed on resume: starting a fresh GradScaler")
            else:
                self.amp.load_state_dict(state["scaler"])
            self.objective.load_checkpoint_state(state["objective"])
            restore_rng_state(state["rng"], self.device)
            self.best_top1 = state["best"]["top1"]
            self.best_epoch = state["best"]["epoch"]
        except (KeyError, TypeError, IndexError) as error:
            raise InputError(f"{path}: damaged training checkpoint ({type(error).__name__}: {error})") from None
        self.collapse.load_state_dict(state.get("collapse"))
        if self.num_classes is None:
            self.num_classes = state.get("num_classes")
        self.last_checkpoint_epoch = int(state["epoch"])
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
    @staticmethod
    def _epoch_line(record: dict[str, Any]) -> str:
        parts = [f"epoch {record['epoch']}", f"lr {record['lr']:.5g}"]
        train = record["train"]
        parts.append(f"loss {train.get('loss', float('nan')):.4f}")
        if "acc" in train:
            parts.append(f"train_acc {train['acc']:.2f}")
        if "eval" in record:
            parts.append(f"top1 {record['eval']['top1']:.2f}")
        if "ema_eval" in record:
            parts.append(f"ema_top1 {record['ema_eval']['top1']:.2f}")
        if record.get("best_top1") is not None:
            parts.append(f"best {record['best_top1']:.2f}@{record['best_epoch']}")
        parts.append(f"{record['time']:.1f}s")
        return " | ".join(parts)
