"""The figures of studies and analyses read at a glance: one short label per legend entry (a setting's or
a run's name), legends below the axes, class names kept on margin bars, the attack and ε in the title of
an adversarial plot, a shared teacher drawn once. Read from the matplotlib figure objects."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from gkl.study.analysis import plots as analysis_plots
from gkl.study.summary import Summary
from gkl.study.sweep_plots import MAX_LABEL, plot_accuracy_vs_tau, series_label


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures the plot functions close after saving them."""
    matplotlib = pytest.importorskip("matplotlib")  # the logging extra (pip install "gkl[logging]")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    closed: list[Any] = []
    real_close = plt.close

    def keep(fig: Any = None) -> None:
        closed.append(fig)
        real_close(fig)

    monkeypatch.setattr(plt, "close", keep)
    return closed


def _legend_texts(fig: Any) -> list[str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


def _assert_short_labels(texts: list[str]) -> None:
    assert texts
    for text in texts:
        assert "\n" not in text and "=" not in text and len(text) <= MAX_LABEL, text


def _below_axes(fig: Any, legend: Any, ax: Any) -> bool:
    fig.canvas.draw()
    return legend.get_window_extent().y1 <= ax.get_window_extent().y0 + 1e-6


def _row(setting: str, mean: float, varies: dict[str, Any]) -> dict[str, Any]:
    return {
        "setting": setting,
        "varies": varies,
        "runs": [],
        "seeds": [0, 1],
        "metrics": {"last_top1": {"mean": mean, "ci95": [mean - 1.0, mean + 1.0]}},
    }


def test_accuracy_vs_tau_labels_are_setting_names_below_the_axes(tmp_path: Path, figures: list[Any]) -> None:
    # a study mixing methods: the settings differ in many distill.* keys besides tau
    kd = {"distill.method": "kd", "distill.ce_weight": 0.1, "distill.kd_weight": 0.9, "distill.alpha": None}
    gkl = {"distill.method": "gkl", "distill.ce_weight": 1.0, "distill.kd_weight": 1.0, "distill.alpha": 1.0}
    rows = [
        _row("ce", 60.0, {"distill.method": None}),
        *(_row(f"kd_t{t}", 65.0 + i, {**kd, "distill.temperature": float(t)}) for i, t in enumerate((1, 4, 20))),
        _row("kd_tinf", 66.0, {**kd, "distill.temperature": math.inf}),
        *(_row(f"gkl_class_t{t}", 67.0 + i, {**gkl, "distill.temperature": float(t)}) for i, t in enumerate((1, 4))),
        _row("mse", 68.0, {"distill.method": "mse"}),
    ]
    summary = Summary(rows=rows, metrics=[("last_top1", "test top-1, last epoch")])
    assert plot_accuracy_vs_tau(summary, tmp_path / "accuracy_vs_tau.png") is not None
    (fig,) = figures
    texts = _legend_texts(fig)
    _assert_short_labels(texts)
    assert sorted(texts) == sorted(["kd_t*", "gkl_class_t*", "ce", "mse"])
    (ax,) = fig.axes
    assert _below_axes(fig, ax.get_legend(), ax)


def test_series_labels_are_names_or_their_common_prefix() -> None:
    assert series_label(["kd_t1", "kd_t4", "kd_tinf"]) == "kd_t*"
    assert series_label(["poor_kd_t01", "poor_kd_t5"]) == "poor_kd_t*"
    assert series_label(["a", "b"]) == "a … b"
    assert series_label(["ce"]) == "ce"
    assert len(series_label(["a_very_long_setting_name_indeed_x"])) == MAX_LABEL


def test_margins_keep_each_class_name_on_its_bar_and_say_what_was_attacked(tmp_path: Path, figures: list[Any]) -> None:
    names = ["plane", "car", "bird", "cat"]
    a = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    b = torch.tensor([1.5, 1.0, 3.0, 6.0], dtype=torch.float64)  # b - a = 0.5, -1, 0, 2
    title = analysis_plots.attack_title(8 / 255, 10)
    analysis_plots.plot_margins({"kd": a, "gkl": b}, tmp_path / "m.png", class_names=names, title=title)
    (fig,) = figures
    left, right = fig.axes
    assert [t.get_text() for t in left.get_xticklabels()] == names  # classes in their order
    assert [t.get_text() for t in right.get_xticklabels()] == ["car", "bird", "plane", "cat"]  # sorted b - a
    heights = [p.get_height() for p in right.patches]
    assert heights == pytest.approx([-1.0, 0.0, 0.5, 2.0])
    suptitle = fig._suptitle.get_text()
    assert "adversarial" in suptitle and "PGD-10" in suptitle and "ε = 8/255" in suptitle
    _assert_short_labels(_legend_texts(fig))
    assert _below_axes(fig, left.get_legend(), left)
    assert analysis_plots.format_eps(0.1) == "0.1"


def test_feature_curves_draw_a_shared_teacher_once(tmp_path: Path, figures: list[Any]) -> None:
    teacher = {"feature_norm": 15.4, "logit_sum": 0.3, "logit_norm": 19.0}

    def records(scale: float, epochs: int, with_teacher: bool) -> list[dict[str, Any]]:
        out = []
        for e in range(1, epochs + 1):
            record: dict[str, Any] = {"epoch": e, "student": {k: scale * e for k in teacher}}
            if with_teacher:
                record["teacher"] = dict(teacher)
            out.append(record)
        return out

    curves = {
        "kd_seed0": records(1.0, 3, True),
        "gkl_seed0": records(2.0, 2, True),
        "teacher_seed0": records(3.0, 3, False),
    }
    analysis_plots.plot_feature_curves(curves, tmp_path / "features.png")
    (fig,) = figures
    for ax in fig.axes:
        assert len(ax.get_lines()) == 4  # three runs + the one teacher they share
    texts = _legend_texts(fig)
    _assert_short_labels(texts)
    assert texts == ["kd_seed0", "gkl_seed0", "teacher_seed0", "shared teacher (2 runs)"]
