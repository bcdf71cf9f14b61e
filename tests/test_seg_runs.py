"""Segmentation runs through the commands a user types: `gkl seg-train` on the demo recipes (tiny
sizes), `gkl evaluate` of that run, a SIGKILLed APD-GKL run resumed to identical weights, and
one-line errors for bad input (label out of range, missing files, missing teacher)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gkl.cli import main
from gkl.engine.checkpoint import read_checkpoint
from helpers import assert_identical, assert_one_line_error, killing_run_script

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "segmentation"
DEMO = CONFIGS / "demo"
# 32 scenes, 8 of them the validation split: 24 in batches of 8 = 3 steps per epoch; 16 test scenes
TINY = [
    "segmentation.train_size=32",
    "segmentation.eval_size=16",
    "data.val_fraction=0.25",
    "data.batch_size=8",
    "data.eval_batch_size=16",
    "train.epochs=2",
]

KILLING_RUN = killing_run_script("segmentation", "APDObjective")


class one_thread:
    """torch.set_num_threads(1) inside (the killed subprocess runs with OMP_NUM_THREADS=1 too)."""

    def __enter__(self) -> None:
        self.previous = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.previous)


@pytest.fixture(scope="session")
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seg")
    with one_thread():
        assert main(["seg-train", str(DEMO / "teacher.yaml"), f"out_dir={out}", *TINY, "train.epochs=1"]) == 0
    return out / "teacher"


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.xdist_group("seg_teacher")  # the tests of the teacher_run fixture share one worker
def test_seg_train_writes_miou_and_evaluate_reports_it(teacher_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = _records(teacher_run)[-1]
    # best.pt is picked on the validation split; the test split is evaluated and reported
    assert record["select"] == {"metric": "mIoU", "split": "val", "value": record["val"]["mIoU"]}
    assert len(record["eval"]["IoU"]) == 11 and 0.0 <= record["eval"]["pixel_accuracy"] <= 100.0
    summary = json.loads((teacher_run / "summary.json").read_text())
    assert summary["select_metric"] == "mIoU" and summary["select_split"] == "val"
    assert summary["best"] == record["val"]["mIoU"] and summary["final"]["eval"]["mIoU"] == record["eval"]["mIoU"]
    capsys.readouterr()
    assert main(["evaluate", str(teacher_run), "--robust"]) == 2  # attacks are for classifiers
    assert_one_line_error(capsys, "evaluate", "--robust", "segmentation")
    assert main(["evaluate", str(teacher_run)]) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "per-class IoU of the best checkpoint" in out and "digit 9" in out
    evaluation = json.loads((teacher_run / "evaluations.jsonl").read_text().splitlines()[-1])
    assert evaluation["kind"] == "segmentation"
    for which in ("last", "best"):  # the same weights on the same scenes: the training's own evaluation
        clean = evaluation["results"][which]["clean"]
        assert clean["mIoU"] == pytest.approx(record["eval"]["mIoU"], abs=1e-9)
        assert clean["pixel_accuracy"] == pytest.approx(record["eval"]["pixel_accuracy"], abs=1e-9)


def _apd(out: Path, teacher: Path, name: str) -> list[str]:
    return [
        "seg-train",
        str(DEMO / "student_apd_gkl.yaml"),
        f"out_dir={out}",
        f"name={name}",
        *TINY,
        f"teacher.checkpoint={teacher / 'best.pt'}",
        "segmentation.head_lr_scale=10",
        "train.checkpoint_every_steps=2",
    ]


@pytest.mark.slow
@pytest.mark.xdist_group("seg_teacher")
def test_killed_apd_gkl_run_resumes_to_identical_weights(teacher_run: Path, tmp_path: Path) -> None:
    with one_thread():
        assert main(_apd(tmp_path, teacher_run, "a")) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", GKL_TEST_KILL_AT="5")
    killed = subprocess.run(
        [sys.executable, "-c", KILLING_RUN, *_apd(tmp_path, teacher_run, "b")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert read_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 4  # mid-epoch (3 steps per epoch)
    with one_thread():
        assert main([*_apd(tmp_path, teacher_run, "b"), "--resume"]) == 0
    a = read_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = read_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert a["step"] == b["step"] == 6
    for part in ("model", "optimizer", "objective", "schedule"):  # objective: adapters, Adam moments, prior
        assert_identical(a[part], b[part], part)
    assert any(k.startswith("student_adapter.") for k in a["objective"])
    assert any(k.startswith("prior.") for k in a["objective"])
    # the optimizer trains the heads at 10x and the student adapter with the student
    groups = a["optimizer"]["param_groups"]
    assert sorted({g["lr_scale"] for g in groups}) == [1.0, 10.0]
    model_params = sum(1 for k, v in a["model"].items() if v.is_floating_point() and "running_" not in k)
    adapter = sum(1 for k in a["objective"] if k.startswith("student_adapter."))
    assert sum(len(g["params"]) for g in groups) == model_params + adapter


def _write_ade20k(root: Path, *, bad_value: int | None = None, drop_label: bool = False) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("training", "validation"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(
                root / "images" / split / f"{i}.jpg"
            )
            label = rng.integers(0, 151, (20, 24)).astype(np.uint8)
            if bad_value is not None:
                label[3, 4] = bad_value
            if not (drop_label and i == 1):
                Image.fromarray(label).save(root / "annotations" / split / f"{i}.png")


ADE = [
    str(CONFIGS / "ade20k" / "psp18_ce.yaml"),
    "model.name=pspnet_tiny",
    "model.kwargs={}",
    "data.batch_size=2",
    "segmentation.augment.crop_size=16",
    "segmentation.eval={mode: whole}",
    "train.epochs=1",
    "train.amp=off",
    "train.sync_bn=false",
    "train.device=cpu",
    "train.progress=false",
    "data.num_workers=1",
]


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("bad_label", ("label file", "annotations/training/", "[199]")),
        ("missing_label", ("file not found", "1.png")),
    ],
)
def test_bad_segmentation_data_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, needles: tuple[str, ...]
) -> None:
    root = tmp_path / "ADEChallengeData2016"
    _write_ade20k(root, bad_value=200 if case == "bad_label" else None, drop_label=case == "missing_label")
    code = main(["seg-train", *ADE, f"data.root={tmp_path}", f"out_dir={tmp_path / 'runs'}"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    # a label is read once training has started: the engine's log says why the run stopped, then the
    # command's one-line error (a worker's traceback is not passed on)
    assert all("run stopped (exception)" in line for line in err[:-1]) and len(err) <= 2, err
    assert err[-1].startswith("gkl seg-train: error: ") and "Traceback" not in "\n".join(err)
    for needle in needles:
        assert needle in err[-1], (needle, err)


def test_missing_teacher_and_wrong_command_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no_teacher.pt"
    assert (
        main(
            [
                "seg-train",
                str(DEMO / "student_kd_gkl.yaml"),
                f"out_dir={tmp_path}",
                *TINY,
                f"teacher.checkpoint={missing}",
            ]
        )
        == 2
    )
    assert_one_line_error(capsys, "seg-train", "teacher.checkpoint", str(missing))
    assert main(["train", str(DEMO / "teacher.yaml"), f"out_dir={tmp_path}"]) == 2
    assert_one_line_error(capsys, "train", "gkl seg-train")
    assert main(["seg-train", str(DEMO / "student_ce.yaml"), f"out_dir={tmp_path}", "train.select_metric=top5"]) == 2
    assert_one_line_error(capsys, "seg-train", "train.select_metric")
