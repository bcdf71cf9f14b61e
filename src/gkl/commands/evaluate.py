"""``gkl evaluate RUN_DIR``: evaluate a run's last and/or best checkpoint with its task's evaluation.

Every evaluation is appended to ``RUN_DIR/evaluations.jsonl`` (never overwritten); the evaluation
itself is :func:`gkl.evaluate.run_eval.evaluate_run` (the run's task evaluates it).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

from gkl.commands.args import positive_int
from gkl.utils.errors import InputError

__all__ = ["add_parser", "parse_eps", "run"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    ev = sub.add_parser(
        "evaluate",
        help="evaluate a run directory (last and best epoch) with its task's evaluation",
        description="Evaluate the last and/or best checkpoint of a run directory of any kind with its task's "
        "evaluation (top-1 / top-5, mIoU, zero-shot / retrieval; --robust adds PGD / CW / AutoAttack for "
        "classifiers); every evaluation is appended to RUN_DIR/evaluations.jsonl (never overwritten)",
    )
    ev.add_argument("run_dir", help="a run directory written by gkl fit or any run verb (<out_dir>/<name>)")
    ev.add_argument("overrides", nargs="*", help="key=value overrides of the run's config (e.g. data.root=...)")
    ev.add_argument(
        "--weights",
        choices=("raw", "ema"),
        default=None,
        help="evaluate the raw or the averaged weights (default: what the run evaluated)",
    )
    ev.add_argument("--robust", action="store_true", help="also attack the model (classifier runs; inputs in [0, 1])")
    ev.add_argument("--eps", default="8/255", help="with --robust: comma-separated radii (of --norm), e.g. 2/255,8/255")
    ev.add_argument(
        "--norm", default="linf", choices=("linf", "l2"), help="with --robust: the threat model's norm (default: linf)"
    )
    ev.add_argument(
        "--attacks",
        default="pgd10,pgd20,cw10,cw20,autoattack",
        help="with --robust: comma-separated attacks, pgd<steps> (CE), cw<steps> (CW margin) or autoattack",
    )
    ev.add_argument(
        "--autoattack-version",
        default="standard",
        choices=("standard", "fast"),
        help="standard: APGD-CE, APGD-T, FAB-T, Square; fast: APGD-CE + APGD-T",
    )
    ev.add_argument(
        "--num-examples",
        type=positive_int,
        default=None,
        help="with --robust: attack N test examples (default: the full test set)",
    )
    ev.add_argument("--which", default="last,best", help="checkpoints to evaluate: last, best or last,best")
    ev.add_argument(
        "--dataset",
        choices=("imagenet_r", "imagenet_sketch"),
        default=None,
        help="evaluate an ImageNet-1k classifier on ImageNet-R (its 200 classes) or ImageNet-Sketch "
        "instead of the run's test set (needs --data-root; default: the run's own test set)",
    )
    ev.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="folder of the --dataset images: imagenet-r/<wnid>/*.jpg or sketch/<wnid>/*.JPEG, or that folder itself",
    )
    ev.add_argument(
        "--output",
        default=None,
        help="also write this evaluation as a JSON file at this new path (an existing file is never "
        "overwritten; default: only RUN_DIR/evaluations.jsonl)",
    )
    return ev


def parse_eps(text: str) -> list[float]:
    """``--eps``: comma-separated numbers or fractions such as 8/255."""
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            num, _, den = part.partition("/")
            values.append(float(num) / float(den) if den else float(num))
        except (ValueError, ZeroDivisionError):
            raise InputError(f"--eps item {part!r} is not a number or a fraction like 8/255") from None
    return values


def run(args: argparse.Namespace) -> int:
    """Evaluate, append to RUN_DIR/evaluations.jsonl (and ``--output``), print the table."""
    from gkl.evaluate.run_eval import EVALUATIONS_FILE, append_evaluation, check_writable, evaluate_run, save_fallback

    run_dir = Path(args.run_dir)
    which = tuple(w.strip() for w in args.which.split(",") if w.strip())
    robust = None
    if args.robust:
        robust = {
            "eps_list": parse_eps(args.eps),
            "attacks": tuple(a.strip() for a in args.attacks.split(",") if a.strip()),
            "autoattack_version": args.autoattack_version,
            "num_examples": args.num_examples,
            "norm": args.norm,
        }
    shifted = None
    if args.dataset is not None or args.data_root is not None:
        if args.dataset is None or args.data_root is None:
            raise InputError("--dataset and --data-root: give both (e.g. --dataset imagenet_r --data-root /data)")
        shifted = (args.dataset, args.data_root)
    # every output is checked before the (possibly hours long) evaluation starts
    if run_dir.is_dir():
        check_writable(run_dir / EVALUATIONS_FILE)
    output = Path(args.output) if args.output else None
    if output is not None:
        if output.exists() or output.is_symlink():
            raise InputError(
                f"--output {output} already exists; evaluations are never overwritten "
                "(choose a new path, or read RUN_DIR/evaluations.jsonl)"
            )
        check_writable(output)
    report, table = evaluate_run(
        run_dir, overrides=args.overrides, which=which, weights=args.weights, robust=robust, shifted=shifted
    )
    report = {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": ["gkl", *(sys.argv[1:] if args.argv is None else args.argv)],
        **report,
    }
    print(table)
    failures = []
    try:
        path = append_evaluation(run_dir, report)
        print(f"evaluation appended to {path}")
    except OSError as err:
        failures.append(f"{run_dir / EVALUATIONS_FILE}: {err.strerror or err}")
    if output is not None:
        try:
            with output.open("x") as handle:
                json.dump(report, handle, indent=2, default=str)
            print(f"report written to {output}")
        except OSError as err:
            failures.append(f"{output}: {err.strerror or err}")
    if failures:  # the evaluation is done: keep its result whatever happens to the files
        print(json.dumps(report, indent=2, default=str))
        fallback = save_fallback(report, run_dir)
        kept = f"saved to {fallback} and printed above" if fallback else "printed above"
        print(f"gkl evaluate: error: could not write {'; '.join(failures)}; the report is {kept}", file=sys.stderr)
        return 2
    return 0
