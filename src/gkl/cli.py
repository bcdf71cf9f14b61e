"""The gkl command: fit | <task verbs> | evaluate | summarize | sweep | analyze | recipes | check | demo | doctor.

Each command is one module of :mod:`gkl.commands` with ``add_parser(sub)`` and ``run(args)``;
this module only builds the parser from them and turns errors into exit statuses.

``gkl fit CONFIG`` runs any kind of run (the task named by the config's ``kind``); each task
also has its own verb (``gkl train``, ``gkl distill``, ... from :mod:`gkl.tasks`), an alias of
``fit`` that checks the config's kind.

Exit status: 0 done; 2 bad input (a config key, a file, an argument: one line naming it);
3 training stopped (non-finite loss or collapse: the engine's message, the last good
checkpoint is kept); 130 / 143 stopped by Ctrl-C / SIGTERM (one line: what was kept and the
command that continues); 141 the reader of the output went away; anything else is a bug in gkl
and prints its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import signal
import sys
import textwrap
import threading

from gkl.commands import run
from gkl.commands.args import HelpFormatter, OverviewHelpFormatter
from gkl.utils.errors import InputError

#: the commands besides the runs, each a module gkl.commands.<name> (a task whose verb is one of these is
#: reachable through ``gkl fit`` only)
OTHER_COMMANDS = ("evaluate", "summarize", "sweep", "analyze", "recipes", "check", "demo", "doctor")
DESCRIPTION = (
    "gkl: the Decoupled / Improved / Generalized KL losses (DKL, IKL, GKL) wherever KL is a loss.\n\n"
    "Kinds of run (a config's kind:), each trained by 'gkl fit CONFIG' or by its own verb:\n{kinds}\n\n"
    "Other commands: {commands}. 'gkl COMMAND --help' describes each.\n\n"
    "Exit status: 0 done; 2 bad input (one line naming the config key, file or argument);\n"
    "3 training stopped (non-finite loss or collapse; the last good checkpoint is kept);\n"
    "130 / 143 stopped by Ctrl-C / SIGTERM (the line printed says how to continue);\n"
    "141 the reader of the output went away (e.g. gkl recipes list | head);\n"
    "any other failure is a bug in gkl and prints a traceback (GKL_DEBUG=1 shows it for input errors too)."
)
#: OS conditions reported as one line (the message names the file) rather than as a bug
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class _Parser(argparse.ArgumentParser):
    """argparse with the gkl error contract: a usage error is one line ``gkl <cmd>: error: ...``, exit 2;
    every option's help shows its default (:class:`gkl.commands.args.HelpFormatter`)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _stop_errors() -> tuple[type[BaseException], ...]:
    """The engine's "training stopped" exceptions (exit 3)."""
    from gkl.engine.errors import CollapseError, NonFiniteLossError, TrainingStopped

    return (TrainingStopped, NonFiniteLossError, CollapseError)


def run_commands() -> dict[str, str | None]:
    """``{command: kind}`` of the run commands: ``fit`` (any kind: None), then every task's verb."""
    return run.run_commands(OTHER_COMMANDS)


def intermixed_commands() -> tuple[str, ...]:
    """Commands whose key=value overrides may appear anywhere among the options."""
    return (*run_commands(), "evaluate", "sweep")


def overview() -> str:
    """``gkl --help``'s description: every kind of run of the task registry with its verb, then the other commands."""
    from gkl.tasks import get_task

    verbs = {kind: command for command, kind in run_commands().items() if kind is not None}
    kinds = []
    for kind, command in verbs.items():
        line = f"{kind:<14} gkl {command}: {get_task(kind).help}"
        kinds.append(textwrap.fill(line, width=100, initial_indent="  ", subsequent_indent=" " * 17))
    return DESCRIPTION.format(kinds="\n".join(kinds), commands=", ".join(OTHER_COMMANDS))


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and the sub-parsers by command name."""
    parser = _Parser(prog="gkl", description=overview(), formatter_class=OverviewHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    subs = run.add_parser(sub, OTHER_COMMANDS)
    for name in OTHER_COMMANDS:
        subs[name] = _command(name).add_parser(sub)
    return parser, subs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; for the commands with overrides, options and ``key=value`` may interleave."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, subs = build_parser()
    if argv and argv[0] in intermixed_commands():
        args = subs[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)


def _command(name: str):
    """The module gkl.commands.<name> (``add_parser(sub)``, ``run(args)``)."""
    return importlib.import_module(f"gkl.commands.{name}")


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in run_commands():
        return run.run(args)
    return _command(args.command).run(args)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so a run stops the same way
    (its stop record says "interrupted", the last checkpoint is kept) and the command exits 143."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _quiet_broken_pipe() -> int:
    """``gkl ... | head``: the reader is gone; no traceback, no flush error at exit, status 128 + SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + signal.SIGPIPE


def main(argv: list[str] | None = None) -> int:
    """Run ``gkl``; exit status: 0 done, 2 bad input, 3 training stopped, 130 Ctrl-C (SIGINT),
    143 SIGTERM, 141 when the reader of the output went away (``gkl ... | head``)."""
    try:
        args = parse_args(argv)
    except BrokenPipeError:  # e.g. gkl --help | head -1
        return _quiet_broken_pipe()
    args.argv = argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    stop_errors = _stop_errors()
    debug = os.environ.get("GKL_DEBUG") == "1"
    # SIGTERM stops a run like Ctrl-C; only in the main thread, and not when the embedding program has a handler
    own_handler = threading.current_thread() is threading.main_thread() and (
        signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    )
    if own_handler:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _dispatch(args)
    except InputError as err:  # bad input (ConfigError included): one line, no traceback
        if debug:
            raise
        print(f"gkl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except OSError as err:
        if err.errno not in ENVIRONMENT_ERRNOS or debug:
            raise
        where = f": {err.filename}" if err.filename else ""
        print(f"gkl {args.command}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except stop_errors as err:  # divergence / collapse: the engine's message; checkpoints are intact
        print(f"gkl {args.command}: training stopped: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: one line saying what was kept and how to go on
        if debug:
            raise
        what = "terminated" if isinstance(err, Terminated) else "interrupted"
        hint = getattr(args, "resume_hint", None)
        print(f"gkl {args.command}: {what}" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 143 if isinstance(err, Terminated) else 130
    finally:
        if own_handler:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    # python -m gkl.cli: the main of the module gkl.cli, not of this __main__ copy of it, so that the process has
    # one Terminated class (gkl sweep --launcher inline calls gkl.cli.main for each run within this main)
    from gkl.cli import main as gkl_main

    sys.exit(gkl_main())
