"""``gkl analyze`` on every kind of run, through the CLI: each verb on a classification, an SSL, a
segmentation and a CLIP run (tiny runs trained here from the demo configs) exits 0 with its PNG and
JSON, or 2 with one line where the analysis does not apply; the class scores each task gives equal
what its evaluation measured (top-1, pixel accuracy, zero-shot top-1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

#: kind of run -> (demo recipe, overrides for a tiny run)
RUNS = {
    "classification": (
        "configs/demo/teacher.yaml",
        ["train.epochs=1", "train.log_feature_stats=true", "data.normalize=false"],
    ),
    "ssl": (
        "configs/ssl/demo/fixmatch_gkl.yaml",
        [
            "train.iterations=20",
            "train.eval_every_steps=20",
            "train.schedule.warmup_steps=2",
            "train.log_feature_stats=true",
        ],
    ),
    "segmentation": (
        "configs/segmentation/demo/student_ce.yaml",
        ["train.epochs=1", "segmentation.train_size=40", "segmentation.eval_size=24"],
    ),
    "clip": ("configs/clip/demo/student_contrastive.yaml", ["train.epochs=1"]),
}
#: the kinds whose data is read from data.root (MNIST-1D's cache, the digits are bundled)
DATA_ROOT = {"classification"}
CLASSES = {"classification": 10, "ssl": 10, "segmentation": 11, "clip": 10}

#: verb -> (argv after the run directory, files written on success with {name} the run's name)
VERBS = {
    "scores": ([], ["scores"]),
    "margins": (["{run}/checkpoint.pt"], ["margins"]),
    "margins_adv": (["{run}/checkpoint.pt", "--adversarial", "--eps", "0.1"], ["margins_adv"]),
    "tsne": (["--classes", "3"], ["tsne_{name}"]),
    "tsne_adv": (["--classes", "3", "--adversarial", "--eps", "0.1"], ["tsne_{name}_adv"]),
    "features": ([], ["features"]),
}
#: (kind, verb) pairs refused in one line (exit 2); every other pair exits 0
REFUSED = {
    ("ssl", "margins_adv"),  # its inputs are normalised: PGD needs [0, 1]
    ("ssl", "tsne_adv"),
    ("segmentation", "margins_adv"),  # pixel labels
    ("segmentation", "tsne_adv"),
    ("segmentation", "features"),  # train.log_feature_stats needs an nn.Linear classifier
    ("clip", "margins_adv"),  # OpenCLIP normalises the images
    ("clip", "tsne_adv"),
    ("clip", "features"),
}


pytestmark = pytest.mark.xdist_group("analyze_tasks")  # the runs fixture is built once


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from gkl.config import load_config
    from gkl.runner import run_experiment

    out = tmp_path_factory.mktemp("analyze_tasks")
    made = {}
    for kind, (recipe, overrides) in RUNS.items():
        cfg = load_config(
            ROOT / recipe,
            [*overrides, f"out_dir={out}", f"name={kind}", "train.progress=false"]
            + ([f"data.root={out / 'data'}"] if kind in DATA_ROOT else []),
        )
        run_experiment(cfg)
        made[kind] = cfg.run_dir
    return made


@pytest.mark.parametrize("verb", list(VERBS))
@pytest.mark.parametrize("kind", list(RUNS))
def test_every_analyze_verb_on_every_kind_of_run(
    kind: str,
    verb: str,
    runs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from gkl.cli import main

    run = runs[kind]
    extra, stems = VERBS[verb]
    command = verb.removesuffix("_adv")
    out = tmp_path / "out"
    argv = ["analyze", command, str(run), *(a.format(run=run) for a in extra), "--out", str(out)]
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    if (kind, verb) in REFUSED:
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gkl analyze: error: "), lines
        assert "Traceback" not in err and not out.exists()
        return
    assert code == 0, err
    # the run's weights are loaded: no "Model initialized randomly" from OpenCLIP (or anyone)
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]
    for stem in stems:
        stem = stem.format(name=run.name)
        assert (out / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        payload = json.loads((out / f"{stem}.json").read_text())
        if command == "scores":
            assert len(payload[run.name]["per_class"]) == CLASSES[kind]
        if command == "margins":
            assert len(payload["difference_b_minus_a"]) == len(payload["classes"]) == CLASSES[kind]
            assert payload["adversarial"] is verb.endswith("_adv")
        if command == "tsne":
            assert len(payload["points"]) == len(payload["labels"]) > 0
            assert set(payload["labels"]) <= set(payload["classes"]) and len(payload["classes"]) == 3


@pytest.mark.parametrize(
    ("kind", "metric"), [("classification", "top1"), ("segmentation", "pixel_accuracy"), ("clip", "zeroshot_top1")]
)
def test_the_class_scores_of_a_task_give_the_accuracy_its_evaluation_measured(
    kind: str, metric: str, runs: dict[str, Path]
) -> None:
    """The rows a task's view gives (an image, a labelled pixel, an image against the class prompts) are
    what its evaluator scored: their argmax accuracy is the run's last evaluation (one epoch: best = last)."""
    from gkl.study.analysis.features import iterate_rows
    from gkl.study.analysis.run_analyses import load_run

    view = load_run(runs[kind]).view
    hits = count = 0
    for batch in iterate_rows(view.model, view.data, view.outputs):
        hits += int((batch.logits.argmax(dim=1) == batch.labels).sum())
        count += batch.labels.numel()
    summary = json.loads((runs[kind] / "summary.json").read_text())
    assert 100.0 * hits / count == pytest.approx(summary["final"]["eval"][metric], abs=1e-6)


def test_segmentation_features_are_the_head_features_per_pixel(runs: dict[str, Path]) -> None:
    """Pixel features are the 1×1 classifier's input: the classifier applied to them gives the logits
    of the same pixels (at the feature map's resolution), and ignored pixels are dropped."""
    from gkl.study.analysis.features import iterate_rows
    from gkl.study.analysis.run_analyses import load_run

    view = load_run(runs["segmentation"]).view
    batch = next(iterate_rows(view.model, view.data, view.outputs, features=True))
    assert batch.features is not None and batch.features.shape[0] == batch.labels.shape[0] == batch.logits.shape[0]
    classifier = view.model.cls  # type: ignore[union-attr]  # PSPNet's 1x1 conv
    with torch.no_grad():
        again = classifier(batch.features[:, :, None, None].to(next(classifier.parameters()).device))[:, :, 0, 0]
    torch.testing.assert_close(again.cpu(), batch.logits, atol=1e-4, rtol=1e-4)
    assert int(batch.labels.max()) < view.num_classes  # 255 (ignore) dropped
