"""CIFAR files as they are distributed: pickled by Python 2's cPickle (protocol 2) with numpy 1.x, so the
keys and strings are Python 2 ``str`` (BINSTRING opcodes: bytes under ``encoding="bytes"``) and the
arrays name ``numpy.core.multiarray._reconstruct`` (numpy 2 calls the module ``numpy._core``). The pickles
here are written opcode by opcode in that layout (numpy 2's own ``pickle.dump`` would name ``numpy._core``),
checked against numpy's documented way to read Python 2 pickles (``encoding="latin1"``), and then read
by ``gkl.data`` through its restricted unpickler and its ``numpy.core`` remapping."""

from __future__ import annotations

import pickle
import pickletools
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from gkl.data import build_dataset

# ---------------------------------------------------------------- a protocol-2 writer (Python 2 layout)


def _int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])  # BININT1
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)  # BININT2
    return b"J" + struct.pack("<i", value)  # BININT


def _str(value: bytes) -> bytes:
    """A Python 2 ``str``: SHORT_BINSTRING / BINSTRING (what cPickle writes for str)."""
    if len(value) < 256:
        return b"U" + bytes([len(value)]) + value
    return b"T" + struct.pack("<i", len(value)) + value


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL


def _tuple(*items: bytes) -> bytes:
    if len(items) == 1:
        return items[0] + b"\x85"  # TUPLE1
    if len(items) == 2:
        return b"".join(items) + b"\x86"  # TUPLE2
    if len(items) == 3:
        return b"".join(items) + b"\x87"  # TUPLE3
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _none() -> bytes:
    return b"N"


def _bool(value: bool) -> bytes:
    return b"\x88" if value else b"\x89"  # NEWTRUE / NEWFALSE


def _list(items: list[bytes]) -> bytes:
    return b"](" + b"".join(items) + b"e"  # EMPTY_LIST MARK ... APPENDS


def _uint8_array(array: np.ndarray) -> bytes:
    """numpy 1.x ``ndarray.__reduce__``: _reconstruct(ndarray, (0,), 'b') then BUILD with
    (1, shape, dtype('u1'), False, raw bytes); the dtype is dtype('u1', False, True) + BUILD of its state."""
    assert array.dtype == np.uint8 and array.flags.c_contiguous
    dtype = (
        _global("numpy", "dtype")
        + _tuple(_str(b"u1"), _bool(False), _bool(True))
        + b"R"
        + _tuple(_int(3), _str(b"|"), _none(), _none(), _none(), _int(-1), _int(-1), _int(0))
        + b"b"
    )
    head = _global("numpy.core.multiarray", "_reconstruct") + _tuple(
        _global("numpy", "ndarray"), _tuple(_int(0)), _str(b"b")
    )
    state = _tuple(_int(1), _tuple(*(_int(d) for d in array.shape)), dtype, _bool(False), _str(array.tobytes()))
    return head + b"R" + state + b"b"  # REDUCE, BUILD


def py2_pickle(items: list[tuple[bytes, bytes]]) -> bytes:
    """A dict with Python 2 ``str`` keys, written as cPickle protocol 2 does."""
    body = b"".join(_str(key) + value for key, value in items)
    return b"\x80\x02}(" + body + b"u."  # PROTO 2, EMPTY_DICT, MARK ... SETITEMS, STOP


def _strings(values: list[bytes]) -> bytes:
    return _list([_str(v) for v in values])


def _ints(values) -> bytes:
    return _list([_int(int(v)) for v in values])


def _rows(images: np.ndarray) -> np.ndarray:
    """N x 32 x 32 x 3 -> N x 3072 in the official channel-plane order."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))


def write_py2_cifar10(root: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    chunks = np.array_split(np.arange(len(train[1])), 5)
    for i, chunk in enumerate(chunks, start=1):
        (folder / f"data_batch_{i}").write_bytes(
            py2_pickle(
                [
                    (b"batch_label", _str(f"training batch {i} of 5".encode())),
                    (b"labels", _ints(train[1][chunk])),
                    (b"data", _uint8_array(_rows(train[0][chunk]))),
                    (b"filenames", _strings([f"img_{j}.png".encode() for j in chunk])),
                ]
            )
        )
    (folder / "test_batch").write_bytes(
        py2_pickle(
            [
                (b"batch_label", _str(b"testing batch 1 of 1")),
                (b"labels", _ints(test[1])),
                (b"data", _uint8_array(_rows(test[0]))),
                (b"filenames", _strings([b"t.png"] * len(test[1]))),
            ]
        )
    )
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(
        py2_pickle([(b"num_cases_per_batch", _int(10000)), (b"label_names", _strings(names)), (b"num_vis", _int(3072))])
    )


def write_py2_cifar100(root: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, (images, labels) in (("train", train), ("test", test)):
        (folder / name).write_bytes(
            py2_pickle(
                [
                    (b"filenames", _strings([b"x.png"] * len(labels))),
                    (b"batch_label", _str(f"{name}ing batch 1 of 1".encode())),
                    (b"fine_labels", _ints(labels)),
                    (b"coarse_labels", _ints(np.asarray(labels) // 5)),
                    (b"data", _uint8_array(_rows(images))),
                ]
            )
        )
    (folder / "meta").write_bytes(
        py2_pickle(
            [
                (b"fine_label_names", _strings([f"fine{i}".encode() for i in range(100)])),
                (b"coarse_label_names", _strings([f"coarse{i}".encode() for i in range(20)])),
            ]
        )
    )


def _split(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, classes, n)


# ---------------------------------------------------------------- the tests


def test_the_hand_written_pickle_is_a_python2_numpy1_pickle(tmp_path: Path) -> None:
    images, labels = _split(3, 10, 0)
    raw = py2_pickle([(b"data", _uint8_array(_rows(images))), (b"labels", _ints(labels))])
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(raw)]
    assert ops[0] == ("PROTO", 2) and ("GLOBAL", "numpy.core.multiarray _reconstruct") in ops
    assert b"numpy._core" not in raw and not any(name == "STACK_GLOBAL" for name, _ in ops)
    assert {name for name, arg in ops if arg == "data"} == {"SHORT_BINSTRING"}  # a Python 2 str key
    # numpy's documented reading of Python 2 pickles (latin1) gives the arrays back
    loaded = pickle.loads(raw, encoding="latin1")
    np.testing.assert_array_equal(loaded["data"], _rows(images))
    assert loaded["labels"] == [int(v) for v in labels] and loaded["data"].dtype == np.uint8


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_gkl_reads_cifar_files_written_by_python2_and_numpy1(tmp_path: Path, name: str) -> None:
    classes = 10 if name == "cifar10" else 100
    train, test = _split(25, classes, 1), _split(7, classes, 2)
    (write_py2_cifar10 if name == "cifar10" else write_py2_cifar100)(tmp_path, train, test)
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    arrays = [p for p in (tmp_path / folder).iterdir() if "meta" not in p.name]
    assert arrays and all(b"numpy.core.multiarray" in p.read_bytes() for p in arrays)
    for split, (images, labels) in ((True, train), (False, test)):
        dataset = build_dataset(name, str(tmp_path), split, normalize=False, augment=False)
        memory = dataset.memory_split()
        np.testing.assert_array_equal(memory.images.permute(0, 2, 3, 1).numpy(), images)  # pixels in HWC order
        np.testing.assert_array_equal(memory.labels.numpy(), labels)
        image, label = dataset[len(labels) - 1]
        np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), images[-1] / 255.0, atol=1e-6)
        assert label == labels[-1]
    expected_names = ("airplane", "automobile") if name == "cifar10" else ("fine0", "fine1")
    assert dataset.info.class_names[:2] == expected_names and len(dataset.info.class_names) == classes


def test_numpy_core_names_resolve_without_numpy_s_deprecated_alias(tmp_path: Path, monkeypatch) -> None:
    # numpy 2 still answers to numpy.core.* through a deprecated alias; without it (a later numpy), the
    # files must still load, through the remapping to numpy._core
    train, test = _split(10, 10, 3), _split(4, 10, 4)
    write_py2_cifar10(tmp_path, train, test)
    for module in ("numpy.core", "numpy.core.multiarray", "numpy.core.numeric"):
        monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ImportError
    with pytest.raises(ImportError):
        __import__("numpy.core.multiarray")
    dataset = build_dataset("cifar10", str(tmp_path), True, normalize=False, augment=False)
    np.testing.assert_array_equal(dataset.memory_split().images.permute(0, 2, 3, 1).numpy(), train[0])
