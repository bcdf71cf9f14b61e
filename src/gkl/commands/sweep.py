"""``gkl sweep STUDY``: run a study file (named settings x seeds, teacher chains), resumable, then summarise it
(:mod:`gkl.study`). ``--only`` / ``--seeds`` / ``key=value`` shrink or change the study from the command line."""

from __future__ import annotations

import argparse
import shlex

from gkl.commands.args import positive_int

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "sweep",
        help="run a study file: named settings x seeds, resumable, then a summary",
        description="Run every (setting, seed) of a study file that has not finished, then write "
        "summary.md/.csv/.json and plots into the study's out_dir (docs/study.md). A sweep shows runs "
        "done / total, failures, the time left and each run's epoch on stderr; Ctrl-C stops it and its runs, "
        "each keeping its last checkpoint, and running the same command again continues. With --only, --seeds "
        "or key=value overrides the runs go to a folder of their own, <out_dir>--only-A+B--seeds-0+1--set-<hash>, "
        "so a shrunk study never mixes with the full one.",
    )
    p.add_argument("study", help="study YAML, or a shipped study's name (gkl recipes list studies)")
    p.add_argument(
        "overrides",
        nargs="*",
        default=[],
        help="key=value overrides applied to every run after the study's own, e.g. train.epochs=2 (default: none)",
    )
    p.add_argument(
        "--only",
        default=None,
        metavar="NAME[,NAME...]",
        help="run only these settings and the teachers they depend on (default: every setting)",
    )
    p.add_argument(
        "--seeds",
        default=None,
        metavar="N|a,b,c",
        help="seeds 0..N-1, or these seeds, instead of the study's 'seeds:' (a setting that fixes its own "
        "seeds, e.g. a shared teacher's [0], keeps them) (default: the study's)",
    )
    p.add_argument(
        "--jobs", type=positive_int, default=1, help="runs at a time (local processes or submitit jobs) (default: 1)"
    )
    p.add_argument(
        "--launcher",
        default="local",
        choices=("local", "inline", "slurm", "submitit-local"),
        help="local: child processes; inline: each run in this process, one after another (for debugging a "
        "run, or many short runs; no process isolation: a crash of a run's native code ends the sweep); slurm: "
        "one Slurm job per run through submitit (pip install 'gkl[slurm]'); submitit-local: the same jobs "
        "through submitit's local executor (default: local)",
    )
    p.add_argument("--partition", default=None, help="Slurm partition (--launcher slurm) (default: the cluster's)")
    p.add_argument(
        "--gpus-per-run", type=int, default=0, help="GPUs per Slurm job; > 1 runs torchrun inside (default: 0)"
    )
    p.add_argument(
        "--out",
        default=None,
        help="output directory (default: the study's out_dir, or its own folder for --only / --seeds / overrides)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the study and list its runs with their commands and estimated GPU-hours; run nothing "
        "(default: run)",
    )
    return p


def _continue_command(args: argparse.Namespace) -> str:
    argv = getattr(args, "argv", None)
    if argv is None:
        import sys

        argv = sys.argv[1:]
    return shlex.join(["gkl", *[a for a in argv if a != "--dry-run"]])


def _interrupted_hint(args: argparse.Namespace, result: dict | None) -> str:
    """The stop line's tail: which runs finished, which were stopped, and the command that continues."""
    if result is None:  # before the runs (checking the study) or after them (the summary)
        return f"finished runs are kept; continue with: {_continue_command(args)}"
    finished = result.get("finished", [])
    said = f"finished {len(finished)} of {len(result['runs'])} runs"
    said += f" ({', '.join(finished)})" if finished else ""
    if result.get("stopped"):
        said += f"; stopped {', '.join(result['stopped'])} (each keeps its last checkpoint)"
    return f"{said} in {result['out_dir']}; continue with: {_continue_command(args)}"


def _print_plan(result: dict) -> None:
    from gkl.study.cost import GPU

    plan = result["plan"]
    known = [row["gpu_hours"] for row in plan if row["gpu_hours"] is not None]
    total = f"{sum(known):.3g} GPU-h" + (" (runs with an estimate)" if len(known) < len(plan) else "")
    print(f"# {len(plan)} runs into {result['out_dir']}; estimated {total} on {GPU} (docs/study.md)")
    width = max(len(row["name"]) for row in plan)
    for row in plan:
        done = "  (finished)" if row["finished"] else ""
        print(f"{row['name']:<{width}}  {row['cost']:<12}  {shlex.join(row['command'])}{done}")
        if row.get("evaluate"):  # the study's evaluate: block, run after the run has finished
            recorded = "  (recorded)" if row["evaluated"] else ""
            print(f"{'':<{width}}  {'then':<12}  {shlex.join(row['evaluate'])}{recorded}")


def run(args: argparse.Namespace) -> int:
    from gkl.study import run_sweep
    from gkl.study.subset import describe_subset, parse_only, parse_seeds

    only, seeds = parse_only(args.only), parse_seeds(args.seeds)
    args.resume_hint = _interrupted_hint(args, None)
    launcher = args.launcher
    if launcher == "inline":  # each run through the gkl command's own entry, here
        from gkl.cli import main
        from gkl.study.inline import InlineLauncher

        launcher = InlineLauncher(main)
    try:
        result = run_sweep(
            args.study,
            jobs=args.jobs,
            launcher=launcher,
            out_dir=args.out,
            only=only,
            seeds=seeds,
            overrides=args.overrides,
            partition=args.partition,
            gpus_per_run=args.gpus_per_run,
            dry_run=args.dry_run,
        )
    except KeyboardInterrupt as err:  # Ctrl-C / SIGTERM: gkl.cli prints the one line with this hint
        args.resume_hint = _interrupted_hint(args, getattr(err, "sweep_result", None))
        raise
    if args.dry_run:
        if result["subset"]:
            print(f"# {describe_subset(result['subset'])}")
        _print_plan(result)
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
