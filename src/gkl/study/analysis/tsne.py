"""t-SNE (scikit-learn) of the features of K random classes, natural and adversarial (GKL Fig. 4a/b)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from gkl.tasks.analysis import Rows, classifier_outputs
from gkl.utils.modules import find_classifier

from .features import Attack, iterate_rows

__all__ = ["tsne_embedding", "sample_features"]


def sample_features(
    model: nn.Module,
    data: Dataset | Iterable,
    outputs: Callable[[torch.Tensor, torch.Tensor, bool], Rows],
    *,
    classes: list[int],
    max_per_class: int,
    generator: torch.Generator,
    attack: Attack | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(features, labels, adversarial features or None) of at most ``max_per_class`` examples of each of
    ``classes``, drawn uniformly with ``generator`` (a random key per example, the smallest kept), in data
    order; batch by batch, so a segmentation run's pixels are never all held at once."""
    chosen = torch.tensor(classes)

    def keep(labels: torch.Tensor) -> torch.Tensor:
        return torch.isin(labels, chosen.to(labels.device))

    natural = iterate_rows(model, data, outputs, features=True, keep=keep)
    adversarial = iterate_rows(model, data, outputs, features=True, keep=keep, attack=attack) if attack else None
    pool: dict[str, torch.Tensor] = {}
    for nat in natural:
        adv = next(adversarial) if adversarial is not None else None
        assert nat.features is not None  # features=True
        batch = {
            "keys": torch.rand(nat.labels.numel(), generator=generator),
            "labels": nat.labels,
            "feats": nat.features,
        }
        if adv is not None:
            assert adv.features is not None
            batch["adv"] = adv.features
        pool = {k: torch.cat([pool[k], v]) if pool else v for k, v in batch.items()}
        picked = [
            members[torch.argsort(pool["keys"][members])[:max_per_class]]
            for members in (torch.nonzero(pool["labels"] == c).flatten() for c in classes)
        ]
        index = torch.sort(torch.cat(picked)).values
        pool = {k: v[index] for k, v in pool.items()}
    if not pool or pool["labels"].numel() == 0:
        raise ValueError("no examples to analyse (empty data, or no example of the selected classes)")
    return pool["feats"], pool["labels"], pool.get("adv")


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
    outputs: Callable[[torch.Tensor, torch.Tensor, bool], Rows] | None = None,
) -> dict[str, Any]:
    """2-D t-SNE of the features of ``classes`` classes drawn with ``seed``.

    ``outputs`` gives the rows of a batch (:class:`gkl.tasks.analysis.AnalysisView`); by default the
    penultimate features of the classifier ``model``. Returns ``{"classes": [...], "points": (M, 2)
    list, "labels": [...], "adversarial": [bools]}``; with ``attack`` the adversarial versions of the
    same examples are embedded jointly.
    """
    from sklearn.manifold import TSNE

    c = num_classes or find_classifier(model).out_features
    if not 1 <= classes <= c:
        raise ValueError(f"classes must be in [1, {c}], got {classes}")
    generator = torch.Generator().manual_seed(seed)
    chosen = sorted(torch.randperm(c, generator=generator)[:classes].tolist())
    feats, labels, adv = sample_features(
        model,
        data,
        outputs or classifier_outputs(model),
        classes=chosen,
        max_per_class=max_per_class,
        generator=generator,
        attack=attack,
    )
    n = labels.numel()
    x = (torch.cat([feats, adv]) if adv is not None else feats).double().numpy()
    perplexity = min(perplexity, max(1.0, (x.shape[0] - 1) / 3))
    points = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=max_iter
    ).fit_transform(x)
    return {
        "classes": chosen,
        "points": points.tolist(),
        "labels": (torch.cat([labels, labels]) if adv is not None else labels).tolist(),
        "adversarial": [False] * n + ([True] * n if adv is not None else []),
    }
