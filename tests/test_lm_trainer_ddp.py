"""GKLDistillationTrainer under DDP: ``torchrun`` with 2 gloo CPU processes x per-device batch 2,
gradient accumulation 2, equals 1 process x per-device batch 4 with the same accumulation.

The two ranks hold very different numbers of valid (not -100) labels, so the update is the 1-process
one only if every micro-batch's loss is its sum over valid tokens divided by the GLOBAL count of the
step (the Trainer's ``num_items_in_batch``, gathered under ``average_tokens_across_devices``) and
multiplied by the number of processes, which DDP's gradient average divides out again. Dividing by a
rank's own count, or not undoing the average, moves the weights by far more than the tolerance.

The models run in float64 with plain SGD (no momentum, no clipping: nothing that hides a scale), so
the only difference between the runs is the order of float64 sums (chunks over other token sets,
the all-reduce): weights agree to rtol 1e-9 (measured: 1e-13), while a wrong normalisation moves them by ~0.06.
Run as a script by torchrun, this module trains one rank and saves what it saw and its weights.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")  # the llm extra (pip install "gkl[llm]")

from helpers import torchrun  # noqa: E402
from test_lm_trainer import L, V, _student, _teacher, cpu_training_args  # noqa: E402

pytestmark = pytest.mark.xdist_group("lm_trainer_ddp")  # spawns 2 processes

WORLD, PER_DEVICE, ACCUMULATE, STEPS = 2, 2, 2, 2
N_EXAMPLES = WORLD * PER_DEVICE * ACCUMULATE * STEPS


def _examples() -> list[dict[str, torch.Tensor]]:
    """Blocks of the repeating pattern of test_lm_trainer. Sequential batches of ``PER_DEVICE``
    alternate between the ranks (the sampler's batches are dealt round-robin): the first rank's
    examples have every label valid (position 0 too, which the shifted loss never predicts), the
    second's only their last 1-3."""
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(0, V, (N_EXAMPLES, 1), generator=g)
    ids = (starts + torch.arange(L) * 3) % V
    examples = []
    for i, row in enumerate(ids):
        labels = row.clone()
        if (i // PER_DEVICE) % WORLD == 1:
            labels[: L - 1 - i % 3] = -100
        examples.append({"input_ids": row, "labels": labels})
    return examples


def train(out_dir: Path, per_device: int) -> dict:
    """Real Trainer steps; returns the student's weights, the logged loss and every micro-batch seen."""
    from gkl.integrations import GKLDistillationTrainer

    class InOrder(GKLDistillationTrainer):
        def _get_train_sampler(self, *args, **kwargs):  # the batches in dataset order (any transformers version)
            return torch.utils.data.SequentialSampler(self.train_dataset)

    torch.manual_seed(0)
    teacher, student = _teacher().double(), _student().double()
    initial = {k: v.clone() for k, v in student.state_dict().items()}
    args = cpu_training_args(
        out_dir,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=ACCUMULATE,
        max_steps=STEPS,
        learning_rate=0.5,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        logging_steps=1,  # each step's loss is gathered over the ranks when logged
        seed=0,
    )
    trainer = InOrder(
        model=student,
        args=args,
        train_dataset=_examples(),
        teacher_model=teacher,
        method="gkl",
        weight_hard_loss=0.3,
        chunk_size=5,
        loss_params={"gamma": 0.5},
    )
    seen: list[dict] = []
    original = trainer.compute_loss

    def spy(model, inputs, return_outputs=False, num_items_in_batch=None):
        seen.append(
            {"input_ids": inputs["input_ids"].clone(), "labels": inputs["labels"].clone(), "count": num_items_in_batch}
        )
        return original(model, inputs, return_outputs, num_items_in_batch)

    trainer.compute_loss = spy
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    weights = {k: v.detach().clone() for k, v in student.state_dict().items()}
    return {"weights": weights, "initial": initial, "losses": losses, "seen": seen, "world": trainer.args.world_size}


def _job(out: str) -> None:  # pragma: no cover - runs under torchrun
    torch.set_num_threads(1)
    result = train(Path(out) / "trainer", PER_DEVICE)
    torch.save(result, Path(out) / f"rank{os.environ['RANK']}.pt")
    # as docs/llm.md tells users: without it a gloo process can abort at interpreter exit
    # ("terminate called without an active exception", SIGABRT after the run had finished; seen in CI)
    torch.distributed.destroy_process_group()


def _valid(labels: torch.Tensor) -> int:
    return int((labels[:, 1:] != -100).sum())


def test_two_processes_with_accumulation_equal_one_process_with_the_global_batch(tmp_path: Path) -> None:
    done = torchrun(__file__, str(tmp_path), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    one = train(tmp_path / "one", WORLD * PER_DEVICE)
    assert [r["world"] for r in ranks] == [WORLD, WORLD] and one["world"] == 1
    assert len(one["seen"]) == STEPS * ACCUMULATE == len(ranks[0]["seen"]) == len(ranks[1]["seen"])

    for m, whole in enumerate(one["seen"]):
        parts = [r["seen"][m] for r in ranks]
        # the ranks' micro-batches m together are the 1-process micro-batch m: the same global batches
        for key in ("input_ids", "labels"):
            assert torch.equal(torch.cat([p[key] for p in parts]), whole[key]), (m, key)
        step = one["seen"][m - m % ACCUMULATE : m - m % ACCUMULATE + ACCUMULATE]
        global_count = sum(_valid(s["labels"]) for s in step)  # valid shifted labels of the step, both ranks
        assert int(whole["count"]) == global_count
        assert [int(p["count"]) for p in parts] == [global_count] * WORLD
    per_rank = [sum(_valid(s["labels"]) for s in r["seen"][:ACCUMULATE]) for r in ranks]
    assert per_rank[0] > 4 * per_rank[1] > 0  # uneven: a per-rank normalisation would weigh the ranks 1:1

    # DDP keeps one model; it equals the 1-process model up to the order of float64 sums
    for key, value in one["weights"].items():
        assert torch.equal(ranks[0]["weights"][key], ranks[1]["weights"][key]), key
        torch.testing.assert_close(ranks[0]["weights"][key], value, rtol=1e-9, atol=1e-12, msg=key)
    moved = max(float((one["weights"][k] - one["initial"][k]).abs().max()) for k in one["weights"])
    assert moved > 1e-3  # the steps changed the weights far beyond the tolerance
    # a logged step loss is the mean over the ranks of their (process-count-scaled) losses: the same number,
    # up to the float32 rounding of the Trainer's running loss (a float32 tensor whatever the model's dtype)
    assert len(one["losses"]) == STEPS
    assert ranks[0]["losses"] == ranks[1]["losses"] == pytest.approx(one["losses"], rel=1e-6)


if __name__ == "__main__":
    _job(sys.argv[1])
