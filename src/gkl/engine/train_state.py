"""A run's whole training state as one ``checkpoint.pt`` dict, and its restoration on resume.

The layout is documented in docs/training.md ("Checkpoints and resume"). A resume checks the
model's keys/shapes and which settings differ (:func:`gkl.engine.resume.resume_changes`). A
mid-epoch checkpoint holds the epoch's running train statistics and the RNG state at that
step; the RNG state is restored after the loop has skipped the epoch's consumed batches. Under
DDP these, and the objective's state, are rank-local until the epoch ends (a ClassPrior's running
sums, each rank's random stream), so a mid-epoch checkpoint holds every rank's copy (``ranks``) and
each rank resumes from its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gkl.engine.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, layout_mismatch, model_layout, read_checkpoint
from gkl.engine.resume import resume_changes
from gkl.engine.run_dir import read_run_record
from gkl.engine.seeding import capture_rng_state, restore_rng_state
from gkl.engine.train_stats import TrainStats
from gkl.utils.distributed import gather_to_main
from gkl.utils.errors import InputError

if TYPE_CHECKING:  # the trainer imports this module
    from gkl.engine.trainer import Trainer

__all__ = ["Restored", "checkpoint_state", "gather_rank_states", "restore_checkpoint", "resume_point"]


def _mid_epoch(trainer: Trainer) -> bool:
    return trainer.step % trainer.steps_per_epoch != 0 and trainer.step < trainer.total_steps


def _rank_state(trainer: Trainer) -> dict[str, Any]:
    """This rank's rank-local state of a mid-epoch checkpoint (CPU copies)."""
    return {
        "objective": {k: v.detach().cpu() for k, v in trainer.objective.checkpoint_state().items()},
        "rng": capture_rng_state(trainer.device),
        "epoch_stats": trainer.stats.state_dict() if trainer.stats is not None else None,
    }


def gather_rank_states(trainer: Trainer) -> list[dict[str, Any]] | None:
    """Every rank's objective state, RNG state and running statistics, on rank 0 (a collective: all
    ranks call it), for a mid-epoch checkpoint of a multi-process run; None otherwise."""
    if trainer.dist.world_size == 1 or not _mid_epoch(trainer):
        return None
    return gather_to_main(_rank_state(trainer), trainer.dist)


def checkpoint_state(trainer: Trainer, epoch: int, ranks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything needed to continue after global step ``trainer.step`` (``epoch`` = completed epochs);
    ``ranks``: :func:`gather_rank_states` of a mid-epoch checkpoint under DDP."""
    mid_epoch = _mid_epoch(trainer)
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "step": trainer.step,
        "steps_per_epoch": trainer.steps_per_epoch,
        "model": trainer.model.state_dict(),
        "ema": trainer.ema.state_dict() if trainer.ema is not None else None,
        "optimizer": trainer.optimizer.state_dict(),
        "schedule": trainer.schedule.state_dict(),
        "scaler": trainer.amp.state_dict(),
        "objective": trainer.objective.checkpoint_state(),
        "rng": capture_rng_state(trainer.device),
        "epoch_stats": trainer.stats.state_dict() if mid_epoch and trainer.stats is not None else None,
        "best": trainer.best.state_dict(),
        "collapse": trainer.best.collapse.state_dict(),
        "world_size": trainer.dist.world_size,
        "ranks": ranks,
        "settings": trainer.settings.to_dict(),
        "config": trainer.config,
    }


@dataclass
class Restored:
    """What the loop needs from a checkpoint besides the restored modules."""

    epoch: int
    step: int
    changed: list[str]  # settings the resume changed (allowed after a non-finite stop)
    stats: TrainStats | None  # running statistics of a mid-epoch checkpoint
    rng: dict[str, Any] | None  # RNG state of a mid-epoch checkpoint, restored after the skip


def restore_checkpoint(trainer: Trainer, path: Path) -> Restored:
    """Load every piece of state of ``path`` into the trainer's model, EMA, optimizer, schedule,
    scaler, objective and best/collapse tracking; refuse (InputError) a checkpoint of another run."""
    state = read_checkpoint(path, map_location=trainer.device)
    changed = _check_matches(trainer, state, path)
    ranks = state.get("ranks")
    if ranks is not None and len(ranks) == trainer.dist.world_size:  # mid-epoch under DDP: this rank's own
        state.update(ranks[trainer.dist.rank])
    try:
        trainer.model.load_state_dict(state["model"])
        if trainer.ema is not None:
            if state["ema"] is None:
                raise InputError(f"{path}: checkpoint has no EMA state but train.ema.decay is set")
            trainer.ema.load_state_dict(state["ema"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        epoch = int(state["epoch"])
        step = int(state.get("step", epoch * trainer.steps_per_epoch))
        saved_spe = state.get("steps_per_epoch", trainer.steps_per_epoch)
        if step % max(saved_spe, 1) != 0 and saved_spe != trainer.steps_per_epoch:
            raise InputError(
                f"{path}: a mid-epoch checkpoint of {saved_spe} steps per epoch cannot resume "
                f"with {trainer.steps_per_epoch} (batch size, world size or data changed)"
            )
        if saved_spe != trainer.steps_per_epoch:
            step = epoch * trainer.steps_per_epoch
        if not any(k.startswith("train.schedule") for k in changed) and "last_epoch" not in state["schedule"]:
            trainer.schedule.load_state_dict(state["schedule"])
        trainer.schedule.last_step = step
        if "train.amp" in changed and (state["scaler"] is None) != (trainer.amp.scaler is None):
            if trainer.amp.scaler is not None:
                trainer.logger.info("amp changed on resume: starting a fresh GradScaler")
        else:
            trainer.amp.load_state_dict(state["scaler"])
        trainer.objective.load_checkpoint_state(state["objective"])
        trainer.best.load_state_dict(state["best"])
    except (KeyError, TypeError, IndexError) as error:
        raise InputError(f"{path}: damaged training checkpoint ({type(error).__name__}: {error})") from None
    trainer.best.collapse.load_state_dict(state.get("collapse"))
    if state["world_size"] != trainer.dist.world_size:
        trainer.logger.warning(
            "checkpoint was written with world_size %d, resuming with %d: "
            "the data order differs from an uninterrupted run",
            state["world_size"],
            trainer.dist.world_size,
        )
    if step % trainer.steps_per_epoch != 0 and step < trainer.total_steps:
        saved = state.get("epoch_stats")
        stats = TrainStats.from_state(saved, trainer.device) if saved is not None else None
        return Restored(epoch, step, changed, stats, state["rng"])
    restore_rng_state(state["rng"], trainer.device)
    return Restored(epoch, step, changed, None, None)


def _check_matches(trainer: Trainer, state: dict, path: Path) -> list[str]:
    problem = layout_mismatch(model_layout(trainer.model.state_dict()), model_layout(state["model"]))
    if problem:
        raise InputError(f"{path}: checkpoint model does not match this model: {problem}")
    stopped = read_run_record(trainer.run_dir).get("stopped") or {}
    return resume_changes(
        settings=trainer.settings.to_dict(),
        saved_settings=state["settings"],
        config=trainer.config,
        saved_config=state["config"],
        tolerant_config_keys=trainer.resume_tolerant_keys,
        after_non_finite=stopped.get("reason") == "non-finite",
        path=path,
    )


def resume_point(path: Path, epoch: int | None, step: int | None, steps_per_epoch: int) -> str:
    """Where a stopped run can continue from (the end of the stop messages)."""
    if step is None:
        return "no checkpoint has been written yet"
    done = step % steps_per_epoch
    note = f" + {done} steps, global step {step}" if done else ""
    return f"the last good checkpoint ({path}, epoch {epoch}{note}) is intact"
