"""Real recipe files run end to end on CIFAR-format data written by the test in the real pickle layout.

The recipes are the paper's; only the size changes (epochs, model depth, batch): the chain
recipe → config validation → CIFAR loader → community-format teacher file → objective →
engine → evaluation is the one a user runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gkl.cli import main
from gkl.evaluate.run_eval import read_evaluations
from gkl.models import create_model
from test_data_cifar import write_cifar10, write_cifar100

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(0)
    write_cifar100(str(root), _images(160, 1), rng.integers(0, 100, 160), _images(40, 2), rng.integers(0, 100, 40))
    # CIFAR-10: 20 training images = 2 adversarial steps per epoch at batch 10 (the AT recipe is the slow one)
    write_cifar10(str(root), _images(20, 3), rng.integers(0, 10, 20), _images(10, 4), rng.integers(0, 10, 10))
    return root


@pytest.mark.parametrize("in_memory", [False, True])
def test_cifar100_gkl_recipe_with_a_community_teacher_file(cifar_root: Path, tmp_path: Path, in_memory: bool) -> None:
    teacher_file = tmp_path / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    teacher_file.parent.mkdir()
    torch.manual_seed(0)
    torch.save({"model": create_model("resnet8", 100).state_dict(), "epoch": 240}, teacher_file)

    args = [
        "distill",
        str(CONFIGS / "cifar100" / "gkl" / "res32x4_res8x4.yaml"),
        f"data.root={cifar_root}",
        f"out_dir={tmp_path / 'runs'}",
        "train.epochs=2",
        "data.batch_size=32",
        "data.eval_batch_size=20",
        "data.num_workers=0",
        f"data.in_memory={str(in_memory).lower()}",
        "train.progress=false",
        "model.name=resnet8",
        "teacher.name=resnet8",
        f"teacher.checkpoint={teacher_file}",
    ]
    assert main(args) == 0
    run_dir = tmp_path / "runs" / "gkl_res32x4_res8x4"
    config = (run_dir / "config.yaml").read_text()
    assert "gamma: 0.05" in config and "alpha: 16.0" in config  # the recipe's values, resolved
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    train = records[-1]["train"]
    assert train["loss"] == pytest.approx(train["ce"] + train["gkl"])  # the two named terms of the objective
    # lr 0.05 scaled by the LR rule (batch 32 against the recipe's reference batch 64)
    assert records[0]["lr"] == pytest.approx(0.025)
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    prior = state["objective"]["prior.prior"]
    assert prior.shape == (100, 100)
    assert main(["evaluate", str(run_dir), "--which", "best"]) == 0


def test_cifar10_gkl_at_recipe_with_robust_evaluation(cifar_root: Path, tmp_path: Path) -> None:
    args = [
        "adv-train",
        str(CONFIGS / "cifar10_at" / "gkl_wrn34_10.yaml"),
        f"data.root={cifar_root}",
        f"out_dir={tmp_path / 'runs'}",
        "train.epochs=2",
        "data.batch_size=10",
        "data.num_workers=0",
        "train.progress=false",
        "model.name=wrn16_4_robust",
        "adversarial.awp_start_epoch=2",
    ]
    assert main(args) == 0
    run_dir = tmp_path / "runs" / "gkl_wrn34_10"
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["ema"] is not None
    assert (
        main(
            ["evaluate", str(run_dir), "--which", "last", "--robust", "--attacks", "pgd10,cw10", "--num-examples", "5"]
        )
        == 0
    )
    report = read_evaluations(run_dir)[-1]
    assert report["weights"] == "ema" and report["kind"] == "robust"
    robust = report["results"]["last"]["robust"]
    assert robust["results"][0]["eps"] == pytest.approx(8 / 255)
    assert robust["num_examples"] == 5
