"""``gkl sweep STUDY``: run a study file (named settings x seeds, teacher chains), resumable, then summarise it
(:mod:`gkl.study`)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "sweep",
        help="run a study file: named settings x seeds, resumable, then a summary",
        description="Run every (setting, seed) of a study file that has not finished, then write "
        "summary.md/.csv/.json and plots into the study's out_dir.",
    )
    p.add_argument("study", help="study YAML (see docs/study.md)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (local processes or submitit jobs)")
    p.add_argument("--launcher", default="local", choices=("local", "slurm", "submitit-local"))
    p.add_argument("--partition", default=None, help="Slurm partition (--launcher slurm)")
    p.add_argument("--gpus-per-run", type=int, default=0, help="GPUs per Slurm job; > 1 runs torchrun inside")
    p.add_argument("--out", default=None, help="output directory (default: the study's out_dir)")
    p.add_argument("--dry-run", action="store_true", help="check the study and print the runs' commands")
    return p


def run(args: argparse.Namespace) -> int:
    from gkl.study import run_sweep

    args.resume_hint = "finished runs are kept; run the same gkl sweep command again to continue the others"

    result = run_sweep(
        args.study,
        jobs=args.jobs,
        launcher=args.launcher,
        out_dir=args.out,
        partition=args.partition,
        gpus_per_run=args.gpus_per_run,
        dry_run=args.dry_run,
    )
    if args.dry_run:
        for command in result["commands"]:
            print(" ".join(command))
        return 0
    if result.get("table"):
        print(result["table"])
    print(
        f"\ntrained {len(result['trained'])}, reused {len(result['reused'])}, failed {len(result['failed'])}, "
        f"blocked {len(result['blocked'])}; outputs in {result['out_dir']}/"
    )
    for name, why in result["failed"].items():
        print(f"failed: {name}: {why}")
    return 1 if result["failed"] or result["blocked"] else 0
