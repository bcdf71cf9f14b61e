"""gkl.integrations.GKLDistillationTrainer: real transformers.Trainer steps with gradient accumulation."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")  # the llm extra (pip install "gkl[llm]")

from gkl.lm import fused_linear_gkl_loss  # noqa: E402
from gkl.lm.models import body_and_head, build_causal_lm  # noqa: E402

V, L = 40, 12


class _Blocks(torch.utils.data.Dataset):
    """Blocks of a repeating token pattern (learnable), labels = input ids with the first one ignored."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        starts = torch.randint(0, V, (n, 1), generator=g)
        self.ids = (starts + torch.arange(L) * 3) % V

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        labels = self.ids[i].clone()
        labels[:2] = -100
        return {"input_ids": self.ids[i], "labels": labels}


def _teacher() -> torch.nn.Module:
    """A random GPT-2 made confident: its (untied) output layer scaled up, so the KL to it is large."""
    teacher = build_causal_lm("gpt2", V, L, n_layer=1, n_embd=32, n_head=2, tie_word_embeddings=False)
    with torch.no_grad():
        teacher.get_output_embeddings().weight.mul_(20.0)
    return teacher


def _student() -> torch.nn.Module:
    """A random one-layer Llama, smaller than the teacher."""
    return build_causal_lm(
        "llama",
        V,
        L,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )


def _distillation_loss(student, teacher, data) -> float:
    """The token KL(teacher ‖ student) over the data."""
    ids = data.ids
    labels = torch.stack([data[i]["labels"] for i in range(len(data))])
    with torch.no_grad():
        (body, head), (t_body, t_head) = body_and_head(student), body_and_head(teacher)
        hidden, t_hidden = body(input_ids=ids).last_hidden_state, t_body(input_ids=ids).last_hidden_state
        loss = fused_linear_gkl_loss(
            hidden[:, :-1],
            head.weight,
            t_hidden[:, :-1],
            t_head.weight,
            labels[:, 1:],
            method="kl",
            weight_hard_loss=0.0,
            weight_soft_loss=1.0,
        )
    return float(loss)


def cpu_training_args(out_dir, **options):
    """``TrainingArguments`` of an offline CPU run in ``out_dir``: no tracker, no checkpoint, no loader
    workers; ``options`` add the run's own (batch, steps, learning rate, ...)."""
    return transformers.TrainingArguments(
        output_dir=str(out_dir), report_to=[], use_cpu=True, save_strategy="no", dataloader_num_workers=0, **options
    )


def _record_counts(trainer) -> list[object]:
    """The ``num_items_in_batch`` the Trainer passes to every ``compute_loss`` call, in order."""
    seen: list[object] = []
    original = trainer.compute_loss

    def spy(model, inputs, return_outputs=False, num_items_in_batch=None):
        seen.append(num_items_in_batch)
        return original(model, inputs, return_outputs, num_items_in_batch)

    trainer.compute_loss = spy
    return seen


def test_trainer_steps_with_gradient_accumulation_lower_the_loss(tmp_path) -> None:
    from gkl.integrations import GKLDistillationTrainer

    torch.manual_seed(0)
    teacher = _teacher()
    student = _student()
    data = _Blocks(32)
    before = _distillation_loss(student, teacher, data)
    args = cpu_training_args(
        tmp_path,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=24,
        learning_rate=3e-2,
        logging_steps=1,
        seed=0,
    )
    trainer = GKLDistillationTrainer(
        model=student,
        args=args,
        train_dataset=data,
        teacher_model=teacher,
        method="gkl",
        weight_soft_loss=1.0,
        weight_hard_loss=0.0,
        chunk_size=7,
        loss_params={"gamma": 0.5},
    )
    seen = _record_counts(trainer)
    trainer.train()
    after = _distillation_loss(student, teacher, data)
    assert after < 0.7 * before
    # the Trainer counted the valid shifted labels of both micro-batches: 2 x 4 blocks x (L - 2) tokens
    assert seen and all(int(n) == 2 * 4 * (L - 2) for n in seen)
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training


def test_the_micro_batch_losses_with_the_global_count_add_up_to_the_batch_loss(tmp_path) -> None:
    from gkl.integrations import GKLDistillationTrainer

    torch.manual_seed(1)
    teacher = build_causal_lm("gpt2", V, L, n_layer=1, n_embd=32, n_head=2)
    student = build_causal_lm("gpt2", V, L, n_layer=1, n_embd=16, n_head=2)
    args = cpu_training_args(tmp_path)
    trainer = GKLDistillationTrainer(model=student, args=args, teacher_model=teacher, method="kl", weight_hard_loss=0.5)
    data = _Blocks(8)
    batch = {"input_ids": data.ids, "labels": torch.stack([data[i]["labels"] for i in range(8)])}
    count = int((batch["labels"][:, 1:] != -100).sum())
    whole = trainer.compute_loss(student, batch)
    parts = [
        trainer.compute_loss(student, {k: v[i : i + 4] for k, v in batch.items()}, num_items_in_batch=count)
        for i in (0, 4)
    ]
    torch.testing.assert_close(parts[0] + parts[1], whole, rtol=1e-5, atol=0)


class _Wrapped(torch.nn.Module):
    """A causal LM behind a plain module: the Trainer sees no ``loss_type`` that tells it labels are shifted."""

    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, labels=None, **kwargs):  # the Trainer keeps the dataset columns named here
        return self.lm(input_ids=input_ids, labels=labels, **kwargs)

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.lm.get_output_embeddings()


def test_the_trainer_counts_the_shifted_labels_whatever_the_student(tmp_path) -> None:
    from gkl.integrations import GKLDistillationTrainer

    torch.manual_seed(2)
    data = [{"input_ids": row, "labels": row.clone()} for row in _Blocks(4).ids]  # position 0 valid, never a target
    args = cpu_training_args(tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=1)
    trainer = GKLDistillationTrainer(
        model=_Wrapped(_student()), args=args, train_dataset=data, teacher_model=_teacher(), method="kl"
    )
    seen = _record_counts(trainer)
    trainer.train()
    # the loss covers labels[:, 1:] of both micro-batches: 4 blocks x (L - 1) tokens, not 4 x L
    assert len(seen) == 2 and all(int(n) == 4 * (L - 1) for n in seen)


def test_data_parallel_is_refused_with_a_one_line_error(tmp_path) -> None:
    from gkl.integrations import GKLDistillationTrainer
    from gkl.utils.errors import InputError

    args = cpu_training_args(tmp_path)
    args._n_gpu = 2  # what the Trainer sees with two visible GPUs and no torchrun
    with pytest.raises(InputError, match=r"^args\.n_gpu: expected one device per process .* got 2"):
        GKLDistillationTrainer(model=_student(), args=args, teacher_model=_teacher())


def test_gkl_imports_without_transformers() -> None:
    code = "import sys; sys.modules['transformers'] = None; import gkl, gkl.lm, gkl.integrations; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
