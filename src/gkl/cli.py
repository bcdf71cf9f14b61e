"""The gkl command: train | distill | adv-train | ssl-train | seg-train | clip-train | clip-distill | evaluate | summarize | sweep | analyze | check | demo.

Exit status: 0 done; 2 bad input (a config key, a file, an argument: one line naming it);
3 training stopped (non-finite loss or collapse: the engine's message, the last good
checkpoint is kept); anything else is a bug in gkl and prints its traceback.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import errno
import json
import logging
import os
import sys
from pathlib import Path

from gkl.utils.errors import InputError

KIND_OF_COMMAND = {"train": "train", "distill": "distill", "adv-train": "adv_train", "ssl-train": "ssl",
                   "seg-train": "segmentation", "clip-train": "clip_train", "clip-distill": "clip_distill"}
#: commands whose key=value overrides may appear anywhere among the options
INTERMIXED_COMMANDS = (*KIND_OF_COMMAND, "evaluate")
DESCRIPTION = (
    "gkl: the Decoupled / Improved / Generalized KL losses for knowledge distillation and adversarial "
    "training. Commands: train, distill, adv-train, ssl-train, seg-train, clip-train, clip-distill, evaluate, summarize, sweep, analyze, check, demo.\n\n"
    "Exit status: 0 done; 2 bad input (one line naming the config key, file or argument); "
    "3 training stopped (non-finite loss or collapse; the last good checkpoint is kept); "
    "any other failure is a bug in gkl and prints a traceback (GKL_DEBUG=1 shows it for input errors too)."
)
#: OS conditions reported as one line (the message names the file) rather than as a bug
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class _Parser(argparse.ArgumentParser):
    """argparse with the gkl error contract: a usage error is one line ``gkl <cmd>: error: ...``, exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _stop_errors() -> tuple[type[BaseException], ...]:
    """The engine's "training stopped" exceptions (exit 3)."""
    from gkl.engine.errors import CollapseError, NonFiniteLossError, TrainingStopped

    return (TrainingStopped, NonFiniteLossError, CollapseError)


def _add_run_command(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("config", help="recipe YAML (see configs/ and docs/recipes.md)")
    p.add_argument("overrides", nargs="*",
                   help="key=value overrides anywhere on the line, e.g. train.optim.lr=0.1 data.root=/data")
    p.add_argument("--resume", action="store_true", help="continue from <out_dir>/<name>/checkpoint.pt")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and the sub-parsers by command name."""
    parser = _Parser(prog="gkl", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    subs = {
        "train": _add_run_command(sub, "train", "train a teacher or a CE baseline from a recipe"),
        "distill": _add_run_command(sub, "distill",
                                    "distill a student from a frozen teacher (KD, DKD, DKL, IKL, GKL, ...)"),
        "adv-train": _add_run_command(sub, "adv-train", "adversarial training (TRADES, GKL-AT, PGD-AT)"),
        "ssl-train": _add_run_command(sub, "ssl-train",
                                      "semi-supervised training (FixMatch, Mean-Teacher; CE/KL/MSE/GKL consistency)"),
        "seg-train": _add_run_command(sub, "seg-train", "semantic segmentation: CE, or distillation with "
                                      "pixel-wise KL/GKL, CWD, APD (docs/segmentation.md)"),
        "clip-train": _add_run_command(sub, "clip-train", "train an OpenCLIP model with the contrastive loss"),
        "clip-distill": _add_run_command(sub, "clip-distill",
                                         "distill an OpenCLIP student from a frozen CLIP teacher (KL, GKL, IKL, DKL)"),
    }

    ev = sub.add_parser("evaluate", help="evaluate a run directory (last and best epoch)",
                        description="evaluate a run directory; every evaluation is appended to "
                                    "RUN_DIR/evaluations.jsonl (never overwritten)")
    ev.add_argument("run_dir", help="a run directory written by train/distill/adv-train")
    ev.add_argument("overrides", nargs="*", help="key=value overrides of the run's config (e.g. data.root=...)")
    ev.add_argument("--weights", choices=("raw", "ema"), default=None,
                    help="evaluate the raw or the averaged weights (default: what the run evaluated)")
    ev.add_argument("--robust", action="store_true", help="also run PGD / CW / AutoAttack")
    ev.add_argument("--eps", default="8/255", help="comma-separated epsilons, e.g. 2/255,8/255")
    ev.add_argument("--attacks", default="pgd10,pgd20,cw10,cw20,autoattack")
    ev.add_argument("--autoattack-version", default="standard", choices=("standard", "fast"))
    ev.add_argument("--num-examples", type=_positive_int, default=None, help="default: the full test set")
    ev.add_argument("--which", default="last,best", help="checkpoints to evaluate: last, best or both")
    ev.add_argument("--output", default=None,
                    help="also write this evaluation as a JSON file at this new path (an existing file is "
                         "never overwritten)")
    subs["evaluate"] = ev

    from gkl.sweep.commands import add_analyze, add_summarize, add_sweep

    for add in (add_sweep, add_summarize, add_analyze):
        add(sub)
    subs.update({name: sub.choices[name] for name in ("sweep", "summarize", "analyze")})

    subs["check"] = sub.add_parser("check", help="print the KL/DKL gradient identity and GKL terms on random logits")

    demo = sub.add_parser("demo", help="the main job: teacher, then CE / KD / GKL students on bundled data")
    demo.add_argument("--out", default="runs/demo", help="output directory")
    demo.add_argument("--seeds", type=_positive_int, default=5, help="student seeds per method (>= 1)")
    demo.add_argument("--quick", action="store_true", help="a much shorter run (tests use it)")
    subs["demo"] = demo
    return parser, subs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; for the commands with overrides, options and ``key=value`` may interleave."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, subs = build_parser()
    if argv and argv[0] in INTERMIXED_COMMANDS:
        args = subs[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)


def _parse_eps(text: str) -> list[float]:
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            num, _, den = part.partition("/")
            values.append(float(num) / float(den) if den else float(num))
        except (ValueError, ZeroDivisionError):
            raise InputError(f"--eps item {part!r} is not a number or a fraction like 8/255") from None
    return values


def _run(args: argparse.Namespace) -> int:
    from gkl.config import load_config, to_dict

    cfg = load_config(args.config, args.overrides)
    expected = KIND_OF_COMMAND[args.command]
    if cfg.kind != expected:
        right = [k for k, v in KIND_OF_COMMAND.items() if v == cfg.kind][0]
        raise InputError(f"{args.config} is a '{cfg.kind}' config; use 'gkl {right}'")
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
    from gkl.evaluate.run_eval import (EVALUATIONS_FILE, append_evaluation, check_writable, evaluate_run,
                                       save_fallback)

    run_dir = Path(args.run_dir)
    which = tuple(w.strip() for w in args.which.split(",") if w.strip())
    robust = None
    if args.robust:
        robust = {
            "eps_list": _parse_eps(args.eps),
            "attacks": tuple(a.strip() for a in args.attacks.split(",") if a.strip()),
            "autoattack_version": args.autoattack_version,
            "num_examples": args.num_examples,
        }
    # every output is checked before the (possibly hours long) evaluation starts
    if run_dir.is_dir():
        check_writable(run_dir / EVALUATIONS_FILE)
    output = Path(args.output) if args.output else None
    if output is not None:
        if output.exists() or output.is_symlink():
            raise InputError(f"--output {output} already exists; evaluations are never overwritten "
                             "(choose a new path, or read RUN_DIR/evaluations.jsonl)")
        check_writable(output)
    report, table = evaluate_run(run_dir, overrides=args.overrides, which=which, weights=args.weights,
                                 robust=robust)
    report = {"time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "command": ["gkl", *(sys.argv[1:] if args.argv is None else args.argv)], **report}
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
        print(f"gkl evaluate: error: could not write {'; '.join(failures)}; the report is {kept}",
              file=sys.stderr)
        return 2
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in KIND_OF_COMMAND:
        return _run(args)
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command in ("sweep", "summarize", "analyze"):
        from gkl.sweep import commands

        run = {"sweep": commands.run_sweep_command, "summarize": commands.run_summarize_command,
               "analyze": commands.run_analyze_command}[args.command]
        return run(args)
    if args.command == "check":
        from gkl.analysis.equivalence import equivalence_report

        print(equivalence_report())
        return 0
    if args.command == "demo":
        from gkl.demo import run_demo

        print(run_demo(out_dir=Path(args.out), num_seeds=args.seeds, quick=args.quick))
        return 0
    raise AssertionError(f"unhandled command {args.command!r}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    stop_errors = _stop_errors()
    debug = os.environ.get("GKL_DEBUG") == "1"
    try:
        return _dispatch(args)
    except InputError as err:  # bad input (ConfigError included): one line, no traceback
        if debug:
            raise
        print(f"gkl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in ENVIRONMENT_ERRNOS or debug:
            raise
        where = f": {err.filename}" if err.filename else ""
        print(f"gkl {args.command}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except stop_errors as err:  # divergence / collapse: the engine's message; checkpoints are intact
        print(f"gkl {args.command}: training stopped: {err}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
