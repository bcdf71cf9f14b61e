"""The logit-loss registry: every built-in name is its functional loss; errors; registration."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gkl.losses import (
    dkd_loss,
    dkl_loss,
    get_logit_loss,
    gkl_loss,
    ikl_loss,
    js_div,
    kl_div,
    list_logit_losses,
    logit_loss,
    logit_mse,
    register_logit_loss,
    unregister_logit_loss,
)

BUILTIN = ["kl", "reverse_kl", "jsd", "soft_ce", "softmax_mse", "hard_ce", "mse", "dkl", "gkl", "ikl", "dkd"]
REDUCTIONS = ["mean", "sum", "none"]


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = 2 * torch.randn(7, 6, generator=g, dtype=torch.float64)
    t = 2 * torch.randn(7, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 6, (7,), generator=g)
    w = torch.softmax(torch.randn(7, 6, generator=g, dtype=torch.float64), 1)
    return s, t, y, w


def _reduce(per_example: torch.Tensor, reduction: str) -> torch.Tensor:
    return {"mean": per_example.mean(), "sum": per_example.sum(), "none": per_example}[reduction]


def _direct(name: str, s, t, y, w, T: float, reduction: str) -> torch.Tensor:
    """The registry's documented meaning of each name, computed directly."""
    if name == "kl":
        return kl_div(s, t, temperature=T, reduction=reduction)
    if name == "reverse_kl":
        return kl_div(t, s, temperature=T, reduction=reduction)
    if name == "jsd":
        return js_div(s, t, temperature=T, reduction=reduction)
    if name == "soft_ce":  # T² · −Σ softmax(o_m/T) log softmax(o_n/T)
        return _reduce(-(torch.softmax(t / T, 1) * torch.log_softmax(s / T, 1)).sum(1) * T * T, reduction)
    if name == "softmax_mse":
        return _reduce(((torch.softmax(s / T, 1) - torch.softmax(t / T, 1)) ** 2).mean(1), reduction)
    if name == "hard_ce":
        return _reduce(F.cross_entropy(s, t.argmax(1), reduction="none"), reduction)
    if name == "mse":
        return logit_mse(s, t, reduction=reduction)
    if name == "dkl":
        return dkl_loss(s, t, alpha=2.0, beta=0.5, temperature=T, reduction=reduction)
    if name == "gkl":
        return gkl_loss(s, t, weights=w, alpha=2.0, gamma=0.5, temperature=T, reduction=reduction)
    if name == "ikl":
        return ikl_loss(s, t, alpha=20.0, beta=5.0, weight_temperature=4.0, temperature=T, reduction=reduction)
    assert name == "dkd"
    return dkd_loss(s, t, y, alpha=1.0, beta=8.0, temperature=T, reduction=reduction)


PARAMS = {
    "dkl": {"alpha": 2.0, "beta": 0.5},
    "gkl": {"alpha": 2.0, "gamma": 0.5},
    "ikl": {"alpha": 20.0, "beta": 5.0, "weight_temperature": 4.0},
    "dkd": {"alpha": 1.0, "beta": 8.0},
}


OWN_PARAMS = {
    "dkl": {"alpha", "beta"},
    "jsd": {"beta"},
    "dkd": {"alpha", "beta"},
    "gkl": {"alpha", "beta", "gamma", "weight_temperature", "normalize", "ignore_index", "break_asymmetry"},
    "ikl": {"alpha", "beta", "weight_temperature", "ignore_index"},
}


def test_the_builtin_names_are_registered_in_order():
    assert list_logit_losses()[: len(BUILTIN)] == BUILTIN


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_each_builtin_name_equals_its_direct_computation(name, reduction):
    s, t, y, w = _inputs()
    entry = get_logit_loss(name)
    T = 3.0 if entry.uses_temperature else 1.0
    kwargs = dict(PARAMS.get(name, {}), temperature=T, reduction=reduction)
    if entry.uses_targets:
        kwargs["targets"] = y
    if name == "gkl":
        kwargs["weights"] = w
    s_reg, t_reg = s.clone().requires_grad_(), t.clone().requires_grad_()
    s_dir, t_dir = s.clone().requires_grad_(), t.clone().requires_grad_()
    got = logit_loss(name, s_reg, t_reg, **kwargs)
    want = _direct(name, s_dir, t_dir, y, w, T, reduction)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)
    got_grads = torch.autograd.grad(got.sum(), (s_reg, t_reg), allow_unused=True)
    want_grads = torch.autograd.grad(want.sum(), (s_dir, t_dir), allow_unused=True)
    for a, b in zip(got_grads, want_grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    assert set(entry.params) == OWN_PARAMS.get(name, set())


def test_unknown_name_suggests_close_ones():
    with pytest.raises(ValueError, match=r"loss: expected a registered logit loss .*got 'gkll' \(did you mean gkl"):
        get_logit_loss("gkll")
    with pytest.raises(ValueError, match="got 'xyz'$"):
        logit_loss("xyz", *_inputs()[:2])


def test_batchmean_is_an_error_naming_mean_and_extras_are_refused():
    s, t, y, _ = _inputs()
    with pytest.raises(ValueError, match='reduction: expected one of .*"batchmean" is now "mean"'):
        logit_loss("kl", s, t, reduction="batchmean")
    with pytest.raises(ValueError, match="targets: loss 'kl' takes no targets"):
        logit_loss("kl", s, t, targets=y)
    with pytest.raises(ValueError, match="targets: loss 'dkd' needs"):
        logit_loss("dkd", s, t)
    with pytest.raises(ValueError, match="weights: loss 'jsd' takes no class weights"):
        logit_loss("jsd", s, t, weights=torch.ones_like(s))


def test_register_overwrite_and_unregister_a_toy_loss():
    s, t, _, _ = _inputs()

    def l1(logits, target_logits, *, temperature=1.0, reduction="mean", targets=None, weights=None, scale=1.0):
        per_example = scale * (logits - target_logits).abs().sum(1) / temperature
        return {"mean": per_example.mean(), "sum": per_example.sum(), "none": per_example}[reduction]

    try:
        register_logit_loss("toy_l1", l1, params={"scale": 1.0}, description="toy")
        assert "toy_l1" in list_logit_losses()
        entry = get_logit_loss("toy_l1")
        assert (entry.name, entry.params, entry.uses_targets, entry.uses_weights, entry.description) == (
            "toy_l1",
            {"scale": 1.0},
            False,
            False,
            "toy",
        )
        torch.testing.assert_close(
            logit_loss("toy_l1", s, t, scale=2.0, temperature=4.0),
            ((s - t).abs().sum(1) / 2.0).mean(),
            rtol=1e-15,
            atol=0,
        )
        with pytest.raises(ValueError, match="already registered"):
            register_logit_loss("toy_l1", l1)

        @register_logit_loss("toy_l1", overwrite=True, uses_temperature=False)
        def toy_sum(logits, target_logits, **kwargs):
            return (logits - target_logits).sum()

        assert toy_sum(s, t) == (s - t).sum()  # the decorator returns the function unchanged
        assert get_logit_loss("toy_l1").fn is toy_sum and not get_logit_loss("toy_l1").uses_temperature
        assert logit_loss("toy_l1", s, t) == (s - t).sum()
    finally:
        unregister_logit_loss("toy_l1")
    assert "toy_l1" not in list_logit_losses()
    with pytest.raises(ValueError, match="got 'toy_l1'"):
        get_logit_loss("toy_l1")
    with pytest.raises(ValueError, match="name: expected an identifier"):
        register_logit_loss("not a name", lambda *a, **k: None)
