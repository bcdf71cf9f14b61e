"""The exact T → ∞ limit of T²·KL (Kim et al. 2021) and gkl_loss's refusal of double backward."""

from __future__ import annotations

import math

import pytest
import torch

from gkl.losses import KLDivLoss, gkl_loss, ikl_loss, kl_div, logit_mse


def _pair(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = (3 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_()
    t = 3 * torch.randn(shape, generator=g, dtype=torch.float64)
    return s, t


def _direct_limit(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per example (1/2C) Σ_j (d_j − d̄)², written with explicit loops over classes."""
    c = s.shape[1]
    d = s - t
    mean = sum(d[:, j] for j in range(c)) / c
    return sum((d[:, j] - mean) ** 2 for j in range(c)) / (2 * c)


@pytest.mark.parametrize("shape", [(6, 5), (3, 7, 2, 3)])
def test_value_equals_direct_formula_for_every_reduction(shape):
    s, t = _pair(shape)
    per = _direct_limit(s, t)
    got_none = kl_div(s, t, temperature=math.inf, reduction="none")
    assert got_none.shape == per.shape
    torch.testing.assert_close(got_none, per, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kl_div(s, t, temperature=math.inf, reduction="sum"), per.sum(), rtol=1e-12, atol=0)
    torch.testing.assert_close(kl_div(s, t, temperature=math.inf), per.mean(), rtol=1e-12, atol=0)
    # same reduction semantics as finite T: "mean" is the mean of the "none" values
    finite_none = kl_div(s, t, temperature=2.0, reduction="none")
    assert finite_none.shape == got_none.shape


@pytest.mark.parametrize("shape", [(6, 5), (3, 7, 2, 3)])
def test_gradient_is_centred_difference_over_c_squared(shape):
    s, t = _pair(shape, seed=1)
    c = shape[1]
    kl_div(s, t, temperature=math.inf, reduction="sum").backward()
    d = (s - t).detach()
    expected = (c * d - d.sum(dim=1, keepdim=True)) / c**2
    torch.testing.assert_close(s.grad, expected, rtol=1e-12, atol=1e-13)


def test_relation_to_logit_mse_and_shift_invariance():
    s, t = _pair((8, 10), seed=2)
    c = 10
    d = (s - t).detach()
    lim = kl_div(s.detach(), t, temperature=math.inf, reduction="none")
    mse = logit_mse(s.detach(), t, reduction="none")
    # Kim et al.: (1/2C)||d||^2 + delta_inf with delta_inf = -(sum d)^2 / (2C^2)
    torch.testing.assert_close(lim, mse / 2 - d.sum(dim=1) ** 2 / (2 * c**2), rtol=1e-12, atol=1e-12)
    shifted = s.detach() + 5.0
    torch.testing.assert_close(kl_div(shifted, t, temperature=math.inf, reduction="none"), lim, rtol=1e-12, atol=1e-12)
    assert (logit_mse(shifted, t, reduction="none") > mse).all()  # the uncentred MSE is not shift-invariant


@pytest.mark.parametrize("shape", [(16, 10), (2, 5, 3)])
def test_finite_temperature_converges_to_the_limit(shape):
    s, t = _pair(shape, seed=3)  # logits of scale 3
    lim = kl_div(s.detach(), t, temperature=math.inf)
    assert abs(kl_div(s.detach(), t, temperature=1e3).item() / lim.item() - 1) < 1e-3
    # per example too, for unit-scale logits (the error is O(|d| / T) relative)
    s1, t1 = s.detach() / 3, t / 3
    lim1 = kl_div(s1, t1, temperature=math.inf, reduction="none")
    assert ((kl_div(s1, t1, temperature=1e3, reduction="none") - lim1).abs() <= 1e-3 * lim1).all()
    # first-order convergence: ten times the temperature, a tenth of the error
    err = [(kl_div(s.detach(), t, temperature=T) - lim).abs().item() for T in (1e2, 1e3, 1e4)]
    assert 8 < err[0] / err[1] < 12 and 8 < err[1] / err[2] < 12
    # gradients converge too
    g_lim = torch.autograd.grad(kl_div(s, t, temperature=math.inf), s)[0]
    g_fin = torch.autograd.grad(kl_div(s, t, temperature=1e3), s)[0]
    torch.testing.assert_close(g_fin, g_lim, rtol=0, atol=1e-2 * g_lim.abs().max().item())


def test_module_form_and_bad_temperatures():
    s, t = _pair((4, 3), seed=4)
    assert KLDivLoss(temperature=math.inf)(s, t).item() == pytest.approx(kl_div(s, t, temperature=math.inf).item())
    for bad in (-math.inf, math.nan, 0.0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            kl_div(s, t, temperature=bad)
        with pytest.raises(ValueError, match="temperature"):
            KLDivLoss(temperature=bad)


def test_half_precision_input_gives_float32_limit():
    s, t = _pair((4, 6), seed=5)
    out = kl_div(s.detach().half(), t.half(), temperature=math.inf)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("loss", [gkl_loss, ikl_loss])
def test_gkl_double_backward_raises_clearly(loss):
    s, t = _pair((4, 5), seed=6)
    t.requires_grad_()
    value = loss(s, t)
    with pytest.raises(RuntimeError, match="not twice differentiable"):
        torch.autograd.grad(value, s, create_graph=True)
    # plain backward still works
    value = loss(s, t)
    value.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()
