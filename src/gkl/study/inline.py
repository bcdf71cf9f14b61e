"""``gkl sweep --launcher inline``: every run of a sweep in the sweep's own process, one after another.

A run is the same command line the local launcher starts as ``python -m gkl.cli ARGS``, given here to
the gkl command's entry (``gkl.cli.main``, handed in by ``gkl sweep``: this layer imports no command),
with its output (Python's and native code's) appended to the run's log. The exit status is what the
local launcher would see: the entry's return value, a ``SystemExit``'s code, 1 with the traceback in
the log for an exception that escapes (a bug). Each run starts from the sweep's process state and
leaves it as it was (:class:`~gkl.study.process_state.ProcessState`).

Ctrl-C / SIGTERM reach the running run through the sweep's own handlers (Python's KeyboardInterrupt,
``gkl.cli``'s SIGTERM handler), so the run stops itself keeping its last checkpoint, as in a process of
its own; then the sweep stops as it does on that signal (:meth:`InlineLauncher.poll` raises it).

For debugging a run (breakpoints, profilers: one process) and for sweeps of many short runs (no
interpreter and torch start-up per run). No process isolation: a crash of a run's native code ends
the sweep; the next sweep continues from the finished runs and checkpoints. Hydra's basic launcher
and submitit's DebugExecutor run jobs in-process the same way.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from .launch import Job
from .process_state import SIGNALS, ProcessState

__all__ = ["InlineLauncher", "InlineRun"]


@dataclass
class InlineRun:
    """A run that has ended: its exit status, and what the sweep's signal handler raised meanwhile."""

    code: int = 1
    interrupt: BaseException | None = None


class InlineLauncher:
    """Runs each job by calling ``entry(job.cli_args())`` (``gkl.cli.main``) here, one at a time."""

    parallel = 1

    def __init__(self, entry: Callable[[list[str]], int | None]) -> None:
        self.entry = entry

    def start(self, spec: Job, log_path: Path) -> InlineRun:
        """Run ``spec`` to its end; returns when it has ended (:meth:`poll` gives its status)."""
        run = InlineRun()
        state = ProcessState.capture()
        deferred: list[int] = []
        try:
            with _output_to(log_path) as stream:
                _pass_signals(run)
                try:
                    run.code = self._call(spec.cli_args(), stream, run)
                finally:
                    _defer_signals(deferred)  # from here on a signal waits for the sweep's own handlers
        except BaseException as err:
            if err is not run.interrupt:  # else the sweep's handler raised it as the run returned: poll raises it
                raise
        finally:
            try:
                _drop_run_caches()
                state.restore()
            finally:
                _replay_signals(state, deferred, run)
        return run

    def _call(self, args: list[str], stream: TextIO, run: InlineRun) -> int:
        try:
            return _status(self.entry(args), stream)
        except SystemExit as exit_:
            return _status(exit_.code, stream)
        except KeyboardInterrupt as err:  # escaped the command (GKL_DEBUG=1): the run stopped, the sweep stops
            traceback.print_exc(file=stream)
            run.interrupt = run.interrupt or err
            return 130 if type(err) is KeyboardInterrupt else 143
        except BaseException:  # a bug: the traceback in the run's log, status 1 (an uncaught exception's)
            traceback.print_exc(file=stream)
            return 1

    def poll(self, handle: InlineRun) -> int:
        """The run's exit status; raises what the sweep's own signal handler raised during the run."""
        if handle.interrupt is not None:
            interrupt, handle.interrupt = handle.interrupt, None
            raise interrupt.with_traceback(None)
        return handle.code

    def stop(self, handles: list[Any], sig: int = signal.SIGTERM) -> None:
        """Nothing to stop: a run has ended when :meth:`start` returns (a signal stops it meanwhile)."""


def _status(code: object, stream: TextIO) -> int:
    """The exit status of a return value or ``SystemExit`` code as the interpreter makes it: None is 0,
    an integer its low byte, anything else is printed to stderr and gives 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=stream)
    return 1


def _flush(*streams: Any) -> None:
    for stream in streams:
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # None, or a closed stream
            pass


@contextlib.contextmanager
def _output_to(log_path: Path) -> Iterator[TextIO]:
    """File descriptors 1 and 2 (native code's output, and whatever holds the sweep's streams) and
    ``sys.stdout`` / ``sys.stderr`` append to ``log_path`` meanwhile; yields the run's stderr."""
    streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    _flush(*streams)
    saved = os.dup(1), os.dup(2)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    # on the descriptors, not the file: a stream a run keeps (a library's log handler) writes to the
    # sweep's own output afterwards, never to a closed file
    out = open(1, "w", encoding="utf-8", buffering=1, closefd=False)
    err = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)
    err.reconfigure(write_through=True)
    sys.stdout, sys.stderr = out, err
    try:
        yield err
    finally:
        _flush(out, err, *streams)
        sys.stdout, sys.stderr = streams[:2]
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def _pass_signals(run: InlineRun) -> None:
    """SIGINT / SIGTERM go to the sweep's own handlers (which make the run stop itself); what they
    raise is kept in ``run`` so that the sweep stops after the run. A signal the sweep ignores stays
    ignored; one it leaves to the default action (end the process) ends it, run included. Outside the main
    thread (where Python runs no handler) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        previous = signal.getsignal(sig)
        if previous in (signal.SIG_IGN, None):
            continue

        def noted(signum: int, frame: Any, previous: Any = previous) -> None:
            if not callable(previous):  # SIG_DFL
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)
                return
            try:
                previous(signum, frame)
            except BaseException as err:
                run.interrupt = err
                raise

        signal.signal(sig, noted)


def _defer_signals(deferred: list[int]) -> None:
    """SIGINT / SIGTERM are noted in ``deferred`` while the sweep's state comes back (not blocked: the
    signal mask is per thread, and any thread of the process may take a signal for Python's handler)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        if signal.getsignal(sig) not in (signal.SIG_IGN, None):
            signal.signal(sig, lambda signum, frame: deferred.append(signum))


def _replay_signals(state: ProcessState, deferred: list[int], run: InlineRun) -> None:
    """The sweep's own handlers back, then the signals that came meanwhile go to them; what they raise is
    kept in ``run`` (raised by ``poll``)."""
    try:
        state.restore_handlers()
        for signum in deferred:
            signal.raise_signal(signum)  # the handler runs here, in this thread
    except BaseException as err:
        run.interrupt = run.interrupt or err


def _drop_run_caches() -> None:
    """Free what the run left (its models, compiled graphs, cached CUDA memory) before the next one."""
    gc.collect()
    if "torch._dynamo" in sys.modules:
        torch._dynamo.reset()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
