"""AWP under torch.distributed (2 CPU processes, gloo): every replica applies the same perturbation."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gkl.objectives.awp import AdversarialWeightPerturbation, perturbable_weights
from helpers import spawn_gloo


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)
    )


def _local_batch(rank: int):
    g = torch.Generator().manual_seed(100 + rank)  # each rank sees different data
    return torch.rand(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)


def _worker(rank: int, world_size: int, out_dir: str) -> None:
    model = nn.parallel.DistributedDataParallel(_net())
    images, labels = _local_batch(rank)
    awp = AdversarialWeightPerturbation(gamma=0.01)
    perturbation = awp.compute_perturbation(model, lambda proxy: F.cross_entropy(proxy(images), labels))
    torch.save(perturbation, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.slow
def test_all_ranks_apply_the_same_perturbation_from_the_averaged_difference(tmp_path):
    world_size = 2
    spawn_gloo(_worker, str(tmp_path), world_size=world_size)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world_size)]
    for a, b in zip(*per_rank):
        assert torch.equal(a, b)
    # the shared perturbation follows the average of the ranks' proxy differences (one SGD step each)
    weights = perturbable_weights(_net())
    diffs = []
    for rank in range(world_size):
        net = _net()
        images, labels = _local_batch(rank)
        F.cross_entropy(net(images), labels).backward()
        diffs.append([0.01 * w.grad for _, w in perturbable_weights(net)])  # ascent step at proxy_lr 0.01
    for layer, ((_, w), applied) in enumerate(zip(weights, per_rank[0])):
        mean_diff = (diffs[0][layer] + diffs[1][layer]) / 2
        expected = 0.01 * w.detach().norm() * mean_diff / mean_diff.norm()
        assert torch.allclose(applied, expected, rtol=1e-4, atol=1e-8), layer
        local_only = 0.01 * w.detach().norm() * diffs[0][layer] / diffs[0][layer].norm()
        assert not torch.allclose(applied, local_only, rtol=1e-3, atol=1e-6), layer
