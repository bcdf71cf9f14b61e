"""Integrations with other training libraries (docs/llm.md).

``GKLDistillationTrainer``: a ``transformers.Trainer`` that distils a causal LM from a frozen teacher
with :func:`gkl.lm.fused_linear_gkl_loss`. transformers is imported only when it is first used, so
``import gkl.integrations`` works without the ``llm`` extra.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GKLDistillationTrainer"]


def __getattr__(name: str) -> Any:
    if name == "GKLDistillationTrainer":
        from .hf_trainer import GKLDistillationTrainer

        return GKLDistillationTrainer
    raise AttributeError(f"module 'gkl.integrations' has no attribute {name!r}")
