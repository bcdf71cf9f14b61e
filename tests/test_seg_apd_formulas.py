"""APD's two terms against the formulas of docs/segmentation.md, written out pixel by pixel.

Features at half the label resolution (a stride-2 model), labels with ignored pixels and absent
classes; the reference loops over classes and pixels in float64 with the adapters' weights
as they were before the step (the step then moves the teacher adapter by its own Adam step).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from gkl.objectives.segmentation import build_segmentation_objective
from gkl.settings.segmentation import SegmentationSettings

C = 5
TAU = 7.0


class Strided(nn.Module):
    """Logits and 6-channel features at half the input resolution (1x1 convolutions, stride 2)."""

    feature_channels = 6

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Conv2d(3, 6, 1, stride=2)
        self.cls = nn.Conv2d(6, C, 1)

    def forward(self, x, features: bool = False):
        f = torch.relu(self.features(x))
        out = {"out": self.cls(f)}
        if features:
            out["features"] = f
        return out if (self.training or features) else out["out"]


def _normalise(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def _reference(f_s, f_t, labels, student_adapter, teacher_adapter):
    """docs/segmentation.md, APD: g = L2-normalised adapter output per pixel; labels downsampled
    (nearest: every second pixel) to the feature size; c^k = normalised mean of g over the pixels
    of class k present in the batch; P = tau * <g, c^k>; pred = sum KL(softmax P_t || softmax P_s)
    / (N*K*h*w); align = 1/2 * mean_k (1 - <c_s^k, c_t^k>)."""
    g_s = student_adapter(f_s.double())
    g_t = teacher_adapter(f_t.double())
    n, _, h, w = g_s.shape
    small = labels[:, ::2, ::2]
    classes = sorted({int(k) for k in small.unique()} - {255})
    pixels = [(i, a, b) for i in range(n) for a in range(h) for b in range(w)]
    unit_s = {p: _normalise(g_s[p[0], :, p[1], p[2]]) for p in pixels}
    unit_t = {p: _normalise(g_t[p[0], :, p[1], p[2]]) for p in pixels}
    centre_s, centre_t = [], []
    for k in classes:
        members = [p for p in pixels if int(small[p]) == k]
        centre_s.append(_normalise(sum(unit_s[p] for p in members) / len(members)))
        centre_t.append(_normalise(sum(unit_t[p] for p in members) / len(members)))
    kl = g_s.new_zeros(())
    for p in pixels:
        p_s = torch.stack([TAU * unit_s[p] @ c for c in centre_s])
        p_t = torch.stack([TAU * unit_t[p] @ c for c in centre_t]).detach()
        target = torch.softmax(p_t, dim=0)
        kl = kl + (target * (target.log() - torch.log_softmax(p_s, dim=0))).sum()
    pred = kl / (n * len(classes) * h * w)
    align = 0.5 * sum(1 - cs @ ct.detach() for cs, ct in zip(centre_s, centre_t)) / len(classes)
    return pred, align, len(classes)


def test_apd_pred_and_align_equal_the_documented_formulas() -> None:
    student, teacher = Strided(0).train(), Strided(1)
    cfg = SegmentationSettings(
        method="apd",
        kd_weight=1.0,
        apd_pred_weight=3.0,
        apd_align_weight=5.0,
        apd_temperature=TAU,
        apd_adapter_dim=4,
    )
    obj = build_segmentation_objective(cfg, num_classes=C, teacher=teacher, student=student).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=g)
    labels = torch.tensor([0, 1, 3])[torch.randint(0, 3, (2, 8, 8), generator=g)]
    labels[torch.rand(2, 8, 8, generator=g) < 0.2] = 255  # ignored pixels; classes 2 and 4 absent
    student_adapter = copy.deepcopy(obj.student_adapter).double()
    teacher_adapter = copy.deepcopy(obj.teacher_adapter).double()

    out = obj(student, (x, labels), epoch=1, step=1)

    with torch.no_grad():
        f_t = teacher(x, features=True)["features"]
    f_s = student(x, features=True)["features"]
    pred, align, present = _reference(f_s, f_t, labels, student_adapter, teacher_adapter)
    assert present == 3
    assert pred > 0 and align > 0
    # the objective works in float32 (features upcast to float32): float32 tolerance
    torch.testing.assert_close(out.losses["apd_pred"].double(), 3.0 * pred, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.losses["apd_align"].double(), 5.0 * align, rtol=1e-5, atol=1e-7)
    # gradients of the two terms into the student adapter equal the reference's
    grads = torch.autograd.grad(
        out.losses["apd_pred"] + out.losses["apd_align"], list(obj.student_adapter.parameters())
    )
    expected = torch.autograd.grad(3.0 * pred + 5.0 * align, list(student_adapter.parameters()))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)


def test_the_reference_downsampling_is_nearest_interpolation() -> None:
    """The reference's every-second-pixel labels are what F.interpolate(mode="nearest") gives at 8 -> 4."""
    labels = torch.randint(0, 5, (2, 8, 8))
    nearest = F.interpolate(labels[:, None].float(), size=(4, 4), mode="nearest")[:, 0].long()
    assert torch.equal(nearest, labels[:, ::2, ::2])
