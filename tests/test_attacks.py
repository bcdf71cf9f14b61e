"""PGD and its losses: stays in the eps-ball and [0, 1], increases the loss, leaves the model alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gkl.attacks import PGD, attack_loss, pgd
from gkl.attacks.attack_losses import kl_attack_loss
from helpers import TinyConvNet


def _model_and_batch(seed: int = 0, n: int = 16):
    torch.manual_seed(seed)
    model = TinyConvNet()
    model.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(3):
            model(torch.rand(32, 1, 8, 8))
    images = torch.rand(n, 1, 8, 8)
    labels = torch.randint(0, 10, (n,))
    return model, images, labels


def _prior_weights(n: int, labels: torch.Tensor) -> torch.Tensor:
    prior = torch.softmax(torch.randn(10, 10, generator=torch.Generator().manual_seed(5)), dim=1)
    return prior[labels]


LOSSES = ["ce", "kl", "gkl", "cw"]


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("random_start", ["trades", "uniform", None])
def test_pgd_stays_in_ball_and_unit_box(norm, loss, random_start):
    model, images, labels = _model_and_batch()
    eps = 8 / 255 if norm == "linf" else 0.5
    step = 2 / 255 if norm == "linf" else 0.2
    kwargs = {"class_weights": _prior_weights(16, labels)} if loss == "gkl" else {}
    adv = pgd(
        model,
        images,
        labels,
        eps=eps,
        step_size=step,
        steps=5,
        loss=loss,
        norm=norm,
        random_start=random_start,
        generator=torch.Generator().manual_seed(1),
        **kwargs,
    )
    delta = (adv - images).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert adv.shape == images.shape and adv.dtype == torch.float32
    assert (size <= eps + 1e-6).all()
    assert adv.min() >= 0 and adv.max() <= 1
    assert not adv.requires_grad
    # the attack actually moved the images (the l-inf attack fills most of the box)
    assert (size > 0.5 * eps).float().mean() > 0.5


def test_pgd_per_example_eps_tensor():
    model, images, labels = _model_and_batch()
    eps = torch.linspace(0, 8 / 255, 16)
    adv = pgd(
        model,
        images,
        labels,
        eps=eps,
        step_size=eps / 4,
        steps=6,
        random_start="uniform",
        generator=torch.Generator().manual_seed(0),
    )
    size = (adv - images).flatten(1).abs().amax(1)
    assert (size <= eps + 1e-6).all()
    assert size[0] == 0  # eps = 0 leaves the image untouched
    assert (size[1:] > 0).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", LOSSES)
def test_pgd_increases_its_loss(norm, loss):
    model, images, labels = _model_and_batch(seed=3, n=32)
    model.eval()
    with torch.no_grad():  # sharper logits, as in a trained model
        model.head.weight.mul_(10)
    eps = 8 / 255 if norm == "linf" else 0.5
    step = 2 / 255 if norm == "linf" else 0.1
    weights = _prior_weights(32, labels) if loss == "gkl" else None
    with torch.no_grad():
        clean_logits = model(images)
        clean_loss = attack_loss(loss, clean_logits, labels, clean_logits=clean_logits, class_weights=weights)
    adv = pgd(
        model,
        images,
        labels,
        eps=eps,
        step_size=step,
        steps=10,
        loss=loss,
        norm=norm,
        class_weights=weights,
        generator=torch.Generator().manual_seed(2),
    )
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(4))
    if norm == "linf":
        random = images + eps * noise.sign()
    else:
        random = images + eps * noise / noise.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    with torch.no_grad():
        adv_loss = attack_loss(loss, model(adv), labels, clean_logits=clean_logits, class_weights=weights)
        random_loss = attack_loss(
            loss, model(random.clamp(0, 1)), labels, clean_logits=clean_logits, class_weights=weights
        )
    assert adv_loss - clean_loss > 1e-4
    # the attack beats a random perturbation of the same size by a clear margin
    assert adv_loss - clean_loss > 2 * (random_loss - clean_loss)


@pytest.mark.parametrize("mode", [True, False])
def test_pgd_restores_mode_and_leaves_buffers_and_grads(mode):
    model, images, labels = _model_and_batch()
    model.train(mode)
    model.features[1].eval()  # a mixed-mode model must come back exactly as it was
    modes = [m.training for m in model.modules()]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    pgd(model, images, labels, eps=8 / 255, step_size=2 / 255, steps=3, loss="kl")
    PGD(model, steps=2)(images, labels)
    assert [m.training for m in model.modules()] == modes
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_pgd_runs_in_float32_under_autocast():
    model, images, labels = _model_and_batch()
    settings = dict(eps=8 / 255, step_size=2 / 255, steps=3, loss="kl", random_start="uniform")
    reference = pgd(model, images, labels, generator=torch.Generator().manual_seed(3), **settings)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        adv = pgd(model, images, labels, generator=torch.Generator().manual_seed(3), **settings)
    assert adv.dtype == torch.float32
    assert torch.equal(adv, reference)  # autocast is off inside the attack


def test_class_form_matches_function():
    model, images, labels = _model_and_batch()
    attack = PGD(model, eps=8 / 255, step_size=2 / 255, steps=4, loss="cw", random_start=None)
    expected = pgd(model, images, labels, eps=8 / 255, step_size=2 / 255, steps=4, loss="cw", random_start=None)
    assert torch.equal(attack(images, labels), expected)


def test_trades_start_is_small_gaussian_and_deterministic_with_generator():
    model, images, labels = _model_and_batch()
    a = pgd(
        model,
        images,
        labels,
        eps=8 / 255,
        step_size=0.0,
        steps=0,
        random_start="trades",
        generator=torch.Generator().manual_seed(7),
    )
    b = pgd(
        model,
        images,
        labels,
        eps=8 / 255,
        step_size=0.0,
        steps=0,
        random_start="trades",
        generator=torch.Generator().manual_seed(7),
    )
    assert torch.equal(a, b)
    inside = (images > 0.01) & (images < 0.99)
    noise = (a - images)[inside]
    assert 0.0007 < noise.std() < 0.0013


def test_kl_attack_loss_is_trades_kl():
    torch.manual_seed(0)
    adv, clean = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    expected = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="sum")
    assert torch.allclose(kl_attack_loss(adv, clean), expected, rtol=1e-12, atol=1e-12)


def test_cw_loss_is_margin():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]])
    labels = torch.tensor([0, 2])
    value = attack_loss("cw", logits, labels)
    assert value.item() == pytest.approx((2.0 - 3.0) + (5.0 - (-1.0)))


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"loss": "mse"}, "loss"),
        ({"norm": "l1"}, "norm"),
        ({"random_start": "normal"}, "random_start"),
        ({"steps": -1}, "steps"),
        ({"eps": -0.1}, "eps"),
        ({"eps": torch.ones(3)}, "eps"),
    ],
)
def test_pgd_bad_arguments_raise(kwargs, word):
    model, images, labels = _model_and_batch()
    settings = dict(eps=8 / 255, step_size=2 / 255, steps=1)
    settings.update(kwargs)
    with pytest.raises(ValueError, match=word):
        pgd(model, images, labels, **settings)


def test_pgd_rejects_images_outside_unit_box_and_bad_labels():
    model, images, labels = _model_and_batch()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pgd(model, images * 2 - 0.5, labels, eps=0.1, step_size=0.1, steps=1)
    with pytest.raises(ValueError, match="labels"):
        pgd(model, images, labels[:3], eps=0.1, step_size=0.1, steps=1)
    with pytest.raises(ValueError, match="class_weights"):
        pgd(model, images, labels, eps=0.1, step_size=0.1, steps=1, loss="gkl", class_weights=torch.ones(3, 3))
