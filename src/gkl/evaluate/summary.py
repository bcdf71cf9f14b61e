"""Mean ± std over seeds of finished runs (``gkl summarize``): last- and best-epoch top-1.

Users of the CIFAR recipes see ±0.3-0.5 run-to-run spread, so results are reported over
seeds. Runs are grouped by their resolved config with ``name``, ``out_dir`` and
``train.seed`` left out: the runs of one recipe with different seeds form one row.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Sequence

import yaml


def mean_std(values: Sequence[float]) -> str:
    """``m ± s`` (sample std) for several values, the value itself for one."""
    if len(values) == 1:
        return f"{values[0]:6.2f}"
    return f"{statistics.mean(values):6.2f} ± {statistics.stdev(values):4.2f}"


def _read_run(run_dir: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    summary_path, config_path = run_dir / "summary.json", run_dir / "config.yaml"
    for path in (summary_path, config_path):
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} is not a finished gkl run: {path} is missing")
    summary = json.loads(summary_path.read_text())
    config = yaml.safe_load(config_path.read_text()) or {}
    name = str(config.pop("name", run_dir.name))
    config.pop("out_dir", None)
    config.get("train", {}).pop("seed", None)
    return name, config, summary


def summarize_runs(run_dirs: Sequence[Path]) -> tuple[list[dict[str, Any]], str]:
    """Group runs that differ only in seed; returns the rows and a printable table."""
    groups: dict[str, dict[str, Any]] = {}
    for run_dir in run_dirs:
        name, config, summary = _read_run(Path(run_dir))
        if summary.get("last_top1") is None:
            raise ValueError(f"{run_dir} has no evaluation in summary.json (was eval_loader disabled?)")
        key = json.dumps(config, sort_keys=True)
        group = groups.setdefault(key, {"name": name, "runs": [], "last": [], "best": []})
        group["runs"].append(str(run_dir))
        group["last"].append(float(summary["last_top1"]))
        group["best"].append(float(summary["best_top1"]))
    rows = [{"name": g["name"], "seeds": len(g["runs"]), "runs": g["runs"],
             "last_top1": g["last"], "best_top1": g["best"]} for g in groups.values()]
    lines = [f"{'run (first of its group)':<32}{'seeds':>6}  {'top-1 last epoch':>18}  {'top-1 best epoch':>18}"]
    for row in rows:
        lines.append(f"{row['name']:<32}{row['seeds']:>6}  {mean_std(row['last_top1']):>18}  "
                     f"{mean_std(row['best_top1']):>18}")
    return rows, "\n".join(lines)
