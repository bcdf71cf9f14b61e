"""``best.pt`` holds the weights of the best evaluation, also when that is not the last one.

A real `gkl train` run (demo teacher recipe, 3 epochs) whose evaluator is wrapped: the wrapper
runs the task's evaluator, snapshots the weights it was given, and replaces the selected
metric by a fixed script, so the best epoch is known in advance (2 or 1 of 3, never the last).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gkl.runner
from gkl.cli import main

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo" / "teacher.yaml"


class ScriptedEvaluator:
    """The task's evaluator, with ``top1`` of the n-th call on a model replaced by ``script[n]``."""

    def __init__(self, inner, script: tuple[float, ...]) -> None:
        self.inner = inner
        self.script = script
        self.snapshots: dict[int, list[dict[str, torch.Tensor]]] = {}

    def __call__(self, model, loader, *, device, dist=None):
        result = self.inner(model, loader, device=device, dist=dist)
        seen = self.snapshots.setdefault(id(model), [])
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        result["top1"] = self.script[len(seen) - 1]
        return result


@pytest.mark.parametrize(
    ("script", "ema", "best_epoch"),
    [((50.0, 80.0, 60.0), False, 2), ((70.0, 40.0, 69.0), True, 1)],
    ids=["raw-best-epoch-2", "ema-best-epoch-1"],
)
def test_best_pt_holds_the_weights_of_the_best_epoch_not_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: tuple[float, ...], ema: bool, best_epoch: int
) -> None:
    wrappers: list[ScriptedEvaluator] = []
    build = gkl.runner.build_parts

    def scripted_parts(cfg, dist):
        parts = build(cfg, dist)
        wrappers.append(ScriptedEvaluator(parts.evaluator, script))
        parts.evaluator = wrappers[-1]
        return parts

    monkeypatch.setattr(gkl.runner, "build_parts", scripted_parts)
    args = ["train", str(CONFIG), f"out_dir={tmp_path}", "train.epochs=3"]
    if ema:
        args.append("train.ema={decay: 0.5, every: step, evaluate: ema}")
    assert main(args) == 0

    (wrapper,) = wrappers
    # the model the selection reads: the raw model, or the EMA copy (the other key of the snapshots)
    models = list(wrapper.snapshots.values())
    assert all(len(s) == 3 for s in models) and len(models) == (2 if ema else 1)
    selected = models[-1] if ema else models[0]
    best = torch.load(next(tmp_path.rglob("best.pt")), weights_only=True)
    assert best["epoch"] == best_epoch and best["top1"] == script[best_epoch - 1]
    assert best["model"].keys() == selected[best_epoch - 1].keys()
    for key, value in selected[best_epoch - 1].items():
        assert torch.equal(best["model"][key], value), key
    # and the weights did change after the best epoch: best.pt is not the final model
    assert any(not torch.equal(best["model"][k], v) for k, v in selected[-1].items())
