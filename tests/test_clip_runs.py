"""CLIP runs through the command line (in-process ``gkl.cli.main``): train, export, distill, evaluate, refuse.

One module fixture trains a tiny teacher for one epoch on a written caption CSV (24 digit
images) with a zero-shot ImageFolder and retrieval on the same captions, then distils the
tiny student from the exported ``openclip.pt``. Everything is checked on those real runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from gkl.cli import main  # noqa: E402
from gkl.utils.errors import InputError  # noqa: E402
from helpers import assert_one_line_error  # noqa: E402

# one xdist worker runs the tests of the shared module fixture (two real tiny runs)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("clip_runs")]

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "clip" / "demo"
NAMES = ("zero", "one", "two")


def _write_set(root: Path) -> tuple[Path, Path]:
    """24 digit images (8 of each of three classes): a caption CSV and a zero-shot ImageFolder of them."""
    from PIL import Image

    from gkl.data.bundled import digits_split

    inputs, labels = digits_split(True)
    (root / "images").mkdir(parents=True)
    rows = ["filepath,title"]
    for c, name in enumerate(NAMES):
        (root / "zs" / name).mkdir(parents=True)
        for j, i in enumerate(torch.nonzero(labels == c).flatten()[:8].tolist()):
            img = Image.fromarray((inputs[i, 0] * 255).round().to(torch.uint8).numpy()).convert("RGB")
            img.save(root / "images" / f"{name}{j}.png")
            img.save(root / "zs" / name / f"{j}.png")
            rows.append(f"images/{name}{j}.png,a photo of the digit {name}.")
    csv = root / "captions.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv, root / "zs"


def _data_overrides(root: Path, csv: Path, zs: Path) -> list[str]:
    return [
        f"out_dir={root / 'runs'}",
        "clip_data.format=csv",
        f"clip_data.train={csv}",
        f"clip_eval.zeroshot={zs}",
        f"clip_eval.retrieval={csv}",
        "data.val_fraction=0",
        "data.batch_size=12",
        "data.eval_batch_size=64",
        "train.epochs=1",
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_runs")
    csv, zs = _write_set(root)
    common = _data_overrides(root, csv, zs)
    assert main(["clip-train", str(CONFIGS / "teacher.yaml"), *common]) == 0
    teacher = root / "runs" / "teacher"
    assert (
        main(
            [
                "clip-distill",
                str(CONFIGS / "student_gkl.yaml"),
                *common,
                f"teacher.checkpoint={teacher / 'openclip.pt'}",
            ]
        )
        == 0
    )
    return {
        "root": root,
        "csv": csv,
        "zs": zs,
        "common": common,
        "teacher": teacher,
        "student": root / "runs" / "student_gkl",
    }


def test_teacher_run_exports_weights_that_open_clip_loads(runs):
    exported = runs["teacher"] / "openclip.pt"
    model = open_clip.create_model("gkl-tiny-clip-teacher", pretrained=str(exported))
    best = torch.load(runs["teacher"] / "best.pt", map_location="cpu", weights_only=True)["model"]
    loaded = model.state_dict()
    assert set(loaded) == set(best)
    for key, value in best.items():
        assert torch.equal(loaded[key], value), key


def test_student_run_records_zero_shot_and_retrieval_metrics(runs):
    summary = json.loads((runs["student"] / "summary.json").read_text())
    assert summary["select_metric"] == "zeroshot_top1" and summary["select_split"] == "eval"
    final = summary["final"]["eval"]
    assert final["zeroshot_count"] == 24
    assert "zeroshot_top5" not in final  # 3 classes: no top-5
    # the last zero-shot top-1 recounted from the final weights with open_clip's own zero-shot
    # classifier, image by image (argmax over the three class columns)
    from torchvision.datasets import ImageFolder

    from gkl.data.image_text import DIGIT_TEMPLATES
    from gkl.engine.checkpoint import read_checkpoint
    from gkl.models.clip import image_transform

    model = open_clip.create_model("gkl-tiny-clip-student")
    model.load_state_dict(read_checkpoint(runs["student"] / "checkpoint.pt")["model"])
    model.eval()
    tokenizer = open_clip.get_tokenizer("gkl-tiny-clip-student")
    images = ImageFolder(str(runs["zs"]), transform=image_transform(model, train=False))
    assert images.classes == sorted(NAMES)
    names = list(images.classes)  # the folder names are the class names
    hits = 0
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(model, tokenizer, names, DIGIT_TEMPLATES)
        for image, label in images:
            hits += int((model.encode_image(image[None], normalize=True) @ classifier).argmax() == label)
    assert final["zeroshot_top1"] == pytest.approx(100.0 * hits / 24, abs=1e-9)
    assert {"i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"} <= set(final)
    assert set(summary["train"]) >= {"contrastive", "gkl", "loss"}
    config = (runs["student"] / "config.yaml").read_text()
    assert "kind: clip_distill" in config and "method: gkl" in config


def test_evaluate_reports_the_selected_checkpoint_again(runs, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(runs["student"])]) == 0
    out = capsys.readouterr().out
    assert "zeroshot_top1" in out and "i2t_R@1" in out
    record = [json.loads(line) for line in (runs["student"] / "evaluations.jsonl").read_text().splitlines()][-1]
    summary = json.loads((runs["student"] / "summary.json").read_text())
    best = record["results"]["best"]["clean"]
    assert best["zeroshot_top1"] == pytest.approx(summary["best"], abs=1e-9)
    last = record["results"]["last"]["clean"]
    assert last["zeroshot_top1"] == pytest.approx(summary["final"]["eval"]["zeroshot_top1"], abs=1e-9)
    assert main(["evaluate", str(runs["student"]), "--robust"]) == 2  # attacks are for classifiers
    assert_one_line_error(capsys, "evaluate", "--robust", "clip_distill")


def _one_line_error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_gradient_accumulation_is_refused_with_one_line(runs, capsys):
    err = _one_line_error(
        capsys, ["clip-distill", str(CONFIGS / "student_kl.yaml"), *runs["common"], "train.accumulate_steps=2"]
    )
    assert err.startswith("gkl clip-distill: error: train.accumulate_steps: expected 1")
    assert "do not decompose over micro-batches" in err


def test_caption_file_with_a_missing_image_is_one_line_naming_it(runs, capsys):
    bad = runs["root"] / "bad.csv"
    bad.write_text(runs["csv"].read_text() + "images/missing.png,a photo of nothing.\n")
    err = _one_line_error(
        capsys, ["clip-train", str(CONFIGS / "teacher.yaml"), *runs["common"], f"clip_data.train={bad}", "name=bad"]
    )
    assert str(bad) in err and "missing.png" in err and "does not exist" in err
    assert not (runs["root"] / "runs" / "bad" / "checkpoint.pt").exists()


def test_wrong_command_for_a_clip_config(runs, capsys):
    err = _one_line_error(capsys, ["distill", str(CONFIGS / "student_gkl.yaml")])
    assert "is a 'clip_distill' config; use 'gkl clip-distill'" in err


def test_webdataset_shards_feed_the_runner(tmp_path):
    """A webdataset config builds a loader of `samples_per_epoch // batch` (images, tokens) batches per epoch."""
    import io
    import tarfile

    from PIL import Image

    from gkl.config import load_config
    from gkl.tasks.clip import build_clip_parts
    from gkl.utils.distributed import DistInfo

    with tarfile.open(tmp_path / "shard-000.tar", "w") as tar:
        for i in range(6):
            buf = io.BytesIO()
            Image.new("RGB", (9, 9), (20 * i, 0, 0)).save(buf, format="PNG")
            for ext, payload in (("png", buf.getvalue()), ("txt", f"caption {i}".encode())):
                info = tarfile.TarInfo(f"{i:04d}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    overrides = [
        "clip_data.format=webdataset",
        f"clip_data.train={tmp_path / 'shard-{000..000}.tar'}",
        "clip_data.samples_per_epoch=8",
        "clip_data.shuffle_buffer=4",
        "data.batch_size=4",
        "data.val_fraction=0",
        "clip_eval=null",
    ]
    cfg = load_config(CONFIGS / "teacher.yaml", overrides)
    parts = build_clip_parts(cfg, DistInfo(device=torch.device("cpu")))
    assert len(parts.train_loader) == 2 and parts.eval_loader is None
    parts.train_loader.set_epoch(1)
    batches = list(parts.train_loader)
    assert len(batches) == 2
    for images, tokens in batches:
        assert images.shape == (4, 3, 16, 16) and tokens.shape == (4, 12)
    missing = [o.replace("shard-{000..000}", "shard-{000..001}") for o in overrides]
    with pytest.raises(InputError, match=r"^webdataset shard '.*shard-001\.tar' does not exist$"):
        build_clip_parts(load_config(CONFIGS / "teacher.yaml", missing), DistInfo(device=torch.device("cpu")))
