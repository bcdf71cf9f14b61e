"""The offline CLIP demo path in a plain loop: a tiny teacher CLIP learns zero-shot digit
classification from captions, and a smaller student distilled from it with KL and GKL does too.

Full batches only (drop_last), cosine-decayed AdamW, OMP-independent thresholds set from
the spread over seeds (see the comment at THRESHOLDS).
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("open_clip")
pytest.importorskip("sklearn")

from gkl.data.image_text import DIGIT_NAMES, DIGIT_TEMPLATES, CaptionedDigits  # noqa: E402
from gkl.metrics.zeroshot import ZeroShotEvaluator  # noqa: E402
from gkl.models.clip import create_clip, create_tokenizer, image_transform  # noqa: E402
from gkl.objectives.clip_distill import ClipContrastiveObjective, ClipDistillObjective  # noqa: E402
from gkl.settings.clip import ClipDistillSettings  # noqa: E402

TEACHER_EPOCHS, STUDENT_EPOCHS, BATCH = 20, 10, 128
# zero-shot top-1 (%) on the 360 held-out digits; chance is 10 %
THRESHOLDS = {"teacher": 40.0, "kl": 30.0, "gkl": 30.0}


def _tensors(train: bool, model, tokenizer):
    data = CaptionedDigits(train, transform=image_transform(model, train=False), tokenizer=tokenizer)
    return torch.stack([data.transform(im) for im in data.images]), data.labels, data.caption_tokens


def _fit(model, objective, x, y, tokens, *, epochs: int, lr: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    per_epoch = len(x) // BATCH
    total, step = epochs * per_epoch, 0
    model.train()
    objective.train()
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(x), generator=g)
        for b in range(per_epoch):  # drop_last
            idx = perm[b * BATCH:(b + 1) * BATCH]
            step += 1
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / total))
            captions = tokens[torch.randint(tokens.shape[0], (len(idx),), generator=g), y[idx]]
            out = objective(model, (x[idx], captions), epoch=epoch, step=step)
            opt.zero_grad()
            sum(out.losses.values()).backward()
            opt.step()
            objective.after_optimizer_step()


def _zero_shot(model, x, y, tokenizer) -> float:
    evaluator = ZeroShotEvaluator(list(DIGIT_NAMES), list(DIGIT_TEMPLATES), tokenizer, topk=(1,))
    return evaluator(model, [(x, y)])["zeroshot_top1"]


@pytest.mark.slow
def test_demo_teacher_and_distilled_students_classify_held_out_digits_zero_shot():
    torch.manual_seed(0)
    teacher = create_clip("gkl-tiny-clip-teacher")
    tokenizer = create_tokenizer("gkl-tiny-clip-teacher")
    x, y, tokens = _tensors(True, teacher, tokenizer)
    x_test, y_test, _ = _tensors(False, teacher, tokenizer)
    _fit(teacher, ClipContrastiveObjective(), x, y, tokens, epochs=TEACHER_EPOCHS, lr=3e-3, seed=0)
    results = {"teacher": _zero_shot(teacher, x_test, y_test, tokenizer)}
    teacher.eval()
    settings = {"kl": ClipDistillSettings(method="kl", temperature=2.0),
                "gkl": ClipDistillSettings(method="gkl", temperature=2.0, weight_temperature=2.0,
                                           alpha=0.05, beta=4.0)}
    for method, cfg in settings.items():
        torch.manual_seed(1)
        student = create_clip("gkl-tiny-clip-student")
        _fit(student, ClipDistillObjective(teacher, cfg), x, y, tokens, epochs=STUDENT_EPOCHS, lr=2e-3, seed=1)
        results[method] = _zero_shot(student, x_test, y_test, tokenizer)
    assert all(results[k] > THRESHOLDS[k] for k in THRESHOLDS), results
