"""What a running sweep shows: runs done / total, failures, an estimated time left, each active run's epoch.

On a terminal one status line is redrawn in place (as Hydra's multirun / W&B sweeps show
their agents); otherwise (a log file, CI) plain lines: one per run started / finished /
failed, and the status line at most every ``every`` seconds while runs are training.
A run's epoch is the number of lines of its ``metrics.jsonl`` (one per evaluated epoch).
The time left is the mean duration of the runs finished in this sweep times the runs left,
divided by the runs that train at once; before a run has finished, the active runs' own
rate (elapsed time per epoch done) stands in.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

__all__ = ["SweepProgress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 10 min``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60} min"


def epochs_done(run_dir: Path) -> int:
    """Epochs a run has logged (lines of its metrics.jsonl; 0 before the first)."""
    try:
        with open(run_dir / "metrics.jsonl", "rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError:
        return 0


class SweepProgress:
    """Progress of one sweep; ``start`` / ``finish`` record events, ``tick`` redraws the status."""

    def __init__(
        self,
        total: int,
        *,
        parallel: int,
        stream: TextIO | None = None,
        every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.parallel = max(1, parallel)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self.clock = clock
        self.noun = "runs"  #: what ``total`` counts ("runs and evaluations" when the study evaluates its runs)
        self.done = 0  #: finished (trained now or before)
        self.failed = 0  #: failed or blocked
        self.durations: list[float] = []
        #: name -> (start time, run dir, epochs of the run, epochs it had logged when started: a resumed run)
        self.active: dict[str, tuple[float, Path, int | None, int]] = {}
        self.evaluations: set[str] = set()  #: names of the active jobs that evaluate a finished run
        self._last_status = -float("inf")
        self._drawn = False

    # ------------------------------------------------------------------ events
    def reused(self, count: int) -> None:
        self.done += count
        if count:
            self._line(f"{count} of {self.total} {self.noun} already finished (kept)")

    def start(self, name: str, run_dir: Path, epochs: int | None, *, evaluation: bool = False) -> None:
        if evaluation:
            self.evaluations.add(name)
            epochs = None
        self.active[name] = (self.clock(), run_dir, epochs, epochs_done(run_dir))
        self._line(f"started {name}")

    def finish(self, name: str, ok: bool, why: str = "") -> None:
        started = self.active.pop(name, None)
        self.evaluations.discard(name)
        took = "" if started is None else f" in {format_duration(self.clock() - started[0])}"
        if ok:
            self.done += 1
            if started is not None:
                self.durations.append(self.clock() - started[0])
            self._line(f"finished {name}{took}")
        else:
            self.failed += 1
            self._line(f"failed {name}{took}: {why}")

    def drop(self) -> None:
        """One job fewer to run (a failed or blocked run's evaluation, which will not start)."""
        self.total -= 1

    def blocked(self, name: str) -> None:
        self.failed += 1
        self._line(f"not started {name}: its teacher run failed")

    # ------------------------------------------------------------------ status
    def eta(self) -> float | None:
        """Seconds left (None when nothing is known yet)."""
        left = self.total - self.done - self.failed
        if left <= 0:
            return 0.0
        now = self.clock()
        if self.durations:
            per_run = sum(self.durations) / len(self.durations)
        else:
            rates = []
            for start, run_dir, epochs, before in self.active.values():
                done = epochs_done(run_dir) - before
                if epochs and done > 0:
                    rates.append((now - start) / done * epochs)
            if not rates:
                return None
            per_run = sum(rates) / len(rates)
        running_left = 0.0
        for _start, run_dir, epochs, _before in self.active.values():
            fraction = min(1.0, epochs_done(run_dir) / epochs) if epochs else 0.0
            running_left += max(0.0, 1.0 - fraction)
        waiting = left - len(self.active)
        return per_run * (waiting + running_left) / self.parallel

    def status(self) -> str:
        parts = [f"{self.done}/{self.total} done"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        eta = self.eta()
        parts.append(f"~{format_duration(eta)} left" if eta is not None else "time left: after the first epoch")
        running = []
        for name, (_start, run_dir, epochs, _before) in self.active.items():
            if name in self.evaluations:  # a robust evaluation of a finished run: no epochs to show
                running.append(name)
                continue
            running.append(f"{name} epoch {epochs_done(run_dir)}" + (f"/{epochs}" if epochs else ""))
        if running:
            parts.append("running: " + ", ".join(running))
        return "sweep: " + " · ".join(parts)

    def tick(self, force: bool = False) -> None:
        """Redraw the status line (a terminal), or print it every ``every`` seconds (plain output)."""
        now = self.clock()
        if self.tty:
            self._draw(self.status())
        elif force or (self.active and now - self._last_status >= self.every):
            self._last_status = now
            self._write(self.status() + "\n")

    def close(self) -> None:
        if self.tty and self._drawn:
            self._write("\n")
            self._drawn = False

    # ------------------------------------------------------------------ output
    def _line(self, text: str) -> None:
        if self.tty and self._drawn:
            self._write("\r\033[K")
            self._drawn = False
        self._write(f"sweep: {text}\n")

    def _draw(self, text: str) -> None:
        width = shutil.get_terminal_size((120, 24)).columns - 1
        self._write("\r\033[K" + (text if len(text) <= width else text[: width - 1] + "…"))
        self._drawn = True

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
