"""KL, DKL, JS, logit-MSE and DKD: values and gradients against independent formulas."""

import math

import pytest
import torch
import torch.nn.functional as F

from gkl.losses import (
    DKDLoss,
    DKLLoss,
    JSDivLoss,
    KLDivLoss,
    LogitMSELoss,
    dkd_loss,
    dkl_loss,
    js_div,
    kl_div,
    logit_mse,
)


def _pair(n=8, c=10, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = (scale * torch.randn(n, c, generator=g, dtype=torch.float64)).requires_grad_()
    t = (scale * torch.randn(n, c, generator=g, dtype=torch.float64)).requires_grad_()
    return s, t


def _kl_reference(s, t):
    """KL(s_m || s_n) summed over classes, batchmean, written with plain softmax/log."""
    p_t = torch.softmax(t, dim=1)
    return (p_t * (torch.log_softmax(t, dim=1) - torch.log_softmax(s, dim=1))).sum() / s.shape[0]


@pytest.mark.parametrize("scale", [1.0, 5.0, 50.0, 1e3])
@pytest.mark.parametrize("seed", [0, 1])
def test_dkl_gradients_equal_kl_gradients_for_both_inputs(scale, seed):
    s, t = _pair(scale=scale, seed=seed)
    g_kl = torch.autograd.grad(_kl_reference(s, t), (s, t))
    g_dkl = torch.autograd.grad(dkl_loss(s, t, alpha=1.0, beta=1.0), (s, t))
    for a, b in zip(g_kl, g_dkl):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(b, a, atol=1e-10, rtol=0)


def test_dkl_gradients_match_eqs_3_4():
    s, t = _pair(seed=3)
    gs, gt = torch.autograd.grad(dkl_loss(s, t, reduction="sum"), (s, t))
    p_s, p_t = torch.softmax(s, 1), torch.softmax(t, 1)
    torch.testing.assert_close(gs, p_s - p_t, atol=1e-12, rtol=0)  # Eq. 3
    d = t - s
    expected_t = p_t * (d - (p_t * d).sum(1, keepdim=True))  # Eq. 4
    torch.testing.assert_close(gt, expected_t, atol=1e-12, rtol=0)


def test_dkl_terms_send_gradient_to_one_input_each():
    s, t = _pair(seed=4)
    g_wmse = torch.autograd.grad(dkl_loss(s, t, alpha=1.0, beta=0.0), (s, t))
    g_ce = torch.autograd.grad(dkl_loss(s, t, alpha=0.0, beta=1.0), (s, t))
    assert torch.count_nonzero(g_wmse[0]) == 0 and torch.count_nonzero(g_wmse[1]) > 0
    assert torch.count_nonzero(g_ce[1]) == 0 and torch.count_nonzero(g_ce[0]) > 0


def test_dkl_value_is_pairwise_formula():
    s, t = _pair(n=5, c=6, seed=5)
    w = torch.softmax(t, 1)
    phi = w[:, :, None] * w[:, None, :]
    dm = t[:, :, None] - t[:, None, :]
    dn = s[:, :, None] - s[:, None, :]
    alpha, beta = 0.7, 1.3
    ref = (alpha / 4 * (phi * (dm - dn) ** 2).sum((1, 2)) - beta * (w * torch.log_softmax(s, 1)).sum(1)).mean()
    torch.testing.assert_close(dkl_loss(s, t, alpha=alpha, beta=beta), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kl_div_is_hinton_kd(temperature):
    s, t = _pair(n=16, c=7, seed=6)
    ref = (
        F.kl_div(torch.log_softmax(s / temperature, 1), torch.softmax(t / temperature, 1), reduction="batchmean")
        * temperature**2
    )
    out = kl_div(s, t, temperature=temperature)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    g1 = torch.autograd.grad(out, (s, t))
    g2 = torch.autograd.grad(ref, (s, t))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    per = kl_div(s, t, temperature=temperature, reduction="none")
    assert per.shape == (16,)
    torch.testing.assert_close(per.mean(), out)
    torch.testing.assert_close(kl_div(s, t, temperature=temperature, reduction="sum"), per.sum())
    torch.testing.assert_close(KLDivLoss(temperature=temperature)(s, t), out)


def test_kl_div_dense_every_position_is_an_example():
    g = torch.Generator().manual_seed(7)
    s = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)
    t = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)

    def flat(x):
        return x.movedim(1, -1).reshape(-1, 5)

    torch.testing.assert_close(kl_div(s, t, temperature=2.0), kl_div(flat(s), flat(t), temperature=2.0))
    assert kl_div(s, t, reduction="none").shape == (2, 3, 4)


def test_js_div_symmetric_nonnegative_and_zero_only_for_equal():
    s, t = _pair(n=12, c=9, seed=8)
    a = js_div(s, t, reduction="none")
    b = js_div(t, s, reduction="none")
    torch.testing.assert_close(a, b, atol=1e-14, rtol=0)
    assert (a > 0).all() and (a <= math.log(2) + 1e-12).all()
    assert js_div(s, s.detach().clone()).abs().item() < 1e-15
    # shift invariance: equal softmaxes -> zero
    assert js_div(s, s.detach() + 3.0).abs().item() < 1e-12
    # reference with explicit mixture
    p, q = torch.softmax(s, 1), torch.softmax(t, 1)
    m = (p + q) / 2
    ref = 0.5 * (p * (p / m).log()).sum(1) + 0.5 * (q * (q / m).log()).sum(1)
    torch.testing.assert_close(a, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(JSDivLoss(temperature=2.0)(s, t), 4.0 * js_div(s / 2, t / 2), atol=1e-12, rtol=0)


def test_logit_mse_matches_definition():
    s, t = _pair(n=6, c=5, seed=9)
    ref = ((s - t) ** 2).sum(1).div(5).mean()
    torch.testing.assert_close(logit_mse(s, t), ref, atol=1e-14, rtol=0)
    torch.testing.assert_close(logit_mse(s, t), F.mse_loss(s, t), atol=1e-14, rtol=0)
    torch.testing.assert_close(LogitMSELoss(reduction="sum")(s, t), ref * 6)


def _dkd_reference(s, t, y, alpha, beta, T):
    """Zhao et al.'s formulation with explicit binary probabilities and masked softmax."""
    n, c = s.shape
    gt = F.one_hot(y, c).bool()
    p_s, p_t = torch.softmax(s / T, 1), torch.softmax(t / T, 1)
    b_s = torch.stack([p_s[gt], 1 - p_s[gt]], 1)
    b_t = torch.stack([p_t[gt], 1 - p_t[gt]], 1)
    tckd = (b_t * (b_t.log() - b_s.log())).sum() / n * T**2
    q_s = torch.log_softmax(s / T - 1000.0 * gt, 1)
    q_t = torch.softmax(t / T - 1000.0 * gt, 1)
    nckd = (q_t * (q_t.clamp_min(1e-300).log() - q_s)).masked_fill(gt, 0).sum() / n * T**2
    return alpha * tckd + beta * nckd


def test_dkd_matches_reference():
    s, t = _pair(n=10, c=6, seed=10)
    y = torch.randint(0, 6, (10,), generator=torch.Generator().manual_seed(0))
    out = dkd_loss(s, t, y, alpha=1.0, beta=8.0, temperature=4.0)
    ref = _dkd_reference(s, t, y, 1.0, 8.0, 4.0)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)
    for a, b in zip(torch.autograd.grad(out, (s, t)), torch.autograd.grad(ref, (s, t))):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    torch.testing.assert_close(DKDLoss()(s, t, y), out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dkd_two_classes_is_finite_and_nckd_zero(dtype):
    g = torch.Generator().manual_seed(11)
    s = (30 * torch.randn(9, 2, generator=g)).to(dtype).requires_grad_()
    t = (30 * torch.randn(9, 2, generator=g)).to(dtype)
    y = torch.randint(0, 2, (9,), generator=g)
    out = dkd_loss(s, t, y)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(s.grad).all()
    # NCKD over a single non-target class is exactly 0: beta does not matter
    torch.testing.assert_close(dkd_loss(s, t, y, beta=0.0), dkd_loss(s, t, y, beta=100.0))
    # with C = 2 TCKD is the full KL (times alpha)
    torch.testing.assert_close(
        dkd_loss(s, t, y, beta=0.0),
        kl_div(s, t, temperature=4.0),
        atol=1e-4 if dtype == torch.float32 else 1e-10,
        rtol=1e-5,
    )


def test_module_forms_match_functions():
    s, t = _pair(seed=12)
    torch.testing.assert_close(DKLLoss(alpha=2.0, beta=0.5)(s, t), dkl_loss(s, t, alpha=2.0, beta=0.5))


@pytest.mark.parametrize("temperature", [0.5, 2.0, 4.0])
@pytest.mark.parametrize("scale", [1.0, 20.0])
def test_dkl_at_temperature_has_the_gradients_of_kl_at_that_temperature(temperature, scale):
    """Theorem 1 at T: DKL(o_n/T, o_m/T) has the gradients of KL(softmax(o_m/T) ‖ softmax(o_n/T)).

    d/do = (1/T) d/dz with z = o/T, and Theorem 1 holds in z, so ∇_o DKL_T = ∇_o KL_T. KL_T without
    T² is kl_div(T) / T², i.e. DKL_T's gradients are those of Hinton's T²·KL divided by T²."""
    s, t = _pair(scale=scale, seed=13)
    g_dkl = torch.autograd.grad(dkl_loss(s, t, temperature=temperature), (s, t))
    g_kl = torch.autograd.grad(kl_div(s, t, temperature=temperature) / temperature**2, (s, t))
    for a, b in zip(g_dkl, g_kl):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    # T divides both logits: the value is DKL of o/T
    torch.testing.assert_close(
        dkl_loss(s, t, alpha=3.0, temperature=temperature),
        dkl_loss(s / temperature, t / temperature, alpha=3.0),
        atol=1e-12,
        rtol=1e-12,
    )
    torch.testing.assert_close(
        DKLLoss(alpha=3.0, temperature=temperature)(s, t),
        dkl_loss(s, t, alpha=3.0, temperature=temperature),
        atol=0,
        rtol=0,
    )


def test_dkl_at_temperature_one_is_the_plain_formula():
    s, t = _pair(n=5, c=6, seed=5)
    assert torch.equal(dkl_loss(s, t, temperature=1.0), dkl_loss(s, t))
    with pytest.raises(ValueError, match="temperature"):
        dkl_loss(s, t, temperature=0.0)


@pytest.mark.parametrize("loss", [kl_div, dkl_loss, js_div, logit_mse])
def test_one_reduction_vocabulary_and_batchmean_names_mean(loss):
    s, t = _pair(seed=14)
    per = loss(s, t, reduction="none")
    assert per.shape == (8,)
    torch.testing.assert_close(loss(s, t, reduction="mean"), per.mean(), atol=1e-14, rtol=0)
    torch.testing.assert_close(loss(s, t), per.mean(), atol=1e-14, rtol=0)
    torch.testing.assert_close(loss(s, t, reduction="sum"), per.sum(), atol=1e-14, rtol=0)
    with pytest.raises(ValueError, match='^reduction: expected one of .*"batchmean" is now "mean".*got .batchmean.$'):
        loss(s, t, reduction="batchmean")
    for module in (KLDivLoss, DKLLoss, JSDivLoss, LogitMSELoss, DKDLoss):
        with pytest.raises(ValueError, match='"batchmean" is now "mean"'):
            module(reduction="batchmean")
