"""``gkl check``: the KL/DKL gradient identity (Theorem 1) and the GKL terms on random logits, printed."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return sub.add_parser(
        "check",
        help="print the KL/DKL gradient identity and GKL terms on random logits",
        description="Check on random logits, in float64, that KL and DKL give the same gradients (the GKL "
        "paper's Theorem 1) and print the wMSE and soft-label cross-entropy terms of GKL next to KL; no "
        "data, no training, a few seconds.",
    )


def run(args: argparse.Namespace) -> int:
    from gkl.study.analysis.equivalence import equivalence_report

    print(equivalence_report())
    return 0
