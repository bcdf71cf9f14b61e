"""gkl_loss / ikl_loss / GKLLoss against a naive pairwise O(C^2) reference."""

import pytest
import torch

from gkl.losses import ClassPrior, GKLLoss, IKLLoss, gkl_loss, ikl_loss


def pairwise_gkl(
    o_n,
    o_m,
    *,
    weights=None,
    alpha=1.0,
    beta=1.0,
    gamma=1.0,
    temperature=1.0,
    weight_temperature=1.0,
    normalize="weights",
    targets=None,
    ignore_index=-100,
):
    """The pairwise definition (docs/losses.md) written literally: N x C x C weights and differences."""
    c = o_n.shape[1]

    def flat(x):
        return x.movedim(1, -1).reshape(-1, c)

    o_n, o_m = flat(o_n), flat(o_m)
    if weights is None:
        w = torch.softmax(o_m.detach() / weight_temperature, dim=1)
    else:
        w = flat(weights).detach().to(o_n.dtype)
    if targets is not None:
        keep = targets.reshape(-1) != ignore_index
        o_n, o_m, w = o_n[keep], o_m[keep], w[keep]
    wg = w**gamma
    phi = wg[:, :, None] * wg[:, None, :]
    dm = o_m[:, :, None] - o_m[:, None, :]
    dn = o_n[:, :, None] - o_n[:, None, :]
    mse = 0.25 * (phi * (dm - dn) ** 2).sum((1, 2))
    ce = -(torch.softmax(o_m.detach() / temperature, 1) * torch.log_softmax(o_n / temperature, 1)).sum(1)
    n = o_n.shape[0]
    denom = phi.sum((1, 2)).sum() if normalize == "weights" else n
    return alpha * mse.sum() / denom + beta * ce.mean()


def _logits(shape, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    o_n = (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_()
    o_m = (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_()
    return o_n, o_m


def _assert_same_value_and_grads(out, ref, inputs):
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-12)
    g_out = torch.autograd.grad(out, inputs)
    g_ref = torch.autograd.grad(ref, inputs)
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("normalize", ["weights", "batch"])
@pytest.mark.parametrize("class_wise", [False, True])
def test_gkl_equals_pairwise_reference(gamma, normalize, class_wise):
    o_n, o_m = _logits((7, 9), seed=int(gamma * 10) + 3 * class_wise)
    weights = None
    if class_wise:
        g = torch.Generator().manual_seed(1)
        weights = torch.softmax(torch.randn(7, 9, generator=g, dtype=torch.float64) * 3, 1)
    kw = dict(
        weights=weights, alpha=1.7, beta=0.6, gamma=gamma, temperature=2.0, weight_temperature=3.0, normalize=normalize
    )
    _assert_same_value_and_grads(gkl_loss(o_n, o_m, **kw), pairwise_gkl(o_n, o_m, **kw), (o_n, o_m))


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("normalize", ["weights", "batch"])
@pytest.mark.parametrize("class_wise", [False, True])
def test_gkl_dense_with_ignored_positions_equals_pairwise(gamma, normalize, class_wise):
    o_n, o_m = _logits((2, 5, 3, 4), seed=20)
    g = torch.Generator().manual_seed(2)
    targets = torch.randint(0, 5, (2, 3, 4), generator=g)
    targets[0, 0, :3] = 255
    targets[1, 2, 1] = 255
    weights = None
    if class_wise:
        prior = ClassPrior(5)
        prior.update(torch.randn(40, 5, generator=g), torch.randint(0, 5, (40,), generator=g))
        prior.step()
        weights = prior(targets, ignore_index=255)
        assert weights.shape == o_n.shape
    kw = dict(weights=weights, alpha=0.9, beta=1.1, gamma=gamma, normalize=normalize, targets=targets, ignore_index=255)
    out = gkl_loss(o_n, o_m, **kw)
    _assert_same_value_and_grads(out, pairwise_gkl(o_n, o_m, **kw), (o_n, o_m))
    # per-position values: mean over kept positions is the "mean" result, zero at ignored ones
    per = gkl_loss(o_n, o_m, reduction="none", **kw)
    keep = targets != 255
    assert per.shape == targets.shape and (per[~keep] == 0).all()
    torch.testing.assert_close(per[keep].mean(), out, atol=1e-12, rtol=0)
    torch.testing.assert_close(gkl_loss(o_n, o_m, reduction="sum", **kw), per.sum(), atol=1e-10, rtol=0)


@pytest.mark.parametrize("normalize", ["weights", "batch"])
def test_reduction_none_mean_is_mean(normalize):
    o_n, o_m = _logits((11, 6), seed=4)
    kw = dict(gamma=0.5, normalize=normalize, alpha=3.0, beta=2.0)
    per = gkl_loss(o_n, o_m, reduction="none", **kw)
    assert per.shape == (11,)
    torch.testing.assert_close(per.mean(), gkl_loss(o_n, o_m, **kw), atol=1e-12, rtol=0)
    torch.testing.assert_close(per.sum(), gkl_loss(o_n, o_m, reduction="sum", **kw), atol=1e-10, rtol=0)


@pytest.mark.parametrize("which", ["logits", "target_logits"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_wmse_invariant_to_per_example_shift(which, gamma):
    o_n, o_m = _logits((6, 8), seed=5)
    shift = 100.0 * torch.randn(6, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    kw = dict(alpha=1.0, beta=0.0, gamma=gamma)
    base = gkl_loss(o_n, o_m, **kw)
    shifted = gkl_loss(o_n + shift, o_m, **kw) if which == "logits" else gkl_loss(o_n, o_m + shift, **kw)
    torch.testing.assert_close(shifted, base, atol=1e-9, rtol=1e-11)
    # and the wMSE changes when the shift differs per class
    other = gkl_loss(o_n + torch.arange(8.0, dtype=torch.float64), o_m, **kw)
    assert (other - base).abs() > 1e-3


def test_ikl_is_gkl_gamma1_batch():
    o_n, o_m = _logits((9, 7), seed=6)
    kw = dict(alpha=20.0, beta=5.0, temperature=1.5, weight_temperature=4.0)
    torch.testing.assert_close(
        ikl_loss(o_n, o_m, **kw), gkl_loss(o_n, o_m, gamma=1.0, normalize="batch", **kw), atol=0, rtol=0
    )
    torch.testing.assert_close(IKLLoss(**kw)(o_n, o_m), ikl_loss(o_n, o_m, **kw))


def test_normalizations_agree_when_gamma_is_one_with_probability_weights():
    o_n, o_m = _logits((9, 7), seed=7)
    a = gkl_loss(o_n, o_m, gamma=1.0, normalize="weights")
    b = gkl_loss(o_n, o_m, gamma=1.0, normalize="batch")
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_dkl_is_gkl_value_with_sample_weights():
    """With τ_w = T = 1, γ = 1 the GKL value equals the DKL value (only the gradient flow differs)."""
    from gkl.losses import dkl_loss

    o_n, o_m = _logits((5, 6), seed=8)
    torch.testing.assert_close(gkl_loss(o_n, o_m, normalize="batch"), dkl_loss(o_n, o_m), atol=1e-12, rtol=0)
    g_gkl = torch.autograd.grad(gkl_loss(o_n, o_m, beta=0.0), o_n)[0]
    assert g_gkl.abs().max() > 1e-3  # GKL's wMSE sends gradient to the student logits too


def test_gkl_module_class_wise_uses_and_updates_prior():
    o_n, o_m = _logits((12, 4), seed=9)
    y = torch.tensor([0, 1, 2, 3] * 3)
    loss_fn = GKLLoss(4, class_wise=True, gamma=0.5, alpha=2.0, beta=0.5, weight_temperature=2.0)
    first = loss_fn(o_n, o_m, y)
    # first epoch: uniform prior
    torch.testing.assert_close(
        first,
        gkl_loss(o_n, o_m, weights=torch.full((12, 4), 0.25, dtype=torch.float64), gamma=0.5, alpha=2.0, beta=0.5),
    )
    assert loss_fn.prior.counts.sum() == 12
    loss_fn.prior.step()
    probs = torch.softmax(o_m.detach().float() / 2.0, 1)
    expected_rows = torch.stack([probs[y == k].mean(0) for k in range(4)])
    torch.testing.assert_close(loss_fn.prior.prior, expected_rows)
    loss_fn.eval()
    second = loss_fn(o_n, o_m, y)
    assert loss_fn.prior.counts.sum() == 0  # eval mode does not accumulate
    ref = pairwise_gkl(o_n, o_m, weights=expected_rows[y].double(), gamma=0.5, alpha=2.0, beta=0.5)
    torch.testing.assert_close(second, ref, atol=1e-6, rtol=1e-6)


def test_gkl_module_class_wise_requires_targets_and_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        GKLLoss(class_wise=True)
    loss_fn = GKLLoss(4, class_wise=True)
    with pytest.raises(ValueError, match="targets"):
        loss_fn(torch.randn(3, 4), torch.randn(3, 4))


def test_gkl_module_matches_function_sample_wise():
    o_n, o_m = _logits((5, 6), seed=10)
    kw = dict(alpha=1.5, beta=0.5, gamma=0.3, temperature=2.0, weight_temperature=4.0, normalize="weights")
    torch.testing.assert_close(GKLLoss(**kw)(o_n, o_m), gkl_loss(o_n, o_m, **kw))


def test_all_positions_ignored_gives_zero():
    o_n, o_m = _logits((3, 4), seed=11)
    out = gkl_loss(o_n, o_m, targets=torch.full((3,), -100))
    assert out.item() == 0.0
    out.backward()


@pytest.mark.parametrize("gamma", [0.3, 1.0])
def test_gradients_with_detached_teacher_and_under_autograd_grad_mode_off(gamma):
    o_n, o_m = _logits((6, 5), seed=12)
    teacher = o_m.detach()
    out = gkl_loss(o_n, teacher, gamma=gamma, temperature=3.0, weight_temperature=2.0)
    ref = pairwise_gkl(o_n, teacher, gamma=gamma, temperature=3.0, weight_temperature=2.0)
    torch.testing.assert_close(torch.autograd.grad(out, o_n)[0], torch.autograd.grad(ref, o_n)[0], atol=1e-10, rtol=0)
    with torch.no_grad():
        value = gkl_loss(o_n, teacher, gamma=gamma, temperature=3.0, weight_temperature=2.0)
    assert not value.requires_grad
    torch.testing.assert_close(value, ref.detach(), atol=1e-10, rtol=0)
    # only the student logits carry the finite-difference gradient: the weights and the
    # CE target are stop-gradient functions of target_logits, so gradcheck applies to o_n alone
    assert torch.autograd.gradcheck(lambda a: gkl_loss(a, teacher, gamma=gamma, temperature=3.0), (o_n,))
