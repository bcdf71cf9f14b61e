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
    """Print the report; exit status 1 (and one line on stderr) when the gradients disagree."""
    import sys

    from gkl.study.analysis.equivalence import equivalence_check

    text, ok = equivalence_check()
    print(text)
    if not ok:
        print("gkl check: error: the KL and DKL gradients differ by >= 1e-10 (Theorem 1 fails)", file=sys.stderr)
        return 1
    return 0
