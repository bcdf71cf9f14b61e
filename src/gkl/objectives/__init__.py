"""Training objectives: what one step of training optimises (see :mod:`gkl.objectives.base`)."""

from gkl.objectives.base import Objective, StepOutput, unwrap_model

__all__ = ["Objective", "StepOutput", "unwrap_model"]
