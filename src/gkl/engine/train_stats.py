"""The running train statistics of an epoch and the per-step finite check of the loss terms.

Everything a step reports stays on the device: loss terms, the objective's metrics (tensors or
plain numbers, :class:`~gkl.objectives.base.StepOutput`) and the train accuracy are summed as
float64 tensors weighted by the step's examples. They reach the host only when a line is logged:
:meth:`TrainStats.reduce` packs them into one tensor, all-reduces it once and reads it with one
``tolist()``. The only host synchronisation of an ordinary step is :func:`first_non_finite`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from gkl.objectives.base import StepOutput
from gkl.utils.distributed import DistInfo, all_reduce_sum

__all__ = ["TrainStats", "first_non_finite"]


def first_non_finite(losses: dict[str, torch.Tensor], dist: DistInfo, owner: str) -> tuple[str, str] | None:
    """``(term name, value)`` of the first NaN/inf loss term on any rank, or None.

    One host synchronisation for all terms: they are stacked, checked with ``isfinite`` and the
    flags all-reduced, so every rank stops at the same step. ``owner`` names the objective in errors.
    """
    if not losses:
        raise ValueError(f"objective {owner} returned no loss terms")
    names = list(losses)
    for name in names:
        term = losses[name]
        if not isinstance(term, torch.Tensor) or term.numel() != 1:
            raise ValueError(
                f"objective {owner}: loss term {name!r} must be a scalar tensor, "
                f"got {getattr(term, 'shape', type(term).__name__)}"
            )
    values = torch.stack([losses[k].detach().float().reshape(()) for k in names])
    bad = (~torch.isfinite(values)).float()
    all_reduce_sum(bad, dist)
    if not bool(bad.any()):
        return None
    index = int(torch.nonzero(bad)[0])
    local = values[index].item()
    finite = local == local and abs(local) != float("inf")
    return names[index], (f"{local}" if not finite else "non-finite on another rank")


class TrainStats:
    """Example-weighted float64 sums of one epoch's loss terms (and their total ``loss``),
    objective metrics and train accuracy, on ``device``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.terms: dict[str, torch.Tensor] = {}
        self.metrics: dict[str, torch.Tensor] = {}
        self.seen = self._zero()
        self.correct = self._zero()
        self.scored = self._zero()

    def _zero(self) -> torch.Tensor:
        return torch.zeros((), dtype=torch.float64, device=self.device)

    def add(self, out: StepOutput, loss: torch.Tensor) -> None:
        """Add one (micro-)batch: its terms, total ``loss``, metrics and accuracy (no host sync)."""
        targets = out.targets
        count = out.batch_size
        if count is None:
            count = targets.shape[0] if targets is not None else 1
        n = float(count)
        self.seen += n
        for name, term in out.losses.items():
            self.terms.setdefault(name, self._zero())
            self.terms[name] += term.detach().double() * n
        self.terms.setdefault("loss", self._zero())
        self.terms["loss"] += loss.detach().double() * n
        logits = out.logits
        if (
            logits is not None
            and targets is not None
            and targets.ndim == 1
            and logits.ndim == 2
            and targets.shape[0] == logits.shape[0]
        ):
            self.correct += (logits.detach().argmax(dim=1) == targets).sum().double()
            self.scored += n
        for name, value in out.metrics.items():
            value = value.detach().double() if isinstance(value, torch.Tensor) else float(value)
            self.metrics[name] = self.metrics.get(name, self._zero()) + value * n

    def _packed(self, extra: list[torch.Tensor]) -> tuple[list[str], list[str], torch.Tensor]:
        names, metric_names = sorted(self.terms), sorted(self.metrics)
        packed = torch.stack(
            [
                *(self.terms[k] for k in names),
                *(self.metrics[k].reshape(()) for k in metric_names),
                self.seen,
                self.correct,
                self.scored,
                *extra,
            ]
        )
        return names, metric_names, packed

    def reduce(self, dist: DistInfo | None = None, *, extra: Sequence[torch.Tensor] = ()) -> dict[str, Any]:
        """Epoch means of the terms and metrics and ``acc`` (percent), summed over ranks with ``dist``
        (then every rank must call it); one all-reduce and one ``tolist()``. ``extra`` scalars are
        read in the same transfer and returned under ``"extra"`` (not reduced over ranks)."""
        extra = [e.detach().double().reshape(()) for e in extra]
        names, metric_names, packed = self._packed(extra)
        if dist is not None:
            head = packed[: len(packed) - len(extra)]
            all_reduce_sum(head, dist)
            packed = torch.cat([head, packed[len(head) :]])
        values = packed.tolist()
        base = len(names) + len(metric_names)
        seen, correct, scored = values[base : base + 3]
        denominator = max(seen, 1.0)
        result: dict[str, Any] = {name: values[i] / denominator for i, name in enumerate(names)}
        for j, name in enumerate(metric_names):
            result[name] = values[len(names) + j] / denominator
        if scored > 0:
            result["acc"] = 100.0 * correct / scored
        if extra:
            result["extra"] = values[base + 3 :]
        return result

    def state_dict(self) -> dict[str, Any]:
        """CPU copies of the sums (for a mid-epoch checkpoint)."""
        return {
            "terms": {k: v.detach().cpu() for k, v in self.terms.items()},
            "metrics": {k: v.detach().cpu() for k, v in self.metrics.items()},
            "seen": self.seen.cpu(),
            "correct": self.correct.cpu(),
            "scored": self.scored.cpu(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> TrainStats:
        """The statistics :meth:`state_dict` saved (metrics saved as plain floats are read too)."""
        stats = cls(device)
        as_sum = lambda v: torch.as_tensor(v, dtype=torch.float64).to(device)  # noqa: E731
        stats.terms = {k: as_sum(v) for k, v in state["terms"].items()}
        stats.metrics = {k: as_sum(v) for k, v in state["metrics"].items()}
        stats.seen, stats.correct, stats.scored = (as_sum(state[k]) for k in ("seen", "correct", "scored"))
        return stats
