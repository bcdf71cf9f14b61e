"""Semantic-segmentation metrics and inference: confusion-matrix mIoU, whole-image and
sliding-window prediction, and the evaluator of a segmentation run.

Conventions: values are percentages (0-100) like gkl's top-1. ``IoU_c = TP / (TP + FP + FN)``
from the confusion matrix over all evaluated pixels (labels equal to ``ignore_index`` are
skipped); ``mIoU`` is the mean over classes whose union is non-empty (a class that is neither
in the labels nor predicted has IoU NaN and is left out, as in mmsegmentation);
``pixel_accuracy`` = correct / labelled pixels; ``mAcc`` = mean per-class recall over classes
present in the labels. Under torch.distributed the confusion matrix is summed over ranks in
:meth:`SegmentationMetric.compute` (a DistributedSampler that pads its shards counts the
repeated images twice; evaluate on one process for exact numbers on uneven splits).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import nn

InferenceMode = Literal["whole", "slide"]


def _main_logits(output: Any) -> torch.Tensor:
    return output["out"] if isinstance(output, dict) else output


class SegmentationMetric:
    """Accumulates a (C, C) confusion matrix (rows: label, columns: prediction)."""

    def __init__(self, num_classes: int, ignore_index: int = 255, *, device: torch.device | str = "cpu") -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = int(ignore_index)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.confusion.zero_()

    @torch.no_grad()
    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``prediction`` is class indices (N, H, W) or logits/probabilities (N, C, h, w)
        (upsampled bilinearly to the target size, then argmax); ``target`` (N, H, W)."""
        if target.dim() < 1 or target.is_floating_point():
            raise ValueError(
                f"target: expected integer class indices (N, H, W), got {target.dtype} {tuple(target.shape)}"
            )
        if prediction.is_floating_point():
            if prediction.dim() != target.dim() + 1 or prediction.shape[1] != self.num_classes:
                raise ValueError(
                    f"prediction: expected logits (N, {self.num_classes}, h, w) for target "
                    f"{tuple(target.shape)}, got {tuple(prediction.shape)}"
                )
            if prediction.dim() == 4 and prediction.shape[-2:] != target.shape[-2:]:
                prediction = F.interpolate(
                    prediction.float(), size=target.shape[-2:], mode="bilinear", align_corners=False
                )
            prediction = prediction.argmax(dim=1)
        if prediction.shape != target.shape:
            raise ValueError(f"prediction: shape {tuple(prediction.shape)} differs from target {tuple(target.shape)}")
        target = target.to(self.confusion.device).reshape(-1).long()
        prediction = prediction.to(self.confusion.device).reshape(-1).long()
        valid = target != self.ignore_index
        bad = valid & ((target < 0) | (target >= self.num_classes))
        if bool(bad.any()):
            raise ValueError(
                f"target: values must be in [0, {self.num_classes}) or {self.ignore_index}, found {int(target[bad][0])}"
            )
        index = target[valid] * self.num_classes + prediction[valid]
        self.confusion += torch.bincount(index, minlength=self.num_classes**2).view(self.num_classes, -1)

    def reduced_confusion(self) -> torch.Tensor:
        """The confusion matrix summed over ranks (a copy; the local one is unchanged)."""
        confusion = self.confusion.clone()
        if torch_dist.is_available() and torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
            torch_dist.all_reduce(confusion, op=torch_dist.ReduceOp.SUM)
        return confusion

    def compute(self) -> dict[str, Any]:
        """``{'mIoU', 'IoU' (per-class tensor, NaN for absent classes), 'pixel_accuracy', 'mAcc'}`` in %."""
        return metrics_from_confusion(self.reduced_confusion())


def metrics_from_confusion(confusion: torch.Tensor) -> dict[str, Any]:
    """mIoU, per-class IoU, pixel accuracy and mean class accuracy (%) of a confusion matrix."""
    conf = confusion.double()
    tp = conf.diag()
    labelled = conf.sum(dim=1)
    predicted = conf.sum(dim=0)
    union = labelled + predicted - tp
    iou = torch.where(union > 0, 100.0 * tp / union.clamp_min(1), torch.full_like(tp, math.nan))
    acc = torch.where(labelled > 0, 100.0 * tp / labelled.clamp_min(1), torch.full_like(tp, math.nan))
    total = float(labelled.sum())
    return {
        "mIoU": float(iou.nanmean()) if bool((union > 0).any()) else math.nan,
        "IoU": iou.float(),
        "pixel_accuracy": 100.0 * float(tp.sum()) / total if total > 0 else math.nan,
        "mAcc": float(acc.nanmean()) if bool((labelled > 0).any()) else math.nan,
    }


# ----------------------------------------------------------------------------- inference


def _probabilities(model: nn.Module, images: torch.Tensor, size: tuple[int, int], flip: bool) -> torch.Tensor:
    """softmax of the model's logits upsampled to ``size``, averaged with the mirrored input's if ``flip``."""
    logits = _main_logits(model(images)).float()
    probs = F.interpolate(logits, size=size, mode="bilinear", align_corners=False).softmax(dim=1)
    if flip:
        mirrored = _main_logits(model(images.flip(-1))).float()
        probs = probs + F.interpolate(mirrored, size=size, mode="bilinear", align_corners=False).softmax(dim=1).flip(-1)
        probs = probs / 2
    return probs


@torch.no_grad()
def whole_inference(model: nn.Module, images: torch.Tensor, *, flip: bool = False) -> torch.Tensor:
    """Class probabilities (N, C, H, W) from one forward pass over the whole images."""
    return _probabilities(model, images, (images.shape[-2], images.shape[-1]), flip)


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Window offsets covering ``length`` (the last window is flush with the end)."""
    if length <= crop:
        return [0]
    count = math.ceil((length - crop) / stride) + 1
    return sorted({min(i * stride, length - crop) for i in range(count)})


@torch.no_grad()
def slide_inference(
    model: nn.Module,
    images: torch.Tensor,
    *,
    crop_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    num_classes: int,
    flip: bool = False,
) -> torch.Tensor:
    """Class probabilities (N, C, H, W) averaged over overlapping ``crop_size`` windows.

    Images smaller than the crop are zero-padded (zero = the mean colour after normalisation)
    to the crop size first and the padding is cut off the result. ``stride`` defaults to
    ceil(2/3 · crop), as in the PSPNet evaluation code.
    """
    ch, cw = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
    if stride is None:
        stride = (math.ceil(ch * 2 / 3), math.ceil(cw * 2 / 3))
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    n, _, h, w = images.shape
    ph, pw = max(ch - h, 0), max(cw - w, 0)
    top, left = ph // 2, pw // 2
    if ph or pw:
        images = F.pad(images, (left, pw - left, top, ph - top), value=0.0)
    H, W = images.shape[-2:]
    probs = images.new_zeros((n, num_classes, H, W), dtype=torch.float32)
    counts = images.new_zeros((1, 1, H, W), dtype=torch.float32)
    for y in window_starts(H, ch, sh):
        for x in window_starts(W, cw, sw):
            window = images[:, :, y : y + ch, x : x + cw]
            probs[:, :, y : y + ch, x : x + cw] += _probabilities(model, window, (ch, cw), flip)
            counts[:, :, y : y + ch, x : x + cw] += 1
    probs = probs / counts
    return probs[:, :, top : top + h, left : left + w]


class SegmentationEvaluator:
    """Evaluator (engine protocol): mIoU / pixel accuracy of ``model`` over a loader of (images, labels).

    ``mode="whole"`` runs the whole image, ``"slide"`` crops of ``crop_size`` with ``stride``;
    ``flip`` adds the mirrored prediction; ``base_size`` resizes the longer image side to it
    first (APD's ADE20K test: 512, then 473 windows). Returns ``{'mIoU', 'mAcc', 'pixel_accuracy', 'IoU'
    (per-class list)}``; the confusion matrix is summed over ranks.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_index: int = 255,
        mode: InferenceMode = "whole",
        crop_size: int | None = None,
        stride: int | None = None,
        flip: bool = False,
        base_size: int | None = None,
    ) -> None:
        if mode not in ("whole", "slide"):
            raise ValueError(f"mode: expected 'whole' or 'slide', got {mode!r}")
        if mode == "slide" and crop_size is None:
            raise ValueError("crop_size: sliding-window inference needs a crop size")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.mode, self.crop_size, self.stride, self.flip = mode, crop_size, stride, flip
        self.base_size = base_size

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Probabilities at the images' size; with ``base_size`` the longer side is first resized
        to it (PSPNet/APD test protocol) and the result resized back."""
        if self.base_size is not None:
            h, w = images.shape[-2:]
            scale = self.base_size / max(h, w)
            resized = F.interpolate(
                images, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear", align_corners=False
            )
            probs = self._predict(model, resized)
            return F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
        return self._predict(model, images)

    def _predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        if self.mode == "slide":
            assert self.crop_size is not None  # __init__ requires it for mode="slide"
            return slide_inference(
                model,
                images,
                crop_size=self.crop_size,
                stride=self.stride,
                num_classes=self.num_classes,
                flip=self.flip,
            )
        return whole_inference(model, images, flip=self.flip)

    @torch.no_grad()
    def __call__(self, model: nn.Module, loader, *, device: torch.device | str, dist: Any = None) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        metric = SegmentationMetric(self.num_classes, self.ignore_index, device=device)
        try:
            for batch in loader:
                images, labels = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
                metric.update(self.predict(model, images), labels)
        finally:
            model.train(was_training)
        result = metric.compute()
        result["IoU"] = [float(v) for v in result["IoU"]]
        return result
