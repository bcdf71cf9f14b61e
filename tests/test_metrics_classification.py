"""ClassificationEvaluator and per-rank evaluation shards.

A 2-process gloo run over the digits test split gives the same totals as one process, and
each rank decodes only its own examples (counted in ``__getitem__``), for the per-image and the
in-memory loaders.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from gkl.data import build_dataset, build_loader
from gkl.metrics import ClassificationEvaluator, Evaluator, evaluate_classifier
from gkl.utils.distributed import DistInfo

GROUPS = {"low": [0, 1, 2, 3, 4], "high": [5, 6, 7, 8, 9]}


class CountingDataset(torch.utils.data.Dataset):
    """Wraps a dataset and records every index decoded."""

    def __init__(self, inner) -> None:
        self.inner, self.seen = inner, []

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index):
        self.seen.append(int(index))
        return self.inner[index]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _loaders(root, rank: int, world_size: int):
    test = build_dataset("digits", root, train=False)
    counting = CountingDataset(test)
    per_image = build_loader(counting, batch_size=64, train=False, rank=rank, world_size=world_size)
    in_memory = build_loader(test, batch_size=64, train=False, in_memory=True, rank=rank, world_size=world_size)
    return counting, per_image, in_memory


def _worker(rank: int, world_size: int, port: int, root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        dist = DistInfo(rank=rank, world_size=world_size, is_main=rank == 0)
        evaluator = ClassificationEvaluator(10, GROUPS)
        counting, per_image, in_memory = _loaders(root, rank, world_size)
        result = {
            "per_image": evaluator(_model(), per_image, device="cpu", dist=dist),
            "seen": list(counting.seen),
            "in_memory": evaluator(_model(), in_memory, device="cpu", dist=dist),
            "in_memory_rows": len(in_memory.labels),
        }
        torch.save(result, f"{out}/rank{rank}.pt")
    finally:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    build_dataset("digits", root, train=False)
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert (a["count"], a["top1"], a["top5"], a["groups"]) == (b["count"], b["top1"], b["top5"], b["groups"])
    assert torch.equal(torch.tensor(a["per_class"]).nan_to_num(-1), torch.tensor(b["per_class"]).nan_to_num(-1))


def test_two_rank_gloo_totals_equal_single_process_and_ranks_decode_only_their_shard(digits_root, tmp_path):
    # fork (no re-import of torch in the children) before this process starts any thread pool
    mp.start_processes(
        _worker, args=(2, _free_port(), str(digits_root), str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )
    counting, per_image, in_memory = _loaders(digits_root, 0, 1)
    single = evaluate_classifier(_model(), per_image, num_classes=10, device="cpu", class_groups=GROUPS)
    assert sorted(counting.seen) == list(range(450)) and single["count"] == 450
    _same(single, evaluate_classifier(_model(), in_memory, num_classes=10, device="cpu", class_groups=GROUPS))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for rank, result in enumerate(ranks):
        _same(result["per_image"], single)  # every rank returns the all-reduced totals
        _same(result["in_memory"], single)
        assert result["seen"] == list(range(rank, 450, 2))  # its own shard, each example once
        assert result["in_memory_rows"] == 225


def test_strided_shards_cover_once_without_padding(digits_root):
    test = build_dataset("digits", digits_root, train=False)
    for world_size in (1, 3, 4, 7):
        labels = []
        for rank in range(world_size):
            for in_memory in (False, True):
                loader = build_loader(
                    test, batch_size=16, train=False, in_memory=in_memory, rank=rank, world_size=world_size
                )
                assert loader.rank_shard == (rank, world_size)
                got = torch.cat([y for _, y in loader])
                assert len(loader) == -(-len(got) // 16)
                if in_memory:
                    labels.append(got)
                else:
                    expected = torch.tensor([test[i][1] for i in range(rank, len(test), world_size)])
                    assert torch.equal(got, expected)
        assert sum(len(x) for x in labels) == len(test)


def test_mismatched_shard_is_an_error(digits_root):
    test = build_dataset("digits", digits_root, train=False)
    loader = build_loader(test, batch_size=64, train=False, rank=1, world_size=2)
    with pytest.raises(ValueError, match="rank 1's shard of 2"):
        evaluate_classifier(_model(), loader, num_classes=10, device="cpu")


def test_evaluator_protocol_and_values(digits_root):
    test = build_dataset("digits", digits_root, train=False)
    evaluator = ClassificationEvaluator(10, GROUPS)
    assert isinstance(evaluator, Evaluator)
    loader = build_loader(test, batch_size=100, train=False)
    result = evaluator(_model(), loader, device="cpu")
    images = torch.stack([test[i][0] for i in range(len(test))])
    labels = torch.tensor([test[i][1] for i in range(len(test))])
    with torch.no_grad():
        logits = _model()(images)
    top1 = (logits.argmax(1) == labels).double().mean().item() * 100
    top5 = (logits.topk(5, 1).indices == labels[:, None]).any(1).double().mean().item() * 100
    assert result["top1"] == pytest.approx(top1, abs=1e-9) and result["top5"] == pytest.approx(top5, abs=1e-9)
    low = labels < 5
    assert result["groups"]["low"] == pytest.approx(
        (logits.argmax(1) == labels)[low].double().mean().item() * 100, abs=1e-9
    )
    assert result["count"] == 450 and len(result["per_class"]) == 10
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationEvaluator(1)


def test_runner_builds_this_ranks_eval_shard(digits_root):
    from gkl.config import config_from_dict
    from gkl.runner import build_parts

    cfg = config_from_dict(
        {
            "kind": "train",
            "data": {"name": "digits", "root": str(digits_root), "num_workers": 0},
            "model": {"name": "digits_mlp_small"},
        }
    )
    for in_memory in (False, True):
        cfg.data.in_memory = in_memory
        parts = build_parts(cfg, DistInfo(rank=1, world_size=2, is_main=False))
        assert parts.eval_loader.rank_shard == (1, 2)
        assert sum(len(y) for _, y in parts.eval_loader) == 225
