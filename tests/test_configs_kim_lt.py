"""Kim et al.'s CIFAR-100 and ImageNet recipes and the ImageNet-LT ResNet-50 recipes, key by key
against the released settings (copied here as data: no network at test time)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gkl.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
KIM = CONFIGS / "cifar100_kim"

# jhoon-oh/kd_data, code/image_classfication: main.py argument defaults and run_vanilla_kd.sh
# (--batch_size=128 --num_epochs=200 --mode=crop --nesterov --alpha=1.0); the optimizer puts the
# 1-D parameters (BatchNorm, biases) in a group with weight_decay 0.
KIM_RELEASED = {
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "nesterov": True,
    "num_epochs": 200,
    "milestones": "100,150",
    "gamma": 0.1,
    "batch_size": 128,
    "alpha": 1.0,  # kd_loss = alpha * T^2 KL + (1 - alpha) * CE
}
KIM_STUDENTS = ["wrn_16_2", "wrn_16_4", "wrn_28_2", "wrn_28_4", "wrn_40_6"]
KIM_TAUS = {"kl_t1": 1.0, "kl_t3": 3.0, "kl_t5": 5.0, "kl_t20": 20.0, "kl_tinf": math.inf}


def _check_kim_solver(cfg) -> None:
    optim = cfg.train.optim
    assert optim.lr == KIM_RELEASED["lr"] and optim.momentum == KIM_RELEASED["momentum"]
    assert optim.weight_decay == KIM_RELEASED["weight_decay"] and optim.nesterov is KIM_RELEASED["nesterov"]
    assert optim.no_decay_norm_bias is True
    assert cfg.data.batch_size == KIM_RELEASED["batch_size"] and cfg.data.name == "cifar100"


@pytest.mark.parametrize("student", KIM_STUDENTS)
def test_kim_cifar100_students_follow_the_released_runs(student: str) -> None:
    files = {p.stem for p in (KIM / student).glob("*.yaml")}
    assert files == {"ce", "mse", *KIM_TAUS}
    for stem, tau in KIM_TAUS.items():
        cfg = load_config(KIM / student / f"{stem}.yaml")
        _check_kim_solver(cfg)
        assert cfg.train.epochs == KIM_RELEASED["num_epochs"]
        assert cfg.train.schedule.kind == "multistep" and cfg.train.schedule.gamma == KIM_RELEASED["gamma"]
        assert ",".join(map(str, cfg.train.schedule.milestones)) == KIM_RELEASED["milestones"]
        assert cfg.model.name == student and cfg.teacher.name == "wrn_28_4"
        assert cfg.teacher.checkpoint == "runs/cifar100_kim/teacher_wrn_28_4/checkpoint.pt"
        d = cfg.distill
        assert d.method == "kd" and d.temperature == tau and d.warmup_epochs == 0
        assert d.ce_weight == 1 - KIM_RELEASED["alpha"]
        # tau = inf: their limit gradient is applied per example (no 1/batch): weight = batch size
        assert d.kd_weight == (KIM_RELEASED["batch_size"] if tau == math.inf else KIM_RELEASED["alpha"])
    mse = load_config(KIM / student / "mse.yaml")
    assert (mse.distill.method, mse.distill.ce_weight, mse.distill.kd_weight) == ("mse", 0.0, 1.0)
    ce = load_config(KIM / student / "ce.yaml")
    assert ce.kind == "train" and ce.model.name == student and ce.teacher is None
    _check_kim_solver(ce)


def test_kim_teachers() -> None:
    teacher = load_config(KIM / "teacher_wrn_28_4.yaml")
    assert teacher.kind == "train" and teacher.model.name == "wrn_28_4" and teacher.train.epochs == 200
    assert str(teacher.run_dir) == "runs/cifar100_kim/teacher_wrn_28_4"
    poor = load_config(KIM / "undertrained" / "teacher_wrn_28_4.yaml")
    assert poor.kind == "train" and poor.train.epochs < teacher.train.epochs
    assert str(poor.run_dir) == "runs/cifar100_kim/undertrained_teacher_wrn_28_4"
    taus = {"kl_t0.1": 0.1, "kl_t0.5": 0.5, "kl_t1": 1.0, "kl_t5": 5.0, "kl_t20": 20.0, "kl_tinf": math.inf}
    stems = {p.stem for p in (KIM / "undertrained").glob("wrn_16_2_*.yaml")}
    assert stems == {f"wrn_16_2_{s}" for s in [*taus, "mse"]}
    for stem, tau in taus.items():
        cfg = load_config(KIM / "undertrained" / f"wrn_16_2_{stem}.yaml")
        assert cfg.teacher.checkpoint == f"{poor.run_dir}/checkpoint.pt"
        assert cfg.distill.temperature == tau and cfg.distill.ce_weight == 0.0


def test_kim_imagenet_res152_res50() -> None:
    t20 = load_config(CONFIGS / "imagenet" / "kd_res152_res50_t20.yaml")
    mse = load_config(CONFIGS / "imagenet" / "kd_res152_res50_mse.yaml")
    for cfg in (t20, mse):
        assert cfg.model.name == "imagenet_resnet50" and cfg.teacher.name == "imagenet_resnet152"
        assert cfg.distill.ce_weight == 0.0 and cfg.distill.kd_weight == 1.0
    assert t20.distill.method == "kd" and t20.distill.temperature == 20.0
    assert mse.distill.method == "mse"


# jiequancui/DKL, DKLv2/Imbalanced_KD-dkl/sh/Distill/ImageNetLT_train_{X101R50,R50R50}_distill{,_dkl}.sh and
# DKLv1/... _dkl.sh (IKL); their --alpha weights the soft-label CE (our beta), --beta the wMSE (our alpha);
# --T2 defaults to 100 in DKLv1 (IKL), --temperature to 1.0; the loss is CE + distill term.
LT_RELEASED = {
    "kd_resnext101_res50": {"teacher_arch": "resnext101_32x4d", "distill_loss": "KL_KD", "distill_w": 3.0},
    "gkl_resnext101_res50": {
        "teacher_arch": "resnext101_32x4d",
        "distill_loss": "GKL_KD",
        "alpha": 3.0,
        "beta": 4.0,
        "gamma": 0.3,
        "T2": 1.0,
        "GI": True,
    },
    "ikl_resnext101_res50": {
        "teacher_arch": "resnext101_32x4d",
        "distill_loss": "IKL_KD",
        "alpha": 3.0,
        "beta": 4.0,
        "T2": 100.0,
        "GI": False,
    },
    "kd_res50_res50": {"teacher_arch": "resnet50", "distill_loss": "KL_KD", "distill_w": 1.0},
    "gkl_res50_res50": {
        "teacher_arch": "resnet50",
        "distill_loss": "GKL_KD",
        "alpha": 1.0,
        "beta": 1.0,
        "gamma": 0.3,
        "T2": 1.0,
        "GI": True,
    },
    "ikl_res50_res50": {
        "teacher_arch": "resnet50",
        "distill_loss": "IKL_KD",
        "alpha": 1.0,
        "beta": 1.0,
        "T2": 100.0,
        "GI": False,
    },
}


@pytest.mark.parametrize("name", list(LT_RELEASED))
def test_imagenet_lt_res50_recipes_follow_the_released_scripts(name: str) -> None:
    released = LT_RELEASED[name]
    cfg = load_config(CONFIGS / "imagenet_lt" / f"{name}.yaml")
    assert cfg.model.name == "imagenet_resnet50" and cfg.data.name == "imagenet_lt"
    assert cfg.teacher.name == f"imagenet_{released['teacher_arch']}"
    d = cfg.distill
    assert d.ce_weight == 1.0 and d.temperature == 1.0 and d.warmup_epochs == 0
    method = {"KL_KD": "kd", "GKL_KD": "gkl", "IKL_KD": "ikl"}[released["distill_loss"]]
    assert d.method == method
    if method == "kd":
        assert d.kd_weight == released["distill_w"]
        return
    assert d.kd_weight == 1.0
    assert (d.alpha, d.beta) == (released["beta"], released["alpha"])
    assert d.weight_temperature == released["T2"] and d.class_wise is released["GI"]
    if method == "gkl":
        assert d.gamma == released["gamma"] and d.normalize == "weights"


@pytest.mark.parametrize(
    ("name", "kl"), [("jsd_resnext101_res50", "kd_resnext101_res50"), ("jsd_res50_res50", "kd_res50_res50")]
)
def test_imagenet_lt_jsd_recipes_use_their_pairs_kl_weight(name: str, kl: str) -> None:
    jsd = load_config(CONFIGS / "imagenet_lt" / f"{name}.yaml")
    reference = load_config(CONFIGS / "imagenet_lt" / f"{kl}.yaml")
    assert jsd.distill.method == "jsd" and jsd.teacher.name == reference.teacher.name
    assert (jsd.distill.kd_weight, jsd.distill.temperature) == (reference.distill.kd_weight, 1.0)
    teacher = load_config(CONFIGS / "imagenet_lt" / "teacher_res50.yaml")
    assert teacher.kind == "train" and teacher.model.name == "imagenet_resnet50"


def test_kim_tau_inf_weight_reproduces_the_released_gradient() -> None:
    """kd_weight = batch size times our tau = inf term has the gradient of the authors' ``inf_grad``
    (tools/losses.py: ``(C (pred - target) - sum(pred - target)) / C^2`` per example, back-propagated as is)."""
    import torch

    from gkl.losses.functional import kl_div

    cfg = load_config(KIM / "wrn_16_2" / "kl_tinf.yaml")
    batch, classes = cfg.data.batch_size, 100
    torch.manual_seed(0)
    student = torch.randn(batch, classes, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(batch, classes, dtype=torch.float64)
    (cfg.distill.kd_weight * kl_div(student, teacher, temperature=cfg.distill.temperature)).backward()
    diff = (student - teacher).detach()
    released = (classes * diff - diff.sum(1, keepdim=True)) / classes**2
    assert torch.allclose(student.grad, released, atol=1e-12, rtol=0)


def test_kim_mse_is_their_mse_loss() -> None:
    """distill.method mse at kd_weight 1 is the authors' ``nn.MSELoss()(pred, teacher)`` (mean over batch x classes)."""
    import torch

    from gkl.losses.functional import logit_mse

    torch.manual_seed(1)
    student, teacher = torch.randn(128, 100, dtype=torch.float64), torch.randn(128, 100, dtype=torch.float64)
    expected = torch.nn.MSELoss()(student, teacher)
    assert torch.allclose(logit_mse(student, teacher), expected, atol=1e-12, rtol=0)


def test_kim_teacher_and_tau_inf_student_run_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The teacher recipe writes the checkpoint the student recipes read (their relative path, run
    from the working directory); only the model size and the run length shrink."""
    import json

    import numpy as np

    from gkl.cli import main
    from test_data_cifar import write_cifar100

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(80, 32, 32, 3), dtype=np.uint8)
    write_cifar100(
        str(tmp_path / "cifar"), images[:64], rng.integers(0, 100, 64), images[64:], rng.integers(0, 100, 16)
    )
    monkeypatch.chdir(tmp_path)
    small = ["data.root=cifar", "train.epochs=1", "data.batch_size=32", "data.num_workers=0", "train.progress=false"]
    assert main(["train", str(KIM / "teacher_wrn_28_4.yaml"), "model.name=wrn_16_1", *small]) == 0
    assert (tmp_path / "runs/cifar100_kim/teacher_wrn_28_4/checkpoint.pt").is_file()
    student = ["model.name=wrn_16_1", "teacher.name=wrn_16_1", *small]
    assert main(["distill", str(KIM / "wrn_16_2" / "kl_tinf.yaml"), *student]) == 0
    lines = (tmp_path / "runs/cifar100_kim/kim_wrn_16_2_kl_tinf/metrics.jsonl").read_text().splitlines()
    train = json.loads(lines[-1])["train"]
    assert train["ce"] == 0.0 and math.isfinite(train["kd"]) and train["kd"] > 0  # the KD term alone
