"""What ``gkl analyze`` reads of a trained run: :class:`AnalysisView`, built by a task's ``analysis`` function.

The analyses (:mod:`gkl.study.analysis`) ask the run's task for a view and never look at its
kind: a view gives, for one batch of the evaluation split, class scores (logits), labels and
features with one row per *example* the analyses count (an image, a labelled pixel), and says
whether a PGD attack on its model makes sense. :func:`classifier_outputs` is the rows of an
image classifier; the segmentation and CLIP tasks give their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from gkl.utils.modules import capture_features

__all__ = ["AnalysisView", "Rows", "classifier_outputs", "classifier_view"]

#: ``(logits (M, C), labels (M,), features (M, D) or None)``: one row per example the analyses count
Rows = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


@dataclass
class AnalysisView:
    """A trained run as the analyses see it.

    model: the trained model, in eval mode; for a view that may be attacked it maps images to
    (N, C) class logits, and PGD attacks it. data: ``(inputs, labels)`` batches of the evaluation
    split. outputs: ``outputs(inputs, labels, features) -> (logits, labels, features)`` for one
    batch on the model's device (:data:`Rows`; rows with an ignored label dropped; features only
    when asked). num_classes, class_names: of the class scores. example: what one row is
    (``image``, ``pixel``). scores: what the class scores are, features: what the features are
    (both for the figures).

    A task's ``analysis(cfg, checkpoint, device, *, attack=False)`` builds it; with ``attack`` (the
    analyses will attack ``model`` with PGD) it first raises a one-line InputError when an attack
    does not apply to the run, before any model is built.
    """

    model: nn.Module
    data: Iterable | Dataset  # a loader, or a map-style dataset (read in order, in batches)
    outputs: Callable[[torch.Tensor, torch.Tensor, bool], Rows]
    num_classes: int
    class_names: Sequence[str] | None = None
    example: str = "image"
    scores: str = "softmax of the logits"
    features: str = "penultimate features (the classifier's input)"


def classifier_outputs(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor, bool], Rows]:
    """Rows of an image classifier: its logits, the labels, and its penultimate features (the
    classifier's input, read by a forward pre-hook: :func:`gkl.utils.modules.capture_features`)."""

    def outputs(inputs: torch.Tensor, labels: torch.Tensor, features: bool) -> Rows:
        if not features:
            return model(inputs), labels, None
        with capture_features(model) as store:
            logits = model(inputs)
        return logits, labels, store[-1]

    return outputs


def classifier_view(cfg: Any, checkpoint: Any, device: torch.device, *, attack: bool = False) -> AnalysisView:
    """The view of a classifier run: the registry model with the checkpoint's weights, the test split
    of ``data:`` with the run's preprocessing; PGD applies when the inputs are not normalised."""
    from pathlib import Path

    from gkl.data import build_dataset
    from gkl.models import create_model, load_weights
    from gkl.utils.errors import InputError

    if attack and cfg.data.normalize:
        raise InputError(
            f"{Path(checkpoint).parent}: --adversarial needs a run trained on inputs in [0, 1] "
            "(data.normalize: false); this run normalises its inputs"
        )

    test_set = build_dataset(cfg.data.name, cfg.data.root, False, normalize=cfg.data.normalize)
    info = test_set.info  # type: ignore[attr-defined]  # registry builders attach .info; Dataset declares none
    model = create_model(cfg.model.name, info.num_classes, **cfg.model.kwargs)
    load_weights(model, checkpoint)
    model.to(device).eval()
    return AnalysisView(
        model=model,
        data=test_set,
        outputs=classifier_outputs(model),
        num_classes=info.num_classes,
        class_names=info.class_names,
    )
