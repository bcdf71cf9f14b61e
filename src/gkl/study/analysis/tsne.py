"""t-SNE (scikit-learn) of penultimate features of K random classes, natural and adversarial (GKL Fig. 4a/b)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .features import Attack, collect_outputs

__all__ = ["tsne_embedding"]


def tsne_embedding(
    model: nn.Module,
    data: Dataset | Iterable,
    *,
    classes: int = 5,
    attack: Attack | None = None,
    num_classes: int | None = None,
    max_per_class: int = 200,
    seed: int = 0,
    perplexity: float = 30.0,
    max_iter: int = 1000,
) -> dict[str, Any]:
    """2-D t-SNE of the penultimate features of ``classes`` classes drawn with ``seed``.

    Returns ``{"classes": [...], "points": (M, 2) list, "labels": [...], "adversarial": [bools]}``;
    with ``attack`` the adversarial versions of the same examples are embedded jointly.
    """
    from sklearn.manifold import TSNE

    everything = collect_outputs(model, data, features=True)
    assert everything.features is not None  # features=True
    c = num_classes or everything.logits.shape[1]
    if not 1 <= classes <= c:
        raise ValueError(f"classes must be in [1, {c}], got {classes}")
    generator = torch.Generator().manual_seed(seed)
    chosen = sorted(torch.randperm(c, generator=generator)[:classes].tolist())
    chosen_t = torch.tensor(chosen)

    def keep(labels: torch.Tensor) -> torch.Tensor:
        return torch.isin(labels, chosen_t.to(labels.device))

    mask = keep(everything.labels)
    natural_features, natural_labels = everything.features[mask], everything.labels[mask]
    index = _cap(natural_labels, max_per_class, generator)
    feats, labels = [natural_features[index]], [natural_labels[index]]
    flags = [torch.zeros(index.numel(), dtype=torch.bool)]
    if attack is not None:
        adversarial = collect_outputs(model, data, features=True, keep=keep, attack=attack)
        assert adversarial.features is not None  # features=True
        feats.append(adversarial.features[index])
        labels.append(adversarial.labels[index])
        flags.append(torch.ones(index.numel(), dtype=torch.bool))
    x = torch.cat(feats).double().numpy()
    perplexity = min(perplexity, max(1.0, (x.shape[0] - 1) / 3))
    points = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=max_iter
    ).fit_transform(x)
    return {
        "classes": chosen,
        "points": points.tolist(),
        "labels": torch.cat(labels).tolist(),
        "adversarial": torch.cat(flags).tolist(),
    }


def _cap(labels: torch.Tensor, per_class: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of at most ``per_class`` examples of each label (random, sorted)."""
    picked = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        picked.append(members[torch.randperm(members.numel(), generator=generator)[:per_class]])
    return torch.sort(torch.cat(picked)).values
