"""``gkl evaluate RUN`` for a segmentation run: mIoU, mAcc, pixel accuracy and per-class IoU of
its last and/or best weights, on the run's evaluation split with its ``segmentation.eval`` inference."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gkl.config import ExperimentConfig
from gkl.data import build_loader
from gkl.models import create_model, load_run_weights
from gkl.tasks.segmentation import OneLineErrors, build_evaluator, build_split, eval_batch_size
from gkl.utils.distributed import resolve_device


def format_iou_table(class_names: Sequence[str] | None, iou: Sequence[float]) -> str:
    """Per-class IoU lines ``class  IoU`` (``-`` for a class never labelled nor predicted)."""
    names = list(class_names) if class_names else [f"class {c}" for c in range(len(iou))]
    width = max(len(n) for n in names)
    return "\n".join(f"  {name:<{width}} {'-' if math.isnan(v) else format(v, '6.2f'):>6}"
                     for name, v in zip(names, iou))


def evaluate_segmentation_run(run_dir: Path, cfg: ExperimentConfig, paths: Mapping[str, Path], *, weights: str,
                              overrides: Sequence[str]) -> tuple[dict[str, Any], str]:
    """Report (JSON-ready) and printable table of the checkpoints ``paths`` (``{"last"|"best": file}``)."""
    device = resolve_device(cfg.train.device)
    eval_set = build_split(cfg, False)
    info = eval_set.info  # type: ignore[attr-defined]
    loader = OneLineErrors(build_loader(eval_set, batch_size=eval_batch_size(cfg), train=False, device=device,
                                        num_workers=cfg.data.num_workers, seed=cfg.train.seed))
    evaluator = build_evaluator(cfg, info.num_classes)
    report: dict[str, Any] = {"run_dir": str(run_dir), "kind": "segmentation", "dataset": info.name,
                              "model": cfg.model.name, "weights": weights, "overrides": list(overrides),
                              "results": {}}
    lines = [f"{'checkpoint':<10} {'epoch':>5} {'mIoU':>7} {'mAcc':>7} {'pixel acc':>9}"]
    per_class = []
    for name, path in paths.items():
        model = create_model(cfg.model.name, info.num_classes, **cfg.model.kwargs)
        epoch = load_run_weights(model, path, which=name, weights=weights)
        result = evaluator(model.to(device), loader, device=device)
        entry = {"epoch": epoch, "clean": result}
        report["results"][name] = entry
        lines.append(f"{name:<10} {entry['epoch'] if entry['epoch'] is not None else '-':>5} {result['mIoU']:>7.2f} "
                     f"{result['mAcc']:>7.2f} {result['pixel_accuracy']:>9.2f}")
        iou_table = format_iou_table(info.class_names, result["IoU"])
        per_class.append(f"per-class IoU of the {name} checkpoint:\n{iou_table}")
    return report, "\n".join(lines + per_class)
