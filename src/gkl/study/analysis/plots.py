"""PNG figures of the analyses (matplotlib, Agg backend). Legends sit below the axes, one short label
per entry (a run's name); margin plots keep each class's name on its bar."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["attack_title", "plot_class_scores", "plot_margins", "plot_tsne", "plot_feature_curves"]

#: above this many classes the class names are not written under the bars (the JSON keeps them)
MAX_CLASS_LABELS = 40


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend_below(ax, entries: int, *, fontsize: float = 8, columns: int = 3, offset: float = -0.16) -> None:
    """The legend under the axes (outside them, ``offset`` axes heights below), in up to ``columns`` columns."""
    ax.legend(
        fontsize=fontsize,
        loc="upper center",
        bbox_to_anchor=(0.5, offset),
        ncol=max(1, min(columns, entries)),
        frameon=False,
    )


def _save(fig, path: Path) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return Path(path)


def format_eps(eps: float) -> str:
    """ε as ``8/255`` when it is a whole number of 255ths, else with four significant digits."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 and round(k) > 0 else f"{eps:.4g}"


def attack_title(eps: float, steps: int) -> str:
    """What the adversarial analyses attacked with: ``adversarial examples: PGD-10, l∞, ε = 8/255, step ε/4``."""
    return f"adversarial examples: PGD-{steps}, l∞, ε = {format_eps(eps)}, step ε/4"


def plot_class_scores(
    scores: dict[str, torch.Tensor], path: Path, *, example: str = "image", what: str = "softmax of the logits"
) -> Path:
    """Class-mean true-class scores of each model, classes sorted by score (GKL Fig. 3); ``what`` the
    scores are, averaged over each class's ``example``s."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, values in scores.items():
        ordered = torch.sort(values[~torch.isnan(values)], descending=True).values
        ax.plot(range(len(ordered)), ordered.tolist(), marker=".", label=name)
    ax.set_xlabel("class (sorted by score)")
    ax.set_ylabel("mean score of the true class")
    ax.set_title(f"true-class score ({what}), mean over each class's {example}s", fontsize=9)
    ax.grid(alpha=0.3)
    _legend_below(ax, len(scores))
    return _save(fig, path)


def _class_ticks(ax, positions: Sequence[int], names: Sequence[str]) -> None:
    if len(names) <= MAX_CLASS_LABELS:
        ax.set_xticks(list(positions))
        ax.set_xticklabels(list(names), rotation=60 if max(len(n) for n in names) > 3 else 0, fontsize=7, ha="right")
    else:
        ax.set_xticks([])


def plot_margins(
    margins: dict[str, torch.Tensor],
    path: Path,
    *,
    class_names: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Per-class mean margins of two models (classes in their order, named) and the per-class difference
    b − a, sorted, each bar named by its class and coloured by sign (GKL Fig. 4c)."""
    (name_a, a), (name_b, b) = list(margins.items())[:2]
    names = list(class_names) if class_names else [str(c) for c in range(a.numel())]
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    classes = list(range(a.numel()))
    left.plot(classes, a.tolist(), marker="o", label=name_a)
    left.plot(classes, b.tolist(), marker="s", label=name_b)
    _class_ticks(left, classes, names)
    left.set_xlabel("class")
    left.set_ylabel("mean margin z_y − max_{j≠y} z_j")
    left.grid(alpha=0.3)
    _legend_below(left, 2, columns=2)
    diff = b - a
    order = torch.argsort(torch.nan_to_num(diff, nan=float("inf"))).tolist()
    values = [diff[i].item() for i in order]
    right.bar(
        range(len(order)),
        [0.0 if math.isnan(v) else v for v in values],
        color=["C3" if v < 0 else "C2" for v in values],
    )
    _class_ticks(right, range(len(order)), [names[i] for i in order])
    right.axhline(0, color="black", linewidth=0.8)
    right.set_xlabel("class (sorted by difference)")
    right.set_ylabel("margin difference")
    right.set_title(f"{name_b} − {name_a}", fontsize=9)
    right.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_tsne(result: dict[str, Any], path: Path, *, class_names: Sequence[str] | None = None, title: str = "") -> Path:
    """t-SNE points coloured by class; adversarial points as crosses, natural as dots (GKL Fig. 4a/b)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    points = torch.tensor(result["points"])
    labels = torch.tensor(result["labels"])
    adv = torch.tensor(result["adversarial"], dtype=torch.bool)
    entries = 0
    for i, c in enumerate(result["classes"]):
        name = class_names[c] if class_names else str(c)
        for flag, marker, suffix in ((False, "o", ""), (True, "x", " (adv.)")):
            sel = (labels == c) & (adv == flag)
            if sel.any():
                entries += 1
                ax.scatter(
                    points[sel, 0],
                    points[sel, 1],
                    s=8,
                    marker=marker,
                    color=f"C{i % 10}",
                    label=name + suffix,
                    alpha=0.7,
                )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    _legend_below(ax, entries, fontsize=7, columns=4, offset=-0.02)
    return _save(fig, path)


def plot_feature_curves(curves: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Per-epoch feature norm, logit sum and logit norm: one solid line per run, and one dashed line per
    distinct teacher (runs distilled from the same teacher measured it identically: drawn once)."""
    plt = _pyplot()
    keys = (("feature_norm", "mean ‖r‖ (penultimate)"), ("logit_sum", "mean Σ_j z_j"), ("logit_norm", "mean ‖z‖"))
    # the teacher is frozen and measured once per run (its first evaluation, repeated): its values name it
    teachers: dict[str, tuple[list[str], list[int], list[dict[str, Any]]]] = {}
    for name, records in curves.items():
        if records and all("teacher" in r for r in records):
            key = repr(sorted(records[0]["teacher"].items()))
            students, epochs, values = teachers.setdefault(key, ([], [], []))
            students.append(name)
            if len(records) > len(epochs):  # the longest run's epochs
                epochs[:] = [r["epoch"] for r in records]
                values[:] = [r["teacher"] for r in records]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for i, (name, records) in enumerate(curves.items()):
        epochs = [r["epoch"] for r in records]
        for ax, (key, _) in zip(axes, keys):
            ax.plot(epochs, [r["student"].get(key) for r in records], color=f"C{i % 10}", label=name)
    for j, (students, epochs, values) in enumerate(teachers.values()):
        label = f"teacher of {students[0]}" if len(students) == 1 else f"shared teacher ({len(students)} runs)"
        for ax, (key, _) in zip(axes, keys):
            ax.plot(
                epochs, [v.get(key) for v in values], color="black", linestyle=("--", ":", "-.")[j % 3], label=label
            )
    from matplotlib.ticker import MaxNLocator

    for ax, (_, label) in zip(axes, keys):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(4, len(labels)),
        frameon=False,
    )
    return _save(fig, path)
