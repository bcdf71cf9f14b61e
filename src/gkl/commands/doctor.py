"""``gkl doctor [--gpu] [--device cuda|cpu]``: what this machine runs, and a one-command GPU check.

Without ``--gpu`` it prints the torch version and the CUDA devices. With ``--gpu`` it runs
:func:`gkl.doctor.run_checks` on the GPU and prints one pass / fail table (exit 1 on any failure);
without a CUDA device it says so in one line and exits 0. ``--device cpu`` runs every check that
needs no GPU on the CPU (the CUDA-only ones are skipped with the reason).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from gkl.utils.errors import InputError

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "doctor",
        help="what this machine runs; with --gpu, a few steps of every task with each GPU feature",
        description="Print the torch version and the CUDA devices. With --gpu: train a few steps of every "
        "task's bundled demo run (on small batches, each evaluation on the first batches of each split; the "
        "report's first line gives the numbers) with bf16 / fp16 autocast and the gradient scaler, channels-last, "
        "torch.compile, a fused loss against the unfused one, DDP through torchrun (SyncBN, the class "
        "prior's all-reduce), PGD and AutoAttack, checkpoint and exact resume; print one pass / fail table; "
        "exit 1 if any check fails. "
        "Without a CUDA device --gpu says so and exits 0.",
    )
    p.add_argument("--gpu", action="store_true", help="run the GPU checks")
    p.add_argument(
        "--device",
        default="cuda",
        help="where the checks run: cuda, cuda:N, or cpu (every check that needs no GPU; "
        "the CUDA-only ones are skipped with the reason)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="a new or empty directory for the check runs and doctor.log (default: a new temporary "
        "directory, removed when every check passes)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from gkl.doctor import environment, format_table, run_checks, runs_summary

    device = args.device
    if device != "cpu" and device != "cuda" and not device.startswith("cuda:"):
        raise InputError(f"--device: expected 'cuda', 'cuda:N' or 'cpu', got {device!r}")
    if device != "cpu":  # deterministic cuBLAS kernels (exact resume), before cuBLAS starts
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    line = environment()
    if not args.gpu:
        print(line)
        return 0
    import torch

    if device != "cpu" and not torch.cuda.is_available():
        print(f"gkl doctor: {line}; nothing to check on a GPU (--device cpu runs the checks that need none)")
        return 0
    if args.out is not None and Path(args.out).is_dir() and any(Path(args.out).iterdir()):
        raise InputError(f"--out {args.out}: not empty; the check runs need a new or empty directory")
    temporary = args.out is None
    out = Path(tempfile.mkdtemp(prefix="gkl-doctor-")) if temporary else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = out / "doctor.log"
    print(f"gkl doctor: {line}; checks on {device} ({runs_summary()})", flush=True)
    results = run_checks(device, out, log_file=log_file)
    print(format_table(results))
    failed = [r for r in results if r.status == "FAIL"]
    if failed:
        print(f"gkl doctor: {len(failed)} of {len(results)} checks failed; tracebacks in {log_file}, runs in {out}")
        return 1
    if temporary:
        shutil.rmtree(out, ignore_errors=True)
    return 0
