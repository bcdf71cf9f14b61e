"""``gkl analyze scores|margins|tsne|features``: analyses of trained runs (:mod:`gkl.study.analysis`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
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
    return p


def run(args: argparse.Namespace) -> int:
    from gkl.study.analysis import run_analyses as A

    out = Path(args.out)
    if args.analysis == "scores":
        paths = A.analyze_scores(args.runs, out, which=args.which)
    elif args.analysis == "margins":
        paths = A.analyze_margins(
            args.run_a, args.run_b, out, adversarial=args.adversarial, eps=args.eps, which=args.which
        )
    elif args.analysis == "tsne":
        paths = A.analyze_tsne(
            args.run,
            out,
            classes=args.classes,
            adversarial=args.adversarial,
            eps=args.eps,
            seed=args.seed,
            which=args.which,
        )
    else:
        paths = A.analyze_features(args.runs, out)
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0
