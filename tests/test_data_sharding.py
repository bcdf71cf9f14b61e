"""Epoch orders: DistributedSampler equivalence, rank coverage, generated streams."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DistributedSampler

from gkl.data.sharding import derive_seed, generated_indices, mixed_batches, shard_indices


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 200),
    world_size=st.integers(1, 8),
    seed=st.integers(0, 2**31),
    epoch=st.integers(0, 50),
    shuffle=st.booleans(),
)
def test_shards_equal_distributed_sampler_and_cover(n, world_size, seed, epoch, shuffle):
    shards = []
    for rank in range(world_size):
        ours = shard_indices(n, shuffle=shuffle, seed=seed, epoch=epoch, rank=rank, world_size=world_size)
        ref = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        ref.set_epoch(epoch)
        assert ours.tolist() == list(ref)
        shards.append(ours.tolist())
    assert len({len(s) for s in shards}) == 1
    assert set(i for s in shards for i in s) == set(range(n))


@settings(max_examples=40, deadline=None)
@given(n_gen=st.integers(1, 50), count=st.integers(0, 40), world_size=st.integers(1, 4), epoch=st.integers(0, 9))
def test_generated_stream_is_a_sharded_reshuffle(n_gen, count, world_size, epoch):
    shards = [
        generated_indices(n_gen, count, seed=1, epoch=epoch, rank=r, world_size=world_size) for r in range(world_size)
    ]
    assert all(len(s) == count for s in shards)
    merged = torch.stack(shards, 1).flatten() if count else torch.empty(0, dtype=torch.long)
    # consecutive blocks of n_gen in the merged global stream are permutations of the generated set
    for start in range(0, len(merged) - n_gen + 1, n_gen):
        assert sorted(merged[start : start + n_gen].tolist()) == list(range(n_gen))


def test_mixed_batches_counts_and_no_reuse_within_epoch():
    real = shard_indices(100, shuffle=True, seed=0, epoch=0, rank=0, world_size=1)
    batches = mixed_batches(real, 500, batch_size=16, generated_ratio=0.75, seed=0, epoch=0, rank=0, world_size=1)
    assert len(batches) == 100 // 4
    assert all(len(r) == 4 and len(g) == 12 for r, g in batches)
    gen = torch.cat([g for _, g in batches])
    assert len(set(gen.tolist())) == len(gen)  # 300 of 500 generated images, none twice
    assert sorted(torch.cat([r for r, _ in batches]).tolist()) == list(range(100))


def test_derived_seeds_differ_per_component():
    base = derive_seed(0, 0, 0, "augment")
    others = {
        derive_seed(1, 0, 0, "augment"),
        derive_seed(0, 1, 0, "augment"),
        derive_seed(0, 0, 1, "augment"),
        derive_seed(0, 0, 0, "generated"),
    }
    assert base not in others and len(others) == 4 and 0 <= base < 2**63
