"""Bad input (spec section 9) and numerical robustness (half precision, 1e4 logits)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gkl.losses import (
    ClassPrior,
    GKLLoss,
    dkd_loss,
    dkl_loss,
    gkl_loss,
    ikl_loss,
    js_div,
    kl_div,
    logit_mse,
    value_checks,
    value_checks_active,
)

PAIR_LOSSES = [kl_div, dkl_loss, gkl_loss, ikl_loss, js_div, logit_mse]
S = torch.randn(4, 5)
T = torch.randn(4, 5)
Y = torch.tensor([0, 1, 2, 4])


@pytest.mark.parametrize("loss", PAIR_LOSSES)
def test_shape_dtype_and_finiteness_errors_name_the_argument(loss):
    with pytest.raises(ValueError, match="target_logits.*shape"):
        loss(S, torch.randn(4, 6))
    with pytest.raises(ValueError, match="logits.*floating"):
        loss(torch.ones(4, 5, dtype=torch.long), T)
    with pytest.raises(ValueError, match="target_logits.*floating"):
        loss(S, torch.ones(4, 5, dtype=torch.int32))
    with pytest.raises(ValueError, match="logits.*shape"):
        loss(torch.randn(5), torch.randn(5))
    bad = S.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="logits.*finite"):
        loss(bad, T)
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError, match="target_logits.*finite"):
        loss(S, bad)
    with pytest.raises(ValueError, match="reduction"):
        loss(S, T, reduction="average")
    with pytest.raises(ValueError, match="logits.*Tensor"):
        loss([[1.0, 2.0]], T)


@pytest.mark.parametrize("loss", [kl_div, js_div, gkl_loss, ikl_loss])
@pytest.mark.parametrize("value", [-1.0, 0.0, float("nan")])
def test_bad_temperature(loss, value):
    with pytest.raises(ValueError, match="temperature"):
        loss(S, T, temperature=value)


def test_gkl_specific_errors():
    with pytest.raises(ValueError, match="gamma"):
        gkl_loss(S, T, gamma=-0.5)
    with pytest.raises(ValueError, match="weight_temperature"):
        gkl_loss(S, T, weight_temperature=-2.0)
    with pytest.raises(ValueError, match="normalize"):
        gkl_loss(S, T, normalize="mass")
    with pytest.raises(ValueError, match="alpha"):
        gkl_loss(S, T, alpha=-1.0)
    with pytest.raises(ValueError, match="beta"):
        gkl_loss(S, T, beta="big")
    with pytest.raises(ValueError, match="weights.*shape"):
        gkl_loss(S, T, weights=torch.rand(4, 4))
    with pytest.raises(ValueError, match="weights.*shape"):
        gkl_loss(S, T, weights=torch.rand(5))
    with pytest.raises(ValueError, match="weights"):
        gkl_loss(S, T, weights=-torch.rand(4, 5))
    with pytest.raises(ValueError, match="targets.*\\[0, 4\\]"):
        gkl_loss(S, T, targets=torch.tensor([0, 1, 5, 2]))
    with pytest.raises(ValueError, match="targets.*\\[0, 4\\]"):
        gkl_loss(S, T, targets=torch.tensor([0, -1, 2, 2]))
    with pytest.raises(ValueError, match="targets.*shape"):
        gkl_loss(S, T, targets=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="targets.*integer"):
        gkl_loss(S, T, targets=torch.zeros(4))
    with pytest.raises(ValueError, match="ignore_index"):
        gkl_loss(S, T, targets=Y, ignore_index=1.5)
    gkl_loss(S, T, targets=torch.tensor([0, -100, 2, 2]))  # ignore_index is allowed
    with pytest.raises(ValueError, match="normalize"):
        GKLLoss(normalize="none")
    with pytest.raises(ValueError, match="gamma"):
        GKLLoss(gamma=-1)


def test_dkd_errors():
    with pytest.raises(ValueError, match="targets"):
        dkd_loss(S, T, torch.tensor([0, 1, 2, 5]))
    with pytest.raises(ValueError, match="targets"):
        dkd_loss(S, T, torch.tensor([0, 1, 2, -100]))
    with pytest.raises(ValueError, match="temperature"):
        dkd_loss(S, T, Y, temperature=-4.0)
    with pytest.raises(ValueError, match="logits.*2 classes"):
        dkd_loss(S[:, :1], T[:, :1], torch.zeros(4, dtype=torch.long))


def test_value_checks_switch():
    bad = S.clone()
    bad[0, 0] = float("nan")
    with value_checks(False):
        assert not value_checks_active()
        assert torch.isnan(kl_div(bad, T))  # no check, no sync: NaN propagates
        with pytest.raises(ValueError, match="target_logits.*shape"):
            kl_div(S, torch.randn(4, 6))  # shape checks stay on
    assert value_checks_active()
    with pytest.raises(ValueError, match="logits"):
        kl_div(bad, T)


# --------------------------------------------------------------------------- properties

shapes = st.tuples(st.integers(1, 6), st.integers(2, 12))
scales = st.sampled_from([1e-3, 1.0, 30.0, 1e3, 1e4])


def _random(shape, scale, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g)).to(dtype)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, scale=scales, seed=st.integers(0, 2**16), gamma=st.sampled_from([0.0, 0.3, 1.0]))
def test_finite_inputs_never_give_nan(shape, scale, seed, gamma):
    s = _random(shape, scale, seed).requires_grad_()
    t = _random(shape, scale, seed + 1).requires_grad_()
    y = torch.randint(0, shape[1], shape[:1], generator=torch.Generator().manual_seed(seed))
    outs = [
        kl_div(s, t, temperature=4.0),
        dkl_loss(s, t),
        js_div(s, t),
        logit_mse(s, t),
        dkd_loss(s, t, y),
        gkl_loss(s, t, gamma=gamma, weight_temperature=4.0),
        gkl_loss(s, t, gamma=gamma, normalize="batch", weights=torch.softmax(t.detach(), 1)),
    ]
    for out in outs:
        assert torch.isfinite(out)
        grads = torch.autograd.grad(out, (s, t), allow_unused=True)
        assert all(g is None or torch.isfinite(g).all() for g in grads)


@settings(max_examples=25, deadline=None)
@given(
    shape=shapes,
    seed=st.integers(0, 2**16),
    half=st.sampled_from([torch.float16, torch.bfloat16]),
    gamma=st.sampled_from([0.0, 0.5, 1.0]),
)
def test_half_inputs_give_the_float32_result(shape, seed, half, gamma):
    s = _random(shape, 4.0, seed, half)
    t = _random(shape, 4.0, seed + 1, half)
    for fn in (lambda a, b: gkl_loss(a, b, gamma=gamma, temperature=2.0), kl_div, js_div, dkl_loss):
        out = fn(s, t)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, fn(s.float(), t.float()), atol=0, rtol=0)
    s = s.clone().requires_grad_()
    gkl_loss(s, t).backward()
    assert s.grad.dtype == half and torch.isfinite(s.grad.float()).all()


def test_autocast_region_is_computed_in_float32():
    s, t = torch.randn(6, 7), torch.randn(6, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gkl_loss(s.bfloat16(), t, gamma=0.5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, gkl_loss(s.bfloat16().float(), t, gamma=0.5), atol=0, rtol=0)


@settings(max_examples=25, deadline=None)
@given(
    shape=shapes,
    seed=st.integers(0, 2**16),
    gamma=st.sampled_from([0.0, 0.3, 1.0]),
    normalize=st.sampled_from(["weights", "batch"]),
)
def test_1e4_logits_match_float64_reference(shape, seed, gamma, normalize):
    s64 = _random(shape, 1e4, seed, torch.float64)
    t64 = _random(shape, 1e4, seed + 1, torch.float64)
    s32 = s64.float().requires_grad_()
    t32 = t64.float().requires_grad_()
    s64 = s32.detach().double().requires_grad_()  # identical inputs
    t64 = t32.detach().double().requires_grad_()
    kw = dict(gamma=gamma, normalize=normalize, temperature=4.0)
    out32, out64 = gkl_loss(s32, t32, **kw), gkl_loss(s64, t64, **kw)
    assert torch.isfinite(out32)
    torch.testing.assert_close(out32.double(), out64, rtol=1e-4, atol=1e-3)
    g32 = torch.autograd.grad(out32, (s32, t32))
    g64 = torch.autograd.grad(out64, (s64, t64))
    # float32 stores d = o_m - o_n (|d| up to ~4e4) with absolute error ~eps32*|d|; the centred
    # residual d_j - mu inherits it, and the normalised wMSE gradient W w^γ (d - mu) / sum W^2 is
    # bounded by |d_j - mu| (since w_j^γ <= W). So the attainable gradient accuracy is a few
    # float32 ulps of max|d|, whatever the gradient's own size.
    atol = 8 * torch.finfo(torch.float32).eps * (t64 - s64).abs().max().item() + 1e-6
    for a, b in zip(g32, g64):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=atol)
    k32 = kl_div(s32, t32, temperature=4.0)
    torch.testing.assert_close(k32.double(), kl_div(s64, t64, temperature=4.0), rtol=1e-4, atol=1e-2)


def test_prior_rejects_and_gkl_module_dense():
    loss_fn = GKLLoss(5, class_wise=True, ignore_index=255)
    s = torch.randn(2, 5, 3, 3)
    y = torch.randint(0, 5, (2, 3, 3))
    y[0, 0, 0] = 255
    out = loss_fn(s, s + torch.randn_like(s), y)
    assert torch.isfinite(out)
    assert loss_fn.prior.counts.sum() == 17
    assert isinstance(loss_fn.prior, ClassPrior)


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(2, 6),
    h=st.integers(1, 4),
    w=st.integers(1, 4),
    scale=st.sampled_from([1.0, 100.0, 1e4]),
    seed=st.integers(0, 2**16),
    gamma=st.sampled_from([0.0, 0.4, 1.0]),
    normalize=st.sampled_from(["weights", "batch"]),
)
def test_dense_equals_flattened_examples(n, c, h, w, scale, seed, gamma, normalize):
    """Every position of a dense input is an example; ignored positions drop out entirely."""
    g = torch.Generator().manual_seed(seed)
    s = scale * torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    t = scale * torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    y = torch.randint(-1, c, (n, h, w), generator=g)  # -1 = ignored

    def flat(x):
        return x.movedim(1, -1).reshape(-1, c)

    keep = y.reshape(-1) != -1
    kw = dict(gamma=gamma, normalize=normalize, temperature=2.0)
    dense = gkl_loss(s, t, targets=y, ignore_index=-1, **kw)
    assert torch.isfinite(dense)
    if keep.any():
        ref = gkl_loss(flat(s)[keep], flat(t)[keep], **kw)
        torch.testing.assert_close(dense, ref, rtol=1e-10, atol=1e-10 * scale**2)
    else:
        assert dense.item() == 0.0
    torch.testing.assert_close(kl_div(s, t), kl_div(flat(s), flat(t)), rtol=1e-12, atol=0)
