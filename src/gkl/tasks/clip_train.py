"""Kind ``clip_train`` (``gkl clip-train``): an OpenCLIP model trained with the contrastive loss on
image-text pairs (``clip_data``), evaluated zero-shot and/or by retrieval (``clip_eval``; docs/clip.md).
The builder and evaluation shared with CLIP distillation are :mod:`gkl.tasks.clip`."""

from __future__ import annotations

from functools import partial
from typing import Any

from gkl.settings.clip import ClipDataSettings, ClipEvalSettings, check_clip_config
from gkl.tasks.base import Section, Task

__all__ = ["TASK", "CLIP_SECTIONS", "analysis", "build", "cost", "evaluate"]

#: the sections of both CLIP kinds (check_clip_config requires clip_data)
CLIP_SECTIONS = (
    Section("clip_data", ClipDataSettings | None, help="the image-text pairs (csv, webdataset or digits)"),
    Section("clip_eval", ClipEvalSettings | None, help="zero-shot and/or retrieval evaluation"),
)


#: what the zero-shot and retrieval evaluators write (``Task.metric_names`` of both CLIP kinds)
CLIP_METRICS = ("zeroshot_top1", "zeroshot_top5", *(f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)))


def build(cfg: Any, dist: Any) -> Any:
    from gkl.tasks.clip import build_clip_parts

    return build_clip_parts(cfg, dist)


def evaluate(cfg: Any, run_dir: Any, paths: Any, **kwargs: Any) -> Any:
    from gkl.tasks.clip import evaluate_clip_run

    return evaluate_clip_run(cfg, run_dir, paths, **kwargs)


def analysis(cfg: Any, checkpoint: Any, device: Any, *, attack: bool = False) -> Any:
    from gkl.tasks.clip import clip_analysis

    return clip_analysis(cfg, checkpoint, device, attack=attack)


def _pairs_per_epoch(cfg: Any) -> int:
    """Image-text pairs of one training epoch: ``samples_per_epoch`` of webdataset shards, the rows of a
    caption file, or the bundled training digits less the validation split."""
    data = cfg.clip_data
    if data.format == "webdataset":
        return int(data.samples_per_epoch)
    if data.format == "csv":
        import csv
        from pathlib import Path

        from gkl.data.image_text import caption_separator

        path = Path(data.train)
        if not path.is_file():
            raise ValueError(f"caption file {str(path)!r} not found: training-set size unknown")
        with open(path, newline="", encoding="utf-8") as f:
            return sum(1 for _ in csv.DictReader(f, delimiter=caption_separator(path, data.separator)))
    from gkl.data.bundled import digits_split
    from gkl.tasks.clip import digits_validation_split

    labels = digits_split(True)[1]
    split = digits_validation_split(cfg, labels)
    return len(labels) if split is None else len(split[0])


def cost(cfg: Any) -> tuple[float, float, float]:
    """(pairs per epoch, forward FLOPs of one pair through the model, through the teacher): the towers'
    FLOPs from the OpenCLIP configs (:mod:`gkl.models.clip_flops`)."""
    from gkl.models.clip_flops import clip_forward_flops

    student = clip_forward_flops(cfg.model.name, **cfg.model.kwargs).pair
    teacher = cfg.teacher
    teacher_flops = clip_forward_flops(teacher.name, **teacher.kwargs).pair if teacher is not None else 0.0
    return float(_pairs_per_epoch(cfg)), student, teacher_flops


TASK = Task(
    name="clip_train",
    command="clip-train",
    help="train an OpenCLIP model with the contrastive loss",
    metric_names=CLIP_METRICS,
    sections=CLIP_SECTIONS,
    select_metric="zeroshot_top1",
    registry_names=False,
    check=partial(check_clip_config, distill=False),
    build=build,
    evaluate=evaluate,
    analysis=analysis,
    cost=cost,
    evaluation="zero-shot / retrieval metrics",
)
