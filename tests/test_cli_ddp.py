"""DDP through the command line, as docs/training.md tells a user to run it:
``torchrun --standalone --nproc_per_node 2 -m gkl.cli <verb> CONFIG key=value...`` (gloo on CPU) for
distill, adv-train, ssl-train and seg-train on bundled data (the demo recipes with tiny overrides),
held to the guarantee of docs/training.md ("What a multi-process run equals"):

- 2 processes x batch b/2 equal 1 process x batch b up to float rounding when nothing draws a
  per-rank random number or couples the examples of a batch (distill, ssl-train below: MLPs, no
  augmentation); the class-wise prior is all-reduced, so it matches too;
- otherwise (adv-train: PGD's per-rank random start; seg-train: BatchNorm, a mean over labelled
  pixels) the run is not the 1-process run, but every rank holds the same model, so the metrics the
  run logged over both ranks' evaluation shards equal one process evaluating the saved weights;
- a 2-process run SIGKILLed mid-epoch and continued with ``--resume`` from its step checkpoint
  ends bit-identical to the uninterrupted 2-process run (adv-train: per-rank random streams, prior sums).

The 2-process runs are launched once per session (one xdist group): one torchrun launch of this module
runs the four verbs one after the other through ``gkl.cli.main`` in its two processes (each run sets
up and tears down its own process group, its rendezvous keys under a store prefix of its own; the launch
checks none is left between runs), then the
adv-train run that rank 0 SIGKILLs at a step; the continuing ``--resume`` is ``torchrun -m gkl.cli``
as a user types it. The 1-process references run in the test process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import assert_identical, tensor_leaves

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.xdist_group("cli_ddp")

COMMON = ["train.loggers=[]", "train.progress=false", "train.log_every=0"]
#: verb -> (recipe, overrides, per-process batch of the 2-process run); the 1-process run takes twice the batch
RUNS = {
    "distill": (
        "configs/demo/student_gkl.yaml",  # GKL, class-wise prior; mnist1d_mlp student (no BatchNorm)
        ["train.epochs=2", "distill.warmup_epochs=1", "train.ema.decay=0.9", "train.ema.every=step"],
        32,
    ),
    "adv-train": (
        "configs/demo_at/gkl.yaml",  # GKL-AT: class-wise prior, AWP from epoch 1, EMA per epoch, PGD random start
        [
            "train.epochs=2",
            "adversarial.awp_start_epoch=1",
            "model.name=digits_mlp_small",
            "train.checkpoint_every_steps=5",  # 21 steps per epoch: checkpoints mid-epoch
        ],
        32,
    ),
    "ssl-train": (
        "configs/ssl/demo/fixmatch_gkl.yaml",  # FixMatch with IKL consistency; views without randomness
        [
            "train.iterations=20",
            "train.eval_every_steps=20",
            "train.schedule.warmup_steps=5",
            "model.name=digits_mlp_small",
            "ssl.crop_padding=0",
            "ssl.randaugment_ops=0",
            "ssl.p_cutoff=0.5",
        ],
        8,
    ),
    "seg-train": (
        "configs/segmentation/demo/student_ce.yaml",  # pspnet_tiny (BatchNorm), CE + aux over labelled pixels
        ["train.epochs=1", "segmentation.train_size=48", "segmentation.eval_size=48", "data.val_fraction=0"],
        8,
    ),
}
KILL_AT_STEP = 33  # adv-train: epoch 2, step 12 of 21; the last checkpoint is at step 30 (mid-epoch)


def gkl_args(verb: str, out_dir: Path, data_root: Path, extra: list[str]) -> list[str]:
    """``<verb> <recipe> ...``: the arguments of ``gkl`` for the 2-process run of ``verb``."""
    recipe, overrides, batch = RUNS[verb]
    args = [verb, str(REPO / recipe), f"out_dir={out_dir}", f"data.root={data_root}", f"data.batch_size={batch}"]
    return args + COMMON + overrides + extra


def torchrun_2(target: list[str], env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 TARGET`` (one thread per process)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *target]
    env = dict(os.environ, **(env_extra or {}))
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def run_dir(out_dir: Path, verb: str) -> Path:
    from gkl.config import load_config

    return load_config(REPO / RUNS[verb][0], [f"out_dir={out_dir}"]).run_dir


@pytest.fixture(scope="session")
def ddp_cli(tmp_path_factory) -> dict:
    """One torchrun launch: the four 2-process runs one after the other, then the adv-train run SIGKILLed
    at step KILL_AT_STEP: {"root", "data", "teacher", verb: run dir, "killed": run dir, "launch": its result}."""
    from gkl.models import create_model

    root = tmp_path_factory.mktemp("cli_ddp")
    data = root / "data"
    torch.manual_seed(0)  # the distillation teacher: a fixed random mnist1d_cnn in the community layout
    teacher = root / "teacher.pt"
    torch.save({"model": create_model("mnist1d_cnn", 10).state_dict(), "epoch": 0, "top1": 0.0}, teacher)
    runs: dict = {"root": root, "data": data, "teacher": teacher, "killed": run_dir(root / "killed", "adv-train")}
    commands = [[gkl_args(verb, root / "ddp", data, teacher_args(verb, teacher)), None] for verb in RUNS]
    commands.append([gkl_args("adv-train", root / "killed", data, []), KILL_AT_STEP])
    env = {"GKL_TEST_COMMANDS": json.dumps(commands), "GKL_TEST_OUT": str(root)}
    runs["launch"] = launch = torchrun_2([__file__], env)
    for verb in RUNS:
        runs[verb] = run_dir(root / "ddp", verb)
    for rank in range(2):  # every run before the killed one ended with status 0 on both ranks
        ended = (root / f"rank{rank}_status").read_text().splitlines()
        assert ended == [f"{verb} 0" for verb in RUNS], launch.stdout[-3000:] + launch.stderr[-3000:]
    return runs


def teacher_args(verb: str, teacher: Path) -> list[str]:
    return [f"teacher.checkpoint={teacher}"] if verb == "distill" else []


def one_process(runs: dict, verb: str) -> tuple[dict, Path]:
    """The same run in this process with the 2-process run's global batch: (summary, run dir)."""
    from gkl.config import load_config
    from gkl.runner import run_experiment

    recipe, overrides, batch = RUNS[verb]
    out = runs["root"] / "one"
    args = [f"out_dir={out}", f"data.root={runs['data']}", f"data.batch_size={2 * batch}", *COMMON, *overrides]
    cfg = load_config(REPO / recipe, args + teacher_args(verb, runs["teacher"]))
    return run_experiment(cfg), cfg.run_dir


def checkpoint(path: Path) -> dict:
    return torch.load(path / "checkpoint.pt", weights_only=True)


def assert_close_states(ddp: dict, one: dict, what: str) -> None:
    """Float tensors equal up to float32 rounding of a few dozen steps; everything else exactly."""
    leaves_ddp, leaves_one = tensor_leaves(ddp), tensor_leaves(one)
    assert len(leaves_ddp) == len(leaves_one), what
    for a, b in zip(leaves_ddp, leaves_one):
        if b.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=what)
        else:
            assert torch.equal(a, b), what


def final_metrics(summary: dict, split: str) -> dict:
    return {k: v for k, v in summary["final"][split].items() if k != "per_class"}


@pytest.mark.parametrize("verb", ["distill", "ssl-train"])
def test_two_processes_equal_one_process_with_the_global_batch(ddp_cli, verb: str) -> None:
    ddp_dir = ddp_cli[verb]
    summary_one, one_dir = one_process(ddp_cli, verb)
    ddp, one = checkpoint(ddp_dir), checkpoint(one_dir)
    assert ddp["world_size"] == 2 and one["world_size"] == 1
    assert ddp["step"] == one["step"] > 0  # the same number of optimizer steps: the same global batches
    assert ddp["schedule"]["base_lr"] == one["schedule"]["base_lr"]
    assert tensor_leaves(one["model"]) and tensor_leaves(one["optimizer"])
    for part in ("model", "optimizer", "objective", "ema"):
        if part != "ema" or one[part] is not None:
            assert_close_states(ddp[part], one[part], part)
    summary_ddp = json.loads((ddp_dir / "summary.json").read_text())
    for split in summary_one["final"]:
        a, b = final_metrics(summary_ddp, split), final_metrics(summary_one, split)
        assert a["count"] == b["count"]
        assert a["top1"] == pytest.approx(b["top1"], abs=100 / b["count"] + 1e-9)  # at most one example flips
    assert summary_ddp["train"]["loss"] == pytest.approx(summary_one["train"]["loss"], rel=1e-4)
    if verb == "distill":  # the class-wise prior (all-reduced at each epoch end) was really estimated
        prior = ddp["objective"]["prior.prior"]
        assert not torch.allclose(prior, torch.full_like(prior, 0.1))
        torch.testing.assert_close(prior.sum(dim=1), torch.ones(10))


def evaluate_saved(run: Path, state: dict) -> dict:
    """One process evaluating ``state`` (a model state dict) with the run's own config, task and evaluator."""
    import yaml

    from gkl.config import load_config
    from gkl.runner import build_parts
    from gkl.utils.distributed import DistInfo

    config = run / "one_process_eval.yaml"
    config.write_text(yaml.safe_dump(yaml.safe_load((run / "config.yaml").read_text())))
    cfg = load_config(config, [])
    parts = build_parts(cfg, DistInfo())
    parts.model.load_state_dict(state)
    return parts.evaluator(parts.model, parts.eval_loader, device=torch.device("cpu"), dist=None)


@pytest.mark.parametrize("verb", ["adv-train", "seg-train"])
def test_ranks_hold_one_model_the_logged_evaluation_is_one_process_evaluating_the_checkpoint(ddp_cli, verb) -> None:
    run = ddp_cli[verb]
    saved = checkpoint(run)
    summary = json.loads((run / "summary.json").read_text())
    assert saved["world_size"] == 2 and summary["steps"] == saved["step"] > 0
    models = {"eval": saved["model"]}
    if saved.get("ema") is not None:
        models["ema_eval"] = saved["ema"]["model"]
    assert set(models) == set(summary["final"])
    for split, state in models.items():
        # each rank evaluated its strided half with its own copy: equal to one process only if the copies agree
        expected = evaluate_saved(run, state)
        logged = summary["final"][split]
        for key, value in expected.items():
            if isinstance(value, float):
                assert logged[key] == pytest.approx(value, abs=1e-9), (split, key)
            elif key == "count":
                assert logged[key] == value
    if verb == "adv-train":  # the class-wise prior was estimated over both ranks' examples
        prior = saved["objective"]["prior.prior"]
        assert not torch.allclose(prior, torch.full_like(prior, prior.mean()))
        torch.testing.assert_close(prior.sum(dim=1), torch.ones(10))
    assert all(torch.isfinite(t).all() for t in tensor_leaves(saved["model"]) if t.is_floating_point())


def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_two_process_run(ddp_cli) -> None:
    # GKL-AT: rank-local state inside an epoch (the ClassPrior's running sums, each rank's PGD random
    # stream, the running train statistics) must come back on each rank
    root, verb, extra = ddp_cli["root"], "adv-train", []
    killed = ddp_cli["launch"]
    assert killed.returncode != 0, killed.stdout[-2000:]
    assert (root / "kill_mark").read_text() == f"{verb} {KILL_AT_STEP}"  # the SIGKILL stopped it
    where = ddp_cli["killed"]
    assert not (where / "summary.json").exists()
    mid = checkpoint(where)
    steps_per_epoch = mid["schedule"]["steps_per_epoch"]
    assert mid["step"] == 30 and mid["step"] % steps_per_epoch != 0 and mid["epoch_stats"] is not None
    assert len(mid["ranks"]) == 2  # every rank's rank-local state
    resumed = torchrun_2(["-m", "gkl.cli", *gkl_args(verb, root / "killed", ddp_cli["data"], [*extra, "--resume"])])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    a, b = checkpoint(ddp_cli[verb]), checkpoint(where)
    assert a["step"] == b["step"] == 2 * steps_per_epoch and a["world_size"] == b["world_size"] == 2
    for part in ("model", "ema", "optimizer", "objective", "best"):
        assert tensor_leaves(a[part]) or part == "best", part
        assert_identical(a[part], b[part], part)
    assert_identical(
        torch.load(ddp_cli[verb] / "best.pt", weights_only=True), torch.load(where / "best.pt", weights_only=True)
    )

    def lines(path: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in path.read_text().splitlines()]

    assert lines(ddp_cli[verb] / "metrics.jsonl") == lines(where / "metrics.jsonl")
    resumes = json.loads((where / "run.json").read_text())["resumes"]
    assert len(resumes) == 1


def _run_commands() -> None:  # pragma: no cover - runs under torchrun
    """Each ``[argv, kill_at]`` of GKL_TEST_COMMANDS (JSON) through ``gkl.cli.main`` in this process, adding
    ``VERB STATUS`` to the file ``rank<R>_status`` in the folder GKL_TEST_OUT; it stops at the first failure.
    No process group may outlive a run (each run must set up its own). With ``kill_at``, rank 0 SIGKILLs
    itself before the forward of global step ``kill_at``, after writing ``VERB KILL_AT`` to ``kill_mark``."""
    import torch.distributed as dist

    import gkl.runner
    from gkl.cli import main

    rank, out = int(os.environ["RANK"]), Path(os.environ["GKL_TEST_OUT"])
    build, init = gkl.runner.build_parts, dist.init_process_group
    for number, (argv, kill_at) in enumerate(json.loads(os.environ["GKL_TEST_COMMANDS"])):

        def init_process_group(*args, prefix=f"gkl_test_run{number}", **kwargs):
            # the group's rendezvous keys under a prefix of this run's own: a second group found in torchrun's
            # store the first group's keys (a peer's stale address: the two ranks waited on each other)
            agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False)
            return init(*args, store=dist.PrefixStore(prefix, agent), **kwargs)

        dist.init_process_group = init_process_group

        def build_parts(cfg, info, kill_at=kill_at, verb=argv[0]):
            parts = build(cfg, info)

            def hook(module, args, kwargs):
                if info.rank == 0 and kwargs["step"] == kill_at:
                    (out / "kill_mark").write_text(f"{verb} {kill_at}")
                    os.kill(os.getpid(), signal.SIGKILL)

            if kill_at is not None:
                parts.objective.register_forward_pre_hook(hook, with_kwargs=True)
            return parts

        gkl.runner.build_parts = build_parts
        assert not dist.is_initialized()
        status = main(argv)
        with open(out / f"rank{rank}_status", "a") as ended:
            ended.write(f"{argv[0]} {status}\n")
        if status != 0 or dist.is_initialized():
            sys.exit(1)


if __name__ == "__main__":
    _run_commands()
