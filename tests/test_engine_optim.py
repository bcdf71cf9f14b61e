"""build_optimizer: which parameters decay, layer-decay factors, SGD identical to the old optimizer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gkl.config import config_from_dict
from gkl.config_schema import ConfigError
from gkl.engine.optim import build_optimizer, param_groups
from gkl.settings.optim import OptimSettings
from gkl.utils.errors import InputError


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))  # layer scale: 1-D, no decay


class TinyViT(nn.Module):
    """The parameter naming of timm's / USB's VisionTransformer, three blocks."""

    def __init__(self, depth: int = 3, dim: int = 4, classes: int = 5) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 2)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, dim))
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.fc_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)


ALL = [n for n, _ in TinyViT().named_parameters()]
DECAYED = {"patch_embed.weight", "blocks.0.fc.weight", "blocks.1.fc.weight", "blocks.2.fc.weight", "head.weight"}


def _by_name(groups):
    return {name: g for g in groups for name in g["param_names"]}


def test_no_decay_norm_bias_exact_names():
    settings = OptimSettings(name="adamw", lr=1e-3, weight_decay=0.05, no_decay_norm_bias=True)
    opt = build_optimizer(TinyViT(), settings, base_lr=1e-3)
    assert isinstance(opt, torch.optim.AdamW)
    decayed = {n for g in opt.param_groups if g["weight_decay"] == 0.05 for n in g["param_names"]}
    free = {n for g in opt.param_groups if g["weight_decay"] == 0.0 for n in g["param_names"]}
    assert decayed == DECAYED
    assert free == set(ALL) - DECAYED and "pos_embed" in free and "cls_token" in free
    assert all(g["lr_scale"] == 1.0 and g["lr"] == 1e-3 for g in opt.param_groups)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(ALL)


def test_model_no_weight_decay_hook_is_honoured():
    model = TinyViT()
    model.no_weight_decay = lambda: {"head.weight"}
    groups = param_groups(model, OptimSettings(no_decay_norm_bias=True), base_lr=0.1)
    assert _by_name(groups)["head.weight"]["weight_decay"] == 0.0
    assert _by_name(groups)["blocks.0.fc.weight"]["weight_decay"] == 5e-4


def test_layer_decay_factors_match_the_rule():
    d, depth = 0.5, 3
    groups = param_groups(TinyViT(depth), OptimSettings(name="adamw", layer_decay=d), base_lr=2.0)
    got = {n: (g["layer_id"], g["lr_scale"], g["lr"]) for n, g in _by_name(groups).items()}
    expected_ids = {
        "patch_embed": 0,
        "cls_token": 0,
        "pos_embed": 0,
        "blocks.0": 1,
        "blocks.1": 2,
        "blocks.2": 3,
        "norm": 3,
        "fc_norm": 4,
        "head": 4,
    }
    for name in ALL:
        key = next(k for k in sorted(expected_ids, key=len, reverse=True) if name == k or name.startswith(k + "."))
        layer = expected_ids[key]
        assert got[name] == (layer, d ** (depth + 1 - layer), 2.0 * d ** (depth + 1 - layer)), name
    assert got["head.weight"][1] == 1.0 and got["pos_embed"][1] == 0.0625
    # no_decay_norm_bias off: every group decays
    assert all(g["weight_decay"] == 5e-4 for g in groups)


def test_layer_decay_matches_timm_with_usb_group_matcher():
    timm_groups = pytest.importorskip("timm.optim._param_groups")
    model = TinyViT()
    model.group_matcher = lambda coarse=False: dict(
        stem=r"^cls_token|pos_embed|patch_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))]
    )
    model.no_weight_decay = lambda: {"pos_embed", "cls_token"}
    theirs = timm_groups.param_groups_layer_decay(
        model, weight_decay=0.05, no_weight_decay_list={"pos_embed", "cls_token"}, layer_decay=0.7
    )
    ours = param_groups(
        model, OptimSettings(name="adamw", weight_decay=0.05, layer_decay=0.7, no_decay_norm_bias=True), base_lr=1.0
    )
    ref = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for g in theirs:
        for p in g["params"]:
            ref[names[id(p)]] = (pytest.approx(g["lr_scale"]), g["weight_decay"])
    assert {n: (g["lr_scale"], g["weight_decay"]) for n, g in _by_name(ours).items()} == ref


def test_layer_decay_with_prefix_and_frozen_params():
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = TinyViT()
            self.backbone.patch_embed.weight.requires_grad_(False)

    groups = param_groups(Wrapped(), OptimSettings(layer_decay=0.5), base_lr=1.0)
    by = _by_name(groups)
    assert "backbone.patch_embed.weight" not in by
    assert by["backbone.pos_embed"]["layer_id"] == 0 and by["backbone.blocks.1.fc.bias"]["layer_id"] == 2
    assert by["backbone.head.weight"]["lr_scale"] == 1.0


def test_layer_decay_needs_blocks():
    with pytest.raises(InputError, match="optim.layer_decay"):
        build_optimizer(nn.Linear(3, 2), OptimSettings(layer_decay=0.8), base_lr=0.1)


def test_sgd_path_identical_to_previous_optimizer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    twin = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    twin.load_state_dict(model.state_dict())
    settings = OptimSettings(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    ours = build_optimizer(model, settings, base_lr=0.07)
    old = torch.optim.SGD(
        [p for p in twin.parameters() if p.requires_grad],
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        nesterov=settings.nesterov,
    )
    assert len(ours.param_groups) == 1
    for g in old.param_groups:
        g["lr"] = 0.07
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for _ in range(4):
        for net, opt in ((model, ours), (twin, old)):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    mine, theirs = ours.state_dict(), old.state_dict()
    assert mine["state"].keys() == theirs["state"].keys()
    for k in mine["state"]:
        assert torch.equal(mine["state"][k]["momentum_buffer"], theirs["state"][k]["momentum_buffer"])


def test_adamw_settings_reach_torch():
    opt = build_optimizer(
        TinyViT(), OptimSettings(name="adamw", lr=3e-4, betas=[0.8, 0.95], eps=1e-6, weight_decay=0.1), base_lr=6e-4
    )
    g = opt.param_groups[0]
    assert (g["betas"], g["eps"], g["weight_decay"], g["lr"]) == ((0.8, 0.95), 1e-6, 0.1, 6e-4)


def test_optimizer_defaults_and_foreign_keys():
    sgd, adamw = OptimSettings(), OptimSettings(name="adamw")
    assert (sgd.momentum, sgd.nesterov, sgd.betas, sgd.eps) == (0.9, False, None, None)
    assert (adamw.momentum, adamw.nesterov, adamw.betas, adamw.eps) == (None, None, (0.9, 0.999), 1e-8)
    for kwargs, key in (
        ({"name": "adamw", "momentum": 0.9}, "optim.momentum"),
        ({"name": "adamw", "nesterov": False}, "optim.nesterov"),
        ({"betas": [0.9, 0.99]}, "optim.betas"),
        ({"eps": 1e-8}, "optim.eps"),
        ({"name": "adam"}, "optim.name"),
        ({"layer_decay": 1.5}, "optim.layer_decay"),
        ({"layer_decay": 0.0}, "optim.layer_decay"),
        ({"name": "adamw", "betas": [0.9, 1.0]}, "optim.betas"),
    ):
        with pytest.raises(ValueError, match=key):
            OptimSettings(**kwargs)


def test_config_key_errors_name_the_key():
    base = {"kind": "train", "data": {"name": "digits"}, "model": {"name": "digits_mlp_small"}}
    with pytest.raises(ConfigError, match="optim.momentum"):
        config_from_dict({**base, "train": {"optim": {"name": "adamw", "momentum": 0.9}}})
    cfg = config_from_dict({**base, "train": {"optim": {"name": "adamw", "lr": 1e-3, "layer_decay": 0.65}}})
    assert cfg.train.optim.betas == (0.9, 0.999) and cfg.train.optim.layer_decay == 0.65
