"""The one training loop shared by every objective.

Per epoch ``e`` (from 1): re-seed from ``(seed, e, rank)``, set the epoch's LR,
``train_loader.set_epoch(e)``, run the step protocol of
:mod:`gkl.objectives.base` on every batch, ``objective.on_epoch_end(e)``, EMA
update, evaluation, ``metrics.jsonl`` record, atomic checkpoint (rank 0).
"""

from __future__ import annotations

import math
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
    atomic_save,
    dict_differences,
    layout_mismatch,
    read_checkpoint,
    model_layout,
    save_best,
)
from gkl.utils.distributed import DistInfo, all_reduce_sum, barrier, resolve_device
from gkl.engine.ema import ModelEMA
from gkl.engine.logging import MetricsWriter, progress, setup_logger
from gkl.engine.run_dir import write_config, write_run_record
from gkl.engine.schedules import EpochLRSchedule, scaled_base_lr
from gkl.engine.seeding import capture_rng_state, epoch_seed, restore_rng_state, seed_everything, set_deterministic
from gkl.settings.train import RESUME_TOLERANT_FIELDS, TrainSettings
from gkl.evaluate.accuracy import evaluate_classifier
from gkl.objectives.base import Objective, StepOutput
from gkl.utils.modules import unwrap_model


class NonFiniteLossError(RuntimeError):
    """A loss term was NaN or infinite; raised before backward, the last checkpoint is left as it was."""


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
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
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
        self.objective.use_grad_scaler(self.amp.scaler)  # AWP scales its proxy backward with it
        self.ema = ModelEMA(self.model, settings.ema.decay) if settings.ema.decay is not None else None

        self.best_top1: float | None = None
        self.best_epoch: int | None = None
        self.last_checkpoint_epoch: int | None = None
        self._metrics: MetricsWriter | None = None

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
        ``train`` (last epoch's train statistics).
        """
        start_epoch = 1
        if self.checkpoint_path.exists():
            if not resume:
                raise ValueError(f"run_dir: {self.run_dir} already holds {CHECKPOINT_NAME}; "
                                 "pass resume=True to continue it or choose a new run_dir")
            self.load_checkpoint(self.checkpoint_path)
            start_epoch = self.last_checkpoint_epoch + 1
            self.logger.info("resuming from %s (epoch %d)", self.checkpoint_path, self.last_checkpoint_epoch)
        elif resume:
            self.logger.info("no checkpoint in %s; starting from epoch 1", self.run_dir)
        self._metrics = MetricsWriter(self.run_dir, enabled=self.dist.is_main)
        if self.dist.is_main:
            write_config(self.run_dir, self.config)
            write_run_record(self.run_dir, seed=self.settings.seed, world_size=self.dist.world_size,
                             resumed_from_epoch=start_epoch - 1 if start_epoch > 1 else None)
            self._metrics.truncate_after(start_epoch - 1)
        final: dict[str, Any] = {}
        train_stats: dict[str, Any] = {}
        last_top1: float | None = None
        try:
            for epoch in range(start_epoch, self.settings.epochs + 1):
                started = time.perf_counter()
                seed_everything(epoch_seed(self.settings.seed, epoch, self.dist.rank))
                lr = self.schedule.start_epoch(epoch)
                self.train_loader.set_epoch(epoch)
                train_stats = self._train_epoch(epoch)
                self.objective.on_epoch_end(epoch)
                if self.ema is not None and self.settings.ema.every == "epoch":
                    self.ema.update(self.model)
                record: dict[str, Any] = {"epoch": epoch, "lr": lr, "train": train_stats}
                if self._should(epoch, self.settings.eval_every) and self.eval_loader is not None:
                    final = self._evaluate_and_track(epoch)
                    last_top1 = final["tracked_top1"]
                    for key in ("eval", "ema_eval"):
                        if key in final:
                            record[key] = {k: v for k, v in final[key].items() if k != "per_class"}
                    record["best_top1"] = self.best_top1
                    record["best_epoch"] = self.best_epoch
                if self._should(epoch, self.settings.checkpoint_every):
                    self.save_checkpoint(epoch)
                record["time"] = time.perf_counter() - started
                self._metrics.write(record)
                self.logger.info(self._epoch_line(record))
        finally:
            self._metrics.close()
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
        }
        if self.dist.is_main:
            import json

            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n",
                                                        encoding="utf-8")
        barrier(self.dist)
        return summary

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
                out = self.objective(self.train_model, (images, labels), epoch=epoch,
                                     step=(epoch - 1) * len(self.train_loader) + step)
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
        if self.last_checkpoint_epoch is not None:
            where = (f"the last good checkpoint ({self.checkpoint_path}, epoch "
                     f"{self.last_checkpoint_epoch}) is intact")
        else:
            where = "no checkpoint has been written yet"
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
            "rng": capture_rng_state(),
            "best": {"top1": self.best_top1, "epoch": self.best_epoch},
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
        """Restore every piece of state from a checkpoint of a matching run; returns its epoch."""
        state = read_checkpoint(path, map_location=self.device)
        self._check_matches(state, Path(path))
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            if state["ema"] is None:
                raise ValueError(f"{path}: checkpoint has no EMA state but ema.decay is set")
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.amp.load_state_dict(state["scaler"])
        self.objective.load_checkpoint_state(state["objective"])
        restore_rng_state(state["rng"])
        self.best_top1 = state["best"]["top1"]
        self.best_epoch = state["best"]["epoch"]
        if self.num_classes is None:
            self.num_classes = state["num_classes"]
        self.last_checkpoint_epoch = int(state["epoch"])
        if state["world_size"] != self.dist.world_size:
            self.logger.warning("checkpoint was written with world_size %d, resuming with %d: "
                                "the data order differs from an uninterrupted run",
                                state["world_size"], self.dist.world_size)
        return self.last_checkpoint_epoch

    def _check_matches(self, state: dict, path: Path) -> None:
        problem = layout_mismatch(model_layout(self.model.state_dict()), model_layout(state["model"]))
        if problem:
            raise ValueError(f"{path}: checkpoint model does not match this model: {problem}")
        mine = {k: v for k, v in self.settings.to_dict().items() if k not in RESUME_TOLERANT_FIELDS}
        theirs = {k: v for k, v in state["settings"].items() if k not in RESUME_TOLERANT_FIELDS}
        differences = dict_differences(mine, theirs)
        if differences:
            raise ValueError(f"{path}: checkpoint was written with different train settings "
                             f"(differing: {', '.join(differences)})")
        differences = dict_differences(self.config, state["config"])
        if differences:
            raise ValueError(f"{path}: checkpoint was written with a different config "
                             f"(differing: {', '.join(differences)})")

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
