"""Data files a user points gkl at: corrupt, truncated or malicious files are one-line errors naming the file.

The CIFAR and ImageNet-LT cases run `gkl train RECIPE data.root=...` as a user would: the dataset
is built before any model or training, so a bad file stops the command at once with exit 2.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from gkl.cli import main
from gkl.data import build_dataset
from gkl.data.base import MemorySplit
from gkl.data.cifar import CifarUnpickler
from gkl.data.in_memory import InMemoryLoader
from gkl.utils.errors import InputError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CIFAR_RECIPE = CONFIGS / "cifar100" / "baseline" / "resnet8x4.yaml"


def _write_cifar100(root: Path, n: int = 20, protocol: int = 2) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ("train", "test"):
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"fine_labels": list(range(n)),
            b"coarse_labels": [0] * n,
            b"filenames": [b"x.png"] * n,
            b"batch_label": name.encode(),
            b"first": np.int64(3),
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=protocol)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, handle, protocol=protocol)
    return folder


class _Payload:
    """Unpickling this runs ``os.system`` (a malicious 'CIFAR' file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _train_on(root: Path, tmp_path: Path) -> int:
    return main(["train", str(CIFAR_RECIPE), f"data.root={root}", f"out_dir={tmp_path / 'runs'}", "train.epochs=1"])


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("gkl train: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_real_cifar_pickles_load_with_the_restricted_unpickler(tmp_path: Path, protocol: int) -> None:
    folder = _write_cifar100(tmp_path, protocol=protocol)
    with open(folder / "train", "rb") as handle:
        expected = pickle.load(handle, encoding="bytes")
    with open(folder / "train", "rb") as handle:
        got = CifarUnpickler(handle, encoding="bytes").load()
    assert got.keys() == expected.keys()
    np.testing.assert_array_equal(got[b"data"], expected[b"data"])
    assert got[b"fine_labels"] == expected[b"fine_labels"] and got[b"first"] == 3
    train = build_dataset("cifar100", str(tmp_path), True, augment=False, normalize=False)
    image, label = train[5]
    assert label == 5
    pixels = expected[b"data"][5].reshape(3, 32, 32)
    torch.testing.assert_close(image, torch.from_numpy(pixels).float() / 255)


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _write_cifar100(tmp_path)
    marker = tmp_path / "pwned"
    with open(folder / "train", "wb") as handle:
        pickle.dump({b"data": _Payload(marker), b"fine_labels": [0]}, handle, protocol=2)
    assert _train_on(tmp_path, tmp_path) == 2
    _one_line_error(capsys, str(folder / "train"), "refused to load posix.system")
    assert not marker.exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("checkpoint.pt"))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not_a_dict", "bad_shape"])
def test_corrupt_cifar_files_name_the_file(damage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _write_cifar100(tmp_path)
    target = folder / "train"
    raw = target.read_bytes()
    if damage == "truncated":
        target.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        target.write_bytes(b"\x80\x02this is not a pickle" + raw[:10])
    elif damage == "empty":
        target.write_bytes(b"")
    elif damage == "not_a_dict":
        target.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    else:
        target.write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"fine_labels": [0] * 4}))
    assert _train_on(tmp_path, tmp_path) == 2
    _one_line_error(capsys, str(target))


def test_missing_cifar_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _train_on(tmp_path / "empty", tmp_path) == 2
    _one_line_error(capsys, "cifar-100-python", "data.download=true")


def test_imagenet_lt_missing_images_fail_at_construction(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    lines = []
    for k in range(6):
        rel = f"train/n0/img{k}.JPEG"
        lines.append(f"{rel} {k % 2}")
        if k < 2:  # only the first two images exist
            (tmp_path / "train" / "n0").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(tmp_path / rel)
    (tmp_path / "ImageNet_LT_train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "ImageNet_LT_test.txt").write_text("train/n0/img0.JPEG 0\n")
    with pytest.raises(InputError) as info:
        build_dataset("imagenet_lt", str(tmp_path), True)
    message = str(info.value)
    assert "4 of 6 listed images are missing" in message and "img2.JPEG" in message
    assert "img5.JPEG" not in message  # only the first few are named
    assert len(build_dataset("imagenet_lt", str(tmp_path), False)) == 1  # the test split is complete
    args = [
        "train",
        str(CONFIGS / "imagenet_lt" / "teacher_resnext101.yaml"),
        f"data.root={tmp_path}",
        f"out_dir={tmp_path / 'runs'}",
        "model.name=imagenet_resnet18",
    ]
    assert main(args) == 2
    _one_line_error(capsys, "ImageNet_LT_train.txt", "4 of 6 listed images are missing")


def test_in_memory_loader_switches_threads_once_per_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    split = MemorySplit(
        images=torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8),
        labels=torch.randint(0, 10, (300,)),
        mean=(0.5, 0.4, 0.3),
        std=(0.2, 0.25, 0.3),
        augmentation="crop_flip",
    )
    loader = InMemoryLoader(split, batch_size=32, train=True, device=torch.device("cpu"), seed=3)
    loader.set_epoch(2)
    # the reference: the same batches assembled one by one with the epoch's generator
    gen = torch.Generator().manual_seed(0)
    from gkl.data.sharding import derive_seed

    gen.manual_seed(derive_seed(3, 2, 0, "augment"))
    expected = [loader._assemble(real, fake, gen) for real, fake in loader._batches()]

    calls: list[int] = []
    real_set = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real_set(n)))
    before = torch.get_num_threads()
    seen_threads = []
    batches = []
    for batch in loader:
        seen_threads.append(torch.get_num_threads())  # what the training step would run with
        batches.append(batch)
    assert torch.get_num_threads() == before
    assert len(batches) == len(expected) == 10
    for (x, y), (ex, ey) in zip(batches, expected):
        torch.testing.assert_close(x, ex, rtol=0, atol=0)
        assert torch.equal(y, ey)
    assert set(seen_threads) == {before}
    assert len(calls) <= 2  # 10 small batches fit in one chunk: one switch and one restore, not 2 per batch


def test_truncated_mnist1d_cache_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "mnist1d_default.npz"
    np.savez(cache, x=np.zeros((4, 40), np.float32), y=np.zeros(4, np.int64))
    cache.write_bytes(cache.read_bytes()[:50])  # a copy interrupted half-way
    args = ["train", str(CONFIGS / "demo" / "teacher.yaml"), f"data.root={tmp_path}", f"out_dir={tmp_path / 'runs'}"]
    assert main(args) == 2
    _one_line_error(capsys, str(cache), "delete it to regenerate")


def test_truncated_or_pickled_generated_npz_is_refused(tmp_path: Path) -> None:
    from gkl.data import GeneratedImages

    path = tmp_path / "gen.npz"
    np.savez(path, image=np.zeros((4, 32, 32, 3), np.uint8), label=np.zeros(4, np.int64))
    assert len(GeneratedImages(path)) == 4
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputError, match="gen.npz"):
        GeneratedImages(path)
    np.savez(path, image=np.array([_Payload(tmp_path / "pwned")], dtype=object), label=np.zeros(1, np.int64))
    with pytest.raises(InputError, match="gen.npz"):
        GeneratedImages(path)
    assert not (tmp_path / "pwned").exists()
