"""``gkl sweep STUDY --only A,B --seeds ... key=value --dry-run`` on a shipped study, through the CLI: the
runs listed are exactly those the study file implies (computed here from the YAML), in a folder of their own;
bad input is one line; progress lines and ETA of a sweep (:class:`gkl.study.progress.SweepProgress`)."""

from __future__ import annotations

import hashlib
import io
import shlex
from pathlib import Path

import pytest
import yaml

from gkl.cli import main
from gkl.study.progress import SweepProgress

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "configs" / "studies" / "kl_family.yaml"


def _expected_runs(only: list[str], seeds: list[int]) -> list[tuple[str, str, int]]:
    """(run name, setting, seed) of the subset, teachers first, from the study file alone."""
    data = yaml.safe_load(STUDY.read_text())
    settings = data["settings"]
    chosen = []
    for name in only:
        chain = []
        while name is not None and name not in chosen and name not in chain:
            chain.append(name)
            name = (settings[name] or {}).get("teacher")
        chosen += reversed(chain)
    runs = []
    for name in [n for n in settings if n in chosen and not (settings[n] or {}).get("teacher")] + [
        n for n in settings if n in chosen and (settings[n] or {}).get("teacher")
    ]:
        own = (settings[name] or {}).get("seeds")
        for seed in own if own is not None else seeds:
            runs.append((f"{name}_seed{seed}", name, seed))
    return runs


def test_only_seeds_and_overrides_dry_run_lists_exactly_the_subset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["sweep", "kl_family", "--only", "gkl_class,kd", "--seeds", "0,3", "train.epochs=2", "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    folder = Path(yaml.safe_load(STUDY.read_text())["out_dir"])
    digest = hashlib.sha1(b"train.epochs=2").hexdigest()[:8]
    expected_dir = folder.with_name(f"{folder.name}--only-gkl_class+kd--seeds-0+3--set-{digest}")
    assert out[0] == "# only gkl_class, kd (and their teachers); seeds 0, 3; overrides train.epochs=2"
    assert out[1].startswith(f"# 5 runs into {expected_dir}; estimated ")
    expected = _expected_runs(["gkl_class", "kd"], [0, 3])
    assert [line.split()[0] for line in out[2:]] == [name for name, _, _ in expected]
    assert [n for n, _, _ in expected] == [
        "teacher_seed0",
        "kd_seed0",
        "kd_seed3",
        "gkl_class_seed0",
        "gkl_class_seed3",
    ]
    for line, (name, setting, seed) in zip(out[2:], expected):
        command = shlex.split(line.split("GPU-h", 1)[1])
        assert command[0] == "gkl" and command[-1] == "--resume"
        assert f"train.seed={seed}" in command and f"name={name}" in command and f"out_dir={expected_dir}" in command
        assert command.index("train.epochs=2") > command.index("data.val_fraction=0.1")  # after the study's own
        if setting != "teacher":
            assert f"teacher.checkpoint={expected_dir / 'teacher_seed0' / 'best.pt'}" in command
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--only", "gkl_clas"], "gkl sweep: error: --only: "),
        (["train.seed=3"], "gkl sweep: error: override 'train.seed=3': the study sets train.seed"),
        (["--seeds", "0,0"], "gkl sweep: error: --seeds: expected distinct seeds"),
        (["train.epochz=3"], "train.epochz"),
        (["--launcher", "inline", "--jobs", "2"], "gkl sweep: error: --jobs: --launcher inline runs one run at a time"),
        (["--launcher", "inline", "--gpus-per-run", "2"], "gkl sweep: error: --gpus-per-run: --launcher inline cannot"),
    ],
)
def test_bad_subset_is_one_line(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "kl_family", *extra, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    if extra[0] == "--only":
        assert "did you mean 'gkl_class'" in err[0]


def test_sweep_help_shows_every_option_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--only", "--seeds", "--jobs", "--launcher", "--out", "--dry-run", "--gpus-per-run"):
        assert option in text
    assert "(default: 1)" in text and "(default: local)" in text and "<out_dir>--only-A+B" in text


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_counts_failures_and_estimates_the_time_left(tmp_path: Path) -> None:
    clock, stream = _Clock(), io.StringIO()
    progress = SweepProgress(5, parallel=2, stream=stream, every=30.0, clock=clock)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    progress.reused(1)
    progress.start("a", a, 4)
    progress.start("b", b, 4)
    assert progress.eta() is None  # nothing measured yet
    clock.now = 10.0
    (a / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    # a's own rate: 10 s for 2 of 4 epochs -> 20 s a run; left: half of a, all of b, 2 not started = 3.5 runs, 2 at once
    assert progress.eta() == pytest.approx(20.0 * 3.5 / 2)
    assert "running: a epoch 2/4, b epoch 0/4" in progress.status()
    clock.now = 30.0
    progress.finish("a", True)
    progress.finish("b", False, "exit 1; log: b.log")
    # mean of the finished runs (30 s) x the 2 runs not started / 2 at a time
    assert progress.eta() == pytest.approx(30.0 * 2 / 2)
    assert progress.status().startswith("sweep: 2/5 done · 1 failed · ~30 s left")
    lines = stream.getvalue().splitlines()
    assert lines == [
        "sweep: 1 of 5 runs already finished (kept)",
        "sweep: started a",
        "sweep: started b",
        "sweep: finished a in 30 s",
        "sweep: failed b in 30 s: exit 1; log: b.log",
    ]


def test_local_runs_get_the_interrupt_itself_all_at_once() -> None:
    """LocalLauncher.stop passes the signal the sweep got (here SIGINT) to every running run, then waits."""
    import signal
    import subprocess
    import sys

    from gkl.study.launch import LocalLauncher

    code = "import sys, time; print('ready', flush=True); time.sleep(300)"
    children = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for child in children:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
    LocalLauncher(jobs=2).stop(children, signal.SIGINT)
    assert [child.returncode for child in children] == [-signal.SIGINT, -signal.SIGINT]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_status_line_is_redrawn_in_place(tmp_path: Path) -> None:
    stream, clock = _Terminal(), _Clock()
    progress = SweepProgress(2, parallel=1, stream=stream, clock=clock)
    progress.start("a", tmp_path, 3)
    progress.tick()
    progress.tick()
    progress.finish("a", True)
    progress.close()
    text = stream.getvalue()
    # each redraw returns to the line start and clears it; an event line first clears the status line
    assert text == (
        "sweep: started a\n"
        + "\r\x1b[Ksweep: 0/2 done · time left: after the first epoch · running: a epoch 0/3" * 2
        + "\r\x1b[Ksweep: finished a in 0 s\n"
    )
