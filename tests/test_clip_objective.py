"""ClipDistillObjective on real tiny OpenCLIP models: loss composition, frozen teacher, scale clamp."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("open_clip")

from gkl.clip import GKLDistillClipLoss  # noqa: E402
from gkl.models.clip import create_clip, create_tokenizer  # noqa: E402
from gkl.objectives.clip_distill import ClipDistillObjective  # noqa: E402
from gkl.settings.clip import ClipDataSettings, ClipDistillSettings  # noqa: E402
from gkl.utils.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    teacher, student = create_clip("gkl-tiny-clip-teacher"), create_clip("gkl-tiny-clip-student")
    tokens = create_tokenizer("gkl-tiny-clip-student")(
        [f"a photo of the digit {w}." for w in ("zero", "one", "two", "three", "four", "five")]
    )
    images = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return teacher, student, images, tokens


def test_step_is_contrastive_plus_weighted_distillation_with_a_frozen_teacher(parts):
    teacher, student, images, tokens = parts
    settings = ClipDistillSettings(
        method="gkl",
        contrastive_weight=0.5,
        distill_weight=2.0,
        alpha=0.3,
        beta=1.5,
        temperature=2.0,
        weight_temperature=3.0,
    )
    objective = ClipDistillObjective(teacher, settings).train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert not any(k.startswith("teacher.") for k in objective.checkpoint_state())
    student.zero_grad()
    out = objective(student, (images, tokens), epoch=1, step=1)
    assert set(out.losses) == {"contrastive", "gkl"}
    img, txt, scale = student(images, tokens)
    with torch.no_grad():
        t_img, t_txt, t_scale = teacher(images, tokens)
    c, d = GKLDistillClipLoss("gkl", alpha=0.3, beta=1.5, temperature=2.0, weight_temperature=3.0)(
        img, txt, scale, t_img, t_txt, t_scale
    )
    torch.testing.assert_close(out.losses["contrastive"], 0.5 * c)
    torch.testing.assert_close(out.losses["gkl"], 2.0 * d)
    sum(out.losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.logit_scale.grad is not None and student.visual.conv1.weight.grad is not None
    # separate teacher inputs (4-tuple batch) give the same result when they are the same tensors
    out4 = objective(student, (images, tokens, images, tokens), epoch=1, step=2)
    torch.testing.assert_close(out4.losses["gkl"], out.losses["gkl"])


def test_logit_scale_is_clamped_after_each_optimizer_step(parts):
    teacher, student, images, tokens = parts
    objective = ClipDistillObjective(teacher, ClipDistillSettings(method="kl"))
    objective(student, (images, tokens), epoch=1, step=1)
    with torch.no_grad():
        student.logit_scale.fill_(6.0)
    objective.after_optimizer_step()
    assert student.logit_scale.item() == pytest.approx(math.log(100.0))


def test_settings_reject_bad_values_naming_the_key():
    with pytest.raises(
        ConfigError,
        match=r"^clip_distill.method: expected one of \['kl', 'gkl', 'ikl', 'dkl'\] or the "
        r"name of a registered logit loss, got 'k-d'$",
    ):
        ClipDistillSettings(method="k-d")
    with pytest.raises(ConfigError, match=r"^clip_distill.temperature: expected a value > 0.0, got 0.0$"):
        ClipDistillSettings(temperature=0.0)
    with pytest.raises(
        ConfigError,
        match=r"^clip_distill.alpha: not a setting of clip_distill.method 'kl' "
        r"\(its settings: clamp_logit_scale, contrastive_weight, distill_weight, gather_with_grad, "
        r"local_loss, method, temperature\)$",
    ):
        ClipDistillSettings(method="kl", alpha=2.0)
    with pytest.raises(ConfigError, match=r"^clip_distill.gamma: not a setting of clip_distill.method 'ikl'"):
        ClipDistillSettings(method="ikl", gamma=0.5)
    with pytest.raises(ConfigError, match=r"^clip_data.train: expected a non-empty string, got None$"):
        ClipDataSettings(format="csv")
    with pytest.raises(
        ConfigError,
        match=r"^clip_data.samples_per_epoch: expected null unless clip_data.format is "
        r"'webdataset', got 10$",
    ):
        ClipDataSettings(format="csv", train="pairs.csv", samples_per_epoch=10)
    # another name is a registered logit loss, checked against the registry when the objective is built
    with pytest.raises(
        ConfigError, match=r"^clip_distill.method: expected a registered logit loss \(kl, .*\), got 'kd'$"
    ):
        ClipDistillObjective(torch.nn.Identity(), ClipDistillSettings(method="kd"))
