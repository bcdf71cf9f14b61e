"""What the image-classifier tasks share (``train``, ``distill``, ``adv_train``, ``ssl``): datasets and
loaders of ``data:``, the registry model, the classification evaluator and ``gkl evaluate``.

Every function imports the data, model and metric code when it is called, so the task
declarations that use them stay cheap to import.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_classifier_parts", "classifier_analysis", "classifier_evaluator", "evaluate_classifier_run"]

#: ``objective(cfg, num_classes, steps_per_epoch, model)`` -> the run's Objective
ObjectiveFactory = Callable[[Any, int, int, Any], Any]


#: what a classifier evaluation writes (``Task.metric_names`` of the classifier kinds); many / medium /
#: few are the class groups of ImageNet-LT
CLASSIFIER_METRICS = ("top1", "top5", "many", "medium", "few")


def classifier_evaluator(info: Any) -> Any:
    """Top-1/top-5, per-class and group accuracies (:class:`gkl.metrics.classification.ClassificationEvaluator`)."""
    from gkl.metrics.classification import ClassificationEvaluator

    return ClassificationEvaluator(info.num_classes, info.class_groups)


def classifier_analysis(cfg: Any, checkpoint: Path, device: Any, *, attack: bool = False) -> Any:
    """``gkl analyze``'s view of a classifier run (:func:`gkl.tasks.analysis.classifier_view`)."""
    from gkl.tasks.analysis import classifier_view

    return classifier_view(cfg, checkpoint, device, attack=attack)


def build_classifier_parts(
    cfg: Any, dist: Any, objective: ObjectiveFactory, *, train_loader_of: Callable[[Any, Any, Any], Any] | None = None
) -> Any:
    """Datasets, loaders, model, objective and evaluator of a classifier run on this process.

    ``train_loader_of(cfg, train_set, dist)`` replaces the training loader (SSL's two-view batches).
    The order of construction (data, loaders, model, objective) fixes the runs' random numbers.
    """
    import torch

    from gkl.data import build_dataset, build_loader
    from gkl.tasks.parts import RunParts, build_model

    data = cfg.data
    if data.download and dist.world_size > 1 and not dist.is_main:
        torch.distributed.barrier()  # rank 0 downloads first
    train_set = build_dataset(data.name, data.root, True, download=data.download, normalize=data.normalize)
    eval_set = build_dataset(data.name, data.root, False, download=data.download, normalize=data.normalize)
    if data.download and dist.world_size > 1 and dist.is_main:
        torch.distributed.barrier()
    info = train_set.info  # type: ignore[attr-defined]  # registry builders attach .info; Dataset declares none
    if data.label_noise is not None:
        from gkl.data import LabelNoise

        train_set = LabelNoise(
            train_set,
            data.label_noise.rate,
            kind=data.label_noise.kind,
            num_classes=info.num_classes,
            seed=data.label_noise.seed,
        )
    common = dict(
        device=dist.device,
        in_memory=data.in_memory,
        num_workers=data.num_workers,
        seed=cfg.train.seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    val_loader = None
    if data.val_fraction > 0:  # held out after the noise: the validation labels are as noisy as training's
        from gkl.data import split_dataset

        train_set, val_set = split_dataset(train_set, data.val_fraction, data.val_seed)
        val_loader = build_loader(val_set, batch_size=data.eval_batch_size, train=False, **common)
    generated = None
    if data.generated_path is not None:
        from gkl.data import GeneratedImages

        generated = GeneratedImages(data.generated_path, num_classes=info.num_classes)
    train_loader = build_loader(
        train_set,
        batch_size=data.batch_size,
        train=True,
        generated=generated,
        generated_ratio=data.generated_ratio,
        generated_epoch=data.generated_epoch,
        **common,
    )
    eval_loader = build_loader(eval_set, batch_size=data.eval_batch_size, train=False, **common)
    if train_loader_of is not None:
        train_loader = train_loader_of(cfg, train_set, dist)
    model = build_model(cfg.model, info.num_classes)
    steps_per_epoch = len(train_loader) // cfg.train.accumulate_steps
    return RunParts(
        model,
        objective(cfg, info.num_classes, steps_per_epoch, model),
        train_loader,
        eval_loader,
        info,
        evaluator=classifier_evaluator(info),
        val_loader=val_loader,
    )


def evaluate_classifier_run(
    cfg: Any,
    run_dir: Path,
    paths: Mapping[str, Path],
    *,
    weights: str,
    overrides: Sequence[str] = (),
    robust: Callable[..., Any] | None = None,
) -> tuple[dict[str, Any], str]:
    """``gkl evaluate`` of a classifier run: top-1/top-5 and group accuracies of each checkpoint in
    ``paths``; with ``robust(model, eval_set, device=, seed=, batch_size=)`` also its robustness report."""
    from gkl.data import build_dataset, build_loader
    from gkl.metrics.classification import evaluate_classifier
    from gkl.models import create_model, load_run_weights
    from gkl.utils.distributed import resolve_device

    device = resolve_device(cfg.train.device)
    eval_set = build_dataset(cfg.data.name, cfg.data.root, False, normalize=cfg.data.normalize)
    info = eval_set.info  # type: ignore[attr-defined]  # registry builders attach .info; Dataset declares none
    loader = build_loader(
        eval_set,
        batch_size=cfg.data.eval_batch_size,
        train=False,
        device=device,
        in_memory=cfg.data.in_memory,
        num_workers=cfg.data.num_workers,
        seed=cfg.train.seed,
    )
    report: dict[str, Any] = {
        "run_dir": str(run_dir),
        "kind": "clean" if robust is None else "robust",
        "dataset": info.name,
        "model": cfg.model.name,
        "weights": weights,
        "overrides": list(overrides),
        "results": {},
    }
    lines = [f"{'checkpoint':<10} {'epoch':>5} {'top-1':>7} {'top-5':>7}  groups"]
    for name, path in paths.items():
        model = create_model(cfg.model.name, info.num_classes, **cfg.model.kwargs)
        epoch = load_run_weights(model, path, which=name, weights=weights)
        model.to(device)
        clean = evaluate_classifier(
            model, loader, num_classes=info.num_classes, device=device, class_groups=info.class_groups
        )
        entry: dict[str, Any] = {"epoch": epoch, "clean": clean}
        groups = clean.get("groups") or {}
        top5 = clean.get("top5")
        lines.append(
            f"{name:<10} {entry['epoch'] if entry['epoch'] is not None else '-':>5} {clean['top1']:>7.2f} "
            f"{top5 if top5 is None else format(top5, '.2f'):>7}  "
            + " ".join(f"{g}={v:.2f}" for g, v in groups.items())
        )
        if robust is not None:
            rob = robust(model, eval_set, device=device, seed=cfg.train.seed, batch_size=cfg.data.eval_batch_size)
            entry["robust"] = json.loads(rob.to_json())
            lines.append(f"robustness of the {name} checkpoint:\n{rob.format_table()}")
        report["results"][name] = entry
    return report, "\n".join(lines)
