"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (e.g. ``VmHWM``, the peak resident set size)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def add_device_option(parser) -> None:
    """``--device cpu|cuda|cuda:N``: where the timed steps run (``make bench BENCH_DEVICE=cuda``)."""
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda or cuda:N; on CUDA every time is read after torch.cuda.synchronize() (default: cpu)",
    )


def checked_device(name: str):
    """The torch device ``name``; exits with one line when CUDA is asked for and absent."""
    import torch

    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine")
    return device


def clock(device) -> float:
    """``time.perf_counter()`` after the device's queued work finished (CUDA kernels run asynchronously)."""
    import time

    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)
    return time.perf_counter()
