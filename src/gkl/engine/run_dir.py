"""The run directory: resolved config, environment record and artifacts of one run."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml


def git_state(path: Path | None = None) -> dict[str, Any]:
    """``{"commit": sha | "unknown", "dirty": bool | None}`` of the git tree holding ``path``
    (default: this package's source)."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
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


def write_run_record(run_dir: Path, *, seed: int, world_size: int, resumed_from_epoch: int | None,
                     changed: list[str] | None = None) -> None:
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
