"""``gkl sweep --launcher inline`` (:mod:`gkl.study.inline`): a run in the sweep's own process leaves the
process as it found it and writes its output (Python's and native) to its log; its exit status is the one a
child process ``python -c`` of the same code gives; Ctrl-C and SIGTERM stop the run (which keeps its last
checkpoint) and then the sweep, with the one line and status of the local launcher's sweep."""

from __future__ import annotations

import logging
import os
import random
import runpy
import shlex
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gkl.cli import main
from gkl.engine.checkpoint import read_checkpoint
from gkl.study.inline import InlineLauncher
from helpers import SWEEP_BASE, SWEEP_STUDENT, sweep_study


@dataclass
class _Job:
    name: str
    args: list[str]

    def cli_args(self) -> list[str]:
        return self.args


def _observe() -> dict[str, Any]:
    """The process-wide state a run could change, as comparable values."""
    root = logging.getLogger()
    return {
        "threads": torch.get_num_threads(),
        "deterministic": (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        ),
        "cudnn": (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic),
        "matmul": torch.get_float32_matmul_precision(),
        "dtype": torch.get_default_dtype(),
        "grad": torch.is_grad_enabled(),
        "torch_rng": torch.get_rng_state().tolist(),
        "numpy_rng": np.random.get_state()[1].tolist(),
        "python_rng": random.getstate(),
        "signals": (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)),
        "root": (root.level, list(root.handlers)),
        "warnings": list(warnings.filters),
        "environ": dict(os.environ),
        "cwd": os.getcwd(),
        "streams": (sys.stdout, sys.stderr),
    }


def test_an_inline_run_leaves_the_process_as_it_found_it_and_writes_its_output_to_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GKL_INLINE_TEST_KEPT", "sweep")
    run_file = tmp_path / "run.txt"
    name = f"gkl_inline_test_{tmp_path.name}"  # a logger the run creates and configures, as a library would

    def meddling_run(args: list[str]) -> int:
        torch.set_num_threads(torch.get_num_threads() + 1)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, True
        torch.set_float32_matmul_precision("medium")
        torch.set_default_dtype(torch.float64)
        torch.set_grad_enabled(False)
        torch.manual_seed(1), np.random.seed(1), random.seed(1)
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        library = logging.getLogger(name)
        root_file = logging.FileHandler(run_file)
        logging.getLogger().addHandler(root_file)
        logging.getLogger().setLevel(logging.DEBUG)
        library.addHandler(logging.StreamHandler(sys.stderr))
        library.addHandler(logging.FileHandler(tmp_path / "library.txt"))
        warnings.simplefilter("error")
        os.environ["GKL_INLINE_TEST_ADDED"] = "run"
        del os.environ["GKL_INLINE_TEST_KEPT"]
        os.chdir(tmp_path)
        print("python stdout", " ".join(args))
        print("python stderr", file=sys.stderr)
        os.write(1, b"native stdout\n")
        os.write(2, b"native stderr\n")
        library.warning("library line")
        meddling_run.handlers = [root_file, *library.handlers]  # type: ignore[attr-defined]
        return 0

    before = _observe()
    launcher = InlineLauncher(meddling_run)
    log = tmp_path / "logs" / "run.log"
    log.parent.mkdir()
    log.write_text("earlier\n")
    assert launcher.poll(launcher.start(_Job("run", ["a", "b"]), log)) == 0
    assert _observe() == before
    assert log.read_text().splitlines() == [
        "earlier",  # appended, as a local run's log
        "python stdout a b",
        "python stderr",
        "native stdout",
        "native stderr",
        "library line",
    ]
    library = logging.getLogger(name)
    root_file, library_stream, library_file = meddling_run.handlers  # type: ignore[attr-defined]
    assert root_file.stream is None and library_file.stream is None  # the run's log files are closed
    assert library.handlers == [library_stream]  # a library's own handler stays, on the sweep's stderr now
    capfd.readouterr()
    library.warning("after the run")
    print("sweep output")
    out, err = capfd.readouterr()
    assert "after the run" in err and "sweep output" in out and "after" not in log.read_text()
    library.removeHandler(library_stream)


#: what a run's entry does, as source: run here by the inline launcher, and in a child process (the local
#: launcher's ``python -m gkl.cli`` ends with ``sys.exit(main())``)
ENTRIES = {
    "returns 3": "def entry(args):\n    return 3",
    "returns None": "def entry(args):\n    return None",
    "exits 5": "import sys\ndef entry(args):\n    sys.exit(5)",
    "exits 300": "import sys\ndef entry(args):\n    sys.exit(300)",
    "exits with a message": "import sys\ndef entry(args):\n    sys.exit('stopped: ' + args[0])",
    "raises": "def entry(args):\n    raise ValueError('a bug: ' + args[0])",
}


@pytest.mark.parametrize("name", ENTRIES)
def test_an_inline_runs_exit_status_and_log_are_those_of_a_child_process(tmp_path: Path, name: str) -> None:
    namespace: dict[str, Any] = {}
    exec(ENTRIES[name], namespace)
    inline_log, child_log = tmp_path / "inline.log", tmp_path / "child.log"
    launcher = InlineLauncher(namespace["entry"])
    code = launcher.poll(launcher.start(_Job("run", ["x"]), inline_log))
    program = ENTRIES[name] + "\nimport sys\nsys.exit(entry(sys.argv[1:]))\n"
    with child_log.open("wb") as handle:
        child = subprocess.run([sys.executable, "-c", program, "x"], stdout=handle, stderr=subprocess.STDOUT)
    assert code == child.returncode
    inline_text, child_text = inline_log.read_text(), child_log.read_text()
    assert inline_text.splitlines()[-1:] == child_text.splitlines()[-1:]  # the message / the exception's line
    assert ("Traceback" in inline_text) == ("Traceback" in child_text)


def test_an_inline_sweep_outside_the_main_thread_runs_and_leaves_the_signal_handlers_alone(tmp_path: Path) -> None:
    """Python runs signal handlers in the main thread only, and refuses to set them from another one."""
    codes: list[int] = []

    def sweep() -> None:
        launcher = InlineLauncher(lambda args: len(args))
        codes.append(launcher.poll(launcher.start(_Job("run", ["a", "b"]), tmp_path / "run.log")))

    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=sweep)
    thread.start()
    thread.join()
    assert codes == [2] and (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_a_signal_as_the_run_returns_waits_for_the_sweeps_state_and_then_stops_the_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the sweep's state comes back (here: while the run's caches are dropped) reaches the
    sweep's own handler once everything is back, and the sweep stops at the run's status."""
    from gkl.study import inline

    saved = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.setattr(inline, "_drop_run_caches", lambda: os.kill(os.getpid(), signal.SIGINT))
    try:
        before = _observe()
        launcher = InlineLauncher(lambda args: 0)
        handle = launcher.start(_Job("run", []), tmp_path / "run.log")
        assert _observe() == before
        with pytest.raises(KeyboardInterrupt):
            launcher.poll(handle)
    finally:
        signal.signal(signal.SIGINT, saved)


BASE, STUDENT, STUDY = SWEEP_BASE, SWEEP_STUDENT, sweep_study(40)


def _python_m_gkl_cli(args: list[str]) -> int:
    """``python -m gkl.cli ARGS`` in this process: the module run as ``__main__``, as a shell runs it."""
    saved = sys.argv
    sys.argv = ["gkl", *args]
    try:
        runpy.run_module("gkl.cli", run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        assert isinstance(exit_.code, int)
        return exit_.code
    finally:
        sys.argv = saved
    raise AssertionError("python -m gkl.cli did not exit")


def _sweep_signalled(
    args: list[str], sig: int, ready: Callable[[], bool], command: Callable[[list[str]], int] = main
) -> int:
    """``command(ARGS)`` here, sending ``sig`` to this process once ``ready()`` holds (while it runs)."""
    done = threading.Event()

    def send() -> None:
        deadline = time.monotonic() + 300
        while not done.is_set() and not ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not done.is_set():
            os.kill(os.getpid(), sig)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        return command(args)
    finally:
        done.set()
        sender.join()


@pytest.mark.filterwarnings("ignore:'gkl.cli' found in sys.modules:RuntimeWarning")  # runpy: imported already
def test_ctrl_c_then_sigterm_stop_the_inline_run_keeping_its_checkpoint_and_then_the_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, text in (("base.yaml", BASE), ("student.yaml", STUDENT), ("study.yaml", STUDY)):
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)  # data.root: data
    torch.set_num_threads(1)
    # the handlers of a gkl process (pytest's own may differ): Ctrl-C raises KeyboardInterrupt, SIGTERM is
    # left to gkl.cli.main
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    out = tmp_path / "out"
    checkpoint = out / "kd_seed0" / "checkpoint.pt"
    try:
        argv = ["sweep", "study.yaml", "--out", str(out), "--launcher", "inline"]
        assert _sweep_signalled(argv, signal.SIGINT, checkpoint.exists) == 130
        err = capsys.readouterr().err
        (line,) = [line for line in err.splitlines() if line.startswith("gkl sweep: ")]
        assert line.startswith("gkl sweep: interrupted; finished 1 of 2 runs (teacher_seed0); stopped kd_seed0 "), err
        assert "Traceback" not in err
        log = (out / "logs" / "kd_seed0.log").read_text()
        assert f"gkl distill: interrupted; {out / 'kd_seed0'} keeps its last checkpoint" in log
        first = read_checkpoint(checkpoint)["epoch"]
        assert first >= 1 and not (out / "kd_seed0" / "summary.json").exists()
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (
            signal.default_int_handler,
            signal.SIG_DFL,
        )

        # the printed command continues (as python -m gkl.cli, whose gkl.cli.main runs the runs): the teacher
        # is kept, the student resumes and is stopped by SIGTERM
        continue_with = shlex.split(line.split("continue with: ", 1)[1])
        written = checkpoint.stat().st_mtime_ns
        code = _sweep_signalled(
            continue_with[1:], signal.SIGTERM, lambda: checkpoint.stat().st_mtime_ns != written, _python_m_gkl_cli
        )
        assert code == 143
        err = capsys.readouterr().err
        assert "1 of 2 runs already finished (kept)" in err
        (line,) = [line for line in err.splitlines() if line.startswith("gkl sweep: ")]
        assert line.startswith("gkl sweep: terminated; finished 1 of 2 runs (teacher_seed0); stopped kd_seed0 "), err
        log = (out / "logs" / "kd_seed0.log").read_text()
        assert f"gkl distill: terminated; {out / 'kd_seed0'} keeps its last checkpoint" in log
        assert read_checkpoint(checkpoint)["epoch"] > first and not (out / "kd_seed0" / "summary.json").exists()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
