"""gkl.lm.token_loss: equal to a per-token loop of the registry losses over the valid positions (float64)."""

from __future__ import annotations

import pytest
import torch

from gkl.lm import CLASS_WISE_MAX_VOCAB, token_loss
from gkl.losses import ClassPrior, logit_loss

B, T, V = 2, 5, 11
CASES = [
    ("kl", {}),
    ("reverse_kl", {}),
    ("jsd", {}),
    ("jsd", {"beta": 0.2}),
    ("jsd", {"beta": 0.0}),
    ("jsd", {"beta": 1.0}),
    ("dkl", {"alpha": 2.0, "beta": 0.5}),
    ("ikl", {"alpha": 3.0, "beta": 1.5, "weight_temperature": 2.0}),
    ("gkl", {}),
    ("gkl", {"alpha": 2.0, "gamma": 0.5, "weight_temperature": 3.0}),
    ("gkl", {"gamma": 0.0}),
    ("gkl", {"gamma": 0.3, "normalize": "batch", "beta": 0.7}),
]


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = (3 * torch.randn(B, T, V, generator=g, dtype=torch.float64)).requires_grad_()
    t = 3 * torch.randn(B, T, V, generator=g, dtype=torch.float64)
    y = torch.randint(0, V, (B, T), generator=g)
    return s, t, y


def _loop(s, t, y, method, params, temperature, ignore_index=-100):
    """Σ over valid tokens of the registry loss of that token alone."""
    total = s.new_zeros(())
    for b in range(s.shape[0]):
        for i in range(s.shape[1]):
            if y[b, i] == ignore_index:
                continue
            kwargs = dict(params)
            total = total + logit_loss(
                method, s[b, i : i + 1], t[b, i : i + 1], temperature=temperature, reduction="sum", **kwargs
            )
    return total


@pytest.mark.parametrize("method,params", CASES)
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_equals_a_per_token_loop_over_valid_positions(method, params, temperature):
    s, t, y = _inputs()
    y[0, 1] = y[1, 3] = -100
    got = token_loss(s, t, y, method=method, temperature=temperature, **params)
    want = _loop(s, t, y, method, params, temperature) / 8
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g_got, g_want = torch.autograd.grad(got, s), torch.autograd.grad(want, s)
    torch.testing.assert_close(g_got[0], g_want[0], rtol=1e-10, atol=1e-12)
    per_token = token_loss(s, t, y, method=method, temperature=temperature, reduction="none", **params)
    assert per_token.shape == (B, T) and per_token[0, 1] == 0 and per_token[1, 3] == 0
    torch.testing.assert_close(per_token.sum(), want * 8, rtol=1e-12, atol=1e-12)
    summed = token_loss(s, t, y, method=method, temperature=temperature, reduction="sum", **params)
    torch.testing.assert_close(summed, want * 8, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method,params", CASES[::3])
def test_flat_inputs_without_labels_and_shifted_labels(method, params):
    s, t, y = _inputs(1)
    flat = token_loss(s.reshape(-1, V), t.reshape(-1, V), method=method, **params)
    want = _loop(s, t, torch.zeros_like(y), method, params, 1.0) / (B * T)
    torch.testing.assert_close(flat, want, rtol=1e-12, atol=1e-12)
    shifted = token_loss(s, t, y, method=method, shift_labels=True, **params)
    want = _loop(s[:, :-1], t[:, :-1], y[:, 1:], method, params, 1.0) / (B * (T - 1))
    torch.testing.assert_close(shifted, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method,params", CASES)
def test_all_but_one_ignored_is_that_token_alone(method, params):
    s, t, y = _inputs(2)
    kept = y[1, 2].item()
    y.fill_(-100)
    y[1, 2] = kept
    got = token_loss(s, t, y, method=method, **params)
    want = logit_loss(method, s[1, 2:3], t[1, 2:3], reduction="sum", **params)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(got, s)
    assert grad.abs().sum(dim=-1).ne(0).sum() == 1 and grad[1, 2].abs().sum() > 0


@pytest.mark.parametrize("method,params", CASES)
def test_all_ignored_is_zero_with_zero_gradients(method, params):
    s, t, y = _inputs(3)
    y.fill_(-100)
    got = token_loss(s, t, y, method=method, **params)
    (grad,) = torch.autograd.grad(got, s)
    assert got.item() == 0.0 and torch.isfinite(grad).all() and grad.abs().sum() == 0
    assert token_loss(s, t, y, method=method, num_items_in_batch=0, **params).item() == 0.0


@pytest.mark.parametrize("method,params", [CASES[0], CASES[9]])
def test_num_items_in_batch_divides_the_sum(method, params):
    s, t, y = _inputs(4)
    y[0, :3] = -100
    summed = token_loss(s, t, y, method=method, reduction="sum", **params)
    torch.testing.assert_close(token_loss(s, t, y, method=method, num_items_in_batch=40, **params), summed / 40)
    as_tensor = token_loss(s, t, y, method=method, num_items_in_batch=torch.tensor(40), **params)
    torch.testing.assert_close(as_tensor, summed / 40)
    # two micro-batches with the global count add up to the full batch
    half = [
        token_loss(s[i : i + 1], t[i : i + 1], y[i : i + 1], method=method, num_items_in_batch=7, **params)
        for i in range(2)
    ]
    torch.testing.assert_close(half[0] + half[1], token_loss(s, t, y, method=method, **params), rtol=1e-12, atol=0)


def test_class_wise_weights_use_the_prior_at_each_label():
    s, t, y = _inputs(5)
    prior = ClassPrior(V)
    prior.update(t.reshape(-1, V), y.reshape(-1))
    prior.step()
    got = token_loss(s, t, y, method="gkl", class_wise=True, prior=prior, gamma=0.5)
    want = sum(
        logit_loss("gkl", s[b, i : i + 1], t[b, i : i + 1], weights=prior(y[b, i : i + 1]), gamma=0.5)
        for b in range(B)
        for i in range(T)
    ) / (B * T)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_bad_input_is_a_one_line_error_naming_it():
    s, t, y = _inputs(6)
    cases = [
        (dict(labels=torch.full((B, T), V)), r"labels: expected token ids in \[0, 11\) or ignore_index=-100, got 11"),
        (dict(labels=torch.full((B, T), -1)), r"labels: expected token ids in \[0, 11\).*got -1"),
        (dict(labels=y[:, :3]), r"labels: expected shape \(2, 5\)"),
        (dict(labels=y, teacher_logits=t[..., :9]), r"teacher_logits: vocabulary of 9 entries, the student's has 11"),
        (dict(labels=y, teacher_logits=t[:, :3]), r"teacher_logits: expected the student's shape"),
        (dict(labels=y, method="kd"), r"method: expected one of"),
        (dict(labels=y, method="kl", alpha=2.0), r"alpha: method 'kl' takes the parameters \[\]"),
        (dict(labels=y, reduction="batchmean"), r"reduction: expected one of"),
        (dict(labels=y, class_wise=True), r"prior: class_wise=True needs a ClassPrior\(11\)"),
        (dict(labels=y, student_logits=s[0, 0]), r"student_logits: expected a floating tensor of shape"),
        (dict(labels=y.float()), r"labels: expected an integer tensor"),
        (dict(labels=y, num_items_in_batch=-1), r"num_items_in_batch: expected an int >= 0"),
    ]
    for kwargs, message in cases:
        args = {"student_logits": s, "teacher_logits": t, **kwargs}
        with pytest.raises(ValueError, match=message) as info:
            token_loss(**args)
        assert "\n" not in str(info.value)


def test_class_wise_is_refused_above_the_vocabulary_bound():
    big = CLASS_WISE_MAX_VOCAB + 1
    s = torch.zeros(2, big)
    with pytest.raises(ValueError, match=rf"class_wise: a class-wise prior over a vocabulary of {big} is a V x V"):
        token_loss(s, s, torch.zeros(2, dtype=torch.long), class_wise=True)


def test_mismatched_vocabularies_are_sliced_only_when_asked():
    s, t, y = _inputs(7)
    t_big = torch.cat([t, torch.randn(B, T, 4, dtype=torch.float64)], dim=-1)
    got = token_loss(s, t_big, y, method="kl", slice_vocab=True)
    torch.testing.assert_close(got, token_loss(s, t, y, method="kl"), rtol=0, atol=0)


@pytest.mark.parametrize("beta", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_generalised_jsd_is_the_beta_mixture_formula(beta):
    s, t, _ = _inputs(8)
    s, t = s.reshape(-1, V), t.reshape(-1, V)
    p_s, p_t = torch.softmax(s / 2, dim=1), torch.softmax(t / 2, dim=1)

    def kl(p, q):
        return (p * (p.log() - q.log())).sum(dim=1)

    if beta == 0.0:
        want = kl(p_t, p_s)
    elif beta == 1.0:
        want = kl(p_s, p_t)
    else:
        mix = beta * p_t + (1 - beta) * p_s
        want = beta * kl(p_t, mix) + (1 - beta) * kl(p_s, mix)
    got = logit_loss("jsd", s, t, temperature=2.0, beta=beta, reduction="none")
    torch.testing.assert_close(got, 4 * want, rtol=1e-12, atol=1e-13)
