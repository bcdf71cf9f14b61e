"""Two-process gloo DDP run launched with torchrun equals the single-process run on the same global batches."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import TESTS_DIR, assert_identical, torchrun
from test_engine_support import distill_run


def launch(*args: str, env_extra: dict | None = None):
    """torchrun with 2 CPU processes running test_engine_support.main(args)."""
    return torchrun(TESTS_DIR / "test_engine_support.py", *args, env_extra=env_extra)


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> tuple:
    """One torchrun launch training both objective kinds ("prior", "gkl"): (run dirs root, results by kind)."""
    root = tmp_path_factory.mktemp("ddp")
    done = launch("ddp", str(root / "runs"), str(root / "results"), "prior,gkl")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root / "runs", {
        kind: torch.load(root / "results" / f"{kind}.pt", weights_only=True) for kind in ("prior", "gkl")
    }


def single(tmp_path, objective_kind: str) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # one process, batch 64 = the two ranks' 2 x 32 (the same global batches, in the same order)
        return distill_run(tmp_path / "single", batch_size=64, objective_kind=objective_kind)
    finally:
        torch.set_num_threads(threads)


def check_same_training(ddp: dict, one: dict) -> None:
    assert ddp["base_lr"] == pytest.approx(one["base_lr"])  # lr x global batch / reference batch, both 64/64
    for name, value in one["model"].items():
        torch.testing.assert_close(ddp["model"][name], value, rtol=1e-4, atol=1e-5)
    assert ddp["summary"]["final"]["eval"]["count"] == one["summary"]["final"]["eval"]["count"] == 397
    assert abs(ddp["summary"]["final"]["eval"]["top1"] - one["summary"]["final"]["eval"]["top1"]) <= 0.5
    assert ddp["summary"]["train"]["loss"] == pytest.approx(one["summary"]["train"]["loss"], rel=1e-4)


def check_same_prior(ddp: dict, one: dict) -> None:
    assert ddp["prior"] and set(ddp["prior"]) == set(one["prior"])
    for name, value in one["prior"].items():
        torch.testing.assert_close(ddp["prior"][name].double(), value.double(), rtol=1e-5, atol=1e-6)


@pytest.mark.xdist_group("ddp_runs")  # one xdist worker runs both tests of the shared launch
def test_ddp_two_processes_match_single_process(tmp_path, ddp_runs):
    # an objective with a class-wise prior all-reduced at epoch end (the engine calls on_epoch_end on every rank)
    runs, results = ddp_runs
    ddp, one = results["prior"], single(tmp_path, "prior")
    check_same_training(ddp, one)
    check_same_prior(ddp, one)
    assert one["prior"]["prior"].sum(dim=1).allclose(torch.ones(10, dtype=torch.float64))
    assert (runs / "prior" / "checkpoint.pt").exists() and (runs / "prior" / "best.pt").exists()
    assert json.loads((runs / "prior" / "run.json").read_text())["world_size"] == 2


@pytest.mark.xdist_group("ddp_runs")
def test_ddp_class_wise_gkl_prior_matches_single_process(tmp_path, ddp_runs):
    # GKLObjective(GKLSettings(class_wise=True)): its ClassPrior is stepped in on_epoch_end on both ranks
    ddp, one = ddp_runs[1]["gkl"], single(tmp_path, "gkl")
    check_same_training(ddp, one)
    check_same_prior(ddp, one)
    prior = one["prior"]["prior.prior"]
    assert not torch.allclose(prior, torch.full_like(prior, 0.1))  # the prior was really estimated
    torch.testing.assert_close(prior.sum(dim=1), torch.ones(10))


def test_ddp_run_killed_mid_epoch_resumes_to_the_uninterrupted_state(tmp_path):
    from gkl.engine import read_checkpoint

    straight = launch("ddp_resume", str(tmp_path / "a"), str(tmp_path / "a_out"), env_extra={"GKL_TEST_RESUME": "0"})
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = launch(
        "ddp_resume",
        str(tmp_path / "b"),
        str(tmp_path / "b_out"),
        env_extra={"GKL_TEST_RESUME": "0", "GKL_TEST_KILL_AT": "2:4"},
    )
    assert killed.returncode != 0
    assert read_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 1
    resumed = launch("ddp_resume", str(tmp_path / "b"), str(tmp_path / "b_out"), env_extra={"GKL_TEST_RESUME": "1"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = read_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = read_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 3 and a["world_size"] == 2
    for part in ("model", "ema", "optimizer"):
        assert_identical(a[part], b[part], part)
    # objective state: the checkpoint holds rank 0's copy (objectives keep rank-synchronised state,
    # like ClassPrior); rank 0's rank-local counter proves epoch 2 was redone from its start
    sa = torch.load(tmp_path / "a_out.rank0.pt", weights_only=True)["objective"]
    sb = torch.load(tmp_path / "b_out.rank0.pt", weights_only=True)["objective"]
    assert torch.equal(sa["seen"], sb["seen"]) and sa["seen"].sum().item() == 3 * len(range(1400 // 64)) * 32
    for rank in (0, 1):
        state = torch.load(tmp_path / f"b_out.rank{rank}.pt", weights_only=True)["objective"]
        assert state["epochs_ended"].item() == 3
