"""Published numbers in a study, and the comparison "paper | ours (mean ± std, n seeds) | Δ".

A study setting may carry ``paper: {<metric>: <published number>, ...}`` and the study a
``source: "..."`` string (where the numbers come from)::

    source: "Cui et al., GKL (TPAMI), Table 3"
    settings:
      gkl: {config: ..., paper: {top1: 77.53}}
      lt:  {config: ..., paper: {top1: 53.2, many: 71.1, few: 30.4}}

A metric is a name the run's evaluator writes at every evaluation (``Task.metric_names``:
``top1``, ``top5``, ImageNet-LT's ``many`` / ``medium`` / ``few``, ``mIoU``, ``zeroshot_top1``,
...), or a robust accuracy of the setting's ``evaluate:`` block (``aa``, ``pgd<k>``, ``cw<k>``,
``worst``, or ``aa@8/255``...; :mod:`gkl.study.evaluation`); a name neither produces is an error
before any run. *Ours* is the metric at the run's last evaluation of the test split
(``summary.json``'s ``final.eval``, equal to the last line of ``metrics.jsonl``), or the robust
accuracy in % of the run's recorded evaluation, mean ± sample std over the seeds; Δ = ours − paper.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from gkl.study.evaluation import ROBUST_COLUMNS, StudyEvaluation, robust_column
from gkl.study.statistics import describe
from gkl.utils.errors import InputError

__all__ = ["check_paper", "final_metric", "paper_rows", "format_paper_table"]


def check_paper(where: str, value: Any, task: Any, evaluation: StudyEvaluation | None = None) -> dict[str, float]:
    """A setting's ``paper:`` as {metric: number}; a metric neither the setting's task writes nor its
    ``evaluate:`` block (``evaluation``) produces is an error."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        raise InputError(f"{where}.paper: expected a mapping {{metric: published number}}, got {value!r}")
    known = task.metrics()
    numbers: dict[str, float] = {}
    for metric, number in value.items():
        column = robust_column(str(metric)) if metric not in known else None
        if column is not None and evaluation is not None:
            problem = evaluation.column_problem(column)
            if problem is not None:
                raise InputError(f"{where}.paper.{metric}: {problem}")
        elif metric not in known:
            robust = (
                f"; robust accuracies ({ROBUST_COLUMNS}) need an evaluate: block in the setting or the study"
                if task.robust_evaluation and evaluation is None
                else ""
            )
            raise InputError(
                f"{where}.paper.{metric}: a '{task.name}' run does not write the metric {metric!r}; "
                f"it writes {', '.join(known)}{robust}"
            )
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise InputError(f"{where}.paper.{metric}: expected a finite number, got {number!r}")
        numbers[str(metric)] = float(number)
    return numbers


def final_metric(summary: Mapping[str, Any], metric: str) -> float | None:
    """``metric`` at the run's last test evaluation (``final.eval``, or its ``groups``); None when absent."""
    final = summary.get("final")
    evaluation = final.get("eval") if isinstance(final, dict) else None
    if not isinstance(evaluation, dict):
        return None
    value = evaluation.get(metric)
    if value is None and isinstance(evaluation.get("groups"), dict):
        value = evaluation["groups"].get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def paper_rows(
    groups: Sequence[tuple[str, Sequence[tuple[int, Mapping[str, Any], Mapping[str, float]]]]],
    paper: Mapping[str, Mapping[str, float]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per setting with published numbers, per metric: ``{paper, ours (describe() or None), delta}``.

    ``groups`` is ``[(setting, [(seed, summary.json, robust accuracies {column: %}), ...]), ...]``.
    """
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for setting, runs in groups:
        published = paper.get(setting)
        if not published:
            continue
        rows[setting] = {}
        for metric, number in published.items():
            values = {
                seed: v
                for seed, summary, robust in runs
                if (v := robust[metric] if metric in robust else final_metric(summary, metric)) is not None
            }
            ours = describe(values) if values else None
            rows[setting][metric] = {
                "paper": number,
                "ours": ours,
                "delta": None if ours is None else ours["mean"] - number,
            }
    return rows


def _ours(stats: Mapping[str, Any] | None) -> str:
    if stats is None:
        return "-"
    spread = f" ± {stats['std']:.2f}" if stats["std"] is not None else ""
    return f"{stats['mean']:.2f}{spread} (n={stats['n']})"


def format_paper_table(rows: Mapping[str, Mapping[str, Mapping[str, Any]]], source: str | None) -> list[str]:
    """Markdown lines: one row per setting, per metric the columns paper | ours | Δ."""
    if not rows:
        return []
    metrics = list(dict.fromkeys(m for cells in rows.values() for m in cells))
    head = ["setting"]
    for metric in metrics:
        head += [f"{metric}: paper", f"{metric}: ours", f"{metric}: Δ"]
    lines = [f"Against the published numbers{f' ({source})' if source else ''}:", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for setting, cells in rows.items():
        line = [setting]
        for metric in metrics:
            cell = cells.get(metric)
            if cell is None:
                line += ["", "", ""]
                continue
            delta = "-" if cell["delta"] is None else f"{cell['delta']:+.2f}"
            line += [f"{cell['paper']:.2f}", _ours(cell["ours"]), delta]
        lines.append("| " + " | ".join(line) + " |")
    lines += [
        "",
        "ours: the metric at the last test evaluation, mean ± sample std over n seeds; Δ = ours − paper.",
    ]
    robust = [m for m in metrics if robust_column(m) is not None]
    if robust:
        lines[-1] += (
            f" {', '.join(robust)}: accuracy in % under the study's evaluate: block, "
            "from each run's recorded evaluation (evaluations.jsonl)."
        )
    return lines
