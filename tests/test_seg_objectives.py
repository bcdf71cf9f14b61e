"""Segmentation objectives: dense GKL = flattened per-pixel gkl_loss without 255, KL normalisations,
CWD, APD prototypes and adapters, CE with no labelled pixel, settings errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gkl.losses import ClassPrior, gkl_loss
from gkl.objectives.dense import channel_wise_divergence, masked_cross_entropy, update_prior
from gkl.objectives.segmentation import (
    APDObjective,
    SegmentationCE,
    SegmentationDistill,
    build_segmentation_objective,
    class_prototypes,
)
from gkl.settings.segmentation import SegmentationSettings
from gkl.utils.errors import ConfigError

C = 5


class Pointwise(nn.Module):
    """Full-resolution logits (+ features) from a 1x1 conv: enough to drive the objectives."""

    feature_channels = 6

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Conv2d(3, 6, 1)
        self.cls = nn.Conv2d(6, C, 1)
        self.aux = nn.Conv2d(3, C, 1)

    def forward(self, x, features: bool = False):
        f = torch.relu(self.features(x))
        out = {"out": self.cls(f)}
        if self.training:
            out["aux"] = self.aux(x)
        if features:
            out["features"] = f
        return out if (self.training or features) else out["out"]


def data(seed: int = 0, n: int = 3, h: int = 7, w: int = 6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = (3 * torch.randn(n, C, h, w, generator=g)).to(dtype)
    t = (3 * torch.randn(n, C, h, w, generator=g)).to(dtype)
    y = torch.randint(0, C, (n, h, w), generator=g)
    y[torch.rand(n, h, w, generator=g) < 0.25] = 255
    return s, t, y


def flatten(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(1, -1).reshape(-1, x.shape[1])


@pytest.mark.parametrize("class_wise", [True, False])
@pytest.mark.parametrize("normalize", ["weights", "batch"])
def test_dense_gkl_equals_flattened_per_pixel_gkl_without_ignored_pixels(class_wise, normalize) -> None:
    s, t, y = data()
    cfg = SegmentationSettings(
        method="kd",
        kd_term="gkl",
        alpha=2.0,
        beta=0.5,
        gamma=0.6,
        temperature=2.0,
        weight_temperature=3.0,
        class_wise=class_wise,
        normalize=normalize,
    )
    obj = SegmentationDistill(Pointwise(1), cfg, num_classes=C)
    if class_wise:  # a non-uniform prior from a previous "epoch"
        s0, t0, y0 = data(seed=1)
        update_prior(obj.prior, t0, y0, 255)
        obj.prior.step()
    s.requires_grad_(True)
    dense = obj.kd_loss(s, t, y)
    keep = flatten(y[:, None])[:, 0] != 255
    fs, ft, fy = flatten(s)[keep], flatten(t)[keep], flatten(y[:, None])[:, 0][keep]
    weights = obj.prior.prior[fy].to(torch.float64) if class_wise else None
    flat = gkl_loss(
        fs,
        ft,
        weights=weights,
        alpha=2.0,
        beta=0.5,
        gamma=0.6,
        temperature=2.0,
        weight_temperature=3.0,
        normalize=normalize,
    )
    torch.testing.assert_close(dense, flat, atol=1e-10, rtol=1e-10)
    (grad_dense,) = torch.autograd.grad(dense, s)
    (grad_flat,) = torch.autograd.grad(flat, s)
    torch.testing.assert_close(grad_dense, grad_flat, atol=1e-10, rtol=1e-10)
    assert bool((grad_dense.movedim(1, -1)[y == 255] == 0).all())


@pytest.mark.parametrize(
    "cfg",
    [
        dict(kd_term="kl", temperature=2.0),
        dict(kd_term="kl", mask_ignore=False, kd_normalize="pixel_class"),
        dict(kd_term="gkl", class_wise=True, gamma=0.6, alpha=2.0, beta=0.5, temperature=2.0, weight_temperature=3.0),
        dict(kd_term="gkl", class_wise=True, normalize="batch", kd_normalize="pixel_class"),
        dict(kd_term="gkl", class_wise=False, gamma=0.6, weight_temperature=2.0),
        dict(kd_term="gkl", class_wise=False, gamma=1.0, mask_ignore=False),
    ],
)
def test_chunked_upsampled_loss_equals_one_pass(cfg) -> None:
    """Row-chunked KL/GKL on 1/8 logits = the one-pass loss on F.interpolate'd logits (value, gradient, prior)."""
    low_s, low_t, _ = data(h=4, w=5)
    _, _, y = data(seed=4, h=29, w=37)
    results = []
    for rows in (None, 6):
        obj = SegmentationDistill(
            Pointwise(1), SegmentationSettings(method="kd", kd_chunk_rows=rows, **cfg), num_classes=C
        ).train()
        if obj.prior is not None:
            update_prior(obj.prior, data(seed=1)[1], data(seed=1)[2], 255)
            obj.prior.step()
        s = low_s.clone().requires_grad_(True)
        loss = obj.kd_loss(s, low_t, y)
        loss.backward()
        sums = None if obj.prior is None else obj.prior.sums.clone()
        results.append((loss.detach(), s.grad, sums))
    (v0, g0, p0), (v1, g1, p1) = results
    torch.testing.assert_close(v1, v0, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(g1, g0, atol=1e-10, rtol=1e-9)
    if p0 is not None:
        torch.testing.assert_close(p1, p0, atol=1e-4, rtol=1e-5)


def test_dense_prior_update_skips_ignored_pixels_in_chunks() -> None:
    _, t, y = data(h=40, w=9)
    chunked, whole = ClassPrior(C, temperature=2.0), ClassPrior(C, temperature=2.0)
    update_prior(chunked, t, y, 255, chunk_pixels=50)
    keep = y != 255
    whole.update(flatten(t)[keep.flatten()], y[keep])
    torch.testing.assert_close(chunked.sums, whole.sums, atol=1e-5, rtol=1e-6)
    assert torch.equal(chunked.counts, whole.counts) and int(chunked.counts.sum()) == int(keep.sum())


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
def test_pixel_kl_normalisations() -> None:
    s, t, y = data()
    cfg = dict(method="kd", kd_term="kl", temperature=1.0)
    per_pixel = (F.softmax(t, 1) * (F.log_softmax(t, 1) - F.log_softmax(s, 1))).sum(1)
    obj = SegmentationDistill(Pointwise(1), SegmentationSettings(**cfg), num_classes=C)
    torch.testing.assert_close(obj.kd_loss(s, t, y), per_pixel[y != 255].mean())
    apd = SegmentationDistill(
        Pointwise(1), SegmentationSettings(**cfg, kd_normalize="pixel_class", mask_ignore=False), num_classes=C
    )
    reference = nn.KLDivLoss()(F.log_softmax(s, 1), F.softmax(t, 1))  # APD's CriterionKD at T = 1
    torch.testing.assert_close(apd.kd_loss(s, t, y), reference)
    hot = SegmentationDistill(Pointwise(1), SegmentationSettings(**{**cfg, "temperature": 4.0}), num_classes=C)
    pp4 = 16 * (F.softmax(t / 4, 1) * (F.log_softmax(t / 4, 1) - F.log_softmax(s / 4, 1))).sum(1)
    torch.testing.assert_close(hot.kd_loss(s, t, y), pp4[y != 255].mean())


def test_cwd_equals_channel_loop() -> None:
    s, t, _ = data()
    expected = 0.0
    for n in range(s.shape[0]):
        for c in range(C):
            p = F.softmax(t[n, c].flatten() / 4, 0)
            expected += 16 * (p * (p.log() - F.log_softmax(s[n, c].flatten() / 4, 0))).sum()
    torch.testing.assert_close(channel_wise_divergence(s, t, 4.0), (expected / (s.shape[0] * C)).float())


def test_class_prototypes_match_a_loop() -> None:
    g = torch.Generator().manual_seed(3)
    f = F.normalize(torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64), dim=1)
    y = torch.randint(0, 3, (2, 5, 5), generator=g)
    y[0, 0] = 255
    centers, present = class_prototypes(f, y, 6, 255)
    assert present.tolist() == sorted(set(y[y != 255].tolist()))
    for row, k in zip(centers, present.tolist()):
        mean = f.movedim(1, -1)[y == k].mean(0)
        torch.testing.assert_close(row, F.normalize(mean, dim=0))


def test_ce_objective_and_empty_labels() -> None:
    model = Pointwise(0).train()
    x = torch.randn(2, 3, 8, 8)
    y = torch.full((2, 8, 8), 255)
    out = SegmentationCE(SegmentationSettings(), num_classes=C)(model, (x, y), epoch=1, step=1)
    assert float(out.total().detach()) == 0.0  # no labelled pixel: zero loss, not NaN
    out.total().backward()
    y[:, :4] = 1
    out = SegmentationCE(SegmentationSettings(aux_weight=0.4), num_classes=C)(model, (x, y), epoch=1, step=1)
    logits = model(x)
    torch.testing.assert_close(out.losses["aux"], 0.4 * F.cross_entropy(logits["aux"], y, ignore_index=255))
    assert masked_cross_entropy(logits["out"], y, 255).dtype == torch.float32


def test_apd_step_trains_adapters_and_checkpoints_adam_state() -> None:
    student, teacher = Pointwise(0).train(), Pointwise(1)
    cfg = SegmentationSettings(
        method="apd",
        kd_weight=10.0,
        kd_normalize="pixel_class",
        mask_ignore=False,
        apd_adapter_dim=8,
        apd_teacher_lr=1e-2,
    )
    obj = build_segmentation_objective(cfg, num_classes=C, teacher=teacher, student=student).train()
    assert isinstance(obj, APDObjective) and not obj.teacher.training
    x = torch.randn(2, 3, 8, 8)
    _, _, y = data(n=2, h=8, w=8)
    before_teacher = [p.clone() for p in obj.teacher.parameters()]
    before_adapter = [p.clone() for p in obj.teacher_adapter.parameters()]
    out = obj(student, (x, y), epoch=1, step=1)
    assert set(out.losses) == {"ce", "aux", "kl", "apd_pred", "apd_align"}
    out.total().backward()
    assert all(p.grad is not None for p in obj.student_adapter.parameters())
    assert all(p.grad is None for p in obj.teacher_adapter.parameters())  # trained by its own Adam step
    assert not any(torch.equal(a, b) for a, b in zip(before_adapter, obj.teacher_adapter.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(before_teacher, obj.teacher.parameters()))
    state = obj.checkpoint_state()
    assert int(state["adam_step"]) == 1 and "adam_m0" in state and not any(k.startswith("teacher.") for k in state)
    groups = obj.trainable_param_groups()
    assert groups[0]["lr_scale"] == 10.0 and len(groups[0]["params"]) == 4
    gkl = build_segmentation_objective(
        SegmentationSettings(method="apd", kd_term="gkl"), num_classes=C, teacher=teacher, student=student
    )
    assert "gkl" in gkl(student, (x, y), epoch=1, step=1).losses


def test_settings_errors_name_the_key() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^segmentation.method: expected one of \['ce', 'kd', 'cwd', 'apd'\], "
        r"got 'kdd'$",
    ):
        SegmentationSettings(method="kdd")
    with pytest.raises(ConfigError, match=r"^segmentation.mask_ignore: expected true with class-wise GKL weights"):
        SegmentationSettings(method="kd", kd_term="gkl", class_wise=True, mask_ignore=False)
    with pytest.raises(ConfigError, match=r"^segmentation.kd_term: not a setting of segmentation.method 'ce'"):
        SegmentationSettings(kd_term="gkl")
    with pytest.raises(ConfigError, match=r"^segmentation.cwd_temperature: not a setting of segmentation.method 'kd'"):
        SegmentationSettings(method="kd", cwd_temperature=2.0)
    with pytest.raises(ConfigError, match=r"^segmentation.gamma: not a setting of segmentation.kd_term 'kl'"):
        SegmentationSettings(method="apd", kd_term="kl", gamma=0.5)
    with pytest.raises(
        ConfigError, match=r"^segmentation.eval.crop_size: expected an integer for mode 'slide', got None$"
    ):
        SegmentationSettings(eval={"mode": "slide"})
    # a registered loss's name is checked against the registry when the objective is built
    with pytest.raises(
        ConfigError, match=r"^segmentation.kd_term: expected a registered logit loss \(kl, .*\), got 'kll'$"
    ):
        build_segmentation_objective(
            SegmentationSettings(method="kd", kd_term="kll"), num_classes=C, teacher=nn.Identity()
        )
    with pytest.raises(ValueError, match="needs a teacher"):
        build_segmentation_objective(SegmentationSettings(method="kd"), num_classes=C)
