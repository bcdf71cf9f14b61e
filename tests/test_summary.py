"""``gkl summarize`` semantics: settings, duplicates, skipped runs, CIs, paired differences, CSV/JSON."""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
from pathlib import Path

import pytest
import yaml

from gkl.study.statistics import confidence_interval, t_quantile
from gkl.study.summary import format_csv, summarize, summarize_runs, write_summary
from gkl.utils.errors import InputError


def _run(
    root: Path,
    name: str,
    seed: int,
    *,
    temperature: float = 4.0,
    last: float | None = 50.0,
    best: float | None = None,
    finished: bool = True,
    teacher: str | None = None,
) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {
        "kind": "distill",
        "name": name,
        "out_dir": str(root),
        "model": {"name": "mnist1d_mlp"},
        "distill": {"method": "kd", "temperature": temperature},
        "teacher": {"name": "mnist1d_cnn", "checkpoint": teacher},
        "train": {"seed": seed, "epochs": 3, "device": "cpu"},
        "data": {"root": f"/data{seed}"},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    if finished:
        (run_dir / "summary.json").write_text(
            json.dumps({"last_top1": last, "best_top1": best if best is not None else last, "epochs": 3})
        )
    return run_dir


@pytest.fixture()
def runs(tmp_path: Path) -> dict[str, list[Path]]:
    kd = [_run(tmp_path, f"kd_seed{s}", s, last=v) for s, v in zip(range(4), (60.0, 62.0, 61.0, 65.0))]
    hot = [_run(tmp_path, f"kd_hot_seed{s}", s, temperature=20.0, last=v) for s, v in zip(range(3), (63.0, 62.5, 64.0))]
    return {"kd": kd, "hot": hot}


def test_t_quantile_and_interval_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4, 9, 30, 200):
        for p in (0.9, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)
    values = [60.0, 62.0, 61.0, 65.0]
    lo, hi = confidence_interval(values)
    ref = stats.t.interval(0.95, 3, loc=statistics.mean(values), scale=statistics.stdev(values) / 2)
    assert (lo, hi) == pytest.approx(ref, rel=1e-9)
    assert confidence_interval([1.0]) is None


def test_rows_by_setting_with_stats_and_paired_differences(runs) -> None:
    summary = summarize(runs["kd"] + runs["hot"], baseline="kd")
    rows = {r["setting"]: r for r in summary.rows}
    assert set(rows) == {"kd", "kd_hot"}  # labelled by setting, not by the first run's name
    kd = rows["kd"]["metrics"]["last_top1"]
    assert (
        kd["n"] == 4
        and kd["mean"] == pytest.approx(62.0)
        and kd["std"] == pytest.approx(statistics.stdev([60.0, 62.0, 61.0, 65.0]))
    )
    assert kd["values"] == {"0": 60.0, "1": 62.0, "2": 61.0, "3": 65.0}
    assert rows["kd"]["varies"] == {"distill.temperature": 4.0}
    paired = rows["kd_hot"]["paired"]["last_top1"]
    diffs = [63.0 - 60.0, 62.5 - 62.0, 64.0 - 61.0]  # common seeds 0, 1, 2 only
    assert paired["n"] == 3 and paired["mean"] == pytest.approx(statistics.mean(diffs))
    assert paired["ci95"] == pytest.approx(list(confidence_interval(diffs)))
    assert rows["kd"]["paired"]["last_top1"]["mean"] == 0.0


def test_same_run_twice_counts_once_and_duplicate_seed_is_an_error(runs, tmp_path: Path) -> None:
    once = summarize(runs["kd"])
    twice = summarize(runs["kd"] + [runs["kd"][0], Path(str(runs["kd"][1]) + "/")])
    assert twice.to_json() == once.to_json()
    other = _run(tmp_path / "elsewhere", "kd_again", 2)
    with pytest.raises(InputError, match=r"kd_seed2 and .*kd_again are two runs of the same setting"):
        summarize(runs["kd"] + [other])


def test_unfinished_runs_are_listed_as_skipped(runs, tmp_path: Path) -> None:
    pending = _run(tmp_path, "kd_seed9", 9, finished=False)
    summary = summarize(runs["kd"] + [pending])
    assert summary.skipped == [{"run": str(pending), "reason": "unfinished (no summary.json)"}]
    assert summary.rows[0]["seeds"] == [0, 1, 2, 3]
    with pytest.raises(InputError, match="no such run directory"):
        summarize([tmp_path / "missing"])
    with pytest.raises(InputError, match="baseline: no setting named 'ce'"):
        summarize(runs["kd"], baseline="ce")


def test_a_directory_of_runs_and_per_seed_teacher_chains(tmp_path: Path) -> None:
    root = tmp_path / "study"
    for s in range(2):
        _run(root, f"first_seed{s}", s, last=70.0 + s)
        _run(root, f"second_seed{s}", s, last=72.0 + s, teacher=str(root / f"first_seed{s}" / "best.pt"))
    summary = summarize([root])
    assert [r["setting"] for r in summary.rows] == ["first", "second"]
    assert [r["seeds"] for r in summary.rows] == [[0, 1], [0, 1]]


def test_csv_json_markdown_outputs(runs, tmp_path: Path) -> None:
    summary = summarize(runs["kd"] + runs["hot"], baseline="kd")
    paths = write_summary(summary, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["baseline"] == "kd" and [r["setting"] for r in data["rows"]] == ["kd", "kd_hot"]
    table = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert table[1]["setting"] == "kd_hot" and float(table[1]["last_top1_mean"]) == pytest.approx(63.1666666)
    assert float(table[1]["last_top1_delta_mean"]) == pytest.approx(summary.rows[1]["paired"]["last_top1"]["mean"])
    assert paths["csv"].read_text() == format_csv(summary)
    md = paths["md"].read_text()
    assert "| kd_hot | 3 |" in md and "seed 0: 63.00" in md and "(baseline)" in md


def test_legacy_rows_for_the_demo(runs) -> None:
    rows, table = summarize_runs(runs["kd"])
    assert rows[0]["name"] == "kd" and rows[0]["seeds"] == 4
    assert rows[0]["last_top1"] == [60.0, 62.0, 61.0, 65.0] and rows[0]["best_top1"] == rows[0]["last_top1"]
    assert "| kd | 4 |" in table


def test_columns_follow_the_runs_selected_metric(tmp_path: Path) -> None:
    """Runs that select on mIoU (segmentation) with a validation split are summarised on mIoU."""
    values = {0: (40.0, 41.0, 43.0), 1: (42.0, 42.5, 44.0), 2: (41.0, 40.0, 42.0)}
    for seed, (last, at_best, val) in values.items():
        run_dir = _run(tmp_path, f"seg_seed{seed}", seed)
        (run_dir / "summary.json").write_text(
            json.dumps(
                {"select_metric": "mIoU", "last_mIoU": last, "test_mIoU_at_best_val": at_best, "best_val_mIoU": val}
            )
        )
    summary = summarize([tmp_path])
    assert [k for k, _ in summary.metrics] == ["last_mIoU", "test_mIoU_at_best_val", "best_val_mIoU"]
    assert summary.metrics[0][1] == "test mIoU, last epoch"
    (row,) = summary.rows
    assert row["metrics"]["last_mIoU"]["mean"] == pytest.approx(41.0)
    assert row["metrics"]["test_mIoU_at_best_val"]["values"] == {"0": 41.0, "1": 42.5, "2": 40.0}
    # a run whose selected metric is missing from summary.json has no evaluation: skipped, not a row
    (tmp_path / "seg_seed2" / "summary.json").write_text(json.dumps({"select_metric": "mIoU", "last_top1": 50.0}))
    assert [s["reason"] for s in summarize([tmp_path]).skipped] == ["no evaluation in summary.json"]


def _manifest(folder: Path, settings: list[str], runs: dict[str, str]) -> None:
    """The study.json a sweep writes: settings in study order, each run folder with its setting."""
    record = {
        "settings": settings,
        "runs": [{"name": n, "setting": s, "run_dir": str(folder / n)} for n, s in runs.items()],
    }
    (folder / "study.json").write_text(json.dumps(record))


def test_rows_carry_the_study_names_in_the_study_order(tmp_path: Path) -> None:
    """Labels are the settings' names from study.json, rows in its order (not alphabetical, not by start)."""
    study = tmp_path / "study"
    for seed in range(2):
        _run(study, f"alpha_seed{seed}", seed, temperature=1.0, last=50.0 + seed)
        _run(study, f"r_seed{seed}", seed, temperature=9.0, last=60.0 + seed)
    _manifest(study, ["zeta", "alpha"], {"r_seed0": "zeta", "r_seed1": "zeta", "alpha_seed0": "alpha"})
    rows = summarize([study]).rows
    # alpha_seed1 is not in study.json (e.g. copied in by hand): its seed-less name, with the others of its config
    assert [r["setting"] for r in rows] == ["zeta", "alpha"]
    assert [r["seeds"] for r in rows] == [[0, 1], [0, 1]]
    # a run the study does not list (a setting since removed from it) comes after the study's settings
    _run(study, "old_seed0", 0, temperature=3.0)
    os.utime(study / "old_seed0" / "config.yaml", ns=(1, 1))  # started before all the others
    assert [r["setting"] for r in summarize([study]).rows] == ["zeta", "alpha", "old"]
    # without a study.json: the order of the arguments, then of the runs' start
    plain = tmp_path / "plain"
    late = [_run(plain, f"a_seed{s}", s, temperature=1.0) for s in range(2)]
    early = [_run(plain, f"b_seed{s}", s, temperature=2.0) for s in range(2)]
    for i, path in enumerate(early + late):
        os.utime(path / "config.yaml", ns=(10**18 + i, 10**18 + i))
    assert [r["setting"] for r in summarize([plain]).rows] == ["b", "a"]
    assert [r["setting"] for r in summarize(late + early).rows] == ["a", "b"]


def test_one_name_for_two_configs_is_told_apart_by_folder_not_by_keys(tmp_path: Path) -> None:
    """Runs of two studies that both call a setting 'kd' (different τ): 'kd (first)' and 'kd (second)'."""
    for folder, temperature in (("first", 4.0), ("second", 20.0)):
        runs = {f"kd_seed{s}": "kd" for s in range(2)}
        for name in runs:
            _run(tmp_path / folder, name, int(name[-1]), temperature=temperature)
        _manifest(tmp_path / folder, ["kd"], runs)
    labels = [r["setting"] for r in summarize([tmp_path / "first", tmp_path / "second"]).rows]
    assert labels == ["kd (first)", "kd (second)"]
    # the same folder name twice (runs/a/study, runs/b/study): numbered
    for parent, temperature in (("a", 1.0), ("b", 2.0)):
        _run(tmp_path / parent / "study", "kd_seed0", 0, temperature=temperature)
    labels = [r["setting"] for r in summarize([tmp_path / "a" / "study", tmp_path / "b" / "study"]).rows]
    assert labels == ["kd (study) #1", "kd (study) #2"]


def test_summarize_cut_short_by_the_reader_is_quiet(runs) -> None:
    """`gkl summarize DIR | head -1`: the reader is gone before gkl writes; exit 141, nothing on stderr."""
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "gkl.cli", "summarize", str(runs["kd"][0].parent)],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, err
    assert err == ""
