"""W&B (offline) and MLflow (local file store) trackers write the logged values; read them back."""

from __future__ import annotations

import json
import struct
import sys

import pytest

from gkl.engine.trackers import MlflowTracker, WandbTracker, flatten_record
from gkl.utils.errors import InputError

RECORDS = [
    (
        1,
        {
            "epoch": 1,
            "lr": 0.1,
            "train": {"loss": 2.5},
            "eval": {"top1": 31.25, "per_class": [1.0, 2.0], "groups": {"many": 40.0}},
        },
    ),
    (
        2,
        {
            "epoch": 2,
            "lr": 0.05,
            "train": {"loss": 1.75},
            "eval": {"top1": 62.5, "per_class": [3.0, 4.0], "groups": {"many": 70.0}},
        },
    ),
]
EXPECTED = {
    1: {"epoch": 1.0, "lr": 0.1, "train/loss": 2.5, "eval/top1": 31.25, "eval/groups/many": 40.0},
    2: {"epoch": 2.0, "lr": 0.05, "train/loss": 1.75, "eval/top1": 62.5, "eval/groups/many": 70.0},
}


def test_flatten_keeps_numbers_only():
    assert flatten_record({"a": {"b": 1, "c": "x", "d": [1], "e": None, "f": True}, "g": 2.5}) == {"a/b": 1.0, "g": 2.5}


def _leveldb_records(raw: bytes, block: int = 32768):
    """Records of W&B's transaction log (LevelDB log format after a 7-byte ':W&B' header)."""
    assert raw[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        data, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield data
        elif kind == 2:
            pending = data
        elif kind == 3:
            pending += data
        elif kind == 4:
            yield pending + data


def test_wandb_offline_writes_history(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from wandb.proto import wandb_internal_pb2

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    light = {"console": "off", "x_disable_stats": True, "x_disable_meta": True, "x_disable_machine_info": True}
    tracker = WandbTracker(tmp_path / "run", config={"lr": 0.1}, settings=light)
    assert tracker.mode == "offline"
    for step, record in RECORDS:
        tracker.log(record, step)
    tracker.close()
    tracker.close()  # idempotent
    files = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    history = {}
    for data in _leveldb_records(files[0].read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            history[items.pop("_step")] = {k: v for k, v in items.items() if not k.startswith("_")}
    assert history == EXPECTED


def test_mlflow_file_store_writes_metrics(tmp_path):
    pytest.importorskip("mlflow")
    tracker = MlflowTracker(tmp_path / "run", params={"optim": {"lr": 0.1, "name": "sgd"}})
    assert tracker.tracking_uri.startswith("file:")
    for step, record in RECORDS:
        tracker.log(record, step)
    tracker.close()
    (run,) = [p for p in (tmp_path / "run" / "mlruns").glob("*/*") if (p / "metrics").is_dir()]
    got: dict[int, dict[str, float]] = {}
    for path in (run / "metrics").rglob("*"):
        if path.is_file():
            for line in path.read_text().splitlines():
                _time, value, step = line.split()
                got.setdefault(int(step), {})[str(path.relative_to(run / "metrics"))] = float(value)
    assert got == EXPECTED
    assert (run / "params" / "optim" / "lr").read_text() == "0.1"
    assert "status: 3" in (run / "meta.yaml").read_text()  # RunStatus.FINISHED


@pytest.mark.parametrize("cls, module", [(WandbTracker, "wandb"), (MlflowTracker, "mlflow")])
def test_missing_package_is_input_error(tmp_path, monkeypatch, cls, module):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(InputError, match=rf"gkl\[{module}\]"):
        cls(tmp_path / "run")
