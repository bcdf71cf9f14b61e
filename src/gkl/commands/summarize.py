"""``gkl summarize RUN_DIR...``: mean ± std, 95 % CI and paired differences over seeds (:mod:`gkl.study.summary`)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("summarize", help="mean ± std, 95%% CI and paired differences over seeds of finished runs")
    p.add_argument("run_dirs", nargs="+", help="run directories, or directories holding run directories")
    p.add_argument("--baseline", default=None, help="setting to take paired differences against")
    p.add_argument("--out", default=None, help="also write summary.md/.csv/.json into this directory")
    return p


def run(args: argparse.Namespace) -> int:
    from gkl.study.summary import format_markdown, summarize, write_summary

    summary = summarize(args.run_dirs, baseline=args.baseline)
    print(format_markdown(summary))
    if args.out:
        paths = write_summary(summary, Path(args.out))
        print(f"written: {', '.join(str(p) for p in paths.values())}")
    return 0
