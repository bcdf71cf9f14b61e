"""Feature statistics of Kim et al.'s δ∞ analysis, accumulated by hooks during an evaluation pass.

For every example: the L2 norm of the penultimate features r (the classifier's input, read by a
forward pre-hook on :func:`gkl.utils.modules.find_classifier`), the logit sum Σ_j z_j and the
logit L2 norm ‖z‖ (z = the model's output, read by a forward hook on the model). Sums are kept
in float64 and summed over DDP ranks, so each example of a sharded evaluation counts once.
The τ → ∞ limit of KD contains δ∞ = −(Σ_j s_j − Σ_j t_j)²/(2C²), which rewards a gap between
the logit sums of student and teacher and, through ‖z‖ ≤ ‖W‖·‖r‖, a larger ‖r‖ (docs/study.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from gkl.utils.distributed import all_reduce_sum
from gkl.utils.errors import InputError
from gkl.utils.modules import find_classifier, unwrap_model

__all__ = ["FEATURE_KEYS", "FeatureStatistics", "watch_feature_statistics"]

FEATURE_KEYS = ("feature_norm", "logit_sum", "logit_norm")


class FeatureStatistics:
    """Running float64 sums of ‖r‖, Σ_j z_j and ‖z‖ over the examples seen.

    ``update(features, logits)`` adds a batch; :meth:`watch` does it from hooks for every
    forward pass of a model; :meth:`result` returns the means (summed over ranks with ``dist``).
    """

    def __init__(self) -> None:
        # feature-norm sum, feature count, logit-sum sum, logit-norm sum, logit count (on the data's device)
        self.sums: torch.Tensor | None = None

    def update_features(self, features: torch.Tensor) -> None:
        r = features.detach().flatten(1).double()
        self._add(torch.stack([r.norm(dim=1).sum(), r.new_tensor(float(r.shape[0]))]), 0)

    def update_logits(self, logits: torch.Tensor) -> None:
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise InputError(
                f"train.log_feature_stats: needs a classifier returning (batch, classes) logits, got {shape}"
            )
        z = logits.detach().double()
        self._add(torch.stack([z.sum(dim=1).sum(), z.norm(dim=1).sum(), z.new_tensor(float(z.shape[0]))]), 2)

    def update(self, features: torch.Tensor, logits: torch.Tensor) -> None:
        """Add a batch of penultimate features (N, ...) and logits (N, C)."""
        self.update_features(features)
        self.update_logits(logits)

    def _add(self, values: torch.Tensor, start: int) -> None:
        if self.sums is None:
            self.sums = torch.zeros(5, dtype=torch.float64, device=values.device)
        self.sums[start : start + values.numel()] += values

    @contextlib.contextmanager
    def watch(self, model: nn.Module) -> Iterator[FeatureStatistics]:
        """Within the block, every forward pass of ``model`` adds its features and logits."""
        net = unwrap_model(model)
        handles = [
            find_classifier(net).register_forward_pre_hook(lambda _m, inputs: self.update_features(inputs[0])),
            net.register_forward_hook(lambda _m, _inputs, output: self.update_logits(output)),
        ]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def result(self, dist: Any = None) -> dict[str, float]:
        """``{"feature_norm", "logit_sum", "logit_norm"}``: means over the examples seen (all ranks)."""
        device = getattr(dist, "device", None) or (self.sums.device if self.sums is not None else "cpu")
        sums = torch.zeros(5, dtype=torch.float64, device=device) if self.sums is None else self.sums.clone().to(device)
        all_reduce_sum(sums, dist)  # every rank calls it, also one that saw no example
        feature_norm, n_features, logit_sum, logit_norm, n_logits = sums.cpu().tolist()
        nan = float("nan")
        return {
            "feature_norm": feature_norm / n_features if n_features else nan,
            "logit_sum": logit_sum / n_logits if n_logits else nan,
            "logit_norm": logit_norm / n_logits if n_logits else nan,
        }


@contextlib.contextmanager
def watch_feature_statistics(
    model: nn.Module, teacher: nn.Module | None = None
) -> Iterator[dict[str, FeatureStatistics]]:
    """Statistics of ``model`` (key ``student``) over the forward passes inside the block.

    With ``teacher``, every input the model sees is also fed to the teacher (under ``no_grad``,
    in whatever mode it is in), so both are measured on exactly the same examples (key ``teacher``).
    """
    meters = {"student": FeatureStatistics()}
    with contextlib.ExitStack() as stack:
        stack.enter_context(meters["student"].watch(model))
        if teacher is not None:
            meters["teacher"] = FeatureStatistics()
            stack.enter_context(meters["teacher"].watch(teacher))

            def run_teacher(_module: nn.Module, inputs: tuple[Any, ...]) -> None:
                with torch.no_grad():
                    teacher(*inputs)

            handle = unwrap_model(model).register_forward_pre_hook(run_teacher)
            stack.callback(handle.remove)
        yield meters
