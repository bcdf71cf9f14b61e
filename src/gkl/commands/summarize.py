"""``gkl summarize RUN_DIR...``: mean ± std, 95 % CI and paired differences over seeds (:mod:`gkl.study.summary`)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "summarize",
        help="mean ± std, 95%% CI and paired differences over seeds of finished runs",
        description="Group finished runs into settings (same config but the seed) and print, per setting and "
        "metric, mean ± sample std [95 % t-interval] over seeds, every seed's value and, with --baseline, the "
        "paired difference to the baseline setting. Rows carry the setting names of the study that made the runs "
        "(the study.json gkl sweep writes next to them; else the run name without its seed) in the study's order; "
        "settings with published numbers (a study's paper:) get a table paper | ours (mean ± std, n seeds) | Δ "
        "(docs/study.md).",
    )
    p.add_argument(
        "run_dirs", nargs="+", help="run directories, or directories holding run directories (a sweep's out_dir)"
    )
    p.add_argument(
        "--baseline", default=None, help="setting (row label) to take paired differences against (default: none)"
    )
    p.add_argument(
        "--out", default=None, help="also write summary.md/.csv/.json into this directory (default: print only)"
    )
    return p


def run(args: argparse.Namespace) -> int:
    from gkl.study.summary import format_markdown, summarize, write_summary

    summary = summarize(args.run_dirs, baseline=args.baseline)
    print(format_markdown(summary))
    if args.out:
        paths = write_summary(summary, Path(args.out))
        print(f"written: {', '.join(str(p) for p in paths.values())}")
    return 0
