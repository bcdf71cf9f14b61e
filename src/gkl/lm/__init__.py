"""Token-level distillation of causal language models (docs/llm.md).

:func:`token_loss` on (B, T, V) logits; :class:`FusedLinearGKLLoss` / :func:`fused_linear_gkl_loss`
fuse the output projection with the loss and never hold more than one chunk of logits.
"""

from .fused import FusedLinearGKLLoss, fused_linear_gkl_loss
from .token_loss import CLASS_WISE_MAX_VOCAB, TOKEN_METHODS, token_loss

__all__ = ["token_loss", "TOKEN_METHODS", "CLASS_WISE_MAX_VOCAB", "FusedLinearGKLLoss", "fused_linear_gkl_loss"]
