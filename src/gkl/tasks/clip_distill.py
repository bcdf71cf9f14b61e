"""Kind ``clip_distill`` (``gkl clip-distill``): an OpenCLIP student distilled from a frozen CLIP
teacher (KL, GKL, IKL, DKL; the ``clip_distill:`` section, docs/clip.md)."""

from __future__ import annotations

from functools import partial
from typing import Any

from gkl.settings._variants import drop_unused_keys
from gkl.settings.clip import ClipDistillSettings, check_clip_config
from gkl.tasks.base import Section, Task, check_loss_name
from gkl.tasks.clip_train import CLIP_METRICS, CLIP_SECTIONS, analysis, build, cost, evaluate

__all__ = ["TASK"]


def check(cfg: Any) -> None:
    check_clip_config(cfg, distill=True)
    check_loss_name(cfg.clip_distill, "method")


TASK = Task(
    name="clip_distill",
    command="clip-distill",
    help="distill an OpenCLIP student from a frozen CLIP teacher (KL, GKL, IKL, DKL)",
    metric_names=CLIP_METRICS,
    sections=(
        *CLIP_SECTIONS,
        Section(
            "clip_distill",
            ClipDistillSettings | None,
            fill=ClipDistillSettings,
            help="the distillation loss",
            upgrade=partial(drop_unused_keys, ClipDistillSettings),
        ),
    ),
    teacher="required",
    teacher_checkpoint_key="model",  # a gkl run checkpoint holds the weights under 'model'
    select_metric="zeroshot_top1",
    registry_names=False,
    check=check,
    build=build,
    evaluate=evaluate,
    analysis=analysis,
    cost=cost,
    evaluation="zero-shot / retrieval metrics",
)
