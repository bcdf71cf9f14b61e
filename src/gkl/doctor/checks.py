"""The checks of ``gkl doctor --gpu``: a few steps of every task's demo run with each GPU feature.

Each check returns a short note (it passed) or raises (it failed: the table shows the error's
first line, ``doctor.log`` its traceback); a check that needs CUDA is skipped on another device.
Runs come from :class:`gkl.doctor.runs.DemoRuns` (the bundled demo recipes, one per task).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gkl.doctor.runs import DemoRuns, PlannedStop, demo_recipes, stop_after_batches

__all__ = ["Check", "Context", "Unavailable", "all_checks", "compare_states"]

#: optimizer steps of the straight runs; the resumed run stops after STOP_AT batches and resumes
#: from the checkpoint of step CHECKPOINT_EVERY
STEPS, CHECKPOINT_EVERY, STOP_AT = 4, 2, 3
#: the straight, resumed and DDP runs: a checkpoint mid-run, deterministic kernels (a GPU's atomics
#: would otherwise make two equal runs differ in the last bits)
COMPARED_RUN = (f"train.checkpoint_every_steps={CHECKPOINT_EVERY}", "train.deterministic=true")
#: checkpoint entries a resumed run must reproduce exactly
RESUMED_STATE = ("model", "ema", "optimizer", "schedule", "scaler", "objective", "rng", "best")


@dataclass
class Context:
    """What the checks share: the device, the demo recipe of each task, the straight runs done."""

    runs: DemoRuns
    device: str
    recipes: dict[str, str]
    straight: dict[str, Any] = field(default_factory=dict)  # kind -> config of its straight run
    sync_bn_layers: dict[str, int] | None = None  # kind -> SyncBatchNorm layers of its DDP run

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


@dataclass(frozen=True)
class Check:
    """One row of the table: ``run(context) -> note``; ``needs_cuda``: skipped (with this reason) off CUDA;
    ``unavailable(context)``: a reason to skip it on this machine, or ""."""

    name: str
    run: Callable[[Context], str]
    needs_cuda: str = ""
    unavailable: Callable[[Context], str] | None = None  # why this machine cannot run it ("" if it can)


def _verb(kind: str) -> str:
    from gkl.tasks import get_task

    return get_task(kind).command


def _finite_summary(summary: dict[str, Any], where: str) -> None:
    loss = summary.get("train", {}).get("loss")
    if not isinstance(loss, (int, float)) or not math.isfinite(loss):
        raise RuntimeError(f"{where}: training loss {loss!r} is not a finite number")


def _every_task(ctx: Context, overrides: tuple[str, ...]) -> str:
    """Train every task's demo for a few steps with ``overrides``; the failures, named by verb."""
    failures = []
    for kind, recipe in ctx.recipes.items():
        try:
            _finite_summary(ctx.runs.train(ctx.runs.config(recipe, overrides)), recipe)
        except Exception as err:  # one task's failure must not hide the others'
            failures.append(f"{_verb(kind)}: {type(err).__name__}: {err}")
    if failures:
        raise RuntimeError("; ".join(failures))
    return f"{len(ctx.recipes)} tasks"


class Unavailable(Exception):
    """Raised by a check that this machine cannot run (a missing optional package): a skipped row."""


def _missing_package(err: ImportError) -> str | None:
    """The optional package whose absence ``err`` reports (not a module of gkl), else None."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, ModuleNotFoundError):
        cause = cause.__cause__
    name = getattr(cause, "name", None) or ""
    return name if name and name.split(".")[0] != "gkl" else None


def _straight(kind: str) -> Callable[[Context], str]:
    """The task's demo, fp32, a checkpoint mid-run; without its optional package the task is skipped
    here and left out of the later rows."""

    def check(ctx: Context) -> str:
        try:
            cfg = ctx.runs.config(ctx.recipes[kind], COMPARED_RUN)
            summary = ctx.runs.train(cfg)
        except ImportError as err:
            package = _missing_package(err)
            if package is None:
                raise
            del ctx.recipes[kind]
            raise Unavailable(f"needs {package}: {str(err).strip().splitlines()[0]}") from err
        _finite_summary(summary, ctx.recipes[kind])
        ctx.straight[kind] = cfg
        return f"{ctx.recipes[kind]}, loss {summary['train']['loss']:.3g}"

    return check


def compare_states(a: dict[str, Any], b: dict[str, Any], keys: tuple[str, ...], *, exact: bool) -> str | None:
    """The first entry where two checkpoints differ (exactly, or beyond float rounding), else None."""

    def walk(x: Any, y: Any, path: str) -> str | None:
        if isinstance(x, torch.Tensor):
            if not isinstance(y, torch.Tensor) or x.shape != y.shape or x.dtype != y.dtype:
                return path
            same = torch.equal(x, y) if exact or not x.is_floating_point() else torch.allclose(x, y, 1e-3, 1e-4)
            return None if same else path
        if isinstance(x, dict):
            if not isinstance(y, dict) or set(x) != set(y):
                return path
            return next((d for k in x if (d := walk(x[k], y[k], f"{path}.{k}")) is not None), None)
        if isinstance(x, (list, tuple)):
            if not isinstance(y, (list, tuple)) or len(x) != len(y):
                return path
            return next(
                (d for i, (u, v) in enumerate(zip(x, y)) if (d := walk(u, v, f"{path}[{i}]")) is not None), None
            )
        return None if x == y else path

    return next((d for k in keys if (d := walk(a.get(k), b.get(k), k)) is not None), None)


def _exact_resume(ctx: Context) -> str:
    """Every task: a run stopped after STOP_AT batches and resumed equals the straight run exactly."""
    from gkl.engine.checkpoint import read_checkpoint

    failures = []
    for kind, straight in ctx.straight.items():
        recipe = ctx.recipes[kind]
        cfg = ctx.runs.config(recipe, COMPARED_RUN)
        try:
            try:
                ctx.runs.train(cfg, adapt_parts=stop_after_batches(STOP_AT))
                raise RuntimeError(f"the run did not stop after {STOP_AT} batches")
            except PlannedStop:
                pass
            ctx.runs.train(cfg, resume=True)
            a = read_checkpoint(straight.run_dir / "checkpoint.pt")
            b = read_checkpoint(cfg.run_dir / "checkpoint.pt")
            differs = compare_states(a, b, RESUMED_STATE, exact=True)
            if differs is not None:
                failures.append(f"{_verb(kind)}: checkpoint entry {differs} differs from the uninterrupted run's")
        except Exception as err:
            failures.append(f"{_verb(kind)}: {type(err).__name__}: {err}")
    if failures:
        raise RuntimeError("; ".join(failures))
    if not ctx.straight:
        raise RuntimeError("no task's straight run passed: nothing to resume")
    return f"{len(ctx.straight)} tasks, stopped at batch {STOP_AT + 1}, resumed from step {CHECKPOINT_EVERY}"


def _ddp(ctx: Context) -> str:
    """Every task under torchrun (one process: DDP, the class prior's and metrics' all-reduces over
    NCCL on CUDA, gloo otherwise; SyncBN on CUDA); the weights equal the single-process run's. A task
    that refuses a process group (a ConfigError: it runs in one process only) is named in the note."""
    from gkl.engine.checkpoint import read_checkpoint

    root = ctx.runs.root / "ddp"
    spec: dict[str, Any] = {"root": str(root), "device": ctx.device, "steps": STEPS, "recipes": ctx.recipes}
    spec["data_root"], spec["eval_batches"] = str(ctx.runs.data_root), ctx.runs.eval_batches
    spec["teachers"] = {recipe: str(path) for recipe, path in ctx.runs.teachers.items()}
    spec["overrides"] = [*COMPARED_RUN, *(["train.sync_bn=true"] if ctx.cuda else [])]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    command += ["-m", "gkl.doctor.ddp_worker", json.dumps(spec)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    results_file = root / "results.json"
    if done.returncode != 0 or not results_file.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"torchrun exited with status {done.returncode}: {tail[0]}")
    results = json.loads(results_file.read_text())
    failures = [f"{_verb(kind)}: {error}" for kind, (error, _, _, _) in results.items() if error]
    refused = [_verb(kind) for kind, (_, _, _, refusal) in results.items() if refusal]
    ran = {kind: result for kind, result in results.items() if not result[3]}
    ctx.sync_bn_layers = {kind: layers for kind, (error, _, layers, _) in ran.items() if not error}
    for kind, (error, run_dir, _, _) in ran.items():
        if error or kind not in ctx.straight:
            continue
        a = read_checkpoint(ctx.straight[kind].run_dir / "checkpoint.pt")
        b = read_checkpoint(Path(run_dir) / "checkpoint.pt")
        differs = compare_states(a, b, ("model", "objective"), exact=False)
        if differs is not None:
            failures.append(f"{_verb(kind)}: {differs} differs from the single-process run's")
    if failures:
        raise RuntimeError("; ".join(failures))
    backend = "nccl" if ctx.cuda else "gloo"
    note = f"{len(ran)} tasks over {backend}" + (" with SyncBN" if ctx.cuda else "")
    return note + (f"; {', '.join(refused)}: one process only" if refused else "")


def _sync_bn(ctx: Context) -> str:
    """The DDP runs (train.sync_bn=true on CUDA) converted BatchNorm to SyncBatchNorm."""
    if ctx.sync_bn_layers is None:
        raise RuntimeError("the DDP check did not run to the end (see its row)")
    converted = {kind: n for kind, n in ctx.sync_bn_layers.items() if n}
    if not converted:
        raise RuntimeError("no DDP run has a SyncBatchNorm layer")
    return ", ".join(f"{_verb(kind)} {n} layers" for kind, n in converted.items())


def _attacks(ctx: Context) -> str:
    """PGD and AutoAttack (fast) on the straight run of every task with a robust evaluation whose
    demo reads inputs in [0, 1] (``data.normalize: false``, as the attacks need), in the demo's own
    evaluation batches (the runs' are capped at :data:`~gkl.doctor.runs.MAX_BATCH`)."""
    from gkl.config import load_config
    from gkl.evaluate.run_eval import evaluate_run
    from gkl.recipes import resolve_recipe
    from gkl.tasks import get_task

    robust = {"eps_list": [0.1], "attacks": ("pgd10", "autoattack"), "autoattack_version": "fast", "num_examples": 32}
    done = []
    for kind, cfg in ctx.straight.items():
        if get_task(kind).robust_evaluation and getattr(cfg.data, "normalize", True) is False:
            batch = load_config(resolve_recipe(ctx.recipes[kind])).data.eval_batch_size
            overrides = [f"train.device={ctx.device}", f"data.eval_batch_size={batch}"]
            evaluate_run(cfg.run_dir, overrides=overrides, which=("last",), robust=robust)
            done.append(_verb(kind))
    if not done:
        raise RuntimeError("no straight run of a task with a robust evaluation passed")
    return "on " + ", ".join(done)


def _fused_sections(kind: str, cfg: Any) -> list[str]:
    """The task's config sections that switch a fused loss on (``<section>.fused: true``)."""
    from gkl.tasks import get_task

    return [s.name for s in get_task(kind).sections if getattr(getattr(cfg, s.name, None), "fused", None) is True]


def _compile(ctx: Context) -> str:
    """torch.compile of the model the objective calls, on the first task's demo and on every task with a
    fused loss (the fused loss gets the hidden states through the compiled forward); each run must have
    compiled a frame."""
    from torch._dynamo.utils import counters

    first = next(iter(ctx.recipes))
    kinds = [kind for kind in ctx.recipes if kind == first or _fused_sections(kind, ctx.straight.get(kind))]
    failures, done = [], []
    for kind in kinds:
        try:
            recipe, compiled = ctx.recipes[kind], counters["frames"]["ok"]
            _finite_summary(ctx.runs.train(ctx.runs.config(recipe, ["train.compile=true"])), recipe)
            if counters["frames"]["ok"] == compiled:
                raise RuntimeError("train.compile=true compiled no frame")
            done.append(_verb(kind))
        except Exception as err:
            failures.append(f"{_verb(kind)}: {type(err).__name__}: {err}")
    if failures:
        raise RuntimeError("; ".join(failures))
    return ", ".join(done)


def _fused(ctx: Context) -> str:
    """Every task with a fused loss (``<section>.fused: true``) trained again with it off: the weights
    equal the straight (fused) run's to float rounding."""
    from gkl.engine.checkpoint import read_checkpoint

    done, failures = [], []
    for kind, straight in ctx.straight.items():
        for section in _fused_sections(kind, straight):
            try:
                cfg = ctx.runs.config(ctx.recipes[kind], (*COMPARED_RUN, f"{section}.fused=false"))
                ctx.runs.train(cfg)
                a = read_checkpoint(straight.run_dir / "checkpoint.pt")
                b = read_checkpoint(cfg.run_dir / "checkpoint.pt")
                differs = compare_states(a, b, ("model", "objective"), exact=False)
                if differs is not None:
                    failures.append(f"{_verb(kind)}: {differs} differs with {section}.fused=false")
                done.append(_verb(kind))
            except Exception as err:
                failures.append(f"{_verb(kind)}: {type(err).__name__}: {err}")
    if failures:
        raise RuntimeError("; ".join(failures))
    return "on " + ", ".join(done)


def _no_fused_loss(ctx: Context) -> str:
    if any(_fused_sections(kind, cfg) for kind, cfg in ctx.straight.items()):
        return ""
    return "no task's straight run has a fused loss"


def _no_bf16(ctx: Context) -> str:
    if ctx.cuda and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16 (train.amp=auto uses fp16 here)"
    return ""


def all_checks(kinds: list[str]) -> list[Check]:
    """The table's rows in order: each task's straight run, then the features."""
    rows = [Check(f"{_verb(kind)}: {STEPS} steps", _straight(kind)) for kind in kinds]
    return rows + [
        Check("bf16 autocast, every task", lambda ctx: _every_task(ctx, ("train.amp=bf16",)), unavailable=_no_bf16),
        Check("fp16 autocast + GradScaler, every task", lambda ctx: _every_task(ctx, ("train.amp=fp16",))),
        Check("channels-last, every task", lambda ctx: _every_task(ctx, ("train.channels_last=true",))),
        Check("torch.compile", _compile),
        Check("fused loss = unfused", _fused, unavailable=_no_fused_loss),
        Check("DDP via torchrun, class prior all-reduce", _ddp),
        Check("SyncBN under DDP", _sync_bn, needs_cuda="SyncBatchNorm runs on CUDA only"),
        Check("PGD + AutoAttack", _attacks),
        Check("checkpoint + exact resume, every task", _exact_resume),
    ]


def default_recipes() -> dict[str, str]:
    """The demo recipe of every registered task that has one (:func:`demo_recipes`), in registry order."""
    from gkl.tasks import list_tasks

    found = demo_recipes()
    return {task.name: found[task.name] for task in list_tasks() if task.name in found}
