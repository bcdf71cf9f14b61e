"""``gkl evaluate RUN_DIR --dataset imagenet_r|imagenet_sketch --data-root DIR``: an ImageNet-1k
classifier run evaluated on a distribution-shifted test set.

The run's model keeps its 1000 outputs; the test set's classes are ImageNet-1k WordNet ids
(``info.class_names``), and only the logits of those classes are compared (Hendrycks et al.'s
ImageNet-R protocol: the 200 ImageNet-R classes out of 1000; ImageNet-Sketch: all 1000).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gkl.utils.errors import InputError

#: ``--dataset`` choices: the registered test-only ImageNet variants.
SHIFTED_DATASETS: tuple[str, ...] = ("imagenet_r", "imagenet_sketch")
IMAGENET_CLASSES = 1000


class ClassSubset(nn.Module):
    """``model(x)[:, indices]``: a classifier restricted to some of its classes (labels index ``indices``)."""

    indices: torch.Tensor

    def __init__(self, model: nn.Module, indices: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("indices", torch.as_tensor(list(indices), dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).index_select(1, self.indices)


def check_shifted_options(cfg: Any, run_dir: Path, dataset: str) -> None:
    """InputError unless ``dataset`` is a shifted test set and the run is an ImageNet-1k classifier."""
    from gkl.models import model_input_kind
    from gkl.tasks import get_task

    if dataset not in SHIFTED_DATASETS:
        raise InputError(f"--dataset: expected one of {list(SHIFTED_DATASETS)}, got {dataset!r}")
    task = get_task(cfg.kind)
    if not task.robust_evaluation:  # the classifier tasks
        raise InputError(f"{run_dir}: --dataset evaluates ImageNet classifiers; this is a {cfg.kind} run")
    if model_input_kind(cfg.model.name) != "imagenet":
        raise InputError(
            f"{run_dir}: --dataset {dataset} evaluates ImageNet-1k classifiers; "
            f"model {cfg.model.name!r} takes {model_input_kind(cfg.model.name)!r} inputs"
        )


def evaluate_shifted_run(
    cfg: Any,
    run_dir: Path,
    paths: Mapping[str, Path],
    *,
    dataset: str,
    data_root: str,
    weights: str,
    overrides: Sequence[str] = (),
) -> tuple[dict[str, Any], str]:
    """Top-1 / top-5 of each checkpoint in ``paths`` on ``dataset`` read from ``data_root``."""
    from gkl.data import build_dataset, build_loader
    from gkl.data.imagenet_classes import imagenet_class_indices
    from gkl.metrics.classification import evaluate_classifier
    from gkl.models import create_model, load_run_weights
    from gkl.utils.distributed import resolve_device

    check_shifted_options(cfg, run_dir, dataset)
    device = resolve_device(cfg.train.device)
    test_set = build_dataset(dataset, data_root, False, normalize=cfg.data.normalize)
    info = test_set.info  # type: ignore[attr-defined]  # registry builders attach .info
    columns = imagenet_class_indices(info.class_names)
    loader = build_loader(
        test_set,
        batch_size=cfg.data.eval_batch_size,
        train=False,
        device=device,
        in_memory=False,
        num_workers=cfg.data.num_workers,
        seed=cfg.train.seed,
    )
    report: dict[str, Any] = {
        "run_dir": str(run_dir),
        "kind": "clean",
        "dataset": dataset,
        "data_root": str(data_root),
        "model": cfg.model.name,
        "weights": weights,
        "overrides": list(overrides),
        "results": {},
    }
    lines = [
        f"{info.name}: {len(test_set)} images, {info.num_classes} classes",  # type: ignore[arg-type]
        f"{'checkpoint':<10} {'epoch':>5} {'top-1':>7} {'top-5':>7}",
    ]
    for name, path in paths.items():
        model = create_model(cfg.model.name, IMAGENET_CLASSES, **cfg.model.kwargs)
        epoch = load_run_weights(model, path, which=name, weights=weights)
        restricted = ClassSubset(model, columns).to(device)
        clean = evaluate_classifier(restricted, loader, num_classes=info.num_classes, device=device)
        report["results"][name] = {"epoch": epoch, "clean": clean}
        lines.append(f"{name:<10} {epoch if epoch is not None else '-':>5} {clean['top1']:>7.2f} {clean['top5']:>7.2f}")
    return report, "\n".join(lines)
