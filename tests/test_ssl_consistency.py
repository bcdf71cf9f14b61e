"""gkl.ssl.consistency_loss against direct per-example computations (float64)."""

import math

import pytest
import torch

from gkl.losses import gkl_loss
from gkl.ssl import CONSISTENCY_LOSSES, consistency_loss


def _direct(strong: torch.Tensor, weak: torch.Tensor, loss: str, t: float) -> torch.Tensor:
    """Per-example values written out with plain loops over examples and classes."""
    out = []
    for s_row, w_row in zip(strong.detach(), weak.detach()):
        q = [math.exp(v) for v in s_row.tolist()]
        zq = sum(q)
        q = [v / zq for v in q]
        p = [math.exp(v / t) for v in w_row.tolist()]
        zp = sum(p)
        p = [v / zp for v in p]
        if loss == "hard_ce":
            out.append(-math.log(q[int(w_row.argmax())]))
        elif loss == "soft_ce":
            out.append(-sum(pj * math.log(qj) for pj, qj in zip(p, q)))
        elif loss == "kl":
            out.append(sum(pj * (math.log(pj) - math.log(qj)) for pj, qj in zip(p, q)))
        elif loss == "softmax_mse":
            out.append(sum((qj - pj) ** 2 for pj, qj in zip(p, q)) / len(p))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("loss", ["hard_ce", "soft_ce", "kl", "softmax_mse"])
@pytest.mark.parametrize("masked", [False, True])
def test_plain_losses_equal_direct_computation(loss: str, masked: bool) -> None:
    g = torch.Generator().manual_seed(0)
    strong = torch.randn(7, 5, generator=g, dtype=torch.float64) * 2
    weak = torch.randn(7, 5, generator=g, dtype=torch.float64) * 2
    mask = torch.tensor([1.0, 0.0, 1.0, 0.25, 0.0, 1.0, 1.0], dtype=torch.float64) if masked else None
    t = 1.0 if loss == "hard_ce" else 0.5
    got = consistency_loss(strong, weak, loss=loss, mask=mask, temperature=t)
    per = _direct(strong, weak, loss, t)
    expected = (per * (mask if masked else 1.0)).sum() / 7  # mean over ALL examples, masked included
    assert got.dtype == torch.float64
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss", ["gkl", "ikl"])
def test_gkl_consistency_is_the_masked_mean_of_gkl_per_example_values(loss: str) -> None:
    g = torch.Generator().manual_seed(1)
    strong = torch.randn(6, 4, generator=g, dtype=torch.float64)
    weak = torch.randn(6, 4, generator=g, dtype=torch.float64)
    mask = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.5], dtype=torch.float64)
    kwargs = dict(alpha=0.3, beta=1.0, weight_temperature=2.0)
    if loss == "gkl":
        kwargs.update(gamma=0.5)
    got = consistency_loss(strong, weak, loss=loss, mask=mask, temperature=1.5, **kwargs)
    per = gkl_loss(
        strong,
        weak,
        temperature=1.5,
        reduction="none",
        normalize="weights" if loss == "gkl" else "batch",
        gamma=kwargs.get("gamma", 1.0),
        alpha=0.3,
        beta=1.0,
        weight_temperature=2.0,
    )
    assert torch.allclose(got, (per * mask).sum() / 6, rtol=1e-12)
    # without a mask the consistency loss is exactly the GKL mean
    full = consistency_loss(strong, weak, loss=loss, temperature=1.5, **kwargs)
    assert torch.allclose(full, per.mean(), rtol=1e-12)


def test_weak_view_gradient_only_through_gkl_unless_detached() -> None:
    g = torch.Generator().manual_seed(2)
    for loss in CONSISTENCY_LOSSES:
        strong = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
        weak = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
        consistency_loss(strong, weak, loss=loss).backward()
        assert strong.grad is not None and strong.grad.abs().sum() > 0
        weak_gets_gradient = weak.grad is not None and bool(weak.grad.abs().sum() > 0)
        assert weak_gets_gradient == (loss in ("gkl", "ikl")), loss
    strong = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    weak = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    consistency_loss(strong, weak, loss="gkl", detach_weak=True).backward()
    assert weak.grad is None


def test_all_masked_gives_zero_and_bad_arguments_name_themselves() -> None:
    s, w = torch.randn(4, 3), torch.randn(4, 3)
    assert consistency_loss(s, w, loss="kl", mask=torch.zeros(4)).item() == 0.0
    with pytest.raises(ValueError, match="loss"):
        consistency_loss(s, w, loss="l1")
    with pytest.raises(ValueError, match="mask"):
        consistency_loss(s, w, loss="hard_ce", mask=torch.ones(3))
    with pytest.raises(
        ValueError, match=r"^loss_params: expected parameters of loss 'softmax_mse' \(none\), got \['alpha'\]$"
    ):
        consistency_loss(s, w, loss="softmax_mse", alpha=1.0)
    for old, new in (("ce", "hard_ce"), ("mse", "softmax_mse")):  # the registry's 'mse' is logit MSE
        with pytest.raises(ValueError, match=rf"^loss: '{old}' is now '{new}'"):
            consistency_loss(s, w, loss=old)
    with pytest.raises(ValueError, match="temperature"):
        consistency_loss(s, w, loss="kl", temperature=0.0)
