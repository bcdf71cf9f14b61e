"""``gkl doctor``: what this machine runs; with ``--gpu``, a few steps of every task with each GPU feature.

:func:`run_checks` runs the rows of :func:`gkl.doctor.checks.all_checks` (every task's bundled
demo run, bf16 / fp16 autocast with the gradient scaler, channels-last, ``torch.compile``, a fused
loss against the unfused one, DDP through torchrun, SyncBN, the class prior's all-reduce, PGD and
AutoAttack, checkpoint and exact resume) and :func:`format_table` prints them as one pass / fail / skipped table.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Result", "environment", "format_table", "run_checks", "runs_summary"]


@dataclass(frozen=True)
class Result:
    """One row: the check, ``pass`` / ``FAIL`` / ``skipped``, why (or what it ran), seconds taken."""

    name: str
    status: str
    reason: str
    seconds: float = 0.0


def environment() -> str:
    """One line: the torch version and the CUDA devices (or their absence)."""
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}: no CUDA device"
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return f"torch {torch.__version__}, CUDA {torch.version.cuda}: {names}"


def runs_summary() -> str:
    """What every run of the checks is: its steps, its batch size cap and its evaluations' cap."""
    from gkl.doctor.checks import STEPS
    from gkl.doctor.runs import EVAL_BATCHES, MAX_BATCH

    return (
        f"each run {STEPS} optimizer steps on batches of at most {MAX_BATCH} examples, "
        f"evaluated on the first {EVAL_BATCHES} batches of each split"
    )


def run_checks(device: str, out: Path, *, log_file: Path | None = None) -> list[Result]:
    """Every check on ``device`` (``cuda``, ``cuda:N`` or ``cpu``), runs under ``out``; tracebacks of
    failures go to ``log_file``. Log lines up to warnings are silenced meanwhile."""
    from gkl.doctor.checks import STEPS, Context, Unavailable, all_checks, default_recipes
    from gkl.doctor.runs import DemoRuns

    if device.startswith("cuda"):  # deterministic cuBLAS kernels for the exact-resume comparison
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    recipes = default_recipes()
    ctx = Context(runs=DemoRuns(out, device, steps=STEPS), device=device, recipes=recipes)
    results = []
    logging.disable(logging.WARNING)  # the runs' log lines (a planned stop warns) would bury the table
    try:
        for check in all_checks(list(recipes)):
            why = check.needs_cuda if not ctx.cuda else ""
            why = why or (check.unavailable(ctx) if check.unavailable is not None else "")
            if why:
                results.append(Result(check.name, "skipped", why))
                continue
            start = time.perf_counter()
            try:
                note = check.run(ctx)
                results.append(Result(check.name, "pass", note, time.perf_counter() - start))
            except Unavailable as err:  # found out while running (a task's optional package is missing)
                results.append(Result(check.name, "skipped", str(err)))
            except Exception as err:  # a failing check is a row of the table, not the end of the doctor
                if log_file is not None:
                    with log_file.open("a") as handle:
                        handle.write(f"== {check.name}\n{traceback.format_exc()}\n")
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                results.append(Result(check.name, "FAIL", reason, time.perf_counter() - start))
    finally:
        logging.disable(logging.NOTSET)
    return results


def format_table(results: list[Result]) -> str:
    """The results as aligned rows: check, status, seconds, reason."""
    width = max(len(r.name) for r in results)
    lines = [f"{'check':<{width}}  {'status':<7}  {'time':>6}  details"]
    for r in results:
        seconds = f"{r.seconds:5.1f}s" if r.status != "skipped" else ""
        lines.append(f"{r.name:<{width}}  {r.status:<7}  {seconds:>6}  {r.reason}")
    return "\n".join(lines)
