"""An estimated cost per run in GPU-hours on one modern GPU, from the resolved config (``gkl sweep --dry-run``).

The formula (docs/study.md, "Cost estimate")::

    F        = forward FLOPs of the model for one example (torch.utils.flop_counter at batch 1,
               on the dataset's input size; a multiply-add counts 2)
    examples = train.epochs × training examples per epoch × (1 − data.val_fraction)
               (or train.iterations × data.batch_size for a step-based run)
    FLOPs    = examples × [3 F × (1 + K) + F_teacher + 4 F × µ]
    GPU-h    = FLOPs / (SUSTAINED_FLOPS × 3600)

For a kind whose models are not registry models, the task's ``cost(cfg)`` gives the examples of
an epoch and F, F_teacher (CLIP: one image-text pair through both towers, :mod:`gkl.models.clip_flops`).
3 F is a forward and a backward pass; K the mean number of attack steps per example of an
adversarial run (each step one forward and one backward, as the training step); F_teacher one
teacher forward for a run with a teacher; µ the unlabelled examples per labelled one of an SSL
run (a weak view forward without gradient and a strong view forward + backward). Evaluation,
data loading and the optimizer are not counted. ``SUSTAINED_FLOPS`` is an NVIDIA A100 at 30 %
of its dense bf16 peak (312 TFLOP/s). Paper-scale runs in mixed precision reach about that,
so expect their wall time within a factor of 2-3 of the estimate, usually above it; fp32 or
data-loading-bound runs take several times longer, and small models (the MNIST-1D demos) are
dominated by overheads, so their estimate only says "negligible".
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["GPU", "SUSTAINED_FLOPS", "TRAIN_EXAMPLES", "RunCost", "run_cost", "forward_flops"]

GPU = "one NVIDIA A100 at 30 % of its 312 TFLOP/s dense bf16 peak"
SUSTAINED_FLOPS = 0.3 * 312e12
#: training examples per epoch of the registry datasets (their standard training split)
TRAIN_EXAMPLES = {
    "cifar10": 50_000,
    "cifar100": 50_000,
    "imagenet": 1_281_167,
    "imagenet_lt": 115_846,
    "digits": 1_347,
    "mnist1d": 4_000,
    "ade20k": 20_210,
    "cityscapes": 2_975,
    "voc2012": 10_582,
}


@dataclass(frozen=True)
class RunCost:
    """A run's estimated training FLOPs and GPU-hours, or why there is no estimate (``reason``)."""

    flops: float | None = None
    reason: str = ""

    @property
    def gpu_hours(self) -> float | None:
        return None if self.flops is None else self.flops / (SUSTAINED_FLOPS * 3600.0)

    def text(self) -> str:
        hours = self.gpu_hours
        if hours is None:
            return f"? GPU-h ({self.reason})"
        return f"{hours:.3g} GPU-h"


@functools.cache
def _flops(name: str, kwargs_json: str, num_classes: int, shape: tuple[int, ...]) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gkl.models.registry import create_model

    for device in ("meta", "cpu"):  # meta: no memory, no arithmetic; a model that reads values needs cpu
        try:
            with torch.device(device):
                model = create_model(name, num_classes, **json.loads(kwargs_json))
                x = torch.zeros(1, *shape)
            model.eval()
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(x)
            return float(counter.get_total_flops())
        except (RuntimeError, NotImplementedError):
            if device == "cpu":
                raise
    raise AssertionError("unreachable")


#: model arguments that name weights to load: left out, the FLOPs do not depend on the weights
_WEIGHT_ARGUMENTS = ("checkpoint", "pretrained", "weights")


def forward_flops(model: Any, num_classes: int, shape: tuple[int, ...]) -> float:
    """Forward FLOPs of registry model ``model`` (a ModelConfig) for one example of ``shape`` (cached)."""
    kwargs = {k: v for k, v in model.kwargs.items() if not any(w in k for w in _WEIGHT_ARGUMENTS)}
    return _flops(model.name, json.dumps(kwargs, sort_keys=True, default=str), num_classes, tuple(shape))


def _attack_steps(cfg: Any, epochs: int) -> float:
    """Mean attack steps per training example over the run (0 without an adversarial section)."""
    from gkl.objectives.epsilon_schedule import attack_budget

    for section in getattr(cfg, "sections", {}).values():
        if section is None or not hasattr(section, "attack_budget"):
            continue
        kwargs = {}
        if section.attack_budget == "fixed":
            kwargs = {"steps": section.attack_steps, "step_size": section.attack_step_size}
        steps = [attack_budget(section.attack_budget, 1.0, e, epochs, **kwargs)[0] for e in range(1, epochs + 1)]
        return sum(steps) / len(steps)
    return 0.0


def _unlabelled_ratio(cfg: Any) -> int:
    for section in getattr(cfg, "sections", {}).values():
        if section is not None and hasattr(section, "uratio"):
            return int(section.uratio)
    return 0


def _task_cost(cfg: Any, task: Any) -> RunCost:
    """The estimate from the task's own ``cost(cfg)`` (examples per epoch, model and teacher FLOPs per example)."""
    try:
        per_epoch, student, teacher = task.cost(cfg)
    except ValueError as err:  # InputError included: the reason there is no estimate
        return RunCost(reason=str(err).splitlines()[0][:80])
    if cfg.train.iterations is not None:
        examples = float(cfg.train.iterations * cfg.data.batch_size)
    else:
        examples = float(cfg.train.epochs * per_epoch)
    return RunCost(flops=examples * (3 * student + teacher))


def run_cost(cfg: Any) -> RunCost:
    """The estimate for one resolved config (an ExperimentConfig); see the module docstring."""
    from gkl.data.registry import dataset_info
    from gkl.tasks import get_task

    task = get_task(cfg.kind)
    if task.cost is not None:
        return _task_cost(cfg, task)
    if not task.registry_names:
        return RunCost(reason=f"a '{task.name}' run's models are not registry models")
    name = str(getattr(cfg.data, "name", None))
    try:
        info = dataset_info(name)
    except ValueError:
        return RunCost(reason=f"data {name!r} is not a registry dataset")
    if cfg.train.iterations is not None:
        examples = float(cfg.train.iterations * cfg.data.batch_size)
        epochs = max(1, math.ceil(examples / TRAIN_EXAMPLES.get(cfg.data.name, examples)))
    else:
        if cfg.data.name not in TRAIN_EXAMPLES:
            return RunCost(reason=f"training-set size of {cfg.data.name!r} unknown")
        epochs = cfg.train.epochs
        examples = epochs * TRAIN_EXAMPLES[cfg.data.name] * (1.0 - cfg.data.val_fraction)
    try:
        student = forward_flops(cfg.model, info.num_classes, info.input_shape)
        teacher_cfg = getattr(cfg, "teacher", None)
        teacher = 0.0
        if task.teacher != "none" and teacher_cfg is not None and getattr(teacher_cfg, "name", None):
            teacher = forward_flops(teacher_cfg, info.num_classes, info.input_shape)
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as err:
        return RunCost(reason=f"FLOPs not measurable: {str(err).splitlines()[0][:60]}")
    per_example = 3 * student * (1 + _attack_steps(cfg, epochs)) + teacher + 4 * student * _unlabelled_ratio(cfg)
    return RunCost(flops=examples * per_example)
