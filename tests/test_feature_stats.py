"""train.log_feature_stats: per-epoch penultimate-feature norm, logit sum and logit norm of student and teacher,
measured by hooks during the evaluation of the test split, equal a direct computation; `gkl analyze features`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gkl.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "demo"


def _common(tmp: Path, name: str) -> list[str]:
    # the demo configs on the bundled 8x8 digits (cheaper than generating MNIST-1D)
    return [
        f"out_dir={tmp}",
        f"name={name}",
        f"data.root={tmp / 'data'}",
        "data.name=digits",
        "model.name=digits_mlp_small",
        "train.progress=false",
        "train.log_feature_stats=true",
        "train.loggers=[tensorboard]",
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("feature_stats")
    assert main(["train", str(CONFIGS / "teacher.yaml"), *_common(tmp, "teacher"), "train.epochs=1"]) == 0
    assert (
        main(
            [
                "distill",
                str(CONFIGS / "student_kd.yaml"),
                *_common(tmp, "student"),
                "train.epochs=2",
                "teacher.name=digits_mlp_small",
                f"teacher.checkpoint={tmp / 'teacher' / 'best.pt'}",
            ]
        )
        == 0
    )
    return tmp


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _direct(model: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    """The statistics computed without hooks: features = the model up to its classifier."""
    with torch.no_grad():
        features = model.net[:-1](images).double()  # FlatMLP: Flatten, hidden layers | head
        logits = model(images).double()
    return {
        "feature_norm": features.norm(dim=1).mean().item(),
        "logit_sum": logits.sum(dim=1).mean().item(),
        "logit_norm": logits.norm(dim=1).mean().item(),
    }


def _load(run: Path, checkpoint: str) -> tuple[torch.nn.Module, torch.Tensor]:
    from gkl.config import load_run_config
    from gkl.data import build_dataset
    from gkl.models import create_model, load_weights

    cfg = load_run_config(run)
    test = build_dataset(cfg.data.name, cfg.data.root, False, normalize=cfg.data.normalize)
    model = create_model(cfg.model.name, test.info.num_classes, **cfg.model.kwargs)
    load_weights(model, run / checkpoint)
    images = torch.stack([test[i][0] for i in range(len(test))])
    return model.eval(), images


def test_logged_statistics_equal_a_direct_computation_on_the_test_set(runs: Path) -> None:
    records = _records(runs / "student")
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(
        r["features"]["split"] == "eval" and set(r["features"]) == {"split", "student", "teacher"} for r in records
    )
    student, images = _load(runs / "student", "checkpoint.pt")  # the weights of the last epoch
    teacher, _ = _load(runs / "teacher", "best.pt")
    assert images.shape[0] == records[-1]["eval"]["count"] > 300
    for role, model in (("student", student), ("teacher", teacher)):
        expected = _direct(model, images)
        for key, value in expected.items():
            assert records[-1]["features"][role][key] == pytest.approx(value, rel=1e-6, abs=1e-6), (role, key)
    # the frozen teacher's numbers are the same every epoch; the student's move
    assert records[0]["features"]["teacher"] == records[1]["features"]["teacher"]
    assert records[0]["features"]["student"] != records[1]["features"]["student"]
    # without a teacher (kind train) only the model's own statistics
    teacher_records = _records(runs / "teacher")
    assert set(teacher_records[0]["features"]) == {"split", "student"}
    assert teacher_records[0]["features"]["student"] == pytest.approx(records[0]["features"]["teacher"], rel=1e-9)


def test_statistics_reach_tensorboard_and_are_off_by_default(runs: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs / "student" / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"features/student/feature_norm", "features/teacher/logit_sum", "features/student/logit_norm"} <= tags
    last = events.Scalars("features/student/feature_norm")[-1]
    assert last.step == 2
    assert last.value == pytest.approx(_records(runs / "student")[-1]["features"]["student"]["feature_norm"], rel=1e-6)
    from gkl.settings.train import TrainSettings

    assert TrainSettings().log_feature_stats is False


def test_analyze_features_plots_student_and_teacher_curves(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "analysis"
    assert main(["analyze", "features", str(runs / "student"), str(runs / "teacher"), "--out", str(out)]) == 0
    curves = json.loads((out / "features.json").read_text())
    assert [r["epoch"] for r in curves["student"]] == [1, 2]
    assert all("teacher" in r and "student" in r for r in curves["student"])
    assert curves["student"][1]["student"] == _records(runs / "student")[1]["features"]["student"]
    assert (out / "features.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["analyze", "features", str(out), "--out", str(out)]) == 2  # not a run: one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run directory" in err[0], err
