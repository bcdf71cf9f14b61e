"""Host synchronisations of real training steps: at most one per step outside logging steps.

Each case runs a shipped demo recipe through ``gkl.cli.main`` for a few optimizer steps
(GKL-KD class-wise, GKL-AT with AWP, FixMatch with the GKL consistency, APD with GKL,
CLIP distillation with GKL; the teachers are random on purpose, ``teacher.random_init``).
While the run trains, every call of a tensor method that waits for the device (``item``,
``tolist``, ``bool``/``float``/``int``/``index`` conversions, ``numpy``, ``cpu``) made by gkl
code is recorded. A step's window runs from the start of its ``Trainer._optimizer_step`` to the
start of the next step or of the epoch end, so it holds the step, its statistics and its
progress logging, while evaluation and checkpoints (epoch end) stay outside.

Counted are calls whose caller is gkl code (torch's own ``Tensor.__format__`` is looked through),
outside the data pipeline (``gkl.data``: CPU-side sampling and augmentation before the batch
is moved to the device). Calls that torch makes internally (e.g. AdamW reading its CPU step
counters) are not device synchronisations of our code and are not counted.

Every ordinary step must make exactly one: the engine's finite check of the loss terms
(one sync for all terms, :func:`gkl.engine.train_stats.first_non_finite`) -- at least one, so
the test cannot pass without observing the steps. A logging step adds one ``tolist()``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from gkl.cli import main
from gkl.engine.trainer import Trainer
from optional_skips import skip_if_optional_missing

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SRC = str(ROOT / "src" / "gkl") + "/"
GKL_DATA = SRC + "data/"
TORCH = str(Path(torch.__file__).resolve().parent) + "/"
TORCH_TENSOR = TORCH + "_tensor.py"
SYNC_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "cpu")
STEPS = 7
LOG_EVERY = 3  # steps 3 and 6 of an epoch are logging steps

RANDOM_TEACHER = ["teacher.checkpoint=null", "teacher.random_init=true"]

#: (command, recipe, overrides, extra syncs allowed on the run's first step)
CASES = {
    "gkl_kd": ("distill", "demo/student_gkl.yaml", [*RANDOM_TEACHER, "data.batch_size=32"], 0),
    # the adversarial objective checks the first batch's values once (pgd skips them while training)
    "gkl_at": ("adv-train", "demo_at/gkl.yaml", ["adversarial.awp_start_epoch=1", "data.batch_size=32"], 2),
    "fixmatch_gkl": (
        "ssl-train",
        "ssl/demo/fixmatch_gkl.yaml",
        ["model.name=digits_mlp_small", "data.batch_size=8", "ssl.uratio=2", "train.schedule.warmup_steps=2"],
        0,
    ),
    "apd_gkl": (
        "seg-train",
        "segmentation/demo/student_apd_gkl.yaml",
        [
            *RANDOM_TEACHER,
            "segmentation.train_size=80",
            "segmentation.eval_size=8",
            "data.val_fraction=0",
            "data.batch_size=8",
            "data.eval_batch_size=8",
        ],
        0,
    ),
    "clip_gkl": (
        "clip-distill",
        "clip/demo/student_gkl.yaml",
        [*RANDOM_TEACHER, "data.val_fraction=0", "data.batch_size=16", "data.eval_batch_size=256"],
        0,
    ),
}


class SyncLog:
    """Calls of :data:`SYNC_METHODS` made by gkl code, with the step windows they fall in."""

    def __init__(self) -> None:
        self.calls: list[str] = []  # "file:line method" of each counted call
        self.marks: list[tuple[str, int, int]] = []  # (event, len(calls) at the event, in-epoch step)

    def counted_from(self, frame) -> str | None:
        """``file:line`` of the gkl caller of a synchronising method, or None if it is not counted."""
        while frame is not None and frame.f_code.co_filename == TORCH_TENSOR:
            frame = frame.f_back  # Tensor.__format__ and friends call item() for the caller
        if frame is None:
            return None
        name = frame.f_code.co_filename
        if not name.startswith(SRC) or name.startswith(GKL_DATA):
            return None
        return f"{name[len(SRC) :]}:{frame.f_lineno}"

    def windows(self, log_every: int) -> list[tuple[int, bool, list[str]]]:
        """(in-epoch step, is a logging step, its counted calls) of every observed step."""
        out = []
        for (event, start, in_epoch), (_, end, _) in zip(self.marks, self.marks[1:]):
            if event == "step":
                out.append((in_epoch, in_epoch % log_every == 0, self.calls[start:end]))
        return out


@pytest.fixture
def sync_log(monkeypatch: pytest.MonkeyPatch) -> SyncLog:
    log = SyncLog()
    for name in SYNC_METHODS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            where = log.counted_from(sys._getframe(1))
            if where is not None:
                log.calls.append(f"{where} {_name}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)

    step, end_epoch = Trainer._optimizer_step, Trainer._end_epoch

    def observed_step(self, iterator, epoch, step_, in_epoch):
        log.marks.append(("step", len(log.calls), in_epoch))
        return step(self, iterator, epoch, step_, in_epoch)

    def observed_end(self, *args, **kwargs):
        log.marks.append(("end", len(log.calls), 0))
        return end_epoch(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_optimizer_step", observed_step)
    monkeypatch.setattr(Trainer, "_end_epoch", observed_end)
    return log


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_host_sync_per_training_step(case: str, sync_log: SyncLog, tmp_path: Path) -> None:
    command, recipe, overrides, first_step_checks = CASES[case]
    data_root = [] if command == "clip-distill" else [f"data.root={tmp_path / 'data'}"]
    args = [
        command,
        str(CONFIGS / recipe),
        f"out_dir={tmp_path}",
        f"name={case}",
        *data_root,
        "train.epochs=null",
        f"train.iterations={STEPS}",
        f"train.log_every={LOG_EVERY}",
        "train.progress=false",
        "train.loggers=[]",
        "train.eval_every_steps=null",
        "train.checkpoint_every_steps=null",
        *overrides,
    ]
    with skip_if_optional_missing():  # the CLIP case needs the clip extra (tests/optional_skips.py)
        assert main(args) == 0
    windows = sync_log.windows(LOG_EVERY)
    assert len(windows) == STEPS, f"observed {len(windows)} steps"
    assert any(logging for _, logging, _ in windows) and any(not logging for _, logging, _ in windows)
    for index, (in_epoch, logging, calls) in enumerate(windows):
        allowed = 1 + (1 if logging else 0) + (first_step_checks if index == 0 else 0)
        assert 1 <= len(calls) <= allowed, f"step {index + 1} (in-epoch {in_epoch}, logging {logging}): {calls}"
        assert calls[0].startswith("engine/train_stats.py") or index == 0, calls
        if index > 0 and not logging:
            assert len(calls) == 1 and calls[0].startswith("engine/train_stats.py"), calls
