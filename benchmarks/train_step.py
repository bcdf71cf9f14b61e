"""Training-step time of GKL-KD against Hinton KD and CE-only (one process, same inputs).

resnet32x4 teacher -> resnet8x4 student on CIFAR-shaped inputs at batch 64, the objectives
of ``gkl.objectives`` with the CIFAR-100 recipe values. Each step is forward (teacher and
student) + loss + backward + SGD step. The three objectives run interleaved, and the
reported ratios are medians of per-round ratios, so machine load affects all alike.

Run: .venv/bin/python benchmarks/train_step.py [--rounds 15] [--batch 64] [--threads 2] [--device cuda]
Target (issue 3): a GKL-KD step at most 1.05x a KD step.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from _proc import add_device_option, checked_device, clock
from gkl.models import create_model
from gkl.objectives.distill import build_distill_objective
from gkl.objectives.supervised import SupervisedObjective
from gkl.settings.distill import distill_settings


def _step(objective, model, optimizer, images, labels) -> float:
    start = clock(images.device)
    out = objective(model, (images, labels), epoch=30, step=1)
    loss = out.total()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return clock(images.device) - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    add_device_option(parser)
    args = parser.parse_args()
    device = checked_device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    teacher = create_model("resnet32x4", 100).to(device)
    student = create_model("resnet8x4", 100).to(device)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    objectives = {
        "ce": SupervisedObjective(),
        "kd": build_distill_objective(
            teacher,
            distill_settings("kd", ce_weight=0.1, kd_weight=0.9, temperature=4.0, warmup_epochs=0),
            num_classes=100,
        ),
        "gkl": build_distill_objective(
            teacher, distill_settings("gkl", alpha=16.0, beta=1.0, gamma=0.05, class_wise=True), num_classes=100
        ),
    }
    for obj in objectives.values():
        obj.to(device).train()
    student.train()
    images = torch.randn(args.batch, 3, 32, 32).to(device)
    labels = torch.randint(0, 100, (args.batch,)).to(device)

    for _ in range(2):  # warm-up
        for obj in objectives.values():
            _step(obj, student, optimizer, images, labels)
    times: dict[str, list[float]] = {name: [] for name in objectives}
    for _ in range(args.rounds):
        for name, obj in objectives.items():
            times[name].append(_step(obj, student, optimizer, images, labels))

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    print(
        f"training step, resnet32x4 -> resnet8x4, batch {args.batch}, {args.threads} threads, "
        f"{args.rounds} interleaved rounds ({device})"
    )
    print(f"{'objective':<10}{'median ms':>12}")
    for name in objectives:
        print(f"{name:<10}{1000 * statistics.median(times[name]):>12.1f}")
    print(f"GKL-KD / KD      = {ratio('gkl', 'kd'):.3f}  (target <= 1.05)")
    print(f"KD / CE-only     = {ratio('kd', 'ce'):.3f}  (teacher forward included)")
    print(f"GKL-KD / CE-only = {ratio('gkl', 'ce'):.3f}")


if __name__ == "__main__":
    main()
