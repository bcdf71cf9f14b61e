"""The ``gkl`` command: ``train | distill | adv-train | evaluate | summarize | check | demo``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

KIND_OF_COMMAND = {"train": "train", "distill": "distill", "adv-train": "adv_train"}


def _add_run_command(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("config", help="recipe YAML (see configs/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.optim.lr=0.1 data.root=/data")
    p.add_argument("--resume", action="store_true", help="continue from <out_dir>/<name>/checkpoint.pt")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gkl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_command(sub, "train", "train a teacher or a CE baseline from a recipe")
    _add_run_command(sub, "distill", "distill a student from a frozen teacher (KD, DKD, DKL, IKL, GKL, ...)")
    _add_run_command(sub, "adv-train", "adversarial training (TRADES, GKL-AT, PGD-AT)")

    ev = sub.add_parser("evaluate", help="evaluate a run directory (last and best epoch)")
    ev.add_argument("run_dir", help="a run directory written by train/distill/adv-train")
    ev.add_argument("overrides", nargs="*", help="key=value overrides of the run's config (e.g. data.root=...)")
    ev.add_argument("--weights", choices=("raw", "ema"), default=None,
                    help="evaluate the raw or the averaged weights (default: what the run evaluated)")
    ev.add_argument("--robust", action="store_true", help="also run PGD / CW / AutoAttack")
    ev.add_argument("--eps", default="8/255", help="comma-separated epsilons, e.g. 2/255,8/255")
    ev.add_argument("--attacks", default="pgd10,pgd20,cw10,cw20,autoattack")
    ev.add_argument("--autoattack-version", default="standard", choices=("standard", "fast"))
    ev.add_argument("--num-examples", type=int, default=None, help="default: the full test set")
    ev.add_argument("--which", default="last,best", help="checkpoints to evaluate: last, best or both")
    ev.add_argument("--output", default=None, help="JSON report path (default: <run_dir>/evaluation.json)")

    summ = sub.add_parser("summarize", help="mean ± std over seeds of finished runs (last and best epoch)")
    summ.add_argument("run_dirs", nargs="+", help="run directories; runs differing only in seed form one row")

    sub.add_parser("check", help="print the KL/DKL gradient identity and GKL terms on random logits")

    demo = sub.add_parser("demo", help="the main job: teacher, then CE / KD / GKL students on bundled data")
    demo.add_argument("--out", default="runs/demo", help="output directory")
    demo.add_argument("--seeds", type=int, default=5, help="student seeds per method")
    demo.add_argument("--quick", action="store_true", help="a much shorter run (tests use it)")
    return parser


def _parse_eps(text: str) -> list[float]:
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            num, _, den = part.partition("/")
            values.append(float(num) / float(den) if den else float(num))
        except ValueError:
            raise SystemExit(f"gkl evaluate: --eps item {part!r} is not a number or a fraction like 8/255")
    return values


def _run(args: argparse.Namespace) -> int:
    from gkl.config import load_config, to_dict

    cfg = load_config(args.config, args.overrides)
    expected = KIND_OF_COMMAND[args.command]
    if cfg.kind != expected:
        raise SystemExit(f"gkl {args.command}: {args.config} is a '{cfg.kind}' config; use "
                         f"'gkl {[k for k, v in KIND_OF_COMMAND.items() if v == cfg.kind][0]}'")
    if args.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
    from gkl.runner import run_experiment

    summary = run_experiment(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 reports
        print(json.dumps(summary, indent=2, default=str))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from gkl.evaluate.run_eval import evaluate_run

    which = tuple(w.strip() for w in args.which.split(",") if w.strip())
    robust = None
    if args.robust:
        robust = {
            "eps_list": _parse_eps(args.eps),
            "attacks": tuple(a.strip() for a in args.attacks.split(",") if a.strip()),
            "autoattack_version": args.autoattack_version,
            "num_examples": args.num_examples,
        }
    report, table = evaluate_run(Path(args.run_dir), overrides=args.overrides, which=which,
                                 weights=args.weights, robust=robust)
    out = Path(args.output) if args.output else Path(args.run_dir) / "evaluation.json"
    out.write_text(json.dumps(report, indent=2))
    print(table)
    print(f"report written to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    from gkl.config_schema import ConfigError
    from gkl.engine import NonFiniteLossError

    try:
        if args.command in KIND_OF_COMMAND:
            return _run(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "summarize":
            from gkl.evaluate.summary import summarize_runs

            print(summarize_runs([Path(p) for p in args.run_dirs])[1])
            return 0
        if args.command == "check":
            from gkl.analysis.equivalence import equivalence_report

            print(equivalence_report())
            return 0
        if args.command == "demo":
            from gkl.demo import run_demo

            print(run_demo(out_dir=Path(args.out), num_seeds=args.seeds, quick=args.quick))
            return 0
    except (ConfigError, FileNotFoundError, ValueError) as err:
        # bad input: a clear message, no traceback (GKL_DEBUG=1 shows it)
        if os.environ.get("GKL_DEBUG") == "1":
            raise
        print(f"gkl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"gkl {args.command}: training stopped: {err}", file=sys.stderr)
        return 3
    return 1


if __name__ == "__main__":
    sys.exit(main())
