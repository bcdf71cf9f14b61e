"""CLIP distillation term: GKL (O(C) form) against the KL form and the pairwise O(C²) form.

Run:  .venv/bin/python benchmarks/clip_loss.py [--batch 4096] [--repeats 7] [--skip-memory]

What is timed: the distillation term of :class:`gkl.clip.GKLDistillClipLoss` on a global
batch of N image-text pairs, forward + backward, both directions (image→text rows and
text→image rows of the N × N similarity logits, C = N "classes" per row), from the
student's (N × N) logits to their gradient. The similarity matmuls and the contrastive
term are the same for every method and are left out. float32, CPU, one process, all
methods in this process on the same inputs, interleaved rounds after a warm-up.

* ``kl``: the KL form (OpenCLIP DistillClipLoss's soft cross-entropy, T = 8).
* ``gkl``: gkl_loss, sample-wise weights, γ = 1 (T = τ_w = 8), timed twice: as a training run
  uses it (``with gkl.losses.value_checks(False):``, which the engine sets while it trains) and
  with the library's default per-call NaN/Inf checks of both logit matrices.
* ``pairwise``: the authors'-style explicit pairwise wMSE, (C × C) entries per row.
  At N = 4096 that is 4096³ ≈ 6.9e10 entries per direction, so it is timed on a slice
  of ``--pairwise-rows`` rows of each direction (against the full logits, so each row
  costs exactly what it costs in the full loss) and multiplied by N / rows. Rows are
  independent and identical in cost, so this scaling is a proportion, not a fit; it
  is still an extrapolation from a slice and printed as such. A smaller batch
  (``--full-pairwise-batch``, default 384) is also measured whole, without scaling.

Peak memory: each method runs once in a fresh subprocess; the kernel's peak-RSS
mark is reset after the inputs exist, and VmHWM − VmRSS is reported (MB, Linux).
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
from gkl.clip import GKLDistillClipLoss
from gkl.losses import value_checks

T = 8.0
#: where the losses run (--device); times are read after the device finished (clock)
DEVICE = torch.device("cpu")
LOSSES = {
    "kl": GKLDistillClipLoss("kl", temperature=T),
    "gkl": GKLDistillClipLoss("gkl", alpha=1.0, beta=1.0, gamma=1.0, temperature=T, weight_temperature=T),
}


def make_logits(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher (N × N) similarity logits of unit-norm features (scales 50 and 100)."""
    g = torch.Generator().manual_seed(seed)
    norm = torch.nn.functional.normalize
    img, txt = norm(torch.randn(n, 64, generator=g), dim=1), norm(torch.randn(n, 64, generator=g), dim=1)
    t_img = norm(img + 0.3 * torch.randn(n, 64, generator=g), dim=1)
    t_txt = norm(txt + 0.3 * torch.randn(n, 64, generator=g), dim=1)
    return (50.0 * img @ txt.T).to(DEVICE).requires_grad_(), (100.0 * t_img @ t_txt.T).to(DEVICE)


def run_method(name: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """``gkl_nochecks``: gkl with gkl.losses' NaN/Inf content checks off (value_checks(False))."""
    loss = LOSSES[name.removesuffix("_nochecks")]
    checks = not name.endswith("_nochecks")

    def run(s: torch.Tensor, t: torch.Tensor) -> None:
        with value_checks(checks):
            ((loss.dist_loss(t, s) + loss.dist_loss(t.T, s.T)) / 2).backward()

    return run


def pairwise_rows(s: torch.Tensor, t: torch.Tensor, rows: int | None, chunk: int = 1) -> None:
    """Pairwise GKL (γ = 1, normalize="weights") of the first ``rows`` rows of each direction."""
    n = s.shape[0]
    rows = n if rows is None else rows
    with torch.no_grad():
        masses = [(torch.softmax(m / T, 1).sum(1) ** 2).sum() for m in (t, t.T)]
    for direction, (s_d, t_d) in enumerate(((s, t), (s.T, t.T))):
        for start in range(0, rows, chunk):
            o_n, o_m = s_d[start : start + chunk], t_d[start : start + chunk]
            w = torch.softmax(o_m / T, dim=1)
            phi = w[:, :, None] * w[:, None, :]
            diff = (o_m[:, :, None] - o_m[:, None, :]) - (o_n[:, :, None] - o_n[:, None, :])
            mse = 0.25 * (phi * diff * diff).sum()
            ce = -(w * torch.log_softmax(o_n / T, dim=1)).sum()
            ((mse / masses[direction] + ce / n) / 2).backward()


def median_times(
    fns: dict[str, Callable[[torch.Tensor, torch.Tensor], None]], s: torch.Tensor, t: torch.Tensor, repeats: int
) -> dict[str, list[float]]:
    for fn in fns.values():
        fn(s, t)
        s.grad = None
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = clock(DEVICE)
            fn(s, t)
            out[name].append(clock(DEVICE) - start)
            s.grad = None
    return out


def peak_memory_child(method: str, n: int) -> None:
    s, t = make_logits(n)
    torch.zeros(1).sum()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before = status_kib("VmRSS")
    if method == "pairwise":
        pairwise_rows(s, t, rows=4)
    else:
        run_method(method)(s, t)
    print(json.dumps({"delta_bytes": (status_kib("VmHWM") - before) * 1024}))


def peak_memory(method: str, n: int) -> float:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", method, str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["delta_bytes"] / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pairwise-rows", type=int, default=4)
    parser.add_argument("--full-pairwise-batch", type=int, default=384)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    add_device_option(parser)
    args = parser.parse_args()
    global DEVICE
    DEVICE = checked_device(args.device)
    if DEVICE.type != "cpu":  # peak memory is read from this process's RSS: a CPU measurement
        args.skip_memory = True
    if args.child:
        peak_memory_child(args.child[0], int(args.child[1]))
        return

    n = args.batch
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, float32 {DEVICE}; distillation term "
        f"fwd+bwd on N x N logits, both directions, T = {T}"
    )
    s, t = make_logits(n)
    raw = median_times({m: run_method(m) for m in ("kl", "gkl", "gkl_nochecks")}, s, t, args.repeats)
    kl_ms, gkl_ms, nc_ms = (statistics.median(raw[m]) * 1e3 for m in ("kl", "gkl", "gkl_nochecks"))
    paired = statistics.median(g / k for g, k in zip(raw["gkl"], raw["kl"]))
    paired_nc = statistics.median(g / k for g, k in zip(raw["gkl_nochecks"], raw["kl"]))
    rows = args.pairwise_rows
    pair_slice = statistics.median(median_times({"p": lambda a, b: pairwise_rows(a, b, rows=rows)}, s, t, 3)["p"])
    pair_ms = pair_slice * n / rows * 1e3
    print(
        f"N = {n}: kl {kl_ms:.1f} ms; gkl as a training run uses it (the engine turns gkl.losses' value "
        f"checks off): {nc_ms:.1f} ms, gkl/kl (paired median) {paired_nc:.2f}; gkl with the library's default "
        f"value checks on: {gkl_ms:.1f} ms, gkl/kl {paired:.2f}"
    )
    print(
        f"N = {n}: pairwise measured on {rows} of {n} rows per direction: {pair_slice * 1e3:.1f} ms, "
        f"scaled x{n // rows} -> {pair_ms / 1e3:.1f} s; pairwise/gkl {pair_ms / gkl_ms:.0f}x "
        f"(extrapolated from the row slice)"
    )
    del s, t

    m = args.full_pairwise_batch
    s, t = make_logits(m)
    raw = median_times({"gkl": run_method("gkl"), "pairwise": lambda a, b: pairwise_rows(a, b, None, chunk=8)}, s, t, 3)
    g_ms, p_ms = (statistics.median(raw[k]) * 1e3 for k in ("gkl", "pairwise"))
    print(
        f"N = {m} (whole batch, no scaling): gkl {g_ms:.2f} ms, pairwise {p_ms:.0f} ms, pairwise/gkl {p_ms / g_ms:.0f}x"
    )
    del s, t

    if not args.skip_memory:
        mem = {k: peak_memory(k, n) for k in ("kl", "gkl")}
        mem_pair = peak_memory("pairwise", n)
        print(
            f"N = {n} peak memory: kl {mem['kl']:.0f} MB, gkl {mem['gkl']:.0f} MB, gkl/kl "
            f"{mem['gkl'] / mem['kl']:.2f}; pairwise, ONE row at a time: {mem_pair:.0f} MB "
            f"(all rows at once would need N x N x N x 4 B = {n**3 * 4 / 2**30:.0f} GiB per tensor)"
        )
    print("targets at N = 4096: gkl/kl <= 1.3 (training configuration), pairwise/gkl >= 100, memory gkl/kl <= 1.5")


if __name__ == "__main__":
    main()
