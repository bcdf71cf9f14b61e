"""Mean ± std, 95 % confidence intervals and paired differences over seeds of finished runs.

Backs ``gkl summarize``, ``gkl sweep`` and ``gkl demo``. Runs are grouped into *settings*
by their resolved config with ``name``, ``out_dir``, ``train.seed`` and the fields that
do not change a result (device, paths, logging) left out; a teacher checkpoint inside
another run directory counts by that run's setting, so a per-seed chain stays one
setting. Within a setting every seed appears once: the same directory given twice is
counted once, two directories with the same seed are an error naming both. Runs
without ``summary.json`` (unfinished) are listed as skipped.

Confidence intervals are Student-t intervals, mean ± t(0.975, n − 1) · s / √n. The
paired difference of a setting to the baseline setting is taken seed by seed over
the seeds both have, so the seed-to-seed variation both share cancels.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gkl.study.statistics import describe
from gkl.utils.errors import InputError

__all__ = [
    "DEFAULT_METRICS",
    "metric_columns",
    "RunRecord",
    "Summary",
    "expand_run_dirs",
    "read_run",
    "summarize",
    "summarize_runs",
    "setting_stem",
    "write_summary",
]


def metric_columns(metric: str = "top1") -> tuple[tuple[str, str], ...]:
    """The summary.json keys the engine writes for a run's ``train.select_metric`` (in order, with
    column labels): test value at the last epoch, test value at the best-validation epoch, best
    validation value, and the best test value (runs without a validation split only)."""
    label = "top-1" if metric == "top1" else metric
    return (
        (f"last_{metric}", f"test {label}, last epoch"),
        (f"test_{metric}_at_best_val", f"test {label} at best-val epoch"),
        (f"best_val_{metric}", f"val {label}, best epoch"),
        (f"best_{metric}", f"test {label}, best epoch (selected on test)"),
    )


def task_columns(config: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The extra columns of a run's task (``Task.summary_metrics``): the metric at the last evaluation,
    read from summary.json's ``final.eval`` (none for a kind no installed task knows)."""
    from gkl.tasks import get_task
    from gkl.utils.errors import ConfigError

    try:
        task = get_task(config.get("kind"))
    except ConfigError:
        return ()
    return tuple((f"final.eval.{m}", f"test {m}, last epoch") for m in task.summary_metrics)


def summary_value(summary: dict[str, Any], key: str) -> Any:
    """``summary[key]``; a dotted key (``final.eval.mAcc``) looks into the nested sections; None when absent."""
    if key in summary:
        return summary[key]
    node: Any = summary
    for part in key.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


#: summary.json keys reported, in order, with their column labels; absent keys are left out.
DEFAULT_METRICS: tuple[tuple[str, str], ...] = metric_columns("top1")
#: config fields that never change a result; ignored when grouping runs into settings.
IGNORED_FIELDS = (
    ("name",),
    ("out_dir",),
    ("train", "seed"),
    ("train", "device"),
    ("train", "progress"),
    ("train", "log_every"),
    ("train", "eval_every"),
    ("train", "checkpoint_every"),
    ("data", "root"),
    ("data", "num_workers"),
    ("data", "download"),
)
_SEED_SUFFIX = re.compile(r"[_-]s(?:eed)?\d+$")


# ----------------------------------------------------------------------------- reading runs


@dataclass
class RunRecord:
    """One finished run: its directory, name, seed, setting key and summary.json."""

    run_dir: Path
    name: str
    seed: int
    key: str
    config: dict[str, Any]
    summary: dict[str, Any]


def setting_stem(name: str) -> str:
    """A run name without its seed suffix (``kd_t4_seed3`` -> ``kd_t4``; ``_s3``, ``-seed3`` too)."""
    return _SEED_SUFFIX.sub("", name) or name


def expand_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories from ``paths``: a run directory (with config.yaml) as is, a directory
    holding run directories (e.g. a sweep's output) as its runs. Duplicates are dropped."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise InputError(f"{path}: no such run directory")
        if (path / "config.yaml").is_file():
            found.append(path)
            continue
        children = sorted(p.parent for p in path.glob("*/config.yaml"))
        if not children:
            children = sorted(p.parent for p in path.glob("*/*/config.yaml"))
        if not children:
            raise InputError(f"{path}: not a gkl run directory (no config.yaml) and holds none")
        found.extend(children)
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _pop(config: dict[str, Any], dotted: tuple[str, ...]) -> None:
    node: Any = config
    for part in dotted[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(dotted[-1], None)


def _setting_config(config: dict[str, Any]) -> dict[str, Any]:
    reduced = json.loads(json.dumps(config, default=str))
    for dotted in IGNORED_FIELDS:
        _pop(reduced, dotted)
    teacher = reduced.get("teacher")
    if isinstance(teacher, dict) and teacher.get("checkpoint"):
        ckpt = Path(str(teacher["checkpoint"]))
        parent = ckpt.parent.name
        if (ckpt.parent / "config.yaml").is_file() or setting_stem(parent) != parent:
            # a checkpoint of another run (or of one seed of a teacher): count it by the teacher's setting
            teacher["checkpoint"] = f"run:{setting_stem(ckpt.parent.name)}/{ckpt.name}"
    return reduced


def read_run(run_dir: Path) -> RunRecord | str:
    """The run's record, or the reason it is skipped (a string) when it has not finished."""
    config_path, summary_path = run_dir / "config.yaml", run_dir / "summary.json"
    if not config_path.is_file():
        raise InputError(f"{run_dir}: not a gkl run directory (no config.yaml)")
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise InputError(f"{config_path}: unreadable YAML ({str(err).splitlines()[0]})") from None
    if not summary_path.is_file():
        return "unfinished (no summary.json)"
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return "unfinished (summary.json unreadable)"
    if summary.get(f"last_{summary.get('select_metric', 'top1')}") is None:
        return "no evaluation in summary.json"
    seed = int(config.get("train", {}).get("seed", 0))
    name = str(config.get("name", run_dir.name))
    setting = _setting_config(config)
    return RunRecord(
        run_dir=run_dir, name=name, seed=seed, key=json.dumps(setting, sort_keys=True), config=config, summary=summary
    )


# ----------------------------------------------------------------------------- grouping


@dataclass
class Summary:
    """Rows (one per setting), the metrics reported, the baseline and the skipped runs."""

    rows: list[dict[str, Any]]
    metrics: list[tuple[str, str]]
    baseline: str | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "metrics": [{"key": k, "label": label} for k, label in self.metrics],
            "rows": self.rows,
            "skipped": self.skipped,
        }


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _labels(groups: list[list[RunRecord]], given: dict[Path, str]) -> tuple[list[str], list[dict[str, Any]]]:
    """A label per group (given, else the common seed-less run name) and the config keys that vary."""
    flats = [_flatten(json.loads(g[0].key)) for g in groups]
    keys = sorted(set().union(*flats)) if flats else []
    varying = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]
    varies = [{k: f.get(k) for k in varying} for f in flats]
    labels = []
    for group in groups:
        named = {given[r.run_dir.resolve()] for r in group if r.run_dir.resolve() in given}
        stems = sorted({setting_stem(r.name) for r in group})
        labels.append(named.pop() if len(named) == 1 else "|".join(stems))
    counts = {label: labels.count(label) for label in labels}
    for i, label in enumerate(labels):
        if counts[label] > 1:  # same name, different configs: add what differs
            labels[i] = label + " (" + ", ".join(f"{k}={v}" for k, v in varies[i].items()) + ")"
    return labels, varies


def summarize(
    paths: Iterable[str | Path],
    *,
    baseline: str | None = None,
    labels: dict[str | Path, str] | None = None,
    metrics: Sequence[tuple[str, str]] | None = None,
) -> Summary:
    """Group finished runs into settings and describe each metric over seeds.

    ``labels`` names settings by run directory (e.g. a sweep's setting names; all runs of
    a setting must agree); otherwise a setting is named by its runs' common seed-less name.
    ``baseline`` names the setting the paired differences are taken against. ``metrics``
    defaults to the columns of the runs' ``train.select_metric`` (top-1, mIoU, zeroshot_top1, ...) and
    their task's ``summary_metrics`` (:mod:`gkl.tasks`).
    """
    run_dirs = expand_run_dirs(paths)
    given = {Path(p).resolve(): str(v) for p, v in (labels or {}).items()}
    groups: dict[str, list[RunRecord]] = {}
    skipped: list[dict[str, str]] = []
    for run_dir in run_dirs:
        record = read_run(run_dir)
        if isinstance(record, str):
            skipped.append({"run": str(run_dir), "reason": record})
            continue
        group = groups.setdefault(record.key, [])
        for other in group:
            if other.seed == record.seed:
                raise InputError(
                    f"{other.run_dir} and {record.run_dir} are two runs of the same setting with "
                    f"the same seed {record.seed}; give only one of them"
                )
        group.append(record)
    ordered = [sorted(g, key=lambda r: r.seed) for g in groups.values()]
    names, varies = _labels(ordered, given)
    if metrics is None:
        selected = dict.fromkeys(r.summary.get("select_metric", "top1") for g in ordered for r in g)
        metrics = [c for m in (selected or {"top1": None}) for c in metric_columns(m)]
        metrics += [
            c
            for c in dict.fromkeys(c for g in ordered for r in g for c in task_columns(r.config))
            if c[0] not in {k for k, _ in metrics}
        ]
    present = [
        (k, label) for k, label in metrics if any(summary_value(r.summary, k) is not None for g in ordered for r in g)
    ]
    rows = []
    for name, group, vary in zip(names, ordered, varies):
        row: dict[str, Any] = {
            "setting": name,
            "seeds": [r.seed for r in group],
            "runs": [str(r.run_dir) for r in group],
            "varies": vary,
            "metrics": {},
        }
        for key, _ in present:
            values = {
                r.seed: float(summary_value(r.summary, key)) for r in group if summary_value(r.summary, key) is not None
            }
            if values:
                row["metrics"][key] = describe(values)
        collapsed = [str(r.run_dir) for r in group if r.summary.get("collapsed")]
        if collapsed:
            row["collapsed"] = collapsed
        rows.append(row)
    if baseline is not None:
        base = [row for row in rows if row["setting"] == baseline]
        if not base:
            raise InputError(
                f"baseline: no setting named {baseline!r}; settings: " + ", ".join(repr(r["setting"]) for r in rows)
            )
        for row in rows:
            row["paired"] = _paired(row, base[0], present)
    return Summary(rows=rows, metrics=present, baseline=baseline, skipped=skipped)


def _paired(row: dict[str, Any], base: dict[str, Any], metrics: Sequence[tuple[str, str]]) -> dict[str, Any]:
    paired: dict[str, Any] = {}
    for key, _ in metrics:
        mine, theirs = row["metrics"].get(key), base["metrics"].get(key)
        if mine is None or theirs is None:
            continue
        common = sorted(set(mine["values"]) & set(theirs["values"]), key=int)
        if len(common) < 2:  # one pair says nothing about the spread
            continue
        diffs = {int(s): mine["values"][s] - theirs["values"][s] for s in common}
        paired[key] = {"baseline": base["setting"], **describe(diffs)}
    return paired


# ----------------------------------------------------------------------------- output


def _cell(stats: dict[str, Any] | None, *, signed: bool = False) -> str:
    if stats is None:
        return "-"
    fmt = "{:+.2f}" if signed else "{:.2f}"
    text = fmt.format(stats["mean"])
    if stats["std"] is not None:
        text += f" ± {stats['std']:.2f}"
    if stats["ci95"] is not None:
        lo, hi = stats["ci95"]
        text += f" [{fmt.format(lo)}, {fmt.format(hi)}]"
    return text


def format_markdown(summary: Summary) -> str:
    """The table (mean ± std [95 % CI] per metric; paired Δ to the baseline), then per-seed values."""
    head = ["setting", "seeds"] + [label for _, label in summary.metrics]
    if summary.baseline is not None:
        head += [f"Δ {label} vs {summary.baseline}" for key, label in summary.metrics[:1]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary.rows:
        cells = [row["setting"], str(len(row["seeds"]))]
        cells += [_cell(row["metrics"].get(key)) for key, _ in summary.metrics]
        if summary.baseline is not None:
            first = summary.metrics[0][0] if summary.metrics else None
            cells.append(
                _cell(row.get("paired", {}).get(first), signed=True)
                if row["setting"] != summary.baseline
                else "(baseline)"
            )
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "mean ± sample std [95 % t-interval of the mean] over seeds"
        + ("; Δ: paired difference over common seeds" if summary.baseline else "")
        + "."
    )
    if summary.metrics:
        key, label = summary.metrics[0]
        lines += ["", f"Per-seed {label}:", ""]
        for row in summary.rows:
            values = row["metrics"].get(key, {}).get("values", {})
            lines.append(f"- {row['setting']}: " + ", ".join(f"seed {s}: {v:.2f}" for s, v in values.items()))
    for row in summary.rows:
        if row.get("collapsed"):
            lines.append(f"- {row['setting']}: collapsed runs: {', '.join(row['collapsed'])}")
    if summary.skipped:
        lines += ["", "Skipped:", ""] + [f"- {s['run']}: {s['reason']}" for s in summary.skipped]
    return "\n".join(lines)


def format_csv(summary: Summary) -> str:
    """One line per setting: n, mean, std, CI bounds per metric, paired Δ columns, seeds and runs."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["setting", "n_seeds"]
    for key, _ in summary.metrics:
        header += [f"{key}_mean", f"{key}_std", f"{key}_ci95_low", f"{key}_ci95_high"]
        if summary.baseline is not None:
            header += [f"{key}_delta_mean", f"{key}_delta_ci95_low", f"{key}_delta_ci95_high", f"{key}_delta_n"]
    header += ["seeds", "runs"]
    writer.writerow(header)
    for row in summary.rows:
        line: list[Any] = [row["setting"], len(row["seeds"])]
        for key, _ in summary.metrics:
            stats = row["metrics"].get(key)
            ci = (stats or {}).get("ci95") or [None, None]
            line += [stats and stats["mean"], stats and stats["std"], ci[0], ci[1]]
            if summary.baseline is not None:
                delta = row.get("paired", {}).get(key)
                dci = (delta or {}).get("ci95") or [None, None]
                line += [delta and delta["mean"], dci[0], dci[1], delta and delta["n"]]
        line += [" ".join(map(str, row["seeds"])), " ".join(row["runs"])]
        writer.writerow(["" if v is None else v for v in line])
    return buffer.getvalue()


def write_summary(summary: Summary, out_dir: Path, stem: str = "summary") -> dict[str, Path]:
    """``<stem>.md``, ``<stem>.csv`` and ``<stem>.json`` in ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / f"{stem}.md", "csv": out_dir / f"{stem}.csv", "json": out_dir / f"{stem}.json"}
    for kind, text in (
        ("md", format_markdown(summary) + "\n"),
        ("csv", format_csv(summary)),
        ("json", json.dumps(summary.to_json(), indent=2) + "\n"),
    ):
        tmp = paths[kind].with_suffix(paths[kind].suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(paths[kind])
    return paths


def summarize_runs(run_dirs: Sequence[Path], *, baseline: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """Rows (with the per-seed lists ``last_top1``/``best_top1`` ordered by seed) and the printable table."""
    summary = summarize(run_dirs, baseline=baseline)
    rows = []
    for row in summary.rows:
        legacy = {"name": row["setting"], "seeds": len(row["seeds"]), "seed_list": row["seeds"]}
        for key in ("last_top1", "best_top1"):
            if key in row["metrics"]:
                legacy[key] = list(row["metrics"][key]["values"].values())
        rows.append({**row, **legacy})
    return rows, format_markdown(summary)
