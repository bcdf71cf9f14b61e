"""The run directory: resolved config, environment record and artifacts of one run."""

from __future__ import annotations

import datetime as _dt
import json
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
        "command": list(sys.argv),
        "start_time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_config(run_dir: Path, config: dict | None) -> None:
    """``config.yaml``: the resolved config dict, written with ``yaml.safe_dump``."""
    if config is None:
        return
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    (run_dir / "config.yaml").write_text(text, encoding="utf-8")


def write_run_record(run_dir: Path, *, seed: int, world_size: int, resumed_from_epoch: int | None) -> None:
    """``run.json``; a resume keeps the original record and appends to its ``resumes`` list."""
    path = run_dir / "run.json"
    record = environment_record(seed=seed, world_size=world_size)
    if resumed_from_epoch is not None and path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        previous.setdefault("resumes", []).append({**record, "from_epoch": resumed_from_epoch})
        record = previous
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
