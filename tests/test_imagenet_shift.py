"""ImageNet-R and ImageNet-Sketch: the class lists, the readers on small JPEGs written in the real
layouts, and ``gkl evaluate RUN --dataset ... --data-root DIR`` with a model whose logits are known."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from gkl.cli import main
from gkl.data import build_dataset, dataset_info
from gkl.data.imagenet_classes import IMAGENET_R_WNIDS, IMAGENET_WNIDS, imagenet_class_indices
from gkl.models import register_model
from gkl.models import registry as model_registry
from gkl.utils.errors import InputError

# The indices of the 200 ImageNet-R classes among the 1000 sorted ImageNet wnids, as listed in the
# official repository (hendrycks/imagenet-r, eval.py, comment under ``imagenet_r_mask``).
OFFICIAL_IMAGENET_R_INDICES = [
    1, 2, 4, 6, 8, 9, 11, 13, 22, 23, 26, 29, 31, 39, 47, 63, 71, 76, 79, 84, 90, 94, 96, 97, 99, 100,
    105, 107, 113, 122, 125, 130, 132, 144, 145, 147, 148, 150, 151, 155, 160, 161, 162, 163, 171, 172,
    178, 187, 195, 199, 203, 207, 208, 219, 231, 232, 234, 235, 242, 245, 247, 250, 251, 254, 259, 260,
    263, 265, 267, 269, 276, 277, 281, 288, 289, 291, 292, 293, 296, 299, 301, 308, 309, 310, 311, 314,
    315, 319, 323, 327, 330, 334, 335, 337, 338, 340, 341, 344, 347, 353, 355, 361, 362, 365, 366, 367,
    368, 372, 388, 390, 393, 397, 401, 407, 413, 414, 425, 428, 430, 435, 437, 441, 447, 448, 457, 462,
    463, 469, 470, 471, 472, 476, 483, 487, 515, 546, 555, 558, 570, 579, 583, 587, 593, 594, 596, 609,
    613, 617, 621, 629, 637, 657, 658, 701, 717, 724, 763, 768, 774, 776, 779, 780, 787, 805, 812, 815,
    820, 824, 833, 847, 852, 866, 875, 883, 889, 895, 907, 928, 931, 932, 933, 934, 936, 937, 943, 945,
    947, 948, 949, 951, 953, 954, 957, 963, 965, 967, 980, 981, 983, 988,
]  # fmt: skip


def test_class_lists_match_the_official_imagenet_r_indices() -> None:
    assert len(IMAGENET_WNIDS) == len(set(IMAGENET_WNIDS)) == 1000
    assert list(IMAGENET_WNIDS) == sorted(IMAGENET_WNIDS)
    assert IMAGENET_WNIDS[0] == "n01440764" and IMAGENET_WNIDS[-1] == "n15075141"
    assert len(IMAGENET_R_WNIDS) == len(set(IMAGENET_R_WNIDS)) == 200
    assert imagenet_class_indices(IMAGENET_R_WNIDS) == OFFICIAL_IMAGENET_R_INDICES
    assert imagenet_class_indices(IMAGENET_WNIDS) == list(range(1000))
    with pytest.raises(ValueError, match="n00000000"):
        imagenet_class_indices(["n01443537", "n00000000"])
    assert dataset_info("imagenet_r").num_classes == 200
    assert dataset_info("imagenet_sketch").class_names == IMAGENET_WNIDS


def _jpeg(path: Path, shade: int, extension: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((24, 32, 3), shade, dtype=np.uint8)).save(path.with_suffix(extension), format="JPEG")


def _write_classes(folder: Path, wnids, images: dict[str, list[int]], extension: str) -> None:
    """Every class folder of ``wnids``; images (one per grey level) only in the classes of ``images``."""
    for wnid in wnids:
        (folder / wnid).mkdir(parents=True, exist_ok=True)
    for wnid, shades in images.items():
        for k, shade in enumerate(shades):
            _jpeg(folder / wnid / f"{wnid}_{k}", shade, extension)


# ImageNet-R classes that hold test images; their 200-class labels and 1000-class indices.
R_IMAGES = {"n01443537": [30], "n02106662": [90, 150], "n12267677": [210]}


def test_imagenet_r_reader_labels_and_layouts(tmp_path: Path) -> None:
    _write_classes(tmp_path / "imagenet-r", IMAGENET_R_WNIDS, R_IMAGES, ".jpg")
    for root in (tmp_path, tmp_path / "imagenet-r"):  # the parent folder or the class folders' folder
        test = build_dataset("imagenet_r", root, train=False, normalize=False)
        assert len(test) == 4 and test.info.num_classes == 200 and test.info.class_names == IMAGENET_R_WNIDS
        for index in range(4):
            image, label = test[index]
            path = test.base.samples[index][0]
            wnid = os.path.basename(os.path.dirname(path))
            assert label == IMAGENET_R_WNIDS.index(wnid)
            assert image.shape == (3, 224, 224)  # Resize(256) + CenterCrop(224)
            shade = R_IMAGES[wnid][int(Path(path).stem.rsplit("_", 1)[1])]
            assert abs(float(image.mean()) * 255 - shade) < 3
    # n02106662 (German shepherd) is ImageNet class 235, the 58th of the official 200 indices
    assert IMAGENET_WNIDS.index("n02106662") == 235 == OFFICIAL_IMAGENET_R_INDICES[57]
    assert sorted(label for _, label in test.base.samples) == [0, 57, 57, 199]


def test_imagenet_r_reader_errors(tmp_path: Path) -> None:
    folder = tmp_path / "imagenet-r"
    _write_classes(folder, IMAGENET_R_WNIDS[:-2], {"n01443537": [30]}, ".jpg")
    with pytest.raises(InputError, match=r"2 of the 200 ImageNet-R class folders are missing.*n12267677"):
        build_dataset("imagenet_r", tmp_path, train=False)
    _write_classes(folder, IMAGENET_R_WNIDS, {}, ".jpg")
    (folder / "n01440764").mkdir()  # an ImageNet class that is not in ImageNet-R
    with pytest.raises(InputError, match=r"not ImageNet-R classes.*n01440764"):
        build_dataset("imagenet_r", tmp_path, train=False)
    (folder / "n01440764").rmdir()
    with pytest.raises(InputError, match="test set only"):
        build_dataset("imagenet_r", tmp_path, train=True)
    with pytest.raises(InputError, match="folder not found"):
        build_dataset("imagenet_r", tmp_path / "nowhere", train=False)


def test_imagenet_sketch_reader_uses_the_imagenet_indices(tmp_path: Path) -> None:
    images = {"n01440764": [40], "n04591713": [120], "n15075141": [200]}
    _write_classes(tmp_path / "sketch", IMAGENET_WNIDS, images, ".JPEG")
    test = build_dataset("imagenet_sketch", tmp_path, train=False)
    assert len(test) == 3 and test.info.num_classes == 1000
    labels = {os.path.basename(os.path.dirname(path)): label for path, label in test.base.samples}
    assert labels == {"n01440764": 0, "n04591713": IMAGENET_WNIDS.index("n04591713"), "n15075141": 999}
    os.rmdir(tmp_path / "sketch" / "n01443537")
    with pytest.raises(InputError, match="1 of the 1000 ImageNet-Sketch class folders are missing"):
        build_dataset("imagenet_sketch", tmp_path, train=False)


class GreyLevelClassifier(nn.Module):
    """1000 logits looked up from the image's mean grey level: row k of ``table`` for level ``levels[k]``."""

    def __init__(self, num_classes: int, levels: list[int], table: torch.Tensor) -> None:
        super().__init__()
        assert num_classes == 1000
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32) / 255)
        self.register_buffer("table", table)
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so the weights file is a real state_dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = x.mean(dim=(1, 2, 3))
        nearest = (grey[:, None] - self.levels[None]).abs().argmin(1)
        return self.scale * self.table[nearest]


def _known_logits(levels_to_wnid: dict[int, str]) -> tuple[list[int], torch.Tensor, dict[int, tuple[bool, bool]]]:
    """A logit table per grey level and whether each image is right at top-1 / top-5 among the 200 classes."""
    r_index = {wnid: i for i, wnid in zip(OFFICIAL_IMAGENET_R_INDICES, IMAGENET_R_WNIDS)}
    levels = sorted(levels_to_wnid)
    table = torch.zeros(len(levels), 1000)
    outcome = {}
    others = [i for i in OFFICIAL_IMAGENET_R_INDICES]
    for row, level in enumerate(levels):
        true = r_index[levels_to_wnid[level]]
        wrong = [i for i in others if i != true]
        if row == 0:  # best logit on a class outside ImageNet-R (index 0): right only once restricted
            table[row, 0], table[row, true] = 10.0, 5.0
            outcome[level] = (True, True)
        elif row == 1:  # right outright
            table[row, true] = 7.0
            outcome[level] = (True, True)
        elif row == 2:  # third among the 200: wrong at top-1, right at top-5
            table[row, wrong[0]], table[row, wrong[1]], table[row, true] = 9.0, 8.0, 6.0
            outcome[level] = (False, True)
        else:  # sixth among the 200: wrong at top-1 and top-5
            for k in range(5):
                table[row, wrong[k]] = 9.0 - k
            table[row, true] = 1.0
            outcome[level] = (False, False)
    return levels, table, outcome


def test_gkl_evaluate_on_imagenet_r_with_known_logits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    levels_to_wnid = {30: "n01443537", 90: "n02106662", 150: "n02106662", 210: "n12267677"}
    levels, table, outcome = _known_logits(levels_to_wnid)
    monkeypatch.setattr(model_registry, "_REGISTRY", dict(model_registry._REGISTRY))
    register_model("test_grey_level_imagenet", input_kind="imagenet")(
        lambda num_classes: GreyLevelClassifier(num_classes, levels, table)
    )
    _write_classes(tmp_path / "data" / "imagenet-r", IMAGENET_R_WNIDS, R_IMAGES, ".jpg")
    run = tmp_path / "run"
    run.mkdir()
    config = {
        "kind": "train",
        "name": "grey",
        "model": {"name": "test_grey_level_imagenet"},
        "data": {"name": "imagenet", "root": str(tmp_path / "no_imagenet"), "normalize": False, "num_workers": 0},
        "train": {"epochs": 1, "device": "cpu"},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    state = GreyLevelClassifier(1000, levels, table).state_dict()
    torch.save({"model": state, "epoch": 3}, run / "checkpoint.pt")
    status = main(
        ["evaluate", str(run), "--which", "last", "--dataset", "imagenet_r", "--data-root", str(tmp_path / "data")]
    )
    assert status == 0
    record = json.loads((run / "evaluations.jsonl").read_text().splitlines()[-1])
    assert record["dataset"] == "imagenet_r" and record["results"]["last"]["epoch"] == 3
    clean = record["results"]["last"]["clean"]
    assert clean["count"] == 4
    assert clean["top1"] == pytest.approx(100 * sum(t for t, _ in outcome.values()) / 4)  # 50 %
    assert clean["top5"] == pytest.approx(100 * sum(t5 for _, t5 in outcome.values()) / 4)  # 75 %
    # Without the restriction to the 200 classes, the first image would be wrong: the subset matters.
    assert int(table[0].argmax()) == 0 and IMAGENET_WNIDS[0] not in IMAGENET_R_WNIDS


def test_gkl_evaluate_dataset_option_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    config = {"kind": "train", "name": "c", "model": {"name": "resnet8"}, "data": {"name": "cifar100"}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "checkpoint.pt").write_bytes(b"")
    assert main(["evaluate", str(run), "--dataset", "imagenet_r"]) == 2
    assert "--dataset and --data-root" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--dataset", "imagenet_r", "--data-root", str(tmp_path)]) == 2
    assert "evaluates ImageNet-1k classifiers" in capsys.readouterr().err
