"""2-process gloo: SegmentationMetric all-reduces its confusion matrix; the dense class-wise GKL prior
(labelled pixels only) equals the prior of one process that saw every pixel."""

from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gkl.metrics import SegmentationMetric
from gkl.objectives.segmentation import SegmentationDistill
from gkl.settings.segmentation import SegmentationSettings

C = 4


def _data():
    g = torch.Generator().manual_seed(0)
    teacher = 2 * torch.randn(4, C, 6, 5, generator=g)
    student = torch.randn(4, C, 6, 5, generator=g)
    labels = torch.randint(0, C, (4, 6, 5), generator=g)
    labels[torch.rand(4, 6, 5, generator=g) < 0.3] = 255
    labels[labels == 3] = 0  # class 3 has no labelled pixel anywhere: keeps its uniform row
    return student, teacher, labels


def _objective():
    cfg = SegmentationSettings(method="kd", kd_term="gkl", class_wise=True, weight_temperature=2.0)
    return SegmentationDistill(torch.nn.Identity(), cfg, num_classes=C).train()


def _worker(rank, world_size, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        student, teacher, labels = _data()
        shard = slice(rank * 2, rank * 2 + 2)
        obj = _objective()
        obj.kd_loss(student[shard], teacher[shard], labels[shard])
        obj.on_epoch_end(1)
        metric = SegmentationMetric(C)
        metric.update(student[shard], labels[shard])
        result = metric.compute()
        torch.save(
            {
                "prior": obj.prior.prior.clone(),
                "confusion": metric.reduced_confusion(),
                "local": metric.confusion.clone(),
                "mIoU": result["mIoU"],
            },
            f"{out_file}.{rank}",
        )
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_prior_and_metric_under_two_processes_equal_one_process() -> None:
    student, teacher, labels = _data()
    single = _objective()
    single.kd_loss(student, teacher, labels)
    single.on_epoch_end(1)
    metric = SegmentationMetric(C)
    metric.update(student, labels)
    expected = metric.compute()
    with tempfile.TemporaryDirectory() as tmp:
        init_file, out_file = os.path.join(tmp, "init"), os.path.join(tmp, "out")
        mp.spawn(_worker, args=(2, init_file, out_file), nprocs=2, join=True)
        results = [torch.load(f"{out_file}.{r}", weights_only=True) for r in range(2)]
    for result in results:
        torch.testing.assert_close(result["prior"], single.prior.prior, atol=1e-6, rtol=0)
        assert torch.equal(result["confusion"], metric.confusion)
        assert result["mIoU"] == expected["mIoU"]
    assert not torch.equal(results[0]["local"], metric.confusion)
    torch.testing.assert_close(results[0]["prior"][3], torch.full((C,), 1.0 / C))
    assert not torch.allclose(single.prior.prior[0], torch.full((C,), 1.0 / C))
