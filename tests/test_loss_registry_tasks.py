"""A logit loss registered only in this test is usable by name in every task that takes a logit loss.

``toy_sq`` (``scale`` · mean_j (o_n/T − o_m/T)², one of its own parameters) is registered with
``gkl.losses.register_logit_loss`` and removed afterwards. A distillation, an SSL, a segmentation
and a CLIP-distillation config name it (the demo recipes with tiny overrides); each loads, and
a real in-process training run of that kind calls it: with the student's logits (they carry
gradient), the configured ``scale`` and temperature, and the run logs its term.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from gkl.config import load_config, to_dict
from gkl.losses import list_logit_losses, register_logit_loss, unregister_logit_loss
from gkl.runner import run_experiment
from gkl.utils.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CALLS: list[dict[str, Any]] = []


def toy_sq(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
    targets: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """scale · mean over classes of (o_n/T − o_m/T)², per example (class dim 1, dense inputs allowed)."""
    CALLS.append(
        {"grad": logits.requires_grad, "scale": scale, "temperature": temperature, "shape": tuple(logits.shape)}
    )
    per_example = scale * ((logits - target_logits) / temperature).square().mean(dim=1)
    return {"mean": per_example.mean, "sum": per_example.sum, "none": lambda: per_example}[reduction]()


@pytest.fixture
def toy_loss():
    register_logit_loss("toy_sq", toy_sq, params={"scale": 1.0}, description="test-only squared difference")
    CALLS.clear()
    yield CALLS
    unregister_logit_loss("toy_sq")
    assert "toy_sq" not in list_logit_losses()


def _train(path: Path, overrides: list[str], tmp_path: Path) -> tuple[Any, list[dict]]:
    cfg = load_config(path, [f"out_dir={tmp_path}", "name=toy", "train.progress=false", *overrides])
    torch.set_num_threads(1)
    run_experiment(cfg)
    records = [json.loads(line) for line in (tmp_path / "toy" / "metrics.jsonl").read_text().splitlines()]
    return cfg, records


def _check_calls(calls: list[dict], *, scale: float, temperature: float) -> None:
    training = [c for c in calls if c["grad"]]
    assert training, "the toy loss was never called on the student's logits"
    assert all(c["scale"] == scale and c["temperature"] == temperature for c in calls)


def test_distillation_trains_with_a_registered_loss(toy_loss, tmp_path: Path) -> None:
    overrides = [
        "distill={method: toy_sq, temperature: 2.0, loss_params: {scale: 3.0}, warmup_epochs: 0}",
        "teacher.checkpoint=null",
        "teacher.random_init=true",
        "train.epochs=null",
        "train.iterations=2",
        f"data.root={tmp_path / 'data'}",
    ]
    cfg, records = _train(CONFIGS / "demo" / "student_kd.yaml", overrides, tmp_path)
    assert to_dict(cfg)["distill"] == {
        "method": "toy_sq",
        "ce_weight": 1.0,
        "kd_weight": 1.0,
        "warmup_epochs": 0,
        "temperature": 2.0,
        "loss_params": {"scale": 3.0},
    }
    _check_calls(toy_loss, scale=3.0, temperature=2.0)
    assert len([c for c in toy_loss if c["grad"]]) == 2  # one call per training step
    assert "toy_sq" in records[-1]["train"]


def test_ssl_consistency_is_a_registered_loss(toy_loss, tmp_path: Path) -> None:
    overrides = [
        "ssl={algorithm: fixmatch, consistency: toy_sq, temperature: 0.5, p_cutoff: null, loss_params: {scale: 2.0}}",
        "model.name=digits_mlp_small",
        "data.batch_size=8",
        "train.epochs=null",
        "train.iterations=2",
        "train.schedule.warmup_steps=0",
    ]
    cfg, records = _train(CONFIGS / "ssl" / "demo" / "fixmatch_gkl.yaml", overrides, tmp_path)
    assert type(cfg.ssl).__name__ == "FixMatchLogitLossSettings"
    _check_calls(toy_loss, scale=2.0, temperature=0.5)
    assert records[-1]["train"]["unsup"] > 0


def test_segmentation_kd_term_is_a_registered_loss(toy_loss, tmp_path: Path) -> None:
    overrides = [
        "segmentation.kd_term=toy_sq",
        "segmentation.loss_params={scale: 4.0}",
        "teacher.checkpoint=null",
        "teacher.random_init=true",
        "segmentation.train_size=16",
        "segmentation.eval_size=8",
        "data.val_fraction=0",
        "data.batch_size=8",
        "data.eval_batch_size=8",
        "train.epochs=1",
    ]
    cfg, records = _train(CONFIGS / "segmentation" / "demo" / "student_kd_kl.yaml", overrides, tmp_path)
    assert cfg.segmentation.kd_term == "toy_sq" and cfg.segmentation.loss_params == {"scale": 4.0}
    _check_calls(toy_loss, scale=4.0, temperature=1.0)
    assert any(len(c["shape"]) == 4 for c in toy_loss)  # per-pixel values of dense logits
    assert "toy_sq" in records[-1]["train"]


def test_clip_distillation_is_a_registered_loss(toy_loss, tmp_path: Path) -> None:
    pytest.importorskip("open_clip")
    overrides = [
        "clip_distill={method: toy_sq, temperature: 2.0, loss_params: {scale: 0.5}}",
        "teacher.checkpoint=null",
        "teacher.random_init=true",
        "train.epochs=null",
        "train.iterations=2",
        "data.batch_size=8",
        "data.val_fraction=0",
    ]
    cfg, records = _train(CONFIGS / "clip" / "demo" / "student_kl.yaml", overrides, tmp_path)
    assert type(cfg.clip_distill).__name__ == "ClipLogitLossSettings"
    _check_calls(toy_loss, scale=0.5, temperature=2.0)
    assert {c["shape"] for c in toy_loss if c["grad"]} == {(8, 8)}  # image->text and text->image rows
    assert "toy_sq" in records[-1]["train"]


def test_a_parameter_the_registered_loss_does_not_take_is_named(toy_loss) -> None:
    # checked when the config loads, before any work starts
    with pytest.raises(
        ConfigError,
        match=r"^distill.loss_params: expected parameters of loss 'toy_sq' \(scale\), "
        r"got \['scal'\]$",
    ):
        load_config(CONFIGS / "demo" / "student_kd.yaml", ["distill={method: toy_sq, loss_params: {scal: 3.0}}"])
