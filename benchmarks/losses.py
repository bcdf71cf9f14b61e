"""Speed and peak memory of gkl_loss against kl_div and the naive pairwise O(C^2) form.

Run:  .venv/bin/python benchmarks/losses.py [--repeats 15] [--skip-memory] [--cases 64x100,...]

Time: forward + backward w.r.t. both inputs (float32, CPU), median of ``repeats``
runs after 3 warm-up runs, all methods in the same process on the same inputs.

Peak memory: each (case, method) runs once in a fresh subprocess; after the
inputs exist we reset the kernel's peak-RSS mark (write 5 to /proc/self/clear_refs),
run one forward + backward and report VmHWM − VmRSS_before from /proc/self/status
(MB, Linux only). (ru_maxrss is not usable: Linux keeps it across fork/exec.)
This counts every byte the loss's autograd graph and gradients touched at peak,
including allocator slack; tiny cases are dominated by page granularity.

The pairwise form builds N x C x C tensors. When N*C*C exceeds 2^24 elements it
runs over chunks of examples (forward + backward per chunk, gradients accumulated),
so its memory stays bounded; its time is still the O(N C^2) cost. The dense case
(8, 150, 64, 64) has 32768 x 150 x 150 = 7.4e8 pairwise entries per tensor and is
skipped for the pairwise form.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch

from _proc import status_kib

from gkl.losses import gkl_loss, kl_div

CASES: list[tuple[int, ...]] = [(64, 100), (512, 100), (256, 1000), (8, 150, 64, 64)]
PAIRWISE_CHUNK_ELEMENTS = 1 << 24


def pairwise_gkl_sum(o_n: torch.Tensor, o_m: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Naive O(C^2) GKL (spec section 3), normalize="weights", summed wMSE + CE terms."""
    w = torch.softmax(o_m.detach(), dim=1) ** gamma
    phi = w[:, :, None] * w[:, None, :]
    diff = (o_m[:, :, None] - o_m[:, None, :]) - (o_n[:, :, None] - o_n[:, None, :])
    mse = 0.25 * (phi * diff * diff).sum()
    ce = -(torch.softmax(o_m.detach(), 1) * torch.log_softmax(o_n, 1)).sum()
    return mse, ce, phi.sum()


def run_pairwise(o_n: torch.Tensor, o_m: torch.Tensor) -> None:
    n, c = o_n.shape[0], o_n.shape[1]
    rows = max(1, min(n, PAIRWISE_CHUNK_ELEMENTS // (c * c)))
    # the weight mass is gradient-free: compute it first so chunks can be normalised
    with torch.no_grad():
        w = torch.softmax(o_m, 1)
        mass = (w.sum(1) ** 2).sum()
    for start in range(0, n, rows):
        mse, ce, _ = pairwise_gkl_sum(o_n[start:start + rows], o_m[start:start + rows])
        (mse / mass + ce / n).backward()


def run_gkl(o_n: torch.Tensor, o_m: torch.Tensor) -> None:
    gkl_loss(o_n, o_m, gamma=1.0).backward()


def run_kl(o_n: torch.Tensor, o_m: torch.Tensor) -> None:
    kl_div(o_n, o_m).backward()


METHODS: dict[str, Callable[[torch.Tensor, torch.Tensor], None]] = {
    "kl_div": run_kl, "gkl_loss": run_gkl, "pairwise": run_pairwise}


def make_inputs(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    o_n = (3 * torch.randn(*shape, generator=g)).requires_grad_()
    o_m = (3 * torch.randn(*shape, generator=g)).requires_grad_()
    return o_n, o_m


def skipped(method: str, shape: tuple[int, ...]) -> bool:
    return method == "pairwise" and len(shape) > 2


def median_times(methods: dict[str, Callable[[torch.Tensor, torch.Tensor], None]], o_n: torch.Tensor,
                 o_m: torch.Tensor, repeats: int) -> dict[str, list[float]]:
    """Seconds per fwd+bwd for each repeat; methods run round-robin so load drift hits all alike."""
    for fn in methods.values():
        for _ in range(3 if len(methods) > 1 or repeats > 3 else 1):
            fn(o_n, o_m)
            o_n.grad = o_m.grad = None
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn(o_n, o_m)
            times[name].append(time.perf_counter() - start)
            o_n.grad = o_m.grad = None
    return times


def peak_memory_child(method: str, shape: tuple[int, ...]) -> None:
    """Subprocess body: print the peak-RSS increase (bytes) of one forward + backward."""
    o_n, o_m = make_inputs(shape)
    torch.zeros(1).sum()  # initialise torch's lazy machinery before the baseline
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset the VmHWM high-water mark to the current RSS
    before = status_kib("VmRSS")
    METHODS[method](o_n, o_m)
    peak = status_kib("VmHWM")
    print(json.dumps({"delta_bytes": (peak - before) * 1024}))


def peak_memory(method: str, shape: tuple[int, ...]) -> float:
    """Peak memory (MB) of one fwd+bwd of ``method`` at ``shape``, in a fresh subprocess."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", method,
                          ",".join(map(str, shape))], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["delta_bytes"] / 2 ** 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--pairwise-repeats", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--cases", default=None,
                        help="shapes to run instead of the default ones, e.g. 64x100,8x150x64x64")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cases = CASES if args.cases is None else [tuple(int(x) for x in c.split("x")) for c in args.cases.split(",")]
    if args.child:
        peak_memory_child(args.child[0], tuple(int(x) for x in args.child[1].split(",")))
        return

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float32 CPU, "
          f"fwd+bwd median of {args.repeats} (pairwise {args.pairwise_repeats}), interleaved, after warm-up")
    header = (f"{'shape':>18} | {'kl_div ms':>9} {'gkl ms':>9} {'pair ms':>9} | {'gkl/kl':>7} "
              f"{'pair/gkl':>8} | {'kl MB':>8} {'gkl MB':>8} {'pair MB':>8} | {'memgkl/kl':>9}")
    print(header)
    print("-" * len(header))
    for shape in cases:
        o_n, o_m = make_inputs(shape)
        raw = median_times({m: METHODS[m] for m in ("kl_div", "gkl_loss")}, o_n, o_m, args.repeats)
        times = {m: statistics.median(t) * 1e3 for m, t in raw.items()}
        # ratio of each round's gkl time to the kl time measured right before it, then the median:
        # robust when other processes load the machine
        paired = statistics.median(g / k for g, k in zip(raw["gkl_loss"], raw["kl_div"]))
        times["pairwise"] = float("nan") if skipped("pairwise", shape) else statistics.median(
            median_times({"pairwise": run_pairwise}, o_n, o_m, args.pairwise_repeats)["pairwise"]) * 1e3
        del o_n, o_m
        if args.skip_memory:
            mem = {m: float("nan") for m in METHODS}
        else:
            mem = {m: (float("nan") if skipped(m, shape) else peak_memory(m, shape)) for m in METHODS}
        print(f"{str(shape):>18} | {times['kl_div']:9.2f} {times['gkl_loss']:9.2f} {times['pairwise']:9.2f} | "
              f"{paired:7.2f} {times['pairwise'] / times['gkl_loss']:8.1f} | "
              f"{mem['kl_div']:8.1f} {mem['gkl_loss']:8.1f} {mem['pairwise']:8.1f} | "
              f"{mem['gkl_loss'] / max(mem['kl_div'], 1e-9):9.2f}")
    print("pairwise: skipped for the dense case (N*H*W x C x C = 7.4e8 entries per tensor); "
          f"chunked above {PAIRWISE_CHUNK_ELEMENTS} pairwise entries per chunk.")
    print("gkl/kl: median over rounds of the paired ratio (each round runs kl_div then gkl_loss).")
    print("targets: gkl/kl <= 1.5 at (512,100) and (256,1000); pair/gkl >= 20 at (256,1000); "
          "dense memgkl/kl <= 4.")


if __name__ == "__main__":
    main()
