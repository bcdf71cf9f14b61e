"""Token-level distillation losses at vocabulary scale: fused GKL against materialised GKL and Liger's fused JSD.

Variants (forward + backward w.r.t. the student's hidden states and output weight; N tokens,
hidden sizes H_s / H_t, vocabulary V, float32 on CPU):

* ``materialised_gkl``: logits x W^T of both models, then ``gkl.lm.token_loss`` (method gkl);
* ``materialised_kl``: the same with method kl (the usual unfused baseline);
* ``fused_gkl``: ``gkl.lm.fused_linear_gkl_loss`` (chunked over tokens, no (N, V) logits beyond a chunk);
* ``fused_kl``: the same with method kl;
* ``liger_jsd``: ``liger_kernel.chunked_loss.LigerFusedLinearJSDLoss(beta=0, compiled=False)`` (forward
  KL), when liger-kernel is installed (``pip install --no-deps liger-kernel``).

Time: each round times every variant (fastest of ``--repeats`` calls), by the wall clock or, with
``--clock cpu``, by the process's CPU time (steadier on a shared machine with one thread); the
table gives the mean and the median over rounds of the per-round ratio to fused_gkl, with its
interquartile range (the paired, interleaved rounds cancel slow drifts of the machine's load).
Memory: each variant runs once in a fresh subprocess, one at a time; after the inputs exist the
kernel's peak-RSS mark is reset (/proc/self/clear_refs) and the extra peak is VmHWM − VmRSS_before
(allocator slack included). The load average is printed with each table.

    python benchmarks/llm_loss.py --tokens 2048 --hidden 256 --teacher-hidden 512 --vocab 32000,128000

At V = 128k the materialised variants need about 7 GB each (N = 2048); ``--variants`` runs a subset.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import add_device_option, checked_device, clock, status_kib  # noqa: E402
from gkl.lm import fused_linear_gkl_loss, token_loss  # noqa: E402

CHUNK = 1024
#: where the losses run (--device); times are read after the device finished (clock)
DEVICE = torch.device("cpu")


def make_inputs(n: int, h_s: int, h_t: int, v: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h_s, generator=g).to(DEVICE).requires_grad_()
    w = (torch.randn(v, h_s, generator=g) / h_s**0.5).to(DEVICE).requires_grad_()
    xt = torch.randn(n, h_t, generator=g).to(DEVICE)
    wt = (torch.randn(v, h_t, generator=g) / h_t**0.5).to(DEVICE)
    y = torch.randint(0, v, (n,), generator=g).to(DEVICE)
    return x, w, xt, wt, y


def variants(chunk: int) -> dict[str, Callable[..., torch.Tensor]]:
    def materialised(method: str) -> Callable[..., torch.Tensor]:
        def run(x, w, xt, wt, y):
            with torch.no_grad():
                teacher = xt @ wt.T
            return token_loss(x @ w.T, teacher, y, method=method)

        return run

    def fused(method: str) -> Callable[..., torch.Tensor]:
        def run(x, w, xt, wt, y):
            return fused_linear_gkl_loss(
                x, w, xt, wt, y, method=method, weight_hard_loss=0.0, weight_soft_loss=1.0, chunk_size=chunk
            )

        return run

    found: dict[str, Callable[..., torch.Tensor]] = {
        "fused_gkl": fused("gkl"),
        "materialised_gkl": materialised("gkl"),
        "fused_kl": fused("kl"),
        "materialised_kl": materialised("kl"),
    }
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss
    except ImportError:
        return found
    liger = LigerFusedLinearJSDLoss(
        weight_hard_loss=0.0, weight_soft_loss=1.0, beta=0.0, compiled=False, chunk_size=chunk
    )
    found["liger_jsd"] = lambda x, w, xt, wt, y: liger(x, w, xt, wt, y)
    return found


def clock_of(kind: str) -> Callable[[], float]:
    """The wall clock (after the device finished) or the process's CPU time."""
    return time.process_time if kind == "cpu" else lambda: clock(DEVICE)


def step(fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> None:
    x, w = inputs[0], inputs[1]
    x.grad = w.grad = None
    fn(*inputs).backward()


def time_table(
    inputs: tuple[torch.Tensor, ...], rounds: int, repeats: int, chunk: int, names: list[str], now: Callable[[], float]
) -> dict[str, list[float]]:
    fns = {name: fn for name, fn in variants(chunk).items() if name in names}
    for fn in fns.values():  # warm-up
        step(fn, inputs)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            best = float("inf")
            for _ in range(repeats):
                start = now()
                step(fn, inputs)
                best = min(best, now() - start)
            times[name].append(best)
    return times


def spread(values: list[float]) -> str:
    """mean, median [q1-q3] of per-round ratios."""
    if len(values) < 2:
        return f"{values[0]:.2f}, {values[0]:.2f}"
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{statistics.fmean(values):.2f}, {statistics.median(values):.2f} [{q1:.2f}-{q3:.2f}]"


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def peak_memory_child(name: str, shape: list[int], chunk: int) -> None:
    torch.set_num_threads(1)
    inputs = make_inputs(*shape)
    fn = variants(chunk)[name]
    before = status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    step(fn, inputs)
    print(json.dumps({"extra_mb": (status_kib("VmHWM") - before) / 1024}))


def peak_memory(name: str, shape: list[int], chunk: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", name, "--shape", ",".join(map(str, shape)), "--chunk", str(chunk)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["extra_mb"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--teacher-hidden", type=int, default=512)
    parser.add_argument("--vocab", type=str, default="32000", help="comma-separated vocabulary sizes")
    parser.add_argument("--chunk", type=int, default=CHUNK)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall clock or process CPU time")
    parser.add_argument("--variants", default=None, help="comma-separated subset (fused_gkl is always run)")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--shape", default=None, help=argparse.SUPPRESS)
    add_device_option(parser)
    args = parser.parse_args()
    global DEVICE
    DEVICE = checked_device(args.device)
    if args.memory_child:
        peak_memory_child(args.memory_child, [int(s) for s in args.shape.split(",")], args.chunk)
        return
    torch.set_num_threads(args.threads)
    names = list(variants(args.chunk))
    if args.variants:
        wanted = set(args.variants.split(",")) | {"fused_gkl"}
        unknown = sorted(wanted - set(names))
        if unknown:
            raise SystemExit(f"--variants: expected names among {names}, got {unknown[0]}")
        names = [name for name in names if name in wanted]
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), chunk {args.chunk}, float32, {DEVICE}, "
        f"{args.clock} clock, {args.rounds} rounds of best-of-{args.repeats}"
    )
    for vocab in (int(v) for v in args.vocab.split(",")):
        shape = [args.tokens, args.hidden, args.teacher_hidden, vocab]
        print(f"\nN={args.tokens} H_s={args.hidden} H_t={args.teacher_hidden} V={vocab}; before: {load()}", flush=True)
        inputs = make_inputs(*shape)
        times = time_table(inputs, args.rounds, args.repeats, args.chunk, names, clock_of(args.clock))
        del inputs
        print(f"after the timed rounds: {load()}")
        print(
            "variant            ms (median)   time / fused_gkl: mean, median [q1-q3]   extra peak MB   fused_gkl / it"
        )
        skip_memory = args.skip_memory or DEVICE.type != "cpu"  # peak RSS measures host memory only
        memory = {} if skip_memory else {name: peak_memory(name, shape, args.chunk) for name in times}
        for name, values in times.items():
            ratios = [a / b for a, b in zip(values, times["fused_gkl"])]
            mem = memory.get(name)
            mem_text = "-" if mem is None else f"{mem:.1f}"
            mem_ratio = "-" if mem is None or not mem else f"{memory['fused_gkl'] / mem:.2f}"
            print(
                f"{name:<18} {1000 * statistics.median(values):11.1f}   {spread(ratios):<39}"
                f"  {mem_text:>13}   {mem_ratio:>14}"
            )
        for other in ("materialised_gkl", "liger_jsd"):
            if other in times:
                ratios = [a / b for a, b in zip(times["fused_gkl"], times[other])]
                print(f"ratio fused_gkl / {other}: time (mean, median [q1-q3]) {spread(ratios)}", end="")
                if memory:
                    print(f", extra peak memory {memory['fused_gkl'] / memory[other]:.2f}", end="")
                print()


if __name__ == "__main__":
    main()
