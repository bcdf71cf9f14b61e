"""Figures of a summary: accuracy vs temperature τ (error bars = 95 % CI) and test-accuracy curves."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

from gkl.study.summary import Summary

__all__ = ["plot_accuracy_vs_tau", "plot_curves", "read_curve", "series_label"]

TAU_KEY = "distill.temperature"
#: the longest legend label (characters)
MAX_LABEL = 24


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_curve(run_dir: Path, key: str = "top1") -> list[tuple[int, float]]:
    """(epoch, eval[key]) pairs of a run's metrics.jsonl (epochs without evaluation left out)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    points = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            if isinstance(record.get("eval"), dict) and key in record["eval"]:
                points.append((int(record["epoch"]), float(record["eval"][key])))
    return points


def _selected(summary: Summary) -> str:
    """The metric the summary's first column reports (``top1``, ``mIoU``, ...)."""
    first = summary.metrics[0][0] if summary.metrics else "last_top1"
    return first[len("last_") :] if first.startswith("last_") else "top1"


def plot_accuracy_vs_tau(summary: Summary, path: Path, *, metric: str | None = None) -> Path | None:
    """Mean ± 95 % CI of ``metric`` against τ for the settings whose τ differs; None if τ does not vary.

    Settings that differ in τ and nothing else form one line, labelled by the settings' names
    (:func:`series_label`); a τ of infinity is drawn at the right end, marked ∞. Settings without a τ
    (CE) are horizontal lines labelled by their name. The legend sits below the axes.
    """
    metric = metric or f"last_{_selected(summary)}"
    rows = [r for r in summary.rows if metric in r["metrics"]]
    with_tau = [r for r in rows if isinstance(r["varies"].get(TAU_KEY), (int, float))]
    if len({r["varies"][TAU_KEY] for r in with_tau}) < 2:
        return None
    finite = sorted({float(r["varies"][TAU_KEY]) for r in with_tau if math.isfinite(r["varies"][TAU_KEY])})
    inf_x = (max(finite) * 2.5) if finite else 1.0
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    series: dict[str, list[dict[str, Any]]] = {}
    keys = sorted({k for r in with_tau for k in r["varies"] if k != TAU_KEY})
    differ = [k for k in keys if len({json.dumps(r["varies"].get(k), sort_keys=True) for r in with_tau}) > 1]
    for row in with_tau:
        other = json.dumps({k: row["varies"].get(k) for k in differ}, sort_keys=True, default=str)
        series.setdefault(other, []).append(row)
    for i, members in enumerate(series.values()):
        label = series_label([r["setting"] for r in members])
        members.sort(key=lambda r: float(r["varies"][TAU_KEY]))
        xs = [float(r["varies"][TAU_KEY]) if math.isfinite(r["varies"][TAU_KEY]) else inf_x for r in members]
        stats = [r["metrics"][metric] for r in members]
        ys = [s["mean"] for s in stats]
        err = [
            [s["mean"] - s["ci95"][0] if s["ci95"] else 0 for s in stats],
            [s["ci95"][1] - s["mean"] if s["ci95"] else 0 for s in stats],
        ]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label, color=f"C{i % 10}")
    flat = [row for row in rows if row not in with_tau]
    for k, row in enumerate(flat):  # colours after the series' (C0, C1, ...)
        ax.axhline(
            row["metrics"][metric]["mean"],
            linestyle="--",
            linewidth=1,
            label=series_label([row["setting"]]),
            color=f"C{(len(series) + k) % 10}",
        )
    ax.set_xscale("log")
    ax.minorticks_off()
    ticks = finite + ([inf_x] if any(not math.isfinite(r["varies"][TAU_KEY]) for r in with_tau) else [])
    ax.set_xticks(ticks)
    ax.set_xticklabels([("∞" if x == inf_x and x not in finite else f"{x:g}") for x in ticks])
    ax.set_xlabel("temperature τ")
    label = next((text for k, text in summary.metrics if k == metric), metric)
    ax.set_ylabel(f"{label} (%)")
    ax.set_title("mean over seeds, 95 % CI")
    return _save(plt, fig, ax, path)


def series_label(names: list[str], limit: int = MAX_LABEL) -> str:
    """A short legend label for settings drawn as one line: the name of a single setting; for several,
    their common prefix with ``*`` (``kd_t1``, ``kd_t4``, ``kd_tinf`` -> ``kd_t*``), else the first
    and last names (``a … b``); at most ``limit`` characters."""
    if len(names) == 1:
        label = names[0]
    else:
        prefix = os.path.commonprefix(names)
        label = f"{prefix}*" if len(prefix.rstrip("_-. ")) >= 2 else f"{names[0]} … {names[-1]}"
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _save(plt, fig, ax, path: Path) -> Path:
    """Grid, legend below the axes (one short label per entry), tight layout; write the PNG, close the figure."""
    ax.grid(alpha=0.3)
    entries = len(ax.get_legend_handles_labels()[1])
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=max(1, min(3, entries)), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def plot_curves(summary: Summary, path: Path) -> Path | None:
    """The test value of the selected metric (top-1, mIoU, ...) per epoch, mean over each setting's
    seeds; None when no run has curves."""
    key = _selected(summary)
    curves = {}
    for row in summary.rows:
        runs = [read_curve(Path(r), key) for r in row["runs"]]
        runs = [c for c in runs if c]
        if not runs:
            continue
        length = min(len(c) for c in runs)
        epochs = [e for e, _ in runs[0][:length]]
        curves[row["setting"]] = (epochs, [statistics.mean(c[i][1] for c in runs) for i in range(length)])
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, (epochs, mean) in curves.items():
        ax.plot(epochs, mean, label=series_label([name]))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 (%)" if key == "top1" else f"test {key}")
    ax.set_title(f"test {'accuracy' if key == 'top1' else key} (mean over seeds)")
    return _save(plt, fig, ax, path)
