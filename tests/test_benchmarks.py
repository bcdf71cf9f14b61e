"""Every benchmark script runs end to end at a tiny size (its timings are not checked here).

The scripts are not imported by the package, so a refactor can break them silently; each one is
run in-process with ``runpy`` as ``python benchmarks/<name>.py ARGS`` would run it, and must
print its ratio lines. Sizes are the smallest the scripts accept, so this guards the code path,
never a speed or memory target (those are measured by running the scripts themselves).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

#: script -> tiny arguments (one thread: the scripts set torch's thread count).
TINY = {
    "losses.py": [
        "--repeats",
        "1",
        "--pairwise-repeats",
        "1",
        "--skip-memory",
        "--cases",
        "4x10,2x5x3x3",
        "--rounds",
        "3",
        "--compile-backend",
        "aot_eager",
    ],
    "train_step.py": ["--rounds", "1", "--batch", "2", "--threads", "1"],
    "adversarial_step.py": ["--batch-size", "2", "--repeats", "1", "--warmup", "0", "--threads", "1"],
    "ssl_step.py": ["--rounds", "1", "--batch", "2", "--threads", "1", "--model", "resnet8x4"],
    "clip_loss.py": [
        "--batch",
        "16",
        "--repeats",
        "1",
        "--pairwise-rows",
        "2",
        "--full-pairwise-batch",
        "8",
        "--skip-memory",
    ],
    "segmentation_step.py": [
        "--student",
        "pspnet_tiny",
        "--teacher",
        "pspnet_tiny",
        "--classes",
        "4",
        "--batch",
        "2",
        "--size",
        "33",
        "--repeats",
        "1",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--no-memory",
    ],
    "data_pipeline.py": ["--images", "64", "--batch-size", "16", "--epochs", "1", "--threads", "1"],
    "llm_loss.py": [
        "--tokens",
        "16",
        "--hidden",
        "4",
        "--teacher-hidden",
        "6",
        "--vocab",
        "50",
        "--chunk",
        "5",
        "--rounds",
        "1",
        "--repeats",
        "1",
        "--skip-memory",
    ],
}


def test_every_script_is_listed() -> None:
    scripts = {p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(TINY), sorted(scripts ^ set(TINY))


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("script", sorted(TINY))
def test_benchmark_script_runs(script: str, monkeypatch, capsys, restore_threads) -> None:
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / script), *TINY[script]])
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import their _proc helper
    runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
    out = capsys.readouterr().out
    assert out.strip(), f"{script} printed nothing"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer of a machine without CUDA")
@pytest.mark.parametrize("script", sorted(s for s in TINY if s != "segmentation_step.py"))
def test_benchmark_on_cuda_without_cuda_stops_in_one_line(script: str, monkeypatch, restore_threads) -> None:
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / script), "--device", "cuda"])
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    with pytest.raises(SystemExit, match="^--device cuda: CUDA is not available on this machine$"):
        runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
