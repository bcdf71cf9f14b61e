"""``gkl doctor --gpu``: one line without CUDA; with ``--device cpu`` every check that needs no GPU runs
(a few steps of every task's demo with each feature, DDP through torchrun over gloo, exact resume)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gkl.cli import main
from gkl.doctor.checks import Check, compare_states, default_recipes
from gkl.tasks import get_task
from helpers import assert_identical


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA answer is for machines without a GPU")
def test_doctor_gpu_without_cuda_says_so_in_one_line_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--gpu"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "no CUDA device" in out[0] and "--device cpu" in out[0]


def test_every_task_has_a_bundled_demo_recipe() -> None:
    from gkl.tasks import list_tasks

    recipes = default_recipes()
    assert list(recipes) == [task.name for task in list_tasks()]
    assert recipes["lm_distill"] == "lm/student_gkl"  # no demo folder: the task's GKL recipe where it is
    for kind, recipe in recipes.items():  # the recipe really is a run of that kind
        from gkl.config import load_config
        from gkl.recipes import resolve_recipe

        assert load_config(resolve_recipe(recipe)).kind == kind


@pytest.fixture(scope="session")
def doctor_on_cpu(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("doctor")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "gkl.cli", "doctor", "--gpu", "--device", "cpu", "--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800), out


def _rows(stdout: str) -> dict[str, list[str]]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("check "))
    rows = {}
    for line in lines[start + 1 :]:
        if line.startswith("gkl doctor:"):
            break
        name, rest = line.split("  ", 1)
        rows[name.strip()] = rest.split()
    return rows


@pytest.mark.slow
@pytest.mark.xdist_group("doctor_cpu")
def test_doctor_on_cpu_passes_every_check_but_the_cuda_only_ones(doctor_on_cpu) -> None:
    from gkl.doctor import runs_summary

    done, out = doctor_on_cpu
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[0].endswith(f"checks on cpu ({runs_summary()})")  # the runs' caps, said
    rows = _rows(done.stdout)
    for kind in default_recipes():  # one straight run per task, named by its verb
        assert rows[f"{get_task(kind).command}: 4 steps"][0] == "pass"
    assert rows["SyncBN under DDP"][:2] == ["skipped", "SyncBatchNorm"]
    skipped = [name for name, cells in rows.items() if cells[0] == "skipped"]
    assert skipped == ["SyncBN under DDP"]
    assert all(cells[0] == "pass" for name, cells in rows.items() if name not in skipped), rows
    for name in ("bf16 autocast", "fp16 autocast + GradScaler", "channels-last", "checkpoint + exact resume"):
        assert f"{len(default_recipes())} tasks" in done.stdout.split(name, 1)[1].splitlines()[0]
    # the language-model task compiled with its fused loss on (the loss takes the hidden states from the
    # compiled forward), and its fused loss (its demo's lm.fused: true) compared with the unfused one
    first = get_task(next(iter(default_recipes()))).command
    assert rows["torch.compile"][2:] == [f"{first},", "lm-distill"]
    assert rows["fused loss = unfused"][2:] == ["on", "lm-distill"]
    # the DDP runs trained every task inside a process group (or the task refused one in one line), and their
    # weights equal the single-process runs'
    results = json.loads((out / "ddp" / "results.json").read_text())
    assert set(results) == set(default_recipes()) and all(error == "" for error, _, _, _ in results.values())
    ran = [kind for kind, (_, run_dir, _, refusal) in results.items() if not refusal and run_dir]
    refused = [get_task(kind).command for kind, (_, _, _, refusal) in results.items() if refusal]
    assert len(ran) + len(refused) == len(results) and len(ran) >= len(results) - 1
    assert f"{len(ran)} tasks over gloo" in done.stdout.split("DDP via torchrun", 1)[1].splitlines()[0]
    assert all(verb in done.stdout.split("DDP via torchrun", 1)[1].splitlines()[0] for verb in refused)
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.xdist_group("doctor_cpu")
def test_doctor_resumed_runs_equal_the_uninterrupted_ones(doctor_on_cpu) -> None:
    from gkl.engine.checkpoint import read_checkpoint

    _, out = doctor_on_cpu
    runs: dict[str, list[tuple[int, Path]]] = {}
    for path in out.glob("*_[0-9]*/checkpoint.pt"):  # the runs of one recipe: its folder name, then a counter
        recipe, number = path.parent.name.rsplit("_", 1)
        runs.setdefault(recipe, []).append((int(number), path.parent))
    pairs = []
    for found in runs.values():
        resumed = [d for _, d in found if json.loads((d / "run.json").read_text()).get("resumes")]
        if resumed:  # the straight run is the recipe's first (its row comes first)
            pairs.append((min(found)[1], *resumed))
    assert len(pairs) == len(default_recipes())
    for straight, resumed in pairs:  # the straight run and the stopped-and-resumed one
        a, b = read_checkpoint(straight / "checkpoint.pt"), read_checkpoint(resumed / "checkpoint.pt")
        assert a["step"] == b["step"] == 4 and a["settings"]["deterministic"] and b["settings"]["deterministic"]
        for part in ("model", "optimizer", "objective"):
            assert_identical(a[part], b[part], part)


def test_compare_states_names_the_first_entry_that_differs() -> None:
    a = {"model": {"w": torch.arange(4.0), "n": torch.tensor(3)}, "objective": {"prior": torch.eye(2)}}
    b = {"model": {"w": torch.arange(4.0), "n": torch.tensor(3)}, "objective": {"prior": torch.eye(2)}}
    assert compare_states(a, b, ("model", "objective"), exact=True) is None
    b["objective"]["prior"][0, 1] = 1e-7
    assert compare_states(a, b, ("model", "objective"), exact=True) == "objective.prior"
    assert compare_states(a, b, ("model", "objective"), exact=False) is None  # within float rounding
    b["model"]["w"][2] += 1.0
    assert compare_states(a, b, ("model", "objective"), exact=False) == "model.w"


def test_a_failing_check_is_a_row_with_its_reason_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import gkl.doctor.checks as checks

    def broken(ctx: checks.Context) -> str:
        raise RuntimeError("resumed weights differ\nsecond line")

    rows = [Check("works", lambda ctx: "fine"), Check("broken", broken), Check("gpu only", broken, needs_cuda="CUDA")]
    monkeypatch.setattr(checks, "all_checks", lambda kinds: rows)
    assert main(["doctor", "--gpu", "--device", "cpu", "--out", str(tmp_path)]) == 1
    table = _rows(capsys.readouterr().out)
    assert table["works"][0] == "pass" and table["gpu only"] == ["skipped", "CUDA"]
    assert table["broken"][0] == "FAIL" and table["broken"][2:] == ["resumed", "weights", "differ"]
    assert "RuntimeError: resumed weights differ" in (tmp_path / "doctor.log").read_text()


def test_a_task_without_its_optional_package_is_skipped_and_left_out_of_the_later_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import gkl.doctor.checks as checks
    from gkl.doctor.runs import DemoRuns

    def config(self, recipe, overrides=(), *, run=None):
        if recipe == "lm/student_gkl":  # as gkl.lm.models reports a missing transformers
            try:
                raise ModuleNotFoundError("No module named 'transformers'", name="transformers")
            except ModuleNotFoundError as err:
                raise ImportError("gkl.lm.models needs transformers: pip install 'gkl[llm]'") from err
        if recipe == "demo/student_gkl":  # a missing module of gkl itself is a bug, not a missing package
            raise ModuleNotFoundError("No module named 'gkl.nowhere'", name="gkl.nowhere")
        return recipe

    seen: list[list[str]] = []
    monkeypatch.setattr(DemoRuns, "config", config)
    monkeypatch.setattr(DemoRuns, "train", lambda self, cfg, **kwargs: {"train": {"loss": 1.0}})
    recipes = {"distill": "demo/student_gkl", "lm_distill": "lm/student_gkl"}
    monkeypatch.setattr(checks, "default_recipes", lambda: dict(recipes))
    rows = [checks._straight("distill"), checks._straight("lm_distill")]
    later = Check("later", lambda ctx: seen.append(list(ctx.recipes)) or "fine")
    monkeypatch.setattr(checks, "all_checks", lambda kinds: [Check("a", rows[0]), Check("b", rows[1]), later])
    assert main(["doctor", "--gpu", "--device", "cpu", "--out", str(tmp_path)]) == 1
    table = _rows(capsys.readouterr().out)
    assert table["a"][0] == "FAIL" and table["b"][:3] == ["skipped", "needs", "transformers:"]
    assert table["later"][0] == "pass" and seen == [["distill"]]


def test_doctor_refuses_an_unknown_device_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--gpu", "--device", "tpu"]) == 2
    expected = "gkl doctor: error: --device: expected 'cuda', 'cuda:N' or 'cpu', got 'tpu'"
    assert capsys.readouterr().err.strip() == expected


def test_doctor_refuses_a_used_output_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "old_run").mkdir()
    assert main(["doctor", "--gpu", "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"gkl doctor: error: --out {tmp_path}: not empty; " + (
        "the check runs need a new or empty directory"
    )


def test_first_eval_batches_caps_every_evaluation_and_the_evaluator_still_returns_its_metrics() -> None:
    from types import SimpleNamespace

    from torch import nn

    from gkl.doctor.runs import first_eval_batches
    from gkl.metrics.classification import ClassificationEvaluator
    from gkl.metrics.clip import ClipEvalSet

    class Batches:  # an evaluation loader with an attribute an evaluator reads (rank_shard)
        rank_shard = (0, 1)

        def __init__(self, batches: list) -> None:
            self.batches = batches

        def __len__(self) -> int:
            return len(self.batches)

        def __iter__(self):
            return iter(self.batches)

    torch.manual_seed(0)
    batches = [(torch.randn(4, 3), torch.randint(0, 5, (4,))) for _ in range(5)]
    parts = SimpleNamespace(eval_loader=Batches(batches), val_loader=ClipEvalSet(zeroshot=Batches(batches)))
    parts = first_eval_batches(2)(parts)
    for _ in range(2):  # every evaluation of the run reads the first two batches again
        served = list(parts.eval_loader)
        assert len(parts.eval_loader) == len(served) == 2 and all(a is b for a, b in zip(served, batches))
    assert parts.eval_loader.rank_shard == (0, 1)
    assert len(list(parts.val_loader.zeroshot)) == len(parts.val_loader.zeroshot) == 2  # each loader of a split
    assert parts.val_loader.retrieval is None
    evaluator, model = ClassificationEvaluator(5), nn.Linear(3, 5)
    capped = evaluator(model, parts.eval_loader, device="cpu")
    direct = evaluator(model, batches[:2], device="cpu")
    assert capped["count"] == 8 and evaluator(model, batches, device="cpu")["count"] == 20
    assert (capped["top1"], capped["top5"]) == (direct["top1"], direct["top5"])
    short = first_eval_batches(10)(SimpleNamespace(eval_loader=Batches(batches), val_loader=None))
    assert len(list(short.eval_loader)) == len(short.eval_loader) == 5 and short.val_loader is None


def test_doctor_runs_train_and_evaluate_on_batches_of_at_most_max_batch(tmp_path: Path) -> None:
    from gkl.config import load_config
    from gkl.doctor.runs import MAX_BATCH, DemoRuns
    from gkl.recipes import resolve_recipe

    runs = DemoRuns(tmp_path, "cpu", steps=4)
    shipped = {r: load_config(resolve_recipe(r)).data for r in ("demo/student_ce", "ssl/demo/fixmatch_gkl")}
    assert shipped["demo/student_ce"].batch_size > MAX_BATCH == shipped["ssl/demo/fixmatch_gkl"].batch_size
    for recipe, data in shipped.items():
        capped = runs.config(recipe).data
        for key in ("batch_size", "eval_batch_size"):
            assert getattr(capped, key) == min(getattr(data, key), MAX_BATCH), (recipe, key)
