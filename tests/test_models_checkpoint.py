"""Tests of gkl.models.load_weights and create_model(..., checkpoint=...)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from gkl.models import create_model, load_weights


def _randomised(name: str, num_classes: int, seed: int, **kwargs: object) -> nn.Module:
    """A model whose parameters and BN statistics are all random (not the default init)."""
    generator = torch.Generator().manual_seed(seed)
    model = create_model(name, num_classes, **kwargs)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.rand(tensor.shape, generator=generator)
                tensor.copy_(noise + 0.5 if key.endswith("running_var") else (noise - 0.5) * 0.2)
    return model.eval()


def _outputs(model: nn.Module, seed: int = 1) -> torch.Tensor:
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


def test_community_file_loads_through_create_model(tmp_path: Path) -> None:
    source = _randomised("resnet8x4", 100, seed=0)
    path = tmp_path / "resnet8x4_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir()
    optimizer = torch.optim.SGD(source.parameters(), lr=0.05, momentum=0.9)
    torch.save({"model": source.state_dict(), "epoch": 240, "accuracy": 73.1,
                "optimizer": optimizer.state_dict()}, path)  # fmt: skip

    loaded = create_model("resnet8x4", 100, checkpoint=path)
    assert torch.equal(_outputs(loaded), _outputs(source))
    assert not torch.allclose(_outputs(create_model("resnet8x4", 100)), _outputs(source))
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_bare_state_dict_and_ddp_prefix(tmp_path: Path) -> None:
    source = _randomised("resnet8", 10, seed=2)
    bare = tmp_path / "bare.pt"
    torch.save(source.state_dict(), bare)
    ddp = tmp_path / "ddp.pt"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, ddp)
    for path in (bare, str(ddp)):
        model = create_model("resnet8", 10)
        load_weights(model, path)
        assert torch.equal(_outputs(model), _outputs(source))


def test_training_checkpoint_model_and_ema_entries(tmp_path: Path) -> None:
    live, ema = _randomised("wrn_16_1", 10, seed=3), _randomised("wrn_16_1", 10, seed=4)
    path = tmp_path / "last.pt"
    torch.save({"model": live.state_dict(), "ema": ema.state_dict(), "epoch": 7,
                "rng": {"torch": torch.get_rng_state()}}, path)  # fmt: skip

    default = create_model("wrn_16_1", 10, checkpoint=path)
    assert torch.equal(_outputs(default), _outputs(live))
    averaged = create_model("wrn_16_1", 10, checkpoint=path, checkpoint_key="ema")
    assert torch.equal(_outputs(averaged), _outputs(ema))
    assert not torch.allclose(_outputs(averaged), _outputs(default))

    with pytest.raises(ValueError, match="'swa'") as info:
        load_weights(create_model("wrn_16_1", 10), path, key="swa")
    assert "ema" in str(info.value) and "model" in str(info.value)
    with pytest.raises(ValueError, match="neither a state_dict"):
        load_weights(create_model("wrn_16_1", 10), path, key="epoch")


def test_engine_style_nested_ema_entry(tmp_path: Path) -> None:
    live, ema = _randomised("resnet8", 10, seed=7), _randomised("resnet8", 10, seed=8)
    path = tmp_path / "engine.pt"
    torch.save({"format": "gkl", "epoch": 3, "model": live.state_dict(),
                "ema": {"decay": 0.9, "updates": 3, "model": ema.state_dict()}}, path)  # fmt: skip
    model = create_model("resnet8", 10, checkpoint=path, checkpoint_key="ema")
    assert torch.equal(_outputs(model), _outputs(ema))
    no_ema = tmp_path / "no_ema.pt"
    torch.save({"model": live.state_dict(), "ema": None}, no_ema)
    with pytest.raises(ValueError, match="'ema' is empty"):
        create_model("resnet8", 10, checkpoint=no_ema, checkpoint_key="ema")
    assert torch.equal(_outputs(create_model("resnet8", 10, checkpoint=no_ema)), _outputs(live))


def test_averaged_model_state_dict_loads(tmp_path: Path) -> None:
    source = _randomised("resnet8", 10, seed=5)
    averaged = AveragedModel(source)
    path = tmp_path / "swa.pt"
    torch.save({"model": averaged.state_dict()}, path)
    model = create_model("resnet8", 10, checkpoint=path)
    assert torch.equal(_outputs(model), _outputs(source))


def test_robust_checkpoint_loads_with_other_normalisation(tmp_path: Path) -> None:
    source = _randomised("wrn16_4_robust", 10, seed=6)
    path = tmp_path / "robust.pt"
    torch.save(source.state_dict(), path)
    plain = create_model("wrn16_4_robust", 10, checkpoint=path, mean=None, std=None)
    for key, value in source.state_dict().items():
        assert torch.equal(plain.state_dict()[key], value)


def _parameters_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_missing_keys_are_listed_and_model_is_untouched(tmp_path: Path) -> None:
    path = tmp_path / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir()
    torch.save({"model": create_model("resnet8", 100).state_dict(), "epoch": 240}, path)
    target = create_model("resnet14", 100)
    before = _parameters_snapshot(target)
    with pytest.raises(ValueError) as info:
        load_weights(target, path)
    message = str(info.value)
    assert str(path) in message
    assert "missing keys" in message and "layer1.1.conv1.weight" in message
    assert "unexpected keys" not in message
    after = target.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_unexpected_keys_and_shape_mismatches_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "resnet14.pth"
    torch.save({"model": create_model("resnet14", 10).state_dict()}, path)
    with pytest.raises(ValueError) as info:
        create_model("resnet8", 100, checkpoint=path)
    message = str(info.value)
    assert str(path) in message
    assert "unexpected keys" in message and "layer2.1.bn2.running_mean" in message
    assert "shape mismatches" in message and "fc.weight (file (10, 64), model (100, 64))" in message
    assert "missing keys" not in message


def test_long_key_lists_are_truncated_with_a_count(tmp_path: Path) -> None:
    path = tmp_path / "vgg8.pth"
    torch.save(create_model("vgg8", 10).state_dict(), path)
    with pytest.raises(ValueError) as info:
        create_model("resnet110", 10, checkpoint=path)
    message = str(info.value)
    # No key names are shared between the two architectures: every key is missing / unexpected.
    assert f"missing keys ({len(create_model('resnet110', 10).state_dict())})" in message
    assert f"unexpected keys ({len(create_model('vgg8', 10).state_dict())})" in message
    assert "... and" in message and "more" in message
    assert len(message) < 10_000


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "ckpt_epoch_240.pth"
    with pytest.raises(FileNotFoundError, match="ckpt_epoch_240.pth"):
        create_model("resnet8", 100, checkpoint=path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_weights(create_model("resnet8", 10), tmp_path)


def test_unreadable_or_foreign_content_is_a_value_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a torch file")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_weights(create_model("resnet8", 10), garbage)
    foreign = tmp_path / "foreign.pth"
    torch.save({"weights": [1, 2, 3], "epoch": 1}, foreign)
    with pytest.raises(ValueError, match="'model'") as info:
        load_weights(create_model("resnet8", 10), foreign)
    assert "weights" in str(info.value)


def test_checkpoint_key_without_checkpoint_is_rejected() -> None:
    with pytest.raises(ValueError, match="checkpoint_key"):
        create_model("resnet8", 10, checkpoint_key="ema")


def test_load_weights_requires_a_module(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save(create_model("resnet8", 10).state_dict(), path)
    with pytest.raises(TypeError, match="nn.Module"):
        load_weights(create_model("resnet8", 10).state_dict(), path)  # type: ignore[arg-type]
