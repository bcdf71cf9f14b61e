"""gkl.lm.FusedLinearGKLLoss: equal to token_loss on materialised logits, in value and gradients (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import gkl.lm.fused as fused_module
from gkl.lm import FusedLinearGKLLoss, fused_linear_gkl_loss, token_loss

N, H_S, H_T, V = 7, 5, 6, 13
METHODS = [("gkl", {"alpha": 2.0, "gamma": 0.5, "weight_temperature": 2.0}), ("kl", {}), ("jsd", {"beta": 0.3})]


def _tensors(seed=0, dtype=torch.float64, bias=True, shape=(N,)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, H_S, generator=g, dtype=dtype).requires_grad_()
    w = torch.randn(V, H_S, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(V, generator=g, dtype=dtype).requires_grad_() if bias else None
    xt = torch.randn(*shape, H_T, generator=g, dtype=dtype)
    wt = torch.randn(V, H_T, generator=g, dtype=dtype).requires_grad_()
    bt = torch.randn(V, generator=g, dtype=dtype) if bias else None
    y = torch.randint(0, V, shape, generator=g)
    y.view(-1)[1] = -100
    return x, w, b, xt, wt, bt, y


def _materialised(x, w, b, xt, wt, bt, y, *, method, hard, temperature=1.0, num_items=None, **params):
    s = F.linear(x, w, b).reshape(-1, V)
    t = F.linear(xt, wt, bt).detach().reshape(-1, V)
    labels = y.reshape(-1)
    soft = token_loss(s, t, labels, method=method, temperature=temperature, reduction="sum", **params)
    ce = F.cross_entropy(s, labels, reduction="sum")
    count = num_items if num_items is not None else (labels != -100).sum()
    return ((1 - hard) * soft + hard * ce) / count


@pytest.mark.parametrize("chunk_size", [1, 3, N - 1, N, 2 * N])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("hard", [0.0, 0.5])
@pytest.mark.parametrize("method,params", METHODS)
def test_equals_token_loss_on_materialised_logits(chunk_size, bias, hard, method, params):
    x, w, b, xt, wt, bt, y = _tensors(bias=bias)
    inputs = [x, w] + ([b] if bias else [])
    got = fused_linear_gkl_loss(
        x,
        w,
        xt,
        wt,
        y,
        b,
        bt,
        method=method,
        weight_hard_loss=hard,
        weight_soft_loss=1 - hard,
        chunk_size=chunk_size,
        temperature=1.5,
        **params,
    )
    want = _materialised(x, w, b, xt, wt, bt, y, method=method, hard=hard, temperature=1.5, **params)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, e in zip(torch.autograd.grad(got, inputs), torch.autograd.grad(want, inputs)):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rows", [1, 2, 4])
@pytest.mark.parametrize("chunk_size", [3, N])
@pytest.mark.parametrize("method,params", METHODS)
def test_row_blocks_of_the_chunk_give_the_same_value_and_gradients(monkeypatch, rows, chunk_size, method, params):
    # the chunk's loss goes over slices of `rows` rows, each overwritten by its gradient in place
    monkeypatch.setitem(fused_module._BLOCK_ELEMENTS, "cpu", rows * V + V - 1)
    x, w, b, xt, wt, bt, y = _tensors(seed=10)
    got = fused_linear_gkl_loss(
        x, w, xt, wt, y, b, bt, method=method, weight_hard_loss=0.5, chunk_size=chunk_size, temperature=2.0, **params
    )
    want = _materialised(x, w, b, xt, wt, bt, y, method=method, hard=0.5, temperature=2.0, **params)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, e in zip(torch.autograd.grad(got, (x, w, b)), torch.autograd.grad(want, (x, w, b))):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def test_three_dim_inputs_are_flattened_and_the_module_matches():
    x, w, b, xt, wt, bt, y = _tensors(shape=(2, 4))
    loss_fn = FusedLinearGKLLoss(weight_hard_loss=0.5, weight_soft_loss=0.5, chunk_size=3, gamma=0.7)
    got = loss_fn(x, w, xt, wt, y, b, bt)
    want = _materialised(x, w, b, xt, wt, bt, y, method="gkl", hard=0.5, gamma=0.7)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, e in zip(torch.autograd.grad(got, (x, w, b)), torch.autograd.grad(want, (x, w, b))):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def test_gradcheck_on_tiny_shapes():
    x, w, b, xt, wt, bt, y = _tensors(seed=1)

    def fn(x, w, b):
        return fused_linear_gkl_loss(x, w, xt, wt, y, b, bt, chunk_size=3, gamma=0.5, weight_hard_loss=0.3)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w, b: 2.0 * fn(x, w, b) ** 2, (x, w, b))  # backward scales by grad_output


def test_micro_batches_with_the_global_count_equal_the_full_batch():
    x, w, b, xt, wt, bt, y = _tensors(seed=2, shape=(3, 4))
    full = fused_linear_gkl_loss(x, w, xt, wt, y, b, bt, chunk_size=5)
    full_grads = torch.autograd.grad(full, (x, w, b))
    count = int((y != -100).sum())
    total, acc = 0.0, [torch.zeros_like(w), torch.zeros_like(b)]
    for i in range(3):
        part = fused_linear_gkl_loss(x[i], w, xt[i], wt, y[i], b, bt, chunk_size=5, num_items_in_batch=count)
        gw, gb = torch.autograd.grad(part, (w, b))
        total, acc = total + part, [acc[0] + gw, acc[1] + gb]
    torch.testing.assert_close(total, full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(acc[0], full_grads[1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(acc[1], full_grads[2], rtol=1e-10, atol=1e-12)


def test_the_teacher_gets_no_gradient_and_all_ignored_is_zero():
    x, w, b, xt, wt, bt, y = _tensors(seed=3)
    xt.requires_grad_()
    loss = fused_linear_gkl_loss(x, w, xt, wt, y, b, bt, chunk_size=2)
    loss.backward()
    assert wt.grad is None and xt.grad is None and w.grad is not None
    y.fill_(-100)
    zero = fused_linear_gkl_loss(x, w, xt, wt, y, b, bt, chunk_size=2)
    grads = torch.autograd.grad(zero, (x, w, b))
    assert zero.item() == 0.0 and all(torch.isfinite(g).all() and g.abs().sum() == 0 for g in grads)


@pytest.mark.parametrize("block_rows", [None, 4])
def test_no_saved_tensor_has_more_than_a_block_of_rows(monkeypatch, block_rows):
    n, v = 64, 97
    if block_rows is not None:
        monkeypatch.setitem(fused_module._BLOCK_ELEMENTS, "cpu", block_rows * v)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(n, 2, generator=g).requires_grad_()  # H_s = 2: the saved gradients (N, 2), (V, 2) are small
    w = torch.randn(v, 2, generator=g).requires_grad_()
    xt, wt = torch.randn(n, 12, generator=g), torch.randn(v, 12, generator=g)
    y = torch.randint(0, v, (n,), generator=g)
    sizes: list[int] = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fused_linear_gkl_loss(x, w, xt, wt, y, chunk_size=16, gamma=0.5)
    loss.backward()
    # the loss's autograd graphs save (rows, V) tensors of one row block (the whole chunk of 16
    # rows when V is small), the outer node the gradients: nothing N x V
    assert sizes and max(sizes) == (block_rows or 16) * v and max(sizes) < n * v
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):  # the materialised loss does save N x V
        token_loss(x @ w.T, (xt @ wt.T), y, gamma=0.5)
    assert max(sizes) >= n * v


def test_bf16_inputs_are_within_tolerance_of_float32():
    x, w, b, xt, wt, bt, y = _tensors(seed=5, dtype=torch.float32, shape=(64,))
    ref = fused_linear_gkl_loss(x, w, xt, wt, y, b, bt, chunk_size=16, gamma=0.5)
    ref_grads = torch.autograd.grad(ref, (x, w, b))
    low = [t.detach().bfloat16().requires_grad_(t.requires_grad) for t in (x, w, b)]
    xt16, wt16, bt16 = xt.bfloat16(), wt.detach().bfloat16(), bt.bfloat16()
    got = fused_linear_gkl_loss(low[0], low[1], xt16, wt16, y, low[2], bt16, chunk_size=16, gamma=0.5)
    assert got.dtype == torch.float32
    grads = torch.autograd.grad(got, low)
    assert all(g.dtype == torch.bfloat16 for g in grads)
    # bf16 keeps 8 bits of mantissa: inputs rounded by 2^-9 relative; loss and grads within 3 %
    torch.testing.assert_close(got, ref, rtol=3e-2, atol=0)
    for a, e in zip(grads, ref_grads):
        torch.testing.assert_close(a.float(), e, rtol=3e-2, atol=3e-2 * e.abs().max().item())


def test_bad_input_is_a_one_line_error_naming_it():
    x, w, b, xt, wt, bt, y = _tensors(seed=6)
    base = dict(student_input=x, student_weight=w, teacher_input=xt, teacher_weight=wt, true_labels=y)
    cases = [
        (dict(teacher_weight=wt[:11]), r"teacher_weight: vocabulary of 11 entries, the student's has 13"),
        (
            dict(true_labels=torch.full((N,), V)),
            r"labels: expected token ids in \[0, 13\) or ignore_index=-100, got 13",
        ),
        (dict(chunk_size=0), r"chunk_size: expected an int >= 1, got 0"),
        (dict(student_weight=w[:, :3]), r"student_weight: expected shape \(V, 5\)"),
        (dict(teacher_input=xt[:3]), r"teacher_input: expected 7 tokens"),
        (dict(true_labels=y[:3]), r"true_labels: expected 7 integer token ids"),
        (dict(student_bias=torch.zeros(3)), r"student_bias: expected shape \(13,\)"),
        (dict(method="dkd"), r"method: expected one of"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            fused_linear_gkl_loss(**{**base, **kwargs})
        assert "\n" not in str(info.value)


def test_mismatched_vocabularies_are_sliced_when_asked():
    x, w, b, xt, wt, bt, y = _tensors(seed=7)
    y[y >= V - 2] = 0
    wt_big = torch.cat([wt.detach(), torch.randn(3, H_T, dtype=wt.dtype)])
    got = fused_linear_gkl_loss(x, w[: V - 2], xt, wt_big, y, slice_vocab=True, chunk_size=2)
    want = fused_linear_gkl_loss(x, w[: V - 2], xt, wt[: V - 2], y, chunk_size=2)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("temperature,hard", [(1.0, 0.0), (2.0, 0.5)])
def test_fused_kl_equals_liger_fused_jsd_at_beta_zero(temperature, hard):
    liger = pytest.importorskip(
        "liger_kernel.chunked_loss", reason="optional comparison: pip install --no-deps liger-kernel"
    )
    x, w, b, xt, wt, bt, y = _tensors(seed=8, shape=(12,))
    ref = liger.LigerFusedLinearJSDLoss(
        weight_hard_loss=hard,
        weight_soft_loss=1 - hard,
        beta=0.0,
        temperature=temperature,
        compiled=False,
        chunk_size=4,
    )
    want = ref(x, w, xt, wt, y, b, bt)
    # Liger: KL of logits / T without the T² factor; the registry's kl carries T² (docs/losses.md)
    got = fused_linear_gkl_loss(
        x,
        w,
        xt,
        wt,
        y,
        b,
        bt,
        method="kl",
        weight_hard_loss=hard,
        weight_soft_loss=(1 - hard) / temperature**2,
        temperature=temperature,
        chunk_size=4,
    )
    torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-6, atol=0)  # Liger sums its loss in float32
    tol = 1e-10 if hard == 0.0 else 1e-5  # Liger's hard-label term runs through float32 on float64 inputs
    for a, e in zip(torch.autograd.grad(got, (x, w, b)), torch.autograd.grad(want, (x, w, b))):
        torch.testing.assert_close(a, e, rtol=tol, atol=tol * 1e-2)


def test_under_no_grad_the_value_is_the_same_and_no_gradient_is_computed():
    x, w, b, xt, wt, bt, y = _tensors(seed=9)
    with torch.no_grad():
        value = fused_linear_gkl_loss(x, w, xt, wt, y, b, bt, chunk_size=3, gamma=0.5)
    assert not value.requires_grad
    torch.testing.assert_close(value, fused_linear_gkl_loss(x, w, xt, wt, y, b, bt, chunk_size=3, gamma=0.5))
