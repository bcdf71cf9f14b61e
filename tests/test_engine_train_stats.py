"""The engine's running train statistics (device tensors, one read per log line) and finite check."""

from __future__ import annotations

import math

import torch

from gkl.engine.train_stats import TrainStats, first_non_finite
from gkl.objectives.base import StepOutput
from gkl.utils.distributed import DistInfo

CPU = DistInfo(device=torch.device("cpu"))


def _out(loss: float, n: int, *, metric, correct: int) -> StepOutput:
    logits = torch.zeros(n, 3)
    logits[:, 1] = 1.0  # predicts class 1
    targets = torch.tensor([1] * correct + [0] * (n - correct))
    return StepOutput(losses={"ce": torch.tensor(loss)}, logits=logits, targets=targets, metrics={"m": metric})


def test_epoch_means_are_weighted_by_examples_and_mix_tensor_and_float_metrics() -> None:
    stats = TrainStats(torch.device("cpu"))
    stats.add(_out(2.0, 4, metric=torch.tensor(0.5), correct=1), torch.tensor(2.0))
    stats.add(_out(1.0, 2, metric=0.25, correct=2), torch.tensor(1.0))
    result = stats.reduce(CPU)
    assert result["ce"] == result["loss"] == (2.0 * 4 + 1.0 * 2) / 6
    assert result["m"] == (0.5 * 4 + 0.25 * 2) / 6
    assert result["acc"] == 100.0 * 3 / 6
    local = stats.reduce(None, extra=[torch.tensor(7.0)])
    assert local.pop("extra") == [7.0] and local == result


def test_state_round_trip_and_metrics_saved_as_floats() -> None:
    stats = TrainStats(torch.device("cpu"))
    stats.add(_out(2.0, 4, metric=torch.tensor(0.5), correct=1), torch.tensor(2.0))
    state = stats.state_dict()
    assert TrainStats.from_state(state, torch.device("cpu")).reduce(CPU) == stats.reduce(CPU)
    older = {**state, "metrics": {"m": 2.0}}  # checkpoints written before metrics were tensors
    assert TrainStats.from_state(older, torch.device("cpu")).reduce(CPU)["m"] == 0.5


def test_first_non_finite_names_the_first_bad_term() -> None:
    finite = {"ce": torch.tensor(1.0), "kd": torch.tensor(2.0)}
    assert first_non_finite(finite, CPU, "Probe") is None
    name, value = first_non_finite(
        {"ce": torch.tensor(1.0), "kd": torch.tensor(math.inf), "x": torch.tensor(math.nan)}, CPU, "Probe"
    )
    assert (name, value) == ("kd", "inf")
