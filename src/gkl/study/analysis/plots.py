"""PNG figures of the analyses (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["plot_class_scores", "plot_margins", "plot_tsne", "plot_feature_curves"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return Path(path)


def plot_class_scores(scores: dict[str, torch.Tensor], path: Path) -> Path:
    """Class-mean true-class scores of each model, classes sorted by score (GKL Fig. 3)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, values in scores.items():
        ordered = torch.sort(values[~torch.isnan(values)], descending=True).values
        ax.plot(range(len(ordered)), ordered.tolist(), label=name)
    ax.set_xlabel("class (sorted by score)")
    ax.set_ylabel("mean softmax score of the true class")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_margins(margins: dict[str, torch.Tensor], path: Path) -> Path:
    """Per-class mean margins of two models and their sorted per-class difference (GKL Fig. 4c)."""
    (name_a, a), (name_b, b) = list(margins.items())[:2]
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    classes = list(range(a.numel()))
    left.plot(classes, a.tolist(), marker=".", label=name_a)
    left.plot(classes, b.tolist(), marker=".", label=name_b)
    left.set_xlabel("class")
    left.set_ylabel("mean margin z_y − max_{j≠y} z_j")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    diff = torch.sort(b - a).values
    right.bar(range(diff.numel()), diff.tolist(), color=["C3" if d < 0 else "C2" for d in diff.tolist()])
    right.axhline(0, color="black", linewidth=0.8)
    right.set_xlabel("class (sorted)")
    right.set_ylabel(f"margin({name_b}) − margin({name_a})")
    right.grid(alpha=0.3)
    return _save(fig, path)


def plot_tsne(result: dict[str, Any], path: Path, *, class_names: Sequence[str] | None = None, title: str = "") -> Path:
    """t-SNE points coloured by class; adversarial points as crosses, natural as dots (GKL Fig. 4a/b)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    points = torch.tensor(result["points"])
    labels = torch.tensor(result["labels"])
    adv = torch.tensor(result["adversarial"], dtype=torch.bool)
    for i, c in enumerate(result["classes"]):
        name = class_names[c] if class_names else str(c)
        for flag, marker, suffix in ((False, "o", ""), (True, "x", " (adv.)")):
            sel = (labels == c) & (adv == flag)
            if sel.any():
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
    ax.set_title(title)
    ax.legend(fontsize=6, markerscale=1.5, ncol=2)
    return _save(fig, path)


def plot_feature_curves(curves: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Per-epoch feature norm, logit sum and logit norm of each run (student; teacher dashed)."""
    plt = _pyplot()
    keys = (("feature_norm", "mean ‖r‖ (penultimate)"), ("logit_sum", "mean Σ_j z_j"), ("logit_norm", "mean ‖z‖"))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for i, (name, records) in enumerate(curves.items()):
        epochs = [r["epoch"] for r in records]
        for ax, (key, label) in zip(axes, keys):
            ax.plot(epochs, [r["student"].get(key) for r in records], color=f"C{i % 10}", label=name)
            if all("teacher" in r for r in records):
                ax.plot(
                    epochs,
                    [r["teacher"].get(key) for r in records],
                    color=f"C{i % 10}",
                    linestyle="--",
                    label=f"{name} (teacher)",
                )
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(fig, path)
