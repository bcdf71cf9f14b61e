"""SegmentationMetric (confusion matrix, ignore), whole / sliding-window inference, the evaluator."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gkl.metrics import SegmentationEvaluator, SegmentationMetric
from gkl.metrics.segmentation import slide_inference, whole_inference, window_starts


def direct_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore: int = 255) -> list[float]:
    keep = target != ignore
    p, t = pred[keep], target[keep]
    out = []
    for c in range(num_classes):
        inter = ((p == c) & (t == c)).sum().item()
        union = ((p == c) | (t == c)).sum().item()
        out.append(100.0 * inter / union if union else math.nan)
    return out


def test_miou_equals_direct_per_class_computation_with_ignore() -> None:
    g = torch.Generator().manual_seed(0)
    metric = SegmentationMetric(6)
    preds, targets = [], []
    for _ in range(3):
        target = torch.randint(0, 5, (2, 9, 11), generator=g)  # class 5 never labelled ...
        target[torch.rand(target.shape, generator=g) < 0.2] = 255
        pred = torch.where(
            torch.rand(target.shape, generator=g) < 0.6,
            target.clamp(max=4),
            torch.randint(0, 5, target.shape, generator=g),
        )  # ... nor predicted
        pred[0, 0, 0] = 4
        metric.update(pred, target)
        preds.append(pred), targets.append(target)
    result = metric.compute()
    expected = direct_iou(torch.cat(preds), torch.cat(targets), 6)
    assert math.isnan(expected[5]) and math.isnan(float(result["IoU"][5]))
    for got, want in zip(result["IoU"][:5].tolist(), expected[:5]):
        assert got == pytest.approx(want, abs=1e-4)
    assert result["mIoU"] == pytest.approx(sum(expected[:5]) / 5, abs=1e-6)
    p, t = torch.cat(preds), torch.cat(targets)
    keep = t != 255
    assert result["pixel_accuracy"] == pytest.approx(100.0 * (p[keep] == t[keep]).float().mean().item(), abs=1e-6)


def test_logits_are_upsampled_to_the_label_size() -> None:
    metric = SegmentationMetric(3)
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1, :, 0] = 5.0  # left half class 1
    logits[0, 2, :, 1] = 5.0  # right half class 2
    target = torch.tensor([[[1, 1, 2, 2]] * 4])
    metric.update(logits, target)
    assert metric.compute()["pixel_accuracy"] == 100.0
    with pytest.raises(ValueError, match="target"):
        metric.update(logits, torch.full((1, 4, 4), 7))


class Pointwise(nn.Module):
    """A per-pixel classifier (1x1 conv): every window sees each pixel the same way."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Downsampling(nn.Module):
    """Logits at 1/8 (like the PSPNet models)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 8, stride=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize("size", [(10, 12), (40, 29)])
def test_slide_inference_matches_whole_for_a_pointwise_model(size) -> None:
    model = Pointwise().eval()
    images = torch.randn(2, 3, *size)
    whole = whole_inference(model, images)
    slid = slide_inference(model, images, crop_size=16, stride=11, num_classes=4)  # (10, 12) < crop
    assert slid.shape == whole.shape == (2, 4, *size)
    torch.testing.assert_close(slid, whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(slid.sum(1), torch.ones(2, *size), atol=1e-5, rtol=0)
    flipped = slide_inference(model, images, crop_size=16, num_classes=4, flip=True)
    torch.testing.assert_close(flipped, whole, atol=1e-6, rtol=0)


def test_slide_inference_small_image_with_downsampling_model() -> None:
    probs = slide_inference(Downsampling().eval(), torch.randn(1, 3, 13, 21), crop_size=32, num_classes=4)
    assert probs.shape == (1, 4, 13, 21)
    assert window_starts(50, 32, 22) == [0, 18] and window_starts(20, 32, 22) == [0]


def test_evaluator_protocol() -> None:
    model = Pointwise(3)
    images = torch.randn(4, 3, 8, 8)
    labels = whole_inference(model.eval(), images).argmax(1)
    labels[:, 0] = 255
    model.train()
    loader = [(images[:2], labels[:2]), (images[2:], labels[2:])]
    for evaluator in (SegmentationEvaluator(3), SegmentationEvaluator(3, mode="slide", crop_size=5, flip=True)):
        result = evaluator(model, loader, device="cpu", dist=None)
        assert result["pixel_accuracy"] == 100.0 and result["mIoU"] == 100.0
        assert isinstance(result["IoU"], list) and len(result["IoU"]) == 3
    assert model.training
