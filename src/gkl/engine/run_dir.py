"""The run directory: its creation, the resolved config, the environment record and why the run stopped."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from gkl.engine.errors import CollapseError, NonFiniteLossError
from gkl.utils.errors import InputError


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run directory; an unusable one (a file, read-only) is an InputError naming it."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"out_dir: cannot create the run directory {run_dir} ({error.strerror or error})") from None
    if not run_dir.is_dir() or not os.access(run_dir, os.W_OK | os.X_OK):
        raise InputError(f"out_dir: the run directory {run_dir} is not a writable directory")


def git_state(path: Path | None = None) -> dict[str, Any]:
    """``{"commit": sha | "unknown", "dirty": bool | None}`` of the git tree holding ``path``
    (default: this package's source)."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": commit or "unknown", "dirty": bool(status.strip())}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment_record(*, seed: int, world_size: int) -> dict[str, Any]:
    """What ``run.json`` records about the run's environment."""
    git = git_state()
    return {
        "seed": seed,
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "world_size": world_size,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "command": list(sys.argv),
        "start_time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_config(run_dir: Path, config: dict | None) -> None:
    """``config.yaml``: the resolved config dict, written with ``yaml.safe_dump``."""
    if config is None:
        return
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    (run_dir / "config.yaml").write_text(text, encoding="utf-8")


def read_run_record(run_dir: Path) -> dict[str, Any]:
    """``run.json`` as a dict ({} when missing or unreadable)."""
    try:
        record = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_json(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_run_record(
    run_dir: Path, *, seed: int, world_size: int, resumed_from_epoch: int | None, changed: list[str] | None = None
) -> None:
    """``run.json``; a resume keeps the original record and appends to its ``resumes`` list
    (with ``changed``: the settings the resume changed, e.g. ``train.optim.lr`` after a non-finite stop)."""
    path = run_dir / "run.json"
    record = environment_record(seed=seed, world_size=world_size)
    if resumed_from_epoch is not None and path.exists():
        previous = read_run_record(run_dir)
        entry = {**record, "from_epoch": resumed_from_epoch}
        if changed:
            entry["changed"] = list(changed)
        previous.setdefault("resumes", []).append(entry)
        record = previous
    _write_json(path, record)


def record_stop(run_dir: Path, stop: dict[str, Any]) -> None:
    """Record in ``run.json`` why the run (or its latest resume) stopped: ``{"reason", ...}``."""
    record = read_run_record(run_dir)
    record["stopped"] = stop
    if record.get("resumes"):
        record["resumes"][-1]["stopped"] = stop
    _write_json(run_dir / "run.json", record)


def log_stop(run_dir: Path, stop: dict[str, Any], logger: logging.Logger, *, finished: str) -> None:
    """Say in ``train.log`` why the run stopped (``finished``: the line of a finished run) and record
    ``stop`` in ``run.json``; a failed write is logged, never hiding the reason of the stop."""
    reason = stop["reason"]
    if reason == "finished":
        logger.info("%s", finished)
    elif reason == "interrupted":
        logger.warning(
            "run interrupted during epoch %s; last checkpoint: epoch %s, step %s",
            stop.get("epoch"),
            stop.get("last_checkpoint_epoch"),
            stop.get("last_checkpoint_step"),
        )
    else:
        logger.error("run stopped (%s) during epoch %s: %s", reason, stop.get("epoch"), stop.get("message", ""))
    try:
        record_stop(run_dir, stop)
    except OSError as error:
        logger.error("could not record the stop in run.json: %s", error)


def stop_record(error: BaseException, epoch: int) -> dict[str, Any]:
    """The ``stopped`` record of a run ended by ``error`` during ``epoch``."""
    if isinstance(error, NonFiniteLossError):
        return {"reason": "non-finite", "epoch": epoch, "message": str(error)}
    if isinstance(error, CollapseError):
        return {"reason": "collapse", "epoch": epoch, "message": str(error)}
    if isinstance(error, KeyboardInterrupt):
        return {"reason": "interrupted", "epoch": epoch}
    return {"reason": "exception", "epoch": epoch, "message": f"{type(error).__name__}: {error}"}
