"""Automatic mixed precision: resolve the mode for a device and run backward/step with it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def resolve_amp(mode: str, device: torch.device) -> str:
    """Return the effective AMP mode (``off``/``bf16``/``fp16``) for ``device``.

    ``auto`` gives bf16 on CUDA devices that support it, fp16 on other CUDA
    devices and ``off`` on CPU. An explicit mode the device cannot run raises.
    """
    if mode not in ("off", "bf16", "fp16", "auto"):
        raise ValueError(f"amp: expected 'off', 'bf16', 'fp16' or 'auto', got {mode!r}")
    if mode == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "off"
    if mode == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"amp: 'bf16' is not supported on {device}; use 'fp16' or 'off'")
    if mode != "off" and not torch.amp.is_autocast_available(device.type):
        raise ValueError(f"amp: autocast is not available on device type {device.type!r}")
    return mode


class MixedPrecision:
    """Autocast context plus (for fp16) a GradScaler; owns backward and the optimizer step."""

    def __init__(self, mode: str, device: torch.device) -> None:
        self.mode = resolve_amp(mode, device)
        self.device_type = device.type
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.mode)
        self.scaler = torch.amp.GradScaler(device.type) if self.mode == "fp16" else None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype is None:
            yield
        else:
            with torch.autocast(self.device_type, dtype=self.dtype):
                yield

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()`` (scaled under fp16); call once per micro-batch when accumulating."""
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()

    def step(
        self, optimizer: torch.optim.Optimizer, parameters: list[nn.Parameter], clip_grad_norm: float | None
    ) -> None:
        """Optional clipping (of the unscaled, accumulated gradients) and ``optimizer.step()``;
        under fp16 the scaler skips a step with inf/NaN gradients and updates its scale once."""
        if self.scaler is None:
            if clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(parameters, clip_grad_norm)
            optimizer.step()
            return
        if clip_grad_norm is not None:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(parameters, clip_grad_norm)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict | None:
        return None if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if (state is None) != (self.scaler is None):
            raise ValueError(
                f"amp: checkpoint {'has no' if state is None else 'has a'} GradScaler state "
                f"but this run uses amp={self.mode!r}"
            )
        if self.scaler is not None and state is not None:  # both or neither, checked above
            self.scaler.load_state_dict(state)
