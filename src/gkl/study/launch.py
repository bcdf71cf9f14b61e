"""Launching the runs of a study: local subprocesses (a pool of ``jobs``) or submitit (Slurm); the
same command lines in the sweep's own process: :mod:`gkl.study.inline` (``--launcher inline``).

Every run is the ordinary CLI, ``python -m gkl.cli <command> CONFIG overrides... --resume``,
so a sweep depends on nothing but the command line. Local runs die with the sweep
(Linux: parent-death signal), and are continued by the next sweep through ``--resume``.
A local run is in a session of its own: a terminal's Ctrl-C reaches the sweep only, and the
sweep passes it on once (:meth:`LocalLauncher.stop`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .evaluation import EvaluationJob

__all__ = ["Job", "Launcher", "LocalLauncher", "SubmititLauncher", "run_command"]


class Job(Protocol):
    """What a launcher starts: a named ``gkl`` command (a run, :class:`~gkl.study.study_file.RunSpec`, or
    a robust evaluation of a finished run, :class:`~gkl.study.evaluation.EvaluationJob`)."""

    name: str

    def cli_args(self) -> list[str]: ...


class Launcher(Protocol):
    """Starts a run and reports its exit status (None while it runs)."""

    @property
    def parallel(self) -> int:
        """How many runs may be active at once."""

    def start(self, spec: Job, log_path: Path) -> Any: ...

    def poll(self, handle: Any) -> int | None: ...

    def stop(self, handles: list[Any], sig: int = signal.SIGTERM) -> None:
        """Pass ``sig`` to the runs and wait for them to end (each keeps its last checkpoint)."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: SIGKILL this child when the sweep process dies (no orphaned trainings)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def cli_command(spec: Job, *, gpus: int = 0, python: str | None = None) -> list[str]:
    """The command line of one run; torchrun with ``gpus`` processes when gpus > 1 (a run's training,
    never a robust evaluation: ``gkl evaluate`` is one process)."""
    python = python or sys.executable
    if gpus > 1 and not isinstance(spec, EvaluationJob):
        return [
            python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={gpus}",
            "-m",
            "gkl.cli",
            *spec.cli_args(),
        ]
    return [python, "-m", "gkl.cli", *spec.cli_args()]


def run_command(argv: list[str], env: dict[str, str], log_path: str) -> int:
    """Run ``argv`` with its output appended to ``log_path``; the exit status (submitit's job body)."""
    with open(log_path, "ab") as log:
        return subprocess.run(
            argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, check=False
        ).returncode


@dataclass
class LocalLauncher:
    """Up to ``jobs`` runs at a time as child processes of this one.

    With several jobs each run gets ``OMP_NUM_THREADS = cores // jobs`` unless the
    caller set ``OMP_NUM_THREADS``.
    """

    jobs: int = 1
    env: dict[str, str] | None = None

    @property
    def parallel(self) -> int:
        return self.jobs

    def _env(self) -> dict[str, str]:
        env = {**os.environ, **(self.env or {})}
        if self.jobs > 1 and "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.jobs))
        return env

    def start(self, spec: Job, log_path: Path) -> subprocess.Popen:
        log = open(log_path, "ab")
        try:
            kwargs: dict[str, Any] = {"preexec_fn": _die_with_parent} if sys.platform.startswith("linux") else {}
            return subprocess.Popen(
                cli_command(spec),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                start_new_session=True,
                **kwargs,
            )
        finally:
            log.close()  # the child holds its own descriptor

    def poll(self, handle: subprocess.Popen) -> int | None:
        return handle.poll()

    def stop(self, handles: list[subprocess.Popen], sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        """Send ``sig`` to every running run at once, wait up to ``timeout`` s for them all, then kill the rest."""
        running = [h for h in handles if h.poll() is None]
        for handle in running:
            handle.send_signal(sig)
        deadline = time.monotonic() + timeout
        for handle in running:
            try:
                handle.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                handle.kill()
                handle.wait()


class SubmititLauncher:
    """One submitit job per run: Slurm (``cluster="slurm"``) or submitit's local executor (``"local"``).

    ``gpus_per_run > 1`` runs torchrun inside the job (DDP on one node).
    """

    def __init__(
        self,
        folder: Path,
        *,
        cluster: str = "slurm",
        partition: str | None = None,
        gpus_per_run: int = 0,
        cpus_per_run: int | None = None,
        timeout_min: int = 24 * 60,
        max_parallel: int = 64,
        extra: dict[str, Any] | None = None,
    ) -> None:
        try:
            import submitit
        except ImportError:
            from gkl.utils.errors import InputError

            raise InputError("--launcher slurm needs the package 'submitit': pip install 'gkl[slurm]'") from None
        self.gpus = gpus_per_run
        self.parallel = max_parallel
        self.executor: submitit.Executor
        if cluster == "local":
            self.executor = submitit.LocalExecutor(folder=str(folder))
            self.executor.update_parameters(timeout_min=timeout_min, gpus_per_node=gpus_per_run)
        else:
            self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
            params: dict[str, Any] = {
                "timeout_min": timeout_min,
                "nodes": 1,
                "tasks_per_node": 1,
                "gpus_per_node": gpus_per_run,
            }
            if cpus_per_run:
                params["cpus_per_task"] = cpus_per_run
            if partition:
                params["slurm_partition"] = partition
            params.update(extra or {})
            self.executor.update_parameters(**params)

    def start(self, spec: Job, log_path: Path) -> Any:
        self.executor.update_parameters(name=f"gkl-{spec.name}")
        return self.executor.submit(run_command, cli_command(spec, gpus=self.gpus), {}, str(log_path))

    def poll(self, job: Any) -> int | None:
        if not job.done():
            return None
        try:
            return int(job.result())
        except Exception:  # the job itself failed (node failure, timeout): report as a failed run
            return 1

    def stop(self, handles: list[Any], sig: int = signal.SIGTERM) -> None:
        for job in handles:
            try:
                job.cancel(check=False)  # Slurm: scancel (SIGTERM to the job, then SIGKILL); local: the same
            except Exception:
                pass
