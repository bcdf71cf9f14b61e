"""``gkl check``: the KL/DKL gradient identity (Theorem 1) and the GKL terms on random logits, printed."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return sub.add_parser("check", help="print the KL/DKL gradient identity and GKL terms on random logits")


def run(args: argparse.Namespace) -> int:
    from gkl.study.analysis.equivalence import equivalence_report

    print(equivalence_report())
    return 0
