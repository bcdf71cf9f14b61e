"""argparse front of ``gkl sweep``, ``gkl summarize`` and ``gkl analyze`` (wired into gkl.cli).

Each ``add_*`` adds a sub-command to the ``gkl`` sub-parsers; each ``run_*`` executes the
parsed arguments and returns the exit status. Bad input raises InputError (one line, exit 2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_sweep", "add_summarize", "add_analyze", "run_sweep_command", "run_summarize_command",
           "run_analyze_command"]


def add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a study file: named settings x seeds, resumable, then a summary",
                       description="Run every (setting, seed) of a study file that has not finished, then write "
                                   "summary.md/.csv/.json and plots into the study's out_dir.")
    p.add_argument("study", help="study YAML (see docs/study.md)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (local processes or submitit jobs)")
    p.add_argument("--launcher", default="local", choices=("local", "slurm", "submitit-local"))
    p.add_argument("--partition", default=None, help="Slurm partition (--launcher slurm)")
    p.add_argument("--gpus-per-run", type=int, default=0, help="GPUs per Slurm job; > 1 runs torchrun inside")
    p.add_argument("--out", default=None, help="output directory (default: the study's out_dir)")
    p.add_argument("--dry-run", action="store_true", help="check the study and print the runs' commands")


def add_summarize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summarize", help="mean ± std, 95%% CI and paired differences over seeds of finished runs")
    p.add_argument("run_dirs", nargs="+", help="run directories, or directories holding run directories")
    p.add_argument("--baseline", default=None, help="setting to take paired differences against")
    p.add_argument("--out", default=None, help="also write summary.md/.csv/.json into this directory")


def add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="class scores, margins, t-SNE and feature curves of runs (PNG + JSON)")
    kinds = p.add_subparsers(dest="analysis", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", default="analysis", help="output directory (default: ./analysis)")
    common.add_argument("--which", default="best", choices=("best", "last"), help="checkpoint of a run directory")
    scores = kinds.add_parser("scores", parents=[common], help="class-mean true-class score per class (GKL Fig. 3)")
    scores.add_argument("runs", nargs="+")
    margins = kinds.add_parser("margins", parents=[common], help="per-class margins of two runs (Eq. 14, Fig. 4c)")
    margins.add_argument("run_a")
    margins.add_argument("run_b")
    margins.add_argument("--adversarial", action="store_true")
    margins.add_argument("--eps", type=float, default=8 / 255)
    tsne = kinds.add_parser("tsne", parents=[common], help="t-SNE of penultimate features (Fig. 4a/b)")
    tsne.add_argument("run")
    tsne.add_argument("--classes", type=int, default=5)
    tsne.add_argument("--adversarial", action="store_true")
    tsne.add_argument("--eps", type=float, default=8 / 255)
    tsne.add_argument("--seed", type=int, default=0)
    features = kinds.add_parser("features", parents=[common], help="feature-statistics curves of runs")
    features.add_argument("runs", nargs="+")


def run_sweep_command(args: argparse.Namespace) -> int:
    from gkl.sweep import run_sweep

    result = run_sweep(args.study, jobs=args.jobs, launcher=args.launcher, out_dir=args.out,
                       partition=args.partition, gpus_per_run=args.gpus_per_run, dry_run=args.dry_run)
    if args.dry_run:
        for command in result["commands"]:
            print(" ".join(command))
        return 0
    if result.get("table"):
        print(result["table"])
    print(f"\ntrained {len(result['trained'])}, reused {len(result['reused'])}, failed {len(result['failed'])}, "
          f"blocked {len(result['blocked'])}; outputs in {result['out_dir']}/")
    for name, why in result["failed"].items():
        print(f"failed: {name}: {why}")
    return 1 if result["failed"] or result["blocked"] else 0


def run_summarize_command(args: argparse.Namespace) -> int:
    from gkl.evaluate.summary import format_markdown, summarize, write_summary

    summary = summarize(args.run_dirs, baseline=args.baseline)
    print(format_markdown(summary))
    if args.out:
        paths = write_summary(summary, Path(args.out))
        print(f"written: {', '.join(str(p) for p in paths.values())}")
    return 0


def run_analyze_command(args: argparse.Namespace) -> int:
    from gkl.analysis import command as A

    out = Path(args.out)
    if args.analysis == "scores":
        paths = A.analyze_scores(args.runs, out, which=args.which)
    elif args.analysis == "margins":
        paths = A.analyze_margins(args.run_a, args.run_b, out, adversarial=args.adversarial, eps=args.eps,
                                  which=args.which)
    elif args.analysis == "tsne":
        paths = A.analyze_tsne(args.run, out, classes=args.classes, adversarial=args.adversarial, eps=args.eps,
                               seed=args.seed, which=args.which)
    else:
        paths = A.analyze_features(args.runs, out)
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0
