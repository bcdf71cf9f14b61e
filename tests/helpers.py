"""Helpers shared by the test modules (pytest collects no tests here).

- :func:`assert_identical`: exact deep comparison of nested states (checkpoints, state dicts).
- :func:`digits01`, :class:`SmallCNN`, :class:`TinyConvNet`: the bundled 8x8 digits in [0, 1] and
  the small BatchNorm CNNs of the attack/robustness tests.
- :func:`spawn_gloo`, :func:`torchrun`: the two ways the tests start 2-process CPU (gloo) jobs.
- :func:`train_digits_cnn`: the short engine run behind the session fixtures of trained digits
  models (``conftest.py``); ``helpers_margins.py`` calls it over seeds to set the tests' thresholds.

Training here is robust by construction: full batches only (the loader drops the last partial
batch, whose few examples would spoil the BatchNorm statistics) and a decaying learning rate.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

TESTS_DIR = Path(__file__).resolve().parent

#: eps of the digits adversarial tests: the 8x8 digits have 17 grey levels, 8/255 is below their resolution.
AT_EPS = 0.1
#: epochs of the digits runs behind the trained-model fixtures.
AT_EPOCHS = 6


def tensor_leaves(state: Any) -> list[torch.Tensor]:
    """Every tensor of a nested state (dicts, lists, tuples), in order."""
    if isinstance(state, torch.Tensor):
        return [state]
    values = state.values() if isinstance(state, dict) else state if isinstance(state, (list, tuple)) else ()
    return [leaf for value in values for leaf in tensor_leaves(value)]


def assert_one_line_error(capsys: Any, command: str, *needles: str) -> str:
    """The captured stderr is exactly one ``gkl <command>: error: ...`` line holding every needle."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"gkl {command}: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def assert_identical(a: Any, b: Any, path: str = "state") -> None:
    """Assert two nested states (dicts, lists, tuples, tensors, plain values) are exactly equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for key in a:
            assert_identical(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def digits01(root: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled digits split (gkl.data "digits", 1347 train / 450 test) as ((N, 1, 8, 8) in [0, 1], labels)."""
    from torch.utils.data import DataLoader

    from gkl.data import build_dataset

    dataset = build_dataset("digits", root, train, normalize=False)
    images, labels = next(iter(DataLoader(dataset, batch_size=len(dataset))))
    return images.float(), labels.long()


class SmallCNN(nn.Module):
    """Two conv + BatchNorm blocks for (N, 1, 8, 8) digits, 10 classes (the robustness tests' model)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(32, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyConvNet(nn.Module):
    """A tiny conv net with BatchNorm on (N, 1, 8, 8) inputs (untrained; for attack and objective tests)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, stride=2),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# --------------------------------------------------------------------------- distributed launchers


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _gloo_entry(rank: int, world_size: int, init_file: str, fn: Callable[..., None], args: tuple) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        fn(rank, world_size, *args)
        dist.barrier()  # no rank tears gloo down while its peer still uses it
    finally:
        dist.destroy_process_group()


def spawn_gloo(fn: Callable[..., None], *args: Any, world_size: int = 2) -> None:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` spawned processes sharing a gloo group
    (one thread each). ``fn`` must be a module-level function; a failure in any rank raises."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_gloo_entry, args=(world_size, os.path.join(tmp, "init"), fn, args), nprocs=world_size, join=True)


def torchrun(
    script: str | Path, *args: str, nproc: int = 2, env_extra: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``torchrun`` with ``nproc`` CPU processes on 127.0.0.1 (one thread each) running ``script args``."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(script),
        *args,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- trained digits models


def adversarial_settings(method: str, epochs: int = AT_EPOCHS):
    """GKL-AT / TRADES on digits: 5-step PGD at eps 0.1, AWP in the last epoch."""
    from gkl.settings.adversarial import adversarial_settings as build

    # the fixed budget's steps belong to TRADES; GKL-AT keeps its own budget (and its weights' tau_w)
    own = {"attack_step_size": AT_EPS / 4, "attack_steps": 5} if method == "trades" else {"weight_temperature": 4.0}
    return build(method, eps=AT_EPS, awp_start_epoch=epochs - 1, **own)


def train_digits_cnn(
    objective: nn.Module, run_dir: Path, *, seed: int = 0, epochs: int = AT_EPOCHS
) -> tuple[nn.Module, dict]:
    """:class:`SmallCNN` trained through the engine on the bundled digits training split in [0, 1]
    (the images of :func:`digits01`) read by the package's in-memory loader, unaugmented: SGD lr 0.1
    (momentum 0.9, wd 5e-4), the decaying ``cosine_at`` schedule, batch 64 with the last partial batch
    dropped. Returns (model in eval mode, summary)."""
    from gkl.data import build_dataset, build_loader
    from gkl.engine import OptimSettings, ScheduleSettings, Trainer, TrainSettings

    torch.manual_seed(seed)
    model = SmallCNN()
    settings = TrainSettings(
        epochs=epochs,
        optim=OptimSettings(lr=0.1, weight_decay=5e-4),
        schedule=ScheduleSettings(kind="cosine_at"),
        device="cpu",
        progress=False,
        log_every=0,
        eval_every=epochs,
        seed=seed,
    )
    digits = build_dataset("digits", run_dir / "data", True, normalize=False, augment=False)
    loader = build_loader(digits, batch_size=64, train=True, in_memory=True, seed=seed)
    assert len(loader) * 64 <= len(digits) < (len(loader) + 1) * 64  # full batches only
    trainer = Trainer(
        model=model,
        objective=objective,
        train_loader=loader,
        eval_loader=None,
        settings=settings,
        run_dir=run_dir,
        evaluator=None,
    )
    summary = trainer.fit()
    return trainer.model.eval(), summary


def killing_run_script(module: str, objective: str) -> str:
    """Python source for ``python -c``: run ``gkl.cli.main(argv)`` with ``gkl.objectives.<module>.<objective>.forward``
    patched to SIGKILL the process at the step given by the environment variable GKL_TEST_KILL_AT
    (a kill at a known point of a real run, for resume tests)."""
    return f"""
import os, signal, sys
from gkl.objectives import {module} as S
forward = S.{objective}.forward
def killing_forward(self, model, batch, *, epoch, step):
    if step == int(os.environ.get("GKL_TEST_KILL_AT", "0")):
        os.kill(os.getpid(), signal.SIGKILL)
    return forward(self, model, batch, epoch=epoch, step=step)
S.{objective}.forward = killing_forward
from gkl.cli import main
sys.exit(main(sys.argv[1:]))
"""


# --------------------------------------------------------------------------- a digits teacher -> KD student study

#: the files of a small sweep (test_sweep*.py): a digits MLP teacher, a KD student of it
SWEEP_BASE = """\
data: {name: digits, root: data, batch_size: 16, eval_batch_size: 450, in_memory: true}
train: {epochs: 1, device: cpu, progress: false, optim: {lr: 0.05, momentum: 0.9}, schedule: {kind: cosine}}
kind: train
name: x
model: {name: digits_mlp_small}
"""
SWEEP_STUDENT = """\
base: base.yaml
kind: distill
teacher: {name: digits_mlp_small}
distill: {method: kd, ce_weight: 0.1, kd_weight: 0.9, temperature: 4.0}
"""


def sweep_study(kd_epochs: int) -> str:
    """The study file: the teacher (seed 0), then the KD student (seed 0) trained ``kd_epochs`` epochs."""
    return f"""\
config: student.yaml
seeds: [0]
settings:
  teacher: {{config: base.yaml, seeds: [0]}}
  kd: {{teacher: teacher, overrides: {{train.epochs: {kd_epochs}}}}}
"""
