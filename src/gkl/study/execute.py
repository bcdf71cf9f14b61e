"""``gkl sweep STUDY.yaml``: run every (setting, seed) of a study, resumably, then summarise it.

A setting with an ``evaluate:`` block (:mod:`gkl.study.evaluation`) gets, after each of its runs has
finished, ``gkl evaluate RUN --robust ...`` as a job of its own (same launcher, same log folder),
unless the run already records that exact evaluation."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gkl.study.summary import format_markdown, summarize, write_summary
from gkl.utils.errors import InputError

from .evaluation import EvaluationJob, is_recorded
from .inline import InlineLauncher
from .launch import Job, Launcher, LocalLauncher, SubmititLauncher
from .progress import SweepProgress
from .study_file import RunSpec, Study, load_study
from .sweep_plots import plot_accuracy_vs_tau, plot_curves

__all__ = ["SweepResult", "is_finished", "run_sweep"]

LAUNCHERS = ("local", "slurm", "submitit-local")


def is_finished(run_dir: Path) -> bool:
    """A run is finished when its summary.json exists and parses (the engine writes it last)."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return False
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError):
        return False
    return True


class SweepResult(dict):
    """What a sweep did: ``trained``, ``reused``, ``failed``, ``blocked`` and ``stopped`` runs, ``finished``
    (every finished run, in study order), ``evaluated`` (robust evaluations run now, ``<run>.evaluate``;
    a failed one is in ``failed``), ``summary`` paths, ``table``; a dry run's ``plan``."""


def evaluation_job(study: Study, spec: RunSpec) -> EvaluationJob | None:
    """The robust evaluation a finished run still needs: None when its setting asks for none, or when
    the run's evaluations.jsonl records it already (the weights the run evaluates, the exact options)."""
    evaluation = study.evaluations.get(spec.setting)
    if evaluation is None or is_recorded(spec.run_dir, evaluation, spec.resolved.train.ema.evaluate):
        return None
    return EvaluationJob(name=f"{spec.name}.evaluate", run=spec.name, run_dir=spec.run_dir, evaluation=evaluation)


def _make_launcher(
    launcher: str | Launcher,
    *,
    jobs: int,
    study: Study,
    partition: str | None,
    gpus_per_run: int,
    launcher_options: dict[str, Any] | None,
) -> Launcher:
    if not isinstance(launcher, str):
        return launcher
    if launcher == "local":
        return LocalLauncher(jobs=jobs)
    folder = study.out_dir / "submitit"
    cluster = "local" if launcher == "submitit-local" else "slurm"
    return SubmititLauncher(
        folder,
        cluster=cluster,
        partition=partition,
        gpus_per_run=gpus_per_run,
        max_parallel=max(jobs, 1) if cluster == "local" else 10_000,
        **(launcher_options or {}),
    )


def _write_manifest(study: Study, status: dict[str, str]) -> None:
    """``study.json``; ``status`` holds the runs' and (``<run>.evaluate``) their evaluations' states."""
    manifest = {
        "study": str(study.path),
        "out_dir": str(study.out_dir),
        "baseline": study.baseline,
        "settings": study.settings,
        "source": study.source,
        "paper": study.paper,
        "evaluate": {setting: e.to_json() for setting, e in study.evaluations.items()},
        "subset": study.subset,
        "runs": [
            {
                "name": r.name,
                "setting": r.setting,
                "seed": r.seed,
                "run_dir": str(r.run_dir),
                "command": ["gkl", *r.cli_args()],
                "depends_on": r.depends_on,
                "status": status.get(r.name),
                **({"evaluation": status.get(f"{r.name}.evaluate")} if r.setting in study.evaluations else {}),
            }
            for r in study.runs
        ],
    }
    tmp = study.out_dir / "study.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    tmp.replace(study.out_dir / "study.json")


def _plan(study: Study) -> list[dict[str, Any]]:
    """The dry run's list: every run, its command and its estimated cost (:mod:`gkl.study.cost`)."""
    from .cost import run_cost

    plan = []
    for spec in study.runs:
        cost = run_cost(spec.resolved)
        evaluation = study.evaluations.get(spec.setting)
        plan.append(
            {
                "name": spec.name,
                "command": ["gkl", *spec.cli_args()],
                "gpu_hours": cost.gpu_hours,
                "cost": cost.text(),
                "finished": is_finished(spec.run_dir),
                "evaluate": None if evaluation is None else ["gkl", *evaluation.cli_args(spec.run_dir)],
                "evaluated": evaluation is not None
                and is_recorded(spec.run_dir, evaluation, spec.resolved.train.ema.evaluate),
            }
        )
    return plan


def _stop_all(runner: Launcher, active: dict[str, tuple[Job, Any]], sig: int) -> None:
    """Pass the interrupt to the active runs and wait for them (a second Ctrl-C ends them at once)."""
    handles = [handle for _spec, handle in active.values()]
    try:
        runner.stop(handles, sig)
    except KeyboardInterrupt:
        runner.stop(handles, signal.SIGKILL)


def _evaluation_done(
    job: EvaluationJob,
    code: int,
    log_path: Path,
    study: Study,
    status: dict[str, str],
    result: SweepResult,
    progress: SweepProgress,
) -> None:
    """Record how a finished run's robust evaluation ended (recorded, or failed with its log)."""
    spec = next(r for r in study.runs if r.name == job.run)
    if code == 0 and is_recorded(job.run_dir, job.evaluation, spec.resolved.train.ema.evaluate):
        status[job.name] = "recorded"
        result["evaluated"].append(job.name)
        progress.finish(job.name, True)
    else:
        status[job.name] = f"failed (exit {code})"
        result["failed"][job.name] = f"exit {code}; log: {log_path}"
        progress.finish(job.name, False, f"exit {code}; log: {log_path}")


def run_sweep(
    study_path: str | Path,
    *,
    jobs: int = 1,
    launcher: str | Launcher = "local",
    out_dir: str | Path | None = None,
    only: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    partition: str | None = None,
    gpus_per_run: int = 0,
    dry_run: bool = False,
    poll_seconds: float = 0.2,
    launcher_options: dict[str, Any] | None = None,
    progress: SweepProgress | None = None,
) -> SweepResult:
    """Run a study file: every unfinished run (``--resume``), teachers before their students.

    Finished runs (summary.json present) are never started again; a killed sweep continues
    where it stopped. A failing run is reported (its log in ``<out_dir>/logs/``), its students
    are not started, the others go on. Ends with ``summary.{md,csv,json}`` (the code of
    ``gkl summarize``), ``accuracy_vs_tau.png`` when τ varies, and ``curves.png``.
    ``only`` / ``seeds`` / ``overrides`` shrink the study (:func:`gkl.study.study_file.load_study`).
    ``dry_run`` validates and lists the runs (``result["plan"]``: commands and estimated costs)
    without starting any. ``progress`` shows runs done / total, failures, time left and epochs
    (default: on stderr). Ctrl-C / SIGTERM is passed to the active runs (each keeps its last
    checkpoint) and re-raised with ``sweep_result`` (this result: finished runs so far) attached.
    ``launcher``: a name of ``LAUNCHERS``, or a launcher object, e.g. ``InlineLauncher(gkl.cli.main)``
    (:mod:`gkl.study.inline`: every run in this process, one at a time; what ``--launcher inline`` is).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"--jobs must be an integer >= 1, got {jobs!r}")
    if launcher == "inline":
        raise InputError("launcher='inline': pass launcher=InlineLauncher(gkl.cli.main) (gkl.study.inline)")
    if isinstance(launcher, str) and launcher not in LAUNCHERS:
        raise InputError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if isinstance(launcher, InlineLauncher):
        if jobs > 1:
            raise InputError(f"--jobs: --launcher inline runs one run at a time, in this process, got {jobs}")
        if gpus_per_run > 1:
            raise InputError(f"--gpus-per-run: --launcher inline cannot start torchrun for a run, got {gpus_per_run}")
    # every error before anything runs
    study = load_study(study_path, out_dir=out_dir, only=only, seeds=seeds, overrides=overrides)
    result = SweepResult(
        study=str(study.path),
        out_dir=str(study.out_dir),
        subset=study.subset,
        trained=[],
        reused=[],
        failed={},
        blocked=[],
        stopped=[],
        evaluated=[],
        runs=[r.name for r in study.runs],
    )
    if dry_run:
        result["plan"] = _plan(study)
        result["commands"] = [row["command"] for row in result["plan"]]
        return result
    study.out_dir.mkdir(parents=True, exist_ok=True)
    (study.out_dir / "logs").mkdir(exist_ok=True)
    runner = _make_launcher(
        launcher,
        jobs=jobs,
        study=study,
        partition=partition,
        gpus_per_run=gpus_per_run,
        launcher_options=launcher_options,
    )
    evaluated_runs = [r for r in study.runs if r.setting in study.evaluations]
    if progress is None:
        progress = SweepProgress(len(study.runs) + len(evaluated_runs), parallel=min(runner.parallel, len(study.runs)))
        if evaluated_runs:
            progress.noun = "runs and evaluations"

    status: dict[str, str] = {}
    evaluations: list[EvaluationJob] = []  # evaluations of finished runs waiting to start
    for spec in study.runs:
        if is_finished(spec.run_dir):
            status[spec.name] = "finished"
            result["reused"].append(spec.name)
            needed = evaluation_job(study, spec)
            if needed is not None:
                evaluations.append(needed)
            elif spec.setting in study.evaluations:
                status[f"{spec.name}.evaluate"] = "recorded"
    progress.reused(len(status))
    _write_manifest(study, status)
    pending = [r for r in study.runs if r.name not in status]
    active: dict[str, tuple[Job, Any]] = {}
    try:
        while pending or active or evaluations:
            for name, (job, handle) in list(active.items()):
                code = runner.poll(handle)
                if code is None:
                    continue
                del active[name]
                log_path = study.out_dir / "logs" / (name + ".log")
                if isinstance(job, EvaluationJob):
                    _evaluation_done(job, code, log_path, study, status, result, progress)
                    _write_manifest(study, status)
                    continue
                assert isinstance(job, RunSpec)  # a launcher runs runs and evaluations only
                if code == 0 and is_finished(job.run_dir):
                    status[name] = "finished"
                    result["trained"].append(name)
                    progress.finish(name, True)
                    follow_up = evaluation_job(study, job)
                    if follow_up is not None:
                        evaluations.append(follow_up)
                else:
                    status[name] = f"failed (exit {code})"
                    result["failed"][name] = f"exit {code}; log: {log_path}"
                    progress.finish(name, False, f"exit {code}; log: {log_path}")
                    if job.setting in study.evaluations:
                        progress.drop()  # its evaluation will not run
                _write_manifest(study, status)
            while evaluations and len(active) < runner.parallel:  # a finished run's evaluation first
                evaluation = evaluations.pop(0)
                progress.start(evaluation.name, evaluation.run_dir, None, evaluation=True)
                log = study.out_dir / "logs" / f"{evaluation.name}.log"
                active[evaluation.name] = (evaluation, runner.start(evaluation, log))
                status[evaluation.name] = "running"
            for spec in list(pending):
                deps = [status.get(d) for d in spec.depends_on]
                if any(d is not None and d.startswith(("failed", "blocked")) for d in deps):
                    pending.remove(spec)
                    status[spec.name] = "blocked (a teacher run failed)"
                    result["blocked"].append(spec.name)
                    progress.blocked(spec.name)
                    if spec.setting in study.evaluations:
                        progress.drop()
                    continue
                if len(active) >= runner.parallel or not all(d == "finished" for d in deps):
                    continue
                pending.remove(spec)
                epochs = spec.resolved.train.epochs if spec.resolved is not None else None
                progress.start(spec.name, spec.run_dir, epochs)
                active[spec.name] = (spec, runner.start(spec, study.out_dir / "logs" / f"{spec.name}.log"))
                status[spec.name] = "running"
            progress.tick()
            if active and not isinstance(runner, InlineLauncher):  # an inline run has ended when it returns
                time.sleep(poll_seconds)
    except BaseException as err:
        progress.close()
        # Ctrl-C reaches the runs as SIGINT, anything else (SIGTERM, an error) as SIGTERM: each keeps
        # its last checkpoint, and the next sweep continues them with --resume
        _stop_all(runner, active, signal.SIGINT if type(err) is KeyboardInterrupt else signal.SIGTERM)
        for name in active:
            status[name] = "stopped"
            result["stopped"].append(name)
        result["finished"] = [r.name for r in study.runs if status.get(r.name) == "finished"]
        err.sweep_result = result  # type: ignore[attr-defined]  # read by gkl sweep for its stop line
        raise
    finally:
        _write_manifest(study, status)
    progress.close()
    result["finished"] = [r.name for r in study.runs if status.get(r.name) == "finished"]

    summary = None
    run_dirs = [study.out_dir]  # exactly what `gkl summarize OUT_DIR` reads
    if any(v == "finished" for v in status.values()):
        summary = summarize(run_dirs)
        if study.baseline is not None and any(row["setting"] == study.baseline for row in summary.rows):
            summary = summarize(run_dirs, baseline=study.baseline)
    if summary is not None:
        result["summary"] = {k: str(v) for k, v in write_summary(summary, study.out_dir).items()}
        plots = {}
        for name, fn in (("accuracy_vs_tau", plot_accuracy_vs_tau), ("curves", plot_curves)):
            png = fn(summary, study.out_dir / f"{name}.png")
            if png is not None:
                plots[name] = str(png)
        result["plots"] = plots
        result["table"] = format_markdown(summary)
    return result
