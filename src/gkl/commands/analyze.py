"""``gkl analyze scores|margins|tsne|features``: analyses of trained runs (:mod:`gkl.study.analysis`).

What an analysis reads of a run comes from the run's task (``Task.analysis``): a classifier's logits
and penultimate features, a segmentation model's per-pixel logits and head features, a CLIP model's
image-text logits over the zero-shot class prompts and its image embeddings.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_parser", "run"]

RUN_HELP = "a run directory (its best.pt, or checkpoint.pt with --which last) or a checkpoint file inside one"
EXAMPLES = (
    "The run's task says what is analysed: images of a classifier run, labelled pixels of a segmentation "
    "run, images of a CLIP run's zero-shot set scored by the image-text logits over its class prompts"
)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    text = "class scores, margins, t-SNE and feature curves of runs (a PNG and a JSON each)"
    p = sub.add_parser("analyze", help=text, description=f"{text}. {EXAMPLES}.")
    kinds = p.add_subparsers(dest="analysis", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", default="analysis", help="output directory (default: ./analysis)")
    common.add_argument(
        "--which", default="best", choices=("best", "last"), help="checkpoint of a run directory (default: best)"
    )
    attack = argparse.ArgumentParser(add_help=False)
    attack.add_argument(
        "--adversarial",
        action="store_true",
        help="on PGD-10 adversarial examples (l∞, step ε/4): classifier runs trained on inputs in [0, 1] only",
    )
    attack.add_argument("--eps", type=float, default=8 / 255, help="the attack's ε (default: 8/255)")

    def verb(name: str, text: str, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
        return kinds.add_parser(name, parents=parents, help=text, description=text)

    scores = verb("scores", "class-mean true-class score per class of each run, sorted (GKL Fig. 3)", [common])
    scores.add_argument("runs", nargs="+", help=RUN_HELP)
    margins = verb(
        "margins",
        "per-class mean margin z_y − max z_j of two runs and their per-class difference (Eq. 14, Fig. 4c)",
        [common, attack],
    )
    margins.add_argument("run_a", help=RUN_HELP)
    margins.add_argument("run_b", help=RUN_HELP + " (the difference is b − a)")
    tsne = verb("tsne", "t-SNE of the features of a few random classes of a run (Fig. 4a/b)", [common, attack])
    tsne.add_argument("run", help=RUN_HELP)
    tsne.add_argument("--classes", type=int, default=5, help="how many classes, drawn with --seed (default: 5)")
    tsne.add_argument("--seed", type=int, default=0, help="seed of the class draw and of t-SNE (default: 0)")
    features = verb(
        "features",
        "per-epoch feature norm, logit sum and logit norm of runs trained with train.log_feature_stats=true",
        [argparse.ArgumentParser(add_help=False)],
    )
    features.add_argument("runs", nargs="+", help="run directories")
    features.add_argument("--out", default="analysis", help="output directory (default: ./analysis)")
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
