"""The run builder of ``kind: segmentation`` (``gkl seg-train``): datasets, loaders, student,
teacher, objective, LR multipliers and evaluator for the one engine.

- Data: :func:`gkl.data.segmentation.build_segmentation_dataset` with the recipe's crop and
  augmentation ranges (``segmentation.augment``); ``segmentation.train_size``/``eval_size`` keep
  the first N items (digit_scenes generates exactly N scenes). With ``data.val_fraction`` a
  seeded random part of the training images (``data.val_seed``), read without augmentation,
  becomes the validation split that drives ``best.pt``; the evaluation split is still reported.
- Evaluation batches: ``data.eval_batch_size`` for the fixed-size bundled scenes; 1 for the
  folder datasets, whose images differ in size.
- Optimizer: backbone at lr ×1, heads (PPM/ASPP, classifier, aux) at ×``segmentation.head_lr_scale``
  (:func:`gkl.models.segmentation.segmentation_param_groups`, through the engine's
  ``param_lr_scales``); APD's student adapter joins through ``objective.trainable_param_groups()``.
- Teacher: a registry model with its weights file (``teacher.checkpoint``), frozen by the objective.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from gkl.settings._variants import drop_unused_keys
from gkl.settings.segmentation import SegmentationSettings, check_segmentation_config
from gkl.tasks.base import Section, Task, check_loss_name
from gkl.utils.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "TASK",
    "OneLineErrors",
    "build_segmentation_parts",
    "build_split",
    "build_evaluator",
    "build_teacher",
    "eval_batch_size",
    "evaluate_segmentation_run",
    "format_iou_table",
    "segmentation_analysis",
    "head_lr_scales",
]


def build_split(cfg: Any, train: bool, *, augment: bool | None = None) -> Any:
    """The training (augmented unless ``augment=False``) or evaluation split of ``cfg.data``."""
    from torch.utils.data import Subset

    from gkl.data.segmentation import build_segmentation_dataset

    seg = cfg.segmentation
    assert seg is not None
    aug = seg.augment
    size = seg.train_size if train else seg.eval_size
    dataset = build_segmentation_dataset(
        cfg.data.name,
        cfg.data.root,
        train,
        normalize=cfg.data.normalize,
        augment=augment,
        crop_size=aug.crop_size,
        scale=(aug.scale_min, aug.scale_max),
        rotate=aug.rotate,
        blur=aug.blur,
        flip=aug.flip,
        voc_aug=aug.voc_aug,
        size=size if cfg.data.name == "digit_scenes" else None,
    )
    if size is not None and cfg.data.name != "digit_scenes" and size < len(dataset):
        info = dataset.info
        dataset = Subset(dataset, range(size))
        dataset.info = info  # type: ignore[attr-defined]
    return dataset


def validation_split(cfg: Any, train_set: Any) -> tuple[Any, Any]:
    """``(train, val)``: ``round(val_fraction · n)`` training images drawn with ``data.val_seed``
    go to validation, read without augmentation."""
    import torch
    from torch.utils.data import Subset

    n = len(train_set)
    n_val = int(round(cfg.data.val_fraction * n))
    if n_val == 0 or n_val == n:
        raise InputError(
            f"data.val_fraction={cfg.data.val_fraction}: {n} training images leave "
            f"{'no validation' if n_val == 0 else 'no training'} image"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.data.val_seed))
    val_idx, train_idx = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    plain = train_set if cfg.data.name == "digit_scenes" else build_split(cfg, True, augment=False)
    return Subset(train_set, train_idx), Subset(plain, val_idx)


class OneLineErrors:
    """A loader whose bad-file errors stay one line.

    A DataLoader worker re-raises an item's :class:`InputError` (a label value out of range, a
    missing or unreadable file) with the worker's traceback in its message; this wrapper raises
    it again with the original one-line message. Everything else is the wrapped loader's.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.batch_size = getattr(getattr(loader, "loader", loader), "batch_size", None)

    def __getattr__(self, name: str) -> Any:  # set_epoch, rank_shard, ...
        return getattr(self.__dict__["loader"], name)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        try:
            yield from self.loader
        except InputError as err:
            text = str(err)
            if "\n" not in text:
                raise
            last = [line for line in text.splitlines() if line.strip()][-1]
            raise InputError(last.split("Error: ", 1)[-1].strip()) from None


def eval_batch_size(cfg: Any) -> int:
    """``data.eval_batch_size`` for the fixed-size bundled scenes, else 1 (image sizes differ)."""
    if cfg.data.name == "digit_scenes":
        return cfg.data.eval_batch_size
    if cfg.data.eval_batch_size != 1:
        log.info("data.eval_batch_size: evaluating %s one image at a time (image sizes differ)", cfg.data.name)
    return 1


def build_evaluator(cfg: Any, num_classes: int) -> Any:
    """mIoU / mAcc / pixel accuracy with the inference of ``segmentation.eval``
    (:class:`gkl.metrics.segmentation.SegmentationEvaluator`)."""
    from gkl.metrics.segmentation import SegmentationEvaluator

    seg = cfg.segmentation
    assert seg is not None
    ev = seg.eval
    return SegmentationEvaluator(
        num_classes,
        ignore_index=seg.ignore_index,
        mode=ev.mode,
        crop_size=ev.crop_size,
        stride=ev.stride,
        flip=ev.flip,
        base_size=ev.base_size,
    )


def build_teacher(cfg: Any, num_classes: int) -> Any:
    """The frozen teacher with its weights, or None for ``segmentation.method: ce``."""
    from gkl.tasks.parts import build_model, warn_if_random_teacher

    assert cfg.segmentation is not None
    if not cfg.segmentation.needs_teacher:
        return None
    assert cfg.teacher is not None  # checked by the config
    warn_if_random_teacher(cfg.teacher)
    return build_model(cfg.teacher, num_classes, section="teacher")


def head_lr_scales(model: Any, head_lr_scale: float) -> dict[str, float]:
    """``{parameter name: head_lr_scale}`` for the heads of a segmentation model (backbone: ×1)."""
    from gkl.models.segmentation import segmentation_param_groups

    if head_lr_scale == 1.0 or not hasattr(model, "backbone_modules"):
        return {}
    heads = {id(p) for p in segmentation_param_groups(model, head_lr_scale=head_lr_scale)[1]["params"]}
    return {name: float(head_lr_scale) for name, p in model.named_parameters() if id(p) in heads}


def build_segmentation_parts(cfg: Any, dist: Any) -> Any:
    """Everything the engine needs for a segmentation run on this process (:class:`~gkl.tasks.parts.RunParts`)."""
    from gkl.data import build_loader
    from gkl.objectives.segmentation import build_segmentation_objective
    from gkl.tasks.parts import RunParts, build_model

    seg, data = cfg.segmentation, cfg.data
    assert seg is not None
    train_set = build_split(cfg, True)
    eval_set = build_split(cfg, False)
    info = train_set.info
    common = dict(
        device=dist.device,
        num_workers=data.num_workers,
        seed=cfg.train.seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    val_loader = None
    if data.val_fraction > 0:
        train_set, val_set = validation_split(cfg, train_set)
        val_loader = OneLineErrors(build_loader(val_set, batch_size=eval_batch_size(cfg), train=False, **common))
    train_loader = OneLineErrors(build_loader(train_set, batch_size=data.batch_size, train=True, **common))
    eval_loader = OneLineErrors(build_loader(eval_set, batch_size=eval_batch_size(cfg), train=False, **common))
    model = build_model(cfg.model, info.num_classes)
    teacher = build_teacher(cfg, info.num_classes)
    objective = build_segmentation_objective(seg, num_classes=info.num_classes, teacher=teacher, student=model)
    return RunParts(
        model,
        objective,
        train_loader,
        eval_loader,
        info,
        evaluator=build_evaluator(cfg, info.num_classes),
        val_loader=val_loader,
        param_lr_scales=head_lr_scales(model, seg.head_lr_scale),
    )


def format_iou_table(class_names: Sequence[str] | None, iou: Sequence[float]) -> str:
    """Per-class IoU lines ``class  IoU`` (``-`` for a class never labelled nor predicted)."""
    names = list(class_names) if class_names else [f"class {c}" for c in range(len(iou))]
    width = max(len(n) for n in names)
    return "\n".join(
        f"  {name:<{width}} {'-' if math.isnan(v) else format(v, '6.2f'):>6}" for name, v in zip(names, iou)
    )


def _eval_loader(cfg: Any, eval_set: Any, device: Any) -> Any:
    """The evaluation split's loader outside training (``gkl evaluate``, ``gkl analyze``): one process,
    the run's evaluation batch size, read errors as one line."""
    from gkl.data import build_loader

    return OneLineErrors(
        build_loader(
            eval_set,
            batch_size=eval_batch_size(cfg),
            train=False,
            device=device,
            num_workers=cfg.data.num_workers,
            seed=cfg.train.seed,
        )
    )


def evaluate_segmentation_run(
    cfg: Any, run_dir: Any, paths: Mapping[str, Any], *, weights: str, overrides: Sequence[str] = (), robust: Any = None
) -> tuple[dict[str, Any], str]:
    """``gkl evaluate`` of a segmentation run: mIoU, mAcc, pixel accuracy and per-class IoU of the
    checkpoints ``paths`` (``{"last"|"best": file}``) on the evaluation split, with ``segmentation.eval``'s
    inference."""
    from gkl.models import create_model, load_run_weights
    from gkl.utils.distributed import resolve_device

    device = resolve_device(cfg.train.device)
    eval_set = build_split(cfg, False)
    info = eval_set.info
    loader = _eval_loader(cfg, eval_set, device)
    evaluator = build_evaluator(cfg, info.num_classes)
    report: dict[str, Any] = {
        "run_dir": str(run_dir),
        "kind": cfg.kind,
        "dataset": info.name,
        "model": cfg.model.name,
        "weights": weights,
        "overrides": list(overrides),
        "results": {},
    }
    lines = [f"{'checkpoint':<10} {'epoch':>5} {'mIoU':>7} {'mAcc':>7} {'pixel acc':>9}"]
    per_class = []
    for name, path in paths.items():
        # the run's weights replace the ImageNet backbone: its file is not needed to evaluate
        kwargs = {k: v for k, v in cfg.model.kwargs.items() if k != "backbone_checkpoint"}
        model = create_model(cfg.model.name, info.num_classes, **kwargs)
        epoch = load_run_weights(model, path, which=name, weights=weights)
        result = evaluator(model.to(device), loader, device=device)
        entry = {"epoch": epoch, "clean": result}
        report["results"][name] = entry
        lines.append(
            f"{name:<10} {entry['epoch'] if entry['epoch'] is not None else '-':>5} {result['mIoU']:>7.2f} "
            f"{result['mAcc']:>7.2f} {result['pixel_accuracy']:>9.2f}"
        )
        per_class.append(
            f"per-class IoU of the {name} checkpoint:\n" + format_iou_table(info.class_names, result["IoU"])
        )
    return report, "\n".join(lines + per_class)


def segmentation_analysis(cfg: Any, checkpoint: Any, device: Any, *, attack: bool = False) -> Any:
    """``gkl analyze``'s view of a segmentation run (:class:`gkl.tasks.analysis.AnalysisView`): one row per
    labelled pixel of the evaluation split. Class scores are the logits upsampled to the label size as the
    evaluation does (``whole`` inference); features are the head's feature map before the 1×1 classifier,
    per pixel of that map, with the label of the pixel nearest to it. PGD does not apply (pixel labels)."""
    import torch.nn.functional as F

    from gkl.models import create_model, load_weights
    from gkl.models.segmentation import upsample_logits
    from gkl.tasks.analysis import AnalysisView

    assert cfg.segmentation is not None
    if attack:
        raise InputError(
            f"{Path(checkpoint).parent}: --adversarial: the PGD attack of gkl analyze needs one label per "
            f"image; a {cfg.kind} run labels pixels"
        )
    eval_set = build_split(cfg, False)
    info = eval_set.info
    model = create_model(cfg.model.name, info.num_classes, **cfg.model.kwargs)
    load_weights(model, checkpoint)
    model.to(device).eval()
    loader = _eval_loader(cfg, eval_set, device)
    ignore = cfg.segmentation.ignore_index

    def outputs(images: Any, labels: Any, features: bool) -> Any:
        out = model(images, features=True)
        logits, feats = out["out"], out["features"]
        if features:  # at the feature map's resolution
            labels = F.interpolate(labels[:, None].float(), size=feats.shape[-2:], mode="nearest")[:, 0].long()
        else:
            logits = upsample_logits(logits, labels.shape[-2:])
        rows = labels.reshape(-1)
        valid = rows != ignore
        logits = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])[valid]
        if features:
            feats = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])[valid]
        return logits, rows[valid], feats if features else None

    return AnalysisView(
        model=model,
        data=loader,
        outputs=outputs,
        num_classes=info.num_classes,
        class_names=info.class_names,
        example="pixel",
        scores="softmax of the per-pixel logits",
        features="per-pixel head features (the 1×1 classifier's input)",
    )


def check(cfg: Any) -> None:
    check_segmentation_config(cfg)
    check_loss_name(cfg.segmentation, "kd_term")


TASK = Task(
    name="segmentation",
    command="seg-train",
    help="semantic segmentation: CE, or distillation with pixel-wise KL/GKL, CWD, APD (docs/segmentation.md)",
    sections=(
        Section(
            "segmentation",
            SegmentationSettings | None,
            fill=SegmentationSettings,
            help="method, augmentation, evaluation inference",
            upgrade=partial(drop_unused_keys, SegmentationSettings),
        ),
    ),
    teacher="optional",
    select_metric="mIoU",
    metric_names=("mIoU", "mAcc", "pixel_accuracy"),
    check=check,
    build=build_segmentation_parts,
    evaluate=evaluate_segmentation_run,
    analysis=segmentation_analysis,
    evaluation="mIoU",
)
