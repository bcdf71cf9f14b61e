"""The one training engine shared by every objective (SGD, schedules, AMP, DDP, EMA, checkpoints)."""

from gkl.engine.amp import MixedPrecision, resolve_amp
from gkl.engine.checkpoint import atomic_save, read_checkpoint
from gkl.engine.ema import ModelEMA
from gkl.engine.errors import CollapseError, NonFiniteLossError, TrainingStopped
from gkl.engine.lock import RunLock
from gkl.engine.schedules import EpochLRSchedule, learning_rate_at, scaled_base_lr
from gkl.engine.seeding import epoch_seed, seed_everything
from gkl.engine.trainer import Trainer
from gkl.settings.train import EMASettings, OptimSettings, ScheduleSettings, TrainSettings
from gkl.utils.distributed import DistInfo, cleanup, init_distributed, resolve_device

__all__ = [
    "CollapseError",
    "DistInfo",
    "EMASettings",
    "EpochLRSchedule",
    "MixedPrecision",
    "ModelEMA",
    "NonFiniteLossError",
    "OptimSettings",
    "ScheduleSettings",
    "TrainSettings",
    "Trainer",
    "TrainingStopped",
    "RunLock",
    "atomic_save",
    "cleanup",
    "epoch_seed",
    "init_distributed",
    "learning_rate_at",
    "read_checkpoint",
    "resolve_amp",
    "resolve_device",
    "scaled_base_lr",
    "seed_everything",
]
