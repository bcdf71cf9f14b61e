"""CLIP models by OpenCLIP name, user-supplied weight files, and OpenCLIP-loadable checkpoints.

Models are built by ``open_clip.create_model`` (needs the ``clip`` extra), never downloaded:
``pretrained`` is a local file (``.pt``/``.pth``/``.bin``, loaded with ``weights_only=True``,
or ``.safetensors``). gkl ships two tiny configs for the offline demo and tests,
``gkl-tiny-clip-teacher`` and ``gkl-tiny-clip-student`` (16 px images, 12-token captions);
importing this module registers them with OpenCLIP, so ``open_clip.create_model`` knows them.

Checkpoints written by :func:`save_openclip_checkpoint` are plain state dicts:
``open_clip.create_model(name, pretrained=PATH)`` loads them. :func:`export_local_dir`
writes a folder (config + weights) that ``open_clip.create_model("local-dir:PATH")`` loads
without gkl.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from gkl.utils.errors import InputError
from gkl.utils.modules import unwrap_model

__all__ = [
    "CONFIG_DIR",
    "TINY_MODELS",
    "create_clip",
    "create_tokenizer",
    "image_transform",
    "save_openclip_checkpoint",
    "export_local_dir",
    "export_run_checkpoint",
    "model_config",
]

CONFIG_DIR = Path(__file__).with_name("clip_configs")
TINY_MODELS = ("gkl-tiny-clip-teacher", "gkl-tiny-clip-student")

open_clip.add_model_config(CONFIG_DIR)


def _check_name(name: str, what: str = "model") -> None:
    if not isinstance(name, str) or name not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if isinstance(name, str) and name.lower() in m.lower()][:8]
        hint = f"; close names: {close}" if close else "; see open_clip.list_models()"
        raise InputError(f"{what}: unknown OpenCLIP model name {name!r}{hint}")


def model_config(name: str) -> dict[str, Any]:
    """The OpenCLIP config dict (embed_dim, vision_cfg, text_cfg) of ``name``."""
    _check_name(name)
    return open_clip.get_model_config(name)


_OPENCLIP_DIR = str(Path(open_clip.__file__).resolve().parent)


def _below_error_from_openclip(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or not str(Path(record.pathname).resolve()).startswith(_OPENCLIP_DIR)


@contextlib.contextmanager
def openclip_quiet() -> Iterator[None]:
    """Drop OpenCLIP's log lines below ERROR meanwhile (it logs on the root logger: "Parsing model
    identifier ...", "No pretrained weights loaded ... initialized randomly")."""
    root = logging.getLogger()
    root.addFilter(_below_error_from_openclip)
    try:
        yield
    finally:
        root.removeFilter(_below_error_from_openclip)


def create_clip(
    name: str,
    *,
    pretrained: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    what: str = "model",
    weights_follow: bool = False,
    **overrides: Any,
) -> nn.Module:
    """An OpenCLIP model ``name`` (e.g. ``ViT-B-16``), random or with weights from a local file.

    ``overrides`` go to ``open_clip.create_model`` (e.g. ``force_image_size``). A
    ``pretrained`` that is not an existing file is an InputError naming ``what`` and the
    path: gkl never downloads weights (fetch OpenCLIP's files yourself). ``weights_follow``: the
    caller loads weights into the model next, so OpenCLIP's log lines (its "initialized randomly"
    warning would be false) are silenced; a model trained from random weights keeps the warning.
    """
    _check_name(name, what)
    path = None
    if pretrained is not None:
        path = Path(pretrained)
        if not path.is_file():
            raise InputError(
                f"{what}.pretrained: weight file {str(path)!r} does not exist "
                "(gkl loads OpenCLIP weights only from local files)"
            )
    quiet = openclip_quiet() if weights_follow or path is not None else contextlib.nullcontext()
    try:
        with quiet:
            return open_clip.create_model(
                name,
                pretrained=str(path) if path else None,
                device=device,
                precision=precision,
                weights_only=True,
                pretrained_text=False,
                **overrides,
            )
    except (RuntimeError, AssertionError, KeyError, ValueError) as exc:  # state dict does not fit the model
        if path is None:
            raise
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{what}.pretrained: {str(path)!r} does not fit OpenCLIP model {name!r}: {first}") from None


def create_tokenizer(name: str):
    """OpenCLIP's tokenizer for ``name`` (the bundled BPE; context length from the config), without
    OpenCLIP's INFO lines. A process builds each once (it holds no per-run state) and shares it."""
    _check_name(name)
    return _tokenizer(name)


@functools.lru_cache(maxsize=8)
def _tokenizer(name: str):
    with openclip_quiet():
        return open_clip.get_tokenizer(name)


def image_transform(model: nn.Module, *, train: bool):
    """OpenCLIP's image preprocessing for ``model`` (its size, mean, std, resize mode)."""
    cfg = open_clip.get_model_preprocess_cfg(unwrap_model(model))
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**cfg), is_train=train)


def save_openclip_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write the model's state dict (DDP/compile wrappers removed) for ``create_model(..., pretrained=path)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in unwrap_model(model).state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def export_local_dir(model: nn.Module, name: str, directory: str | os.PathLike[str]) -> Path:
    """Write ``open_clip_config.json`` + ``open_clip_pytorch_model.bin`` for ``create_model("local-dir:DIR")``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    preprocess = open_clip.get_model_preprocess_cfg(unwrap_model(model))
    config = {"model_cfg": model_config(name), "preprocess_cfg": _jsonable(preprocess)}
    (directory / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    save_openclip_checkpoint(model, directory / "open_clip_pytorch_model.bin")
    return directory


def export_run_checkpoint(
    checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *, key: str = "model"
) -> Path:
    """Turn a gkl run checkpoint (``{"model": state_dict, ...}``) into an OpenCLIP weight file."""
    src = Path(checkpoint)
    if not src.is_file():
        raise InputError(f"checkpoint {str(src)!r} does not exist")
    obj = torch.load(src, map_location="cpu", weights_only=True)
    state: Mapping[str, torch.Tensor] = obj[key] if isinstance(obj, dict) and key in obj else obj
    if isinstance(state, Mapping):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    if not isinstance(state, Mapping) or "logit_scale" not in state:
        raise InputError(f"checkpoint {str(src)!r}: no CLIP state dict (expected a 'logit_scale' entry under {key!r})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value
