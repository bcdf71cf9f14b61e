"""The one training engine shared by every objective (SGD, schedules, AMP, DDP, EMA, checkpoints)."""

from gkl.engine.distributed import DistInfo, cleanup, init_distributed, resolve_device
from gkl.engine.schedules import EpochLRSchedule, learning_rate_at, scaled_base_lr
from gkl.engine.seeding import epoch_seed, seed_everything
from gkl.engine.settings import EMASettings, OptimSettings, ScheduleSettings, TrainSettings
from gkl.engine.trainer import NonFiniteLossError, Trainer

__all__ = [
    "DistInfo",
    "EMASettings",
    "EpochLRSchedule",
    "NonFiniteLossError",
    "OptimSettings",
    "ScheduleSettings",
    "TrainSettings",
    "Trainer",
    "cleanup",
    "epoch_seed",
    "init_distributed",
    "learning_rate_at",
    "resolve_device",
    "scaled_base_lr",
    "seed_everything",
]
