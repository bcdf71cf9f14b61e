"""``gkl fit CONFIG`` and the task verbs (``gkl train``, ``gkl distill``, ...): train the run a config describes.

``fit`` runs any kind; every registered task (:mod:`gkl.tasks`) adds its verb, an alias of
``fit`` that refuses a config of another kind and names the right verb.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from gkl.utils.errors import InputError

__all__ = ["FIT_COMMAND", "add_parser", "run", "run_commands", "run_report"]

log = logging.getLogger(__name__)

#: the command that runs a config of any kind; each task's verb is an alias that checks the kind
FIT_COMMAND = "fit"


def run_commands(reserved: Sequence[str] = ()) -> dict[str, str | None]:
    """``{command: kind}`` of the run commands: ``fit`` (any kind: None), then every task's verb
    (a verb that is taken, by another task or one of ``reserved``, is left out with a warning)."""
    from gkl.tasks import list_tasks

    commands: dict[str, str | None] = {FIT_COMMAND: None}
    for task in list_tasks():
        if task.command in commands or task.command in reserved:
            log.warning("task %r: its command %r is taken; run its configs with 'gkl fit'", task.name, task.command)
            continue
        commands[task.command] = task.name
    return commands


def _add_run_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("config", help="a recipe name (gkl recipes list) or a YAML file; docs/recipes.md")
    p.add_argument(
        "overrides", nargs="*", help="key=value overrides anywhere on the line, e.g. train.optim.lr=0.1 data.root=/data"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from <out_dir>/<name>/checkpoint.pt, exactly where it stopped (default: start a new "
        "run; a folder that holds a checkpoint is refused)",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the validated config (bases merged, overrides applied, every default filled in) and exit "
        "without training",
    )
    return p


def add_parser(sub: argparse._SubParsersAction, reserved: Sequence[str] = ()) -> dict[str, argparse.ArgumentParser]:
    """``fit`` and one sub-parser per task verb; returns them by command."""
    from gkl.tasks import get_task

    subs = {
        FIT_COMMAND: _add_run_parser(
            sub,
            FIT_COMMAND,
            "train the run a config describes, whatever its "
            "kind (the task verbs below are aliases that check the kind)",
        )
    }
    for command, kind in run_commands(reserved).items():
        if kind is not None:
            subs[command] = _add_run_parser(sub, command, get_task(kind).help)
    return subs


def run(args: argparse.Namespace) -> int:
    """Load the config, check the verb's kind, print it (``--print-config``) or train it."""
    from gkl.config import load_config, to_dict

    cfg = load_config(args.config, args.overrides)
    commands = run_commands()
    expected = commands[args.command]
    if expected is not None and cfg.kind != expected:
        right = {kind: command for command, kind in commands.items()}.get(cfg.kind, FIT_COMMAND)
        raise InputError(f"{args.config} is a '{cfg.kind}' config; use 'gkl {right}' (or 'gkl {FIT_COMMAND}')")
    if args.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
    from gkl.runner import run_experiment

    resume = ["gkl", args.command, args.config, *args.overrides, "--resume"]
    args.resume_hint = f"{cfg.run_dir} keeps its last checkpoint; continue with: {shlex.join(resume)}"
    summary = run_experiment(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 reports
        print(run_report(summary, cfg.run_dir))
    return 0


#: the files of a run folder the report names, in this order
RUN_FILES = ("best.pt", "checkpoint.pt", "metrics.jsonl", "summary.json", "train.log", "config.yaml")


def _value(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def run_report(summary: dict, run_dir: Path) -> str:
    """The end of a run in three lines: the selected metric at the last and the best evaluation (with the
    split that chose it, and the test value there), a collapse if one was seen, and where the files are
    (``summary.json`` holds everything, per class included)."""
    metric = summary.get("select_metric", "top1")
    unit = f"{summary.get('epochs')} epochs, {summary.get('steps')} steps"
    last = f"{metric} {_value(summary.get(f'last_{metric}', summary.get('last')))} at the end"
    if summary.get("select_split") == "val":
        at_best = _value(summary.get(f"test_{metric}_at_best_val"))
        best = f"best validation {metric} {_value(summary.get('best'))} at epoch {summary.get('best_epoch') or '-'}"
        best += f" (test {metric} {at_best} there)"
    else:
        best = f"best {_value(summary.get('best'))} at epoch {summary.get('best_epoch') or '-'}"
    lines = [f"run finished ({unit}): {last}; {best}"]
    flag = summary.get("collapsed")
    if isinstance(flag, dict):
        lines.append(
            f"collapse watch: {flag.get('metric', metric)} at chance level since epoch {flag.get('since_epoch', '-')} "
            "(see metrics.jsonl)"
        )
    present = [name for name in RUN_FILES if (Path(run_dir) / name).exists()]
    lines.append(f"files: {run_dir}/ ({', '.join(present)}; summary.json has every metric)")
    return "\n".join(lines)
