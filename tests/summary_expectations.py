"""What `gkl summarize` must print for runs of a classifier, computed from the runs' metrics.jsonl.

Independent of gkl.study: the last and best test top-1 are read from every epoch's line of
metrics.jsonl, mean and sample standard deviation come from :mod:`statistics`, and the 95 %
Student-t interval of a mean over two seeds uses the quantile of t with one degree of freedom
(the Cauchy distribution), t(0.975, 1) = tan(0.475 π). Settings with more than two seeds are not
supported here (the tests use one or two).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

LAST, BEST = "test top-1, last epoch", "test top-1, best epoch (selected on test)"


def top1_per_epoch(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [float(json.loads(line)["eval"]["top1"]) for line in lines if line.strip()]


def cell(values: list[float], *, signed: bool = False) -> str:
    fmt = "{:+.2f}" if signed else "{:.2f}"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return fmt.format(mean)
    assert len(values) == 2, "only one or two seeds are supported"
    std = statistics.stdev(values)
    half = math.tan(0.475 * math.pi) * std / math.sqrt(2)
    return f"{fmt.format(mean)} ± {std:.2f} [{fmt.format(mean - half)}, {fmt.format(mean + half)}]"


def expected_rows(settings: dict[str, list[Path]]) -> dict[str, dict[str, str]]:
    """``{setting: {column label: cell}}`` for the last and best test top-1 of each setting's runs."""
    rows = {}
    for name, run_dirs in settings.items():
        curves = [top1_per_epoch(d) for d in run_dirs]
        rows[name] = {
            "seeds": str(len(run_dirs)),
            LAST: cell([c[-1] for c in curves]),
            BEST: cell([max(c) for c in curves]),
        }
    return rows


def parse_table(markdown: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The header and ``{setting: {column: cell}}`` of the first markdown table in ``markdown``."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    split = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    header, body = split[0], split[2:]
    return header, {row[0]: dict(zip(header[1:], row[1:])) for row in body}
