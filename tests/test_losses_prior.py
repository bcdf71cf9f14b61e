"""ClassPrior: per-class means, EMA, unseen classes, checkpoints and torch.distributed."""

import os
import tempfile

import pytest
import torch

from gkl.losses import ClassPrior
from helpers import spawn_gloo


def _direct_means(logits, targets, temperature, num_classes):
    probs = torch.softmax(logits.double() / temperature, 1)
    return torch.stack([probs[targets == k].mean(0) for k in range(num_classes)])


def _data(n=60, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g)


def test_starts_uniform_and_equals_direct_mean():
    logits, y = _data()
    prior = ClassPrior(5, temperature=2.0)
    torch.testing.assert_close(prior.prior, torch.full((5, 5), 0.2))
    for chunk in range(0, 60, 16):  # several batches
        prior.update(logits[chunk : chunk + 16], y[chunk : chunk + 16])
    prior.step()
    torch.testing.assert_close(prior.prior.double(), _direct_means(logits, y, 2.0, 5), atol=1e-6, rtol=0)
    torch.testing.assert_close(prior.prior.sum(1), torch.ones(5))
    assert prior.counts.sum() == 0 and prior.sums.abs().sum() == 0
    out = prior(y[:7])
    assert out.shape == (7, 5)
    torch.testing.assert_close(out, prior.prior[y[:7]])


def test_unseen_class_keeps_its_row():
    logits, y = _data()
    prior = ClassPrior(5)
    prior.update(logits, y)
    prior.step()
    before = prior.prior.clone()
    keep = y != 3
    prior.update(logits[keep] * 0.5, y[keep])
    prior.step()
    torch.testing.assert_close(prior.prior[3], before[3])
    assert not torch.allclose(prior.prior[0], before[0])
    prior.step()  # an epoch without any data changes nothing
    torch.testing.assert_close(prior.prior[0], _direct_means(logits[keep] * 0.5, y[keep], 1.0, 5)[0].float())


def test_momentum_is_an_exponential_moving_average():
    logits, y = _data()
    m = 0.25
    prior = ClassPrior(5, momentum=m)
    prior.update(logits, y)
    prior.step()
    mean1 = _direct_means(logits, y, 1.0, 5).float()
    torch.testing.assert_close(prior.prior, 0.75 * torch.full((5, 5), 0.2) + 0.25 * mean1)
    logits2, y2 = _data(seed=1)
    prior.update(logits2, y2)
    prior.step()
    mean2 = _direct_means(logits2, y2, 1.0, 5).float()
    torch.testing.assert_close(prior.prior, (1 - m) * (0.75 * 0.2 + 0.25 * mean1) + m * mean2)


def test_dense_updates_and_ignore_index():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 3, 3, generator=g)
    y = torch.randint(0, 4, (2, 3, 3), generator=g)
    y[0, 1] = -100
    prior = ClassPrior(4)
    prior.update(logits, y)
    assert prior.counts.sum() == (y != -100).sum()
    prior.step()
    flat_logits = logits.movedim(1, -1).reshape(-1, 4)
    flat_y = y.reshape(-1)
    keep = flat_y != -100
    expected = _direct_means(flat_logits[keep], flat_y[keep], 1.0, 4).float()
    torch.testing.assert_close(prior.prior, expected)
    weights = prior(y)
    assert weights.shape == (2, 4, 3, 3)
    torch.testing.assert_close(weights[0, :, 1], torch.full((4, 3), 0.25))  # ignored -> uniform
    torch.testing.assert_close(weights[1, :, 0, 0], prior.prior[y[1, 0, 0]])


def test_accumulates_float32_without_grad_under_autocast():
    logits = torch.randn(8, 6, requires_grad=True)
    y = torch.arange(8) % 6
    prior = ClassPrior(6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prior.update(logits.to(torch.bfloat16), y)
    assert prior.sums.dtype == torch.float32 and not prior.sums.requires_grad
    prior.step()
    expected = _direct_means(logits.detach().to(torch.bfloat16).float(), y, 1.0, 6).float()
    torch.testing.assert_close(prior.prior, expected)


def test_state_dict_checkpoint_round_trip(tmp_path):
    logits, y = _data()
    prior = ClassPrior(5, temperature=4.0)
    prior.update(logits, y)
    prior.step()
    prior.update(logits[:10], y[:10])  # mid-epoch accumulators are state too
    path = tmp_path / "prior.pt"
    torch.save(prior.state_dict(), path)
    restored = ClassPrior(5, temperature=4.0)
    restored.load_state_dict(torch.load(path, weights_only=True))
    for name in ("prior", "sums", "counts"):
        torch.testing.assert_close(getattr(restored, name), getattr(prior, name))
    prior.step()
    restored.step()
    torch.testing.assert_close(restored.prior, prior.prior)
    assert set(prior.state_dict()) == {"prior", "sums", "counts"}


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        ClassPrior(0)
    with pytest.raises(ValueError, match="temperature"):
        ClassPrior(3, temperature=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        ClassPrior(3, momentum=1.5)
    prior = ClassPrior(3)
    with pytest.raises(ValueError, match="targets"):
        prior.update(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="target_logits"):
        prior.update(torch.randn(4, 5), torch.tensor([0, 1, 2, 1]))
    with pytest.raises(ValueError, match="targets"):
        prior(torch.tensor([0, 5]))


def _distributed_worker(rank, world_size, logits, targets, out_file):
    prior = ClassPrior(5, temperature=2.0)
    shard = slice(rank, None, world_size)
    prior.update(logits[shard], targets[shard])
    prior.step()
    torch.save(prior.prior.clone(), f"{out_file}.{rank}")


def test_distributed_prior_equals_single_process():
    logits, y = _data(n=50)
    y[y == 4] = 0  # class 4 unseen on every rank: keeps the uniform row
    single = ClassPrior(5, temperature=2.0)
    single.update(logits, y)
    single.step()
    with tempfile.TemporaryDirectory() as tmp:
        out_file = os.path.join(tmp, "prior")
        spawn_gloo(_distributed_worker, logits, y, out_file, world_size=2)
        results = [torch.load(f"{out_file}.{r}", weights_only=True) for r in range(2)]
    for result in results:
        torch.testing.assert_close(result, single.prior, atol=1e-6, rtol=0)
    torch.testing.assert_close(results[0][4], torch.full((5,), 0.2))
