"""Speed and peak memory of gkl_loss against kl_div and the naive pairwise O(C^2) form.

Run:  .venv/bin/python benchmarks/losses.py [--repeats 15] [--skip-memory] [--cases 64x100,...]
          [--threads N] [--rounds 21] [--compile-backend inductor|aot_eager|none] [--only-modes] [--quick]

Table 1 (the one below): gkl_loss (sample-wise weights, γ = 1) against kl_div and the pairwise form.

Table 2, weight modes: gkl_loss / kl_div time ratios, eager and torch.compile'd (fullgraph,
``--compile-backend``, compiled gkl against compiled kl), for class-wise weights given as a
tensor (rows of a class prior picked by random labels) and sample-wise weights, γ = 1 and 0.5.
Each round times kl_div and then every gkl variant (forward + backward w.r.t. both inputs;
each timing is the fastest of 3 back-to-back batches of calls lasting ~2 ms each, since load
from other processes only ever adds time), so a round's ratios see the same machine load; the table gives the
median ratio over ``--rounds`` rounds and its spread as the
interquartile range [q1, q3]. The losses run at their default settings (value checks on,
i.e. one host sync per call each; skipped when compiled). ``--quick``: 3 small cases, 15
rounds, no memory, one pairwise repeat (a sanity run, not a measurement).

Time: forward + backward w.r.t. both inputs (float32, on ``--device``: CPU by default; on CUDA
each time is read after ``torch.cuda.synchronize()`` and the peak-memory columns are left out), median of ``repeats``
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
from collections.abc import Callable

import torch

from _proc import add_device_option, checked_device, clock, status_kib
from gkl.losses import gkl_loss, kl_div

CASES: list[tuple[int, ...]] = [(64, 100), (512, 100), (256, 1000), (8, 150, 64, 64)]
MODE_CASES: list[tuple[int, ...]] = [(64, 100), (512, 100), (256, 1000), (4096, 1000), (8, 19, 64, 64)]
QUICK_CASES: list[tuple[int, ...]] = [(64, 100), (512, 100), (256, 1000)]
VARIANTS = [("class", 1.0), ("class", 0.5), ("sample", 1.0), ("sample", 0.5)]
PAIRWISE_CHUNK_ELEMENTS = 1 << 24
#: where the losses run (--device); times are read after the device finished (clock)
DEVICE = torch.device("cpu")


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
        mse, ce, _ = pairwise_gkl_sum(o_n[start : start + rows], o_m[start : start + rows])
        (mse / mass + ce / n).backward()


def run_gkl(o_n: torch.Tensor, o_m: torch.Tensor) -> None:
    gkl_loss(o_n, o_m, gamma=1.0).backward()


def run_kl(o_n: torch.Tensor, o_m: torch.Tensor) -> None:
    kl_div(o_n, o_m).backward()


METHODS: dict[str, Callable[[torch.Tensor, torch.Tensor], None]] = {
    "kl_div": run_kl,
    "gkl_loss": run_gkl,
    "pairwise": run_pairwise,
}


def make_inputs(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    o_n = (3 * torch.randn(*shape, generator=g)).to(DEVICE).requires_grad_()
    o_m = (3 * torch.randn(*shape, generator=g)).to(DEVICE).requires_grad_()
    return o_n, o_m


def skipped(method: str, shape: tuple[int, ...]) -> bool:
    return method == "pairwise" and len(shape) > 2


def median_times(
    methods: dict[str, Callable[[torch.Tensor, torch.Tensor], None]], o_n: torch.Tensor, o_m: torch.Tensor, repeats: int
) -> dict[str, list[float]]:
    """Seconds per fwd+bwd for each repeat; methods run round-robin so load drift hits all alike."""
    for fn in methods.values():
        for _ in range(3 if len(methods) > 1 or repeats > 3 else 1):
            fn(o_n, o_m)
            o_n.grad = o_m.grad = None
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = clock(DEVICE)
            fn(o_n, o_m)
            times[name].append(clock(DEVICE) - start)
            o_n.grad = o_m.grad = None
    return times


def class_weights(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    """Class-wise weights as a tensor of the logits' shape: rows of a class prior at random labels."""
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    prior = torch.softmax(2 * torch.randn(c, c, generator=g), dim=1)
    labels = torch.randint(0, c, (shape[0], *shape[2:]), generator=g)
    return prior[labels].movedim(-1, 1).contiguous().to(DEVICE)


def loss_variants(backend: str | None) -> dict[str, Callable[..., torch.Tensor]]:
    """kl_div and the four gkl variants, as functions of (o_n, o_m, class weights); compiled if ``backend``."""

    def kl(o_n: torch.Tensor, o_m: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return kl_div(o_n, o_m)

    def gkl(mode: str, gamma: float) -> Callable[..., torch.Tensor]:
        def loss(o_n: torch.Tensor, o_m: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return gkl_loss(o_n, o_m, weights=w if mode == "class" else None, gamma=gamma)

        return loss

    fns = {"kl": kl, **{f"{mode} γ={gamma:g}": gkl(mode, gamma) for mode, gamma in VARIANTS}}
    if backend is None:
        return fns
    return {name: torch.compile(fn, fullgraph=True, dynamic=False, backend=backend) for name, fn in fns.items()}


def paired_ratios(
    fns: dict[str, Callable[..., torch.Tensor]], shape: tuple[int, ...], rounds: int
) -> tuple[float, dict[str, list[float]]]:
    """kl's median ms per call and, for every other function, the per-round time ratios to kl."""
    o_n, o_m = make_inputs(shape)
    w = class_weights(shape)

    def run(fn: Callable[..., torch.Tensor], calls: int) -> float:
        start = clock(DEVICE)
        for _ in range(calls):
            fn(o_n, o_m, w).backward()
            o_n.grad = o_m.grad = None
        return (clock(DEVICE) - start) / calls

    for fn in fns.values():  # warm-up (and compilation)
        run(fn, 3)
    calls = max(1, min(200, int(2e-3 / min(run(fns["kl"], 3) for _ in range(3)))))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():  # the fastest of 3 batches: preemption by other processes only adds time
            times[name].append(min(run(fn, calls) for _ in range(3)))
    ratios = {name: [t / k for t, k in zip(ts, times["kl"])] for name, ts in times.items() if name != "kl"}
    return statistics.median(times["kl"]) * 1e3, ratios


def spread(values: list[float]) -> str:
    """median [q1, q3]."""
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return f"{median:5.2f} [{q1:4.2f}-{q3:4.2f}]"


def weight_mode_table(cases: list[tuple[int, ...]], rounds: int, backend: str | None) -> None:
    names = [f"{mode} γ={gamma:g}" for mode, gamma in VARIANTS]
    print(
        f"\ngkl/kl time ratio by weight mode: median [q1-q3] of {rounds} paired, interleaved rounds "
        f"(fwd+bwd, value checks at their default)"
    )
    header = f"{'':9}{'shape':>16} | {'kl ms':>7} | " + " | ".join(f"{n:>17}" for n in names)
    print(header)
    print("-" * len(header))
    for label, compiled in (("eager", None), ("compiled", backend)):
        if label == "compiled" and backend is None:
            continue
        for shape in cases:
            torch._dynamo.reset()  # static shapes: one compilation per (function, shape)
            kl_ms, ratios = paired_ratios(loss_variants(compiled), shape, rounds)
            print(
                f"{label:9}{str(shape):>16} | {kl_ms:7.3f} | " + " | ".join(f"{spread(ratios[n]):>17}" for n in names),
                flush=True,
            )
    if backend is not None:
        print(
            f"compiled: torch.compile(fullgraph=True, dynamic=False, backend={backend!r}); the ratio is "
            "compiled gkl / compiled kl."
        )
    print("targets: eager gkl/kl <= 1.15 (class- and sample-wise, γ = 1); compiled gkl/kl <= 1.05.")


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
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", method, ",".join(map(str, shape))],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["delta_bytes"] / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--pairwise-repeats", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--cases", default=None, help="shapes to run instead of the default ones, e.g. 64x100,8x150x64x64"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--rounds", type=int, default=21, help="paired rounds of the weight-mode table")
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend of the weight-mode table, or 'none' for eager only",
    )
    parser.add_argument("--only-modes", action="store_true", help="only the weight-mode table")
    parser.add_argument("--quick", action="store_true", help="3 small cases, 15 rounds, no memory, one pairwise repeat")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    add_device_option(parser)
    args = parser.parse_args()
    global DEVICE
    DEVICE = checked_device(args.device)
    if DEVICE.type != "cpu":  # peak memory is read from this process's RSS: a CPU measurement
        args.skip_memory = True
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.skip_memory, args.pairwise_repeats, args.rounds = True, 1, min(args.rounds, 15)
        args.repeats = min(args.repeats, 5)
    given = None if args.cases is None else [tuple(int(x) for x in c.split("x")) for c in args.cases.split(",")]
    cases = given or (QUICK_CASES if args.quick else CASES)
    mode_cases = given or (QUICK_CASES if args.quick else MODE_CASES)
    backend = None if args.compile_backend == "none" else args.compile_backend
    if args.child:
        peak_memory_child(args.child[0], tuple(int(x) for x in args.child[1].split(",")))
        return

    if args.only_modes:
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float32 {DEVICE}")
        weight_mode_table(mode_cases, args.rounds, backend)
        return
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, float32 {DEVICE}, "
        f"fwd+bwd median of {args.repeats} (pairwise {args.pairwise_repeats}), interleaved, after warm-up"
    )
    header = (
        f"{'shape':>18} | {'kl_div ms':>9} {'gkl ms':>9} {'pair ms':>9} | {'gkl/kl':>7} "
        f"{'pair/gkl':>8} | {'kl MB':>8} {'gkl MB':>8} {'pair MB':>8} | {'memgkl/kl':>9}"
    )
    print(header)
    print("-" * len(header))
    for shape in cases:
        o_n, o_m = make_inputs(shape)
        raw = median_times({m: METHODS[m] for m in ("kl_div", "gkl_loss")}, o_n, o_m, args.repeats)
        times = {m: statistics.median(t) * 1e3 for m, t in raw.items()}
        # ratio of each round's gkl time to the kl time measured right before it, then the median:
        # robust when other processes load the machine
        paired = statistics.median(g / k for g, k in zip(raw["gkl_loss"], raw["kl_div"]))
        times["pairwise"] = (
            float("nan")
            if skipped("pairwise", shape)
            else statistics.median(
                median_times({"pairwise": run_pairwise}, o_n, o_m, args.pairwise_repeats)["pairwise"]
            )
            * 1e3
        )
        del o_n, o_m
        if args.skip_memory:
            mem = {m: float("nan") for m in METHODS}
        else:
            mem = {m: (float("nan") if skipped(m, shape) else peak_memory(m, shape)) for m in METHODS}
        print(
            f"{str(shape):>18} | {times['kl_div']:9.2f} {times['gkl_loss']:9.2f} {times['pairwise']:9.2f} | "
            f"{paired:7.2f} {times['pairwise'] / times['gkl_loss']:8.1f} | "
            f"{mem['kl_div']:8.1f} {mem['gkl_loss']:8.1f} {mem['pairwise']:8.1f} | "
            f"{mem['gkl_loss'] / max(mem['kl_div'], 1e-9):9.2f}"
        )
    print(
        "pairwise: skipped for the dense case (N*H*W x C x C = 7.4e8 entries per tensor); "
        f"chunked above {PAIRWISE_CHUNK_ELEMENTS} pairwise entries per chunk."
    )
    print("gkl/kl: median over rounds of the paired ratio (each round runs kl_div then gkl_loss).")
    print("targets: gkl/kl <= 1.5 at (512,100) and (256,1000); pair/gkl >= 20 at (256,1000); dense memgkl/kl <= 4.")
    weight_mode_table(mode_cases, args.rounds, backend)


if __name__ == "__main__":
    main()
