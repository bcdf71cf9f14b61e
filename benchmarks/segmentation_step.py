"""Cost of a segmentation distillation step with pixel-wise GKL against the same step with KL.

One step = teacher forward (no grad) + student forward + CE/aux + pixel-wise distillation term
on logits upsampled to the label size + backward, as :class:`gkl.objectives.segmentation.
SegmentationDistill` runs it. Both variants are timed in this process, interleaved, and the
median ratio is printed; peak memory is measured per variant (CUDA: max_memory_allocated;
CPU: the torch profiler's memory timeline, i.e. tensors allocated by torch).

Targets (issue): GKL/KL time ≤ 1.05×, peak memory ≤ 1.1× at 150 classes, 2×3×473×473.

    python benchmarks/segmentation_step.py                  # full size (PSPNet R18 <- R101), slow on CPU
    python benchmarks/segmentation_step.py --quick          # 2×3×161×161, R18 <- R18
    python benchmarks/segmentation_step.py --teacher pspnet_resnet18 --size 473 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gkl.models import create_model
from gkl.objectives.segmentation import SegmentationDistill
from gkl.settings.segmentation import SegmentationSettings

VARIANTS = {
    "kl": dict(method="kd", kd_term="kl"),
    "gkl": dict(method="kd", kd_term="gkl", class_wise=True),  # the recipes: gamma 1, class-wise
}


def build(args: argparse.Namespace):
    torch.manual_seed(0)
    student = create_model(args.student, args.classes).to(args.device).train()
    teacher = create_model(args.teacher, args.classes).to(args.device)
    objectives = {
        name: SegmentationDistill(teacher, SegmentationSettings(**cfg), num_classes=args.classes).to(args.device)
        for name, cfg in VARIANTS.items()
    }
    g = torch.Generator().manual_seed(1)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=g).to(args.device)
    labels = torch.randint(0, args.classes, (args.batch, args.size, args.size), generator=g)
    labels[torch.rand(labels.shape, generator=g) < 0.1] = 255
    return student, objectives, (images, labels.to(args.device))


def step(student, objective, batch) -> None:
    student.zero_grad(set_to_none=True)
    out = objective(student, batch, epoch=1, step=1)
    out.total().backward()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory(student, objective, batch, device: str) -> int:
    """Peak bytes of torch tensors during one step (after a warm-up step)."""
    step(student, objective, batch)
    student.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(student, objective, batch)
        sync(device)
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step(student, objective, batch)
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    return max(sum(row) for row in sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="pspnet_resnet18")
    parser.add_argument("--teacher", default="pspnet_resnet101")
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=473)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="2x3x161x161 with a ResNet-18 teacher")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    args = parser.parse_args()
    if args.quick:
        args.size, args.teacher, args.repeats = 161, "pspnet_resnet18", 3
    if args.threads:
        torch.set_num_threads(args.threads)
    student, objectives, batch = build(args)
    print(
        f"{args.student} <- {args.teacher}, {args.classes} classes, input {args.batch}x3x{args.size}x{args.size}, "
        f"{args.device}, {torch.get_num_threads()} threads"
    )
    for objective in objectives.values():  # warm-up (allocator, kernels)
        step(student, objective, batch)
    times: dict[str, list[float]] = {name: [] for name in objectives}
    cpu: dict[str, list[float]] = {name: [] for name in objectives}
    for _ in range(args.repeats):
        for name, objective in objectives.items():
            sync(args.device)
            start, start_cpu = time.perf_counter(), time.process_time()
            step(student, objective, batch)
            sync(args.device)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    ratios = [g / k for g, k in zip(times["gkl"], times["kl"])]
    for name, values in times.items():
        print(
            f"  {name:4s} step: median {statistics.median(values):.3f} s over {len(values)} "
            f"(min {min(values):.3f}, max {max(values):.3f})"
        )
    per_repeat = ", ".join(f"{r:.3f}" for r in ratios)
    print(
        f"time ratio GKL/KL: median {statistics.median(ratios):.3f} (per-repeat {per_repeat})"
        f"; ratio of medians {statistics.median(times['gkl']) / statistics.median(times['kl']):.3f}"
    )
    if args.device == "cpu":  # CPU time of this process: less sensitive to other jobs on a shared machine
        print(
            f"CPU-time ratio GKL/KL: ratio of medians "
            f"{statistics.median(cpu['gkl']) / statistics.median(cpu['kl']):.3f} "
            f"(kl {statistics.median(cpu['kl']):.2f} s, gkl {statistics.median(cpu['gkl']):.2f} s)"
        )
    if not args.no_memory:
        peaks = {name: peak_memory(student, objective, batch, args.device) for name, objective in objectives.items()}
        for name, value in peaks.items():
            print(f"  {name:4s} peak memory: {value / 2**20:.1f} MiB")
        print(f"peak memory ratio GKL/KL: {peaks['gkl'] / peaks['kl']:.3f}")


if __name__ == "__main__":
    main()
