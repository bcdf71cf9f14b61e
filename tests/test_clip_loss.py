"""GKLDistillClipLoss: equals OpenCLIP's DistillClipLoss for method="soft_ce" (and its gradients for
method="kl", the registry's true KL, whose value is lower by the teacher's entropy), the explicit pairwise
GKL for method="gkl", and the single-process loss under a 2-process gathered DDP run."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

open_clip = pytest.importorskip("open_clip")

from gkl.clip import GKLDistillClipLoss  # noqa: E402
from gkl.utils.errors import InputError  # noqa: E402


def _features(n: int = 6, d_s: int = 5, d_t: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64
    img = F.normalize(torch.randn(n, d_s, generator=g, dtype=dt), dim=1).requires_grad_(True)
    txt = F.normalize(torch.randn(n, d_s, generator=g, dtype=dt), dim=1).requires_grad_(True)
    scale = torch.tensor(7.0, dtype=dt, requires_grad=True)
    t_img = F.normalize(torch.randn(n, d_t, generator=g, dtype=dt), dim=1)
    t_txt = F.normalize(t_img + 0.5 * torch.randn(n, d_t, generator=g, dtype=dt), dim=1)
    t_scale = torch.tensor(12.0, dtype=dt)
    return img, txt, scale, t_img, t_txt, t_scale


def _grads(loss, inputs):
    return torch.autograd.grad(loss, inputs, retain_graph=True)


def _teacher_entropy(t_img, t_txt, t_scale):
    """Mean over both directions of the mean row entropy of the teacher's softmax."""
    logits = t_scale * t_img @ t_txt.T
    rows = [-(torch.softmax(m, 1) * torch.log_softmax(m, 1)).sum(1).mean() for m in (logits, logits.T)]
    return (rows[0] + rows[1]) / 2


def test_soft_ce_equals_open_clip_distill_clip_loss_and_kl_has_its_gradients():
    img, txt, scale, t_img, t_txt, t_scale = _features()
    ref = open_clip.loss.DistillClipLoss()(img, txt, scale, t_img, t_txt, t_scale)
    soft_ce = GKLDistillClipLoss("soft_ce")(img, txt, scale, t_img, t_txt, t_scale)
    kl = GKLDistillClipLoss("kl")(img, txt, scale, t_img, t_txt, t_scale)
    for a, b in zip(soft_ce, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        for ga, gb in zip(_grads(a, (img, txt, scale)), _grads(b, (img, txt, scale))):
            torch.testing.assert_close(ga, gb, rtol=0, atol=1e-10)
    torch.testing.assert_close(kl[0], ref[0], rtol=0, atol=1e-12)
    # KL = soft cross-entropy - teacher entropy (a constant): same gradients, lower value
    torch.testing.assert_close(kl[1], ref[1] - _teacher_entropy(t_img, t_txt, t_scale), rtol=0, atol=1e-12)
    for ga, gb in zip(_grads(kl[1], (img, txt, scale)), _grads(ref[1], (img, txt, scale))):
        torch.testing.assert_close(ga, gb, rtol=0, atol=1e-10)
    as_dict = GKLDistillClipLoss("kl")(img, txt, scale, t_img, t_txt, t_scale, output_dict=True)
    assert set(as_dict) == {"contrastive_loss", "distill_loss"}


def _pairwise_gkl(s, t, *, alpha, beta, gamma, temperature, weight_temperature):
    """GKL Eqs. 8-10 per row with the explicit (C × C) pairwise wMSE, normalised by Σ_i W_i²."""
    total_mse, total_w2, total_ce = 0.0, 0.0, 0.0
    for i in range(s.shape[0]):
        w = torch.softmax(t[i] / weight_temperature, dim=0) ** gamma
        phi = w[:, None] * w[None, :]
        dm = t[i][:, None] - t[i][None, :]
        dn = s[i][:, None] - s[i][None, :]
        total_mse = total_mse + 0.25 * (phi * (dm - dn) ** 2).sum()
        total_w2 = total_w2 + w.sum() ** 2
        p = torch.softmax(t[i] / temperature, dim=0)
        total_ce = total_ce - (p * torch.log_softmax(s[i] / temperature, dim=0)).sum()
    return alpha * total_mse / total_w2 + beta * total_ce / s.shape[0]


def test_gkl_equals_explicit_pairwise_form_on_both_directions():
    img, txt, scale, t_img, t_txt, t_scale = _features(n=7)
    hp = dict(alpha=0.7, beta=1.3, gamma=0.6, temperature=2.0, weight_temperature=3.0)
    contrastive, distill = GKLDistillClipLoss("gkl", **hp)(img, txt, scale, t_img, t_txt, t_scale)
    s_i2t = scale * img @ txt.T
    t_i2t = t_scale * t_img @ t_txt.T
    expected = (_pairwise_gkl(s_i2t, t_i2t, **hp) + _pairwise_gkl(s_i2t.T, t_i2t.T, **hp)) / 2
    torch.testing.assert_close(distill, expected, rtol=1e-12, atol=1e-12)
    for ga, gb in zip(_grads(distill, (img, txt, scale)), _grads(expected, (img, txt, scale))):
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-10)
    labels = torch.arange(7)
    ref_contrastive = (F.cross_entropy(s_i2t, labels) + F.cross_entropy(s_i2t.T, labels)) / 2
    torch.testing.assert_close(contrastive, ref_contrastive, rtol=0, atol=1e-12)


def test_dkl_student_gradient_equals_kl_gradient():
    """Theorem 1: with α = β = 1 the student's DKL gradient is the KL gradient (teacher detached)."""
    img, txt, scale, t_img, t_txt, t_scale = _features(seed=3)
    _, kl = GKLDistillClipLoss("kl", temperature=2.0)(img, txt, scale, t_img, t_txt, t_scale)
    _, dkl = GKLDistillClipLoss("dkl", temperature=2.0)(img, txt, scale, t_img, t_txt, t_scale)
    for ga, gb in zip(_grads(kl, (img, txt, scale)), _grads(dkl, (img, txt, scale))):
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-10)


def test_teacher_receives_no_gradient():
    img, txt, scale, t_img, t_txt, t_scale = _features()
    t_img.requires_grad_(True)
    _, distill = GKLDistillClipLoss("gkl")(img, txt, scale, t_img, t_txt, t_scale)
    distill.backward()
    assert t_img.grad is None


@pytest.mark.parametrize(
    "case, match",
    [
        ("student_dims", "student image_features"),
        ("teacher_dims", "teacher"),
        ("batch", "student batch 6 and teacher batch 5"),
        ("scale", "logit_scale must be > 0"),
        ("dist_scale", "dist_logit_scale must be > 0"),
    ],
)
def test_bad_input_is_a_one_line_error_naming_it(case, match):
    img, txt, scale, t_img, t_txt, t_scale = _features()
    loss = GKLDistillClipLoss("gkl")
    if case == "student_dims":
        txt = txt[:, :4]
    elif case == "teacher_dims":
        t_txt = t_txt[:, :3]
    elif case == "batch":
        t_img, t_txt = t_img[:5], t_txt[:5]
    elif case == "scale":
        scale = torch.tensor(0.0, dtype=torch.float64)
    else:
        t_scale = torch.tensor(-1.0, dtype=torch.float64)
    with pytest.raises(InputError, match=match) as info:
        loss(img, txt, scale, t_img, t_txt, t_scale)
    assert "\n" not in str(info.value)


def test_bad_constructor_arguments():
    with pytest.raises(InputError, match="method"):
        GKLDistillClipLoss("kd")
    with pytest.raises(InputError, match="temperature"):
        GKLDistillClipLoss(temperature=0)
    with pytest.raises(InputError, match="unknown keyword"):
        GKLDistillClipLoss(locall_loss=True)


# ----------------------------------------------------------------------------- DDP (gloo)


class _Towers(nn.Module):
    """Image and text projections with a learned log-scale, like a CLIP's heads."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.image = nn.Linear(6, 4, dtype=torch.float64)
        self.text = nn.Linear(5, 4, dtype=torch.float64)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g, dtype=torch.float64)
        self.logit_scale = nn.Parameter(torch.tensor(2.0, dtype=torch.float64))

    def forward(self, x, y):
        return F.normalize(self.image(x), dim=1), F.normalize(self.text(y), dim=1), self.logit_scale.exp()


def _global_batch(n: int = 8):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, 6, generator=g, dtype=torch.float64), torch.randn(n, 5, generator=g, dtype=torch.float64)
    t_img = F.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=1)
    t_txt = F.normalize(t_img + 0.3 * torch.randn(n, 3, generator=g, dtype=torch.float64), dim=1)
    return x, y, t_img, t_txt, torch.tensor(9.0, dtype=torch.float64)


_HP = dict(alpha=0.5, beta=1.0, gamma=0.7, temperature=2.0, weight_temperature=2.0)


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        model = nn.parallel.DistributedDataParallel(_Towers())
        x, y, t_img, t_txt, t_scale = (v.chunk(world_size)[rank] if v.dim() else v for v in _global_batch())
        loss_fn = GKLDistillClipLoss("gkl", rank=rank, world_size=world_size, **_HP)
        contrastive, distill = loss_fn(*model(x, y), t_img, t_txt, t_scale)
        (contrastive + distill).backward()
        grads = {k: p.grad for k, p in model.module.named_parameters()}
        torch.save(
            {"losses": (contrastive.detach(), distill.detach()), "grads": grads},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gathered_loss_equals_single_process_loss_on_concatenated_batch(tmp_path):
    world_size = 2
    mp.spawn(_ddp_worker, args=(world_size, str(tmp_path / "init"), str(tmp_path)), nprocs=world_size, join=True)
    model = _Towers()
    x, y, t_img, t_txt, t_scale = _global_batch()
    contrastive, distill = GKLDistillClipLoss("gkl", **_HP)(*model(x, y), t_img, t_txt, t_scale)
    (contrastive + distill).backward()
    for rank in range(world_size):
        out = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(out["losses"][0], contrastive.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out["losses"][1], distill.detach(), rtol=1e-12, atol=1e-12)
        for name, p in model.named_parameters():  # DDP-averaged gradients = full-batch gradients
            torch.testing.assert_close(out["grads"][name], p.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_gkl_losses_does_not_import_open_clip():
    import subprocess
    import sys

    code = "import sys, gkl.losses; assert 'open_clip' not in sys.modules, 'open_clip imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
