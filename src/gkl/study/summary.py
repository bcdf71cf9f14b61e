"""Mean ± std, 95 % confidence intervals and paired differences over seeds of finished runs.

Backs ``gkl summarize``, ``gkl sweep`` and ``gkl demo``. Runs are grouped into *settings*
by their resolved config with ``name``, ``out_dir``, ``train.seed`` and the fields that
do not change a result (device, paths, logging) left out; a teacher checkpoint inside
another run directory counts by that run's setting, so a per-seed chain stays one
setting. Within a setting every seed appears once: the same directory given twice is
counted once, two directories with the same seed are an error naming both. Runs
without ``summary.json`` (unfinished) are listed as skipped (reading runs: :mod:`gkl.study.runs`).

A row is labelled by its setting's name in the study (the ``study.json`` a sweep writes next to
its runs, :mod:`gkl.study.manifest`), else by its runs' seed-less name; rows come in the order
of the arguments, then the study's order of settings, then the runs' start. Settings with
published numbers (a study's ``paper:``) get the table "paper | ours | Δ" (:mod:`gkl.study.paper`).

Confidence intervals are Student-t intervals, mean ± t(0.975, n − 1) · s / √n. The
paired difference of a setting to the baseline setting is taken seed by seed over
the seeds both have, so the seed-to-seed variation both share cancels.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gkl.study.evaluation import StudyEvaluation, recorded_values, robust_column
from gkl.study.manifest import StudyManifest, manifest_of
from gkl.study.paper import format_paper_table, paper_rows
from gkl.study.runs import RunRecord, expand_run_dirs, read_run, run_weights, setting_stem
from gkl.study.statistics import describe
from gkl.utils.errors import InputError

__all__ = [
    "DEFAULT_METRICS",
    "metric_columns",
    "Summary",
    "summarize",
    "summarize_runs",
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


# ----------------------------------------------------------------------------- grouping


@dataclass
class Summary:
    """Rows (one per setting), the metrics reported, the baseline and the skipped runs."""

    rows: list[dict[str, Any]]
    metrics: list[tuple[str, str]]
    baseline: str | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)
    #: setting -> metric -> {paper, ours, delta} for settings with published numbers (:mod:`gkl.study.paper`)
    paper: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    source: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "baseline": self.baseline,
            "metrics": [{"key": k, "label": label} for k, label in self.metrics],
            "rows": self.rows,
            "skipped": self.skipped,
        }
        if self.paper:
            out.update(paper=self.paper, source=self.source)
        return out


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _labels(groups: list[list[RunRecord]], names: dict[Path, str]) -> tuple[list[str], list[dict[str, Any]]]:
    """A label per group and the config keys that vary between groups.

    The label is the setting's name: ``names`` (given, or the study's from study.json) for its
    runs, else their common seed-less run name. Two groups with one label (one name for two
    configs, e.g. runs of two studies) are told apart by their runs' folder, then by a number.
    """
    flats = [_flatten(json.loads(g[0].key)) for g in groups]
    keys = sorted(set().union(*flats)) if flats else []
    varying = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]
    varies = [{k: f.get(k) for k in varying} for f in flats]
    labels = []
    for group in groups:
        named = sorted({names.get(r.run_dir.resolve()) or setting_stem(r.name) for r in group})
        labels.append("|".join(named))
    named = list(labels)
    for i, label in enumerate(named):
        if named.count(label) > 1:
            folders = sorted({r.run_dir.resolve().parent.name for r in groups[i]})
            labels[i] = f"{label} ({', '.join(folders)})"
    foldered, seen = list(labels), dict.fromkeys(labels, 0)
    for i, label in enumerate(foldered):
        if foldered.count(label) > 1:
            seen[label] += 1
            labels[i] = f"{label} #{seen[label]}"
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
    run_dirs: list[Path] = []
    position: dict[Path, int] = {}  # the argument a run directory came from
    for index, raw in enumerate(paths):
        for run_dir in expand_run_dirs([raw]):
            if run_dir.resolve() not in position:
                position[run_dir.resolve()] = index
                run_dirs.append(run_dir)
    given = {Path(p).resolve(): str(v) for p, v in (labels or {}).items()}
    manifests: dict[Path, StudyManifest | None] = {}
    names: dict[Path, str] = {}  # run directory -> setting name (given, or the study's)
    order: dict[Path, tuple[int, int, int]] = {}  # argument, place in the study, start time
    paper: dict[Path, dict[str, float]] = {}
    evaluations: dict[Path, StudyEvaluation] = {}  # run directory -> its setting's evaluate: block
    sources: list[str] = []
    groups: dict[str, list[RunRecord]] = {}
    skipped: list[dict[str, str]] = []
    for run_dir in run_dirs:
        record = read_run(run_dir)
        if isinstance(record, str):
            skipped.append({"run": str(run_dir), "reason": record})
            continue
        resolved = run_dir.resolve()
        manifest = manifest_of(run_dir, manifests)
        setting = manifest.setting_of.get(resolved.name) if manifest is not None else None
        place = manifest.order(setting) if manifest is not None else 0
        if manifest is not None and setting is not None:
            names[resolved] = setting
            paper[resolved] = manifest.paper.get(setting, {})
            if setting in manifest.evaluations:
                evaluations[resolved] = manifest.evaluations[setting]
            if manifest.source and manifest.source not in sources:
                sources.append(manifest.source)
        if resolved in given:
            names[resolved] = given[resolved]
        order[resolved] = (position[resolved], place, (run_dir / "config.yaml").stat().st_mtime_ns)
        group = groups.setdefault(record.key, [])
        for other in group:
            if other.seed == record.seed:
                raise InputError(
                    f"{other.run_dir} and {record.run_dir} are two runs of the same setting with "
                    f"the same seed {record.seed}; give only one of them"
                )
        group.append(record)
    # rows in study order: by argument, then the study's order of settings (study.json), then start time
    ordered = sorted(
        (sorted(g, key=lambda r: r.seed) for g in groups.values()),
        key=lambda g: min(order[r.run_dir.resolve()] for r in g),
    )
    labels_, varies = _labels(ordered, names)
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
    for name, group, vary in zip(labels_, ordered, varies):
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
    published = {
        name: numbers
        for name, group in zip(labels_, ordered)
        if (numbers := next((paper[r.run_dir.resolve()] for r in group if paper.get(r.run_dir.resolve())), None))
    }
    compared = paper_rows(
        [
            (n, [(r.seed, r.summary, _robust_values(r, evaluations, published.get(n, {}))) for r in g])
            for n, g in zip(labels_, ordered)
        ],
        published,
    )
    return Summary(
        rows=rows,
        metrics=present,
        baseline=baseline,
        skipped=skipped,
        paper=compared,
        source="; ".join(sources) or None,
    )


def _robust_values(
    record: RunRecord, evaluations: dict[Path, StudyEvaluation], published: dict[str, float]
) -> dict[str, float]:
    """The run's robust accuracies (%) of the published columns, from its recorded evaluation."""
    evaluation = evaluations.get(record.run_dir.resolve())
    if evaluation is None:
        return {}
    columns = [m for m in published if robust_column(m) is not None]
    return recorded_values(record.run_dir, evaluation, run_weights(record.config), columns) if columns else {}


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
    if summary.paper:
        lines += ["", *format_paper_table(summary.paper, summary.source)]
    if summary.skipped:
        lines += ["", "Skipped:", ""] + [f"- {s['run']}: {s['reason']}" for s in summary.skipped]
    return "\n".join(lines)


def format_csv(summary: Summary) -> str:
    """One line per setting: n, mean, std, CI bounds per metric, paired Δ columns, published numbers
    (``paper_<metric>``, ``ours_<metric>_mean/_std/_n``, ``paper_<metric>_delta``), seeds and runs."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["setting", "n_seeds"]
    for key, _ in summary.metrics:
        header += [f"{key}_mean", f"{key}_std", f"{key}_ci95_low", f"{key}_ci95_high"]
        if summary.baseline is not None:
            header += [f"{key}_delta_mean", f"{key}_delta_ci95_low", f"{key}_delta_ci95_high", f"{key}_delta_n"]
    paper_metrics = list(dict.fromkeys(m for cells in summary.paper.values() for m in cells))
    for metric in paper_metrics:
        header += [f"paper_{metric}", f"ours_{metric}_mean", f"ours_{metric}_std", f"ours_{metric}_n"]
        header += [f"paper_{metric}_delta"]
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
        for metric in paper_metrics:  # published numbers: paper, ours (mean, std, n), Δ
            cell = summary.paper.get(row["setting"], {}).get(metric) or {}
            ours = cell.get("ours") or {}
            line += [cell.get("paper"), ours.get("mean"), ours.get("std"), ours.get("n"), cell.get("delta")]
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
