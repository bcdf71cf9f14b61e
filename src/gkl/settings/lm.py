"""Settings of token-level language-model distillation: the ``lm:`` section (docs/llm.md).

``method`` is ``ce`` (next-token cross-entropy only: the teacher's own training, or the
no-distillation baseline) or a token loss of :func:`gkl.lm.token_loss` (``kl``, ``reverse_kl``,
``jsd``, ``dkl``, ``ikl``, ``gkl``) with its ``loss_params``. A step trains
``hard_weight · CE + soft_weight · loss`` per valid token (the fused loss of
:mod:`gkl.lm.fused` when ``fused``). The data keys name the corpus, the tokenizer's
vocabulary, the block length and the held-out fraction (:mod:`gkl.data.text_blocks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gkl.utils.errors import ConfigError
from gkl.utils.validation import check_bool, check_choice, check_int, check_number, fail

__all__ = ["LMSettings", "LM_METHODS"]

#: ``ce`` and the token losses of gkl.lm.token_loss
LM_METHODS: tuple[str, ...] = ("ce", "kl", "reverse_kl", "jsd", "dkl", "ikl", "gkl")
_OWNER = "lm"


@dataclass
class LMSettings:
    """The ``lm:`` section: the method and its weights, the fused loss's chunk, the token data."""

    method: str = "gkl"
    temperature: float = 1.0
    soft_weight: float = 1.0  #: weight of the distillation loss (per valid token)
    hard_weight: float = 0.0  #: weight of the next-token cross-entropy with the data's labels
    loss_params: dict[str, Any] = field(default_factory=dict)  #: the method's own (alpha, beta, gamma, ...)
    fused: bool = True  #: the loss fused with the output layer (no (tokens, V) logits beyond a chunk)
    chunk_size: int = 1024  #: tokens per chunk of the fused loss
    corpus: str = "pydoc_topics"  #: 'pydoc_topics' (ships with Python) or a UTF-8 text file
    vocab_size: int = 1024  #: entries of the byte-level BPE trained on the corpus's training part
    block_size: int = 64  #: tokens per training / evaluation block
    eval_fraction: float = 0.1  #: the held-out tail of the corpus (validation perplexity)

    def __post_init__(self) -> None:
        check_choice(_OWNER, "method", self.method, LM_METHODS, error=ConfigError)
        check_number(_OWNER, "temperature", self.temperature, minimum=0.0, strict=True, error=ConfigError)
        for name in ("soft_weight", "hard_weight"):
            check_number(_OWNER, name, getattr(self, name), minimum=0.0, error=ConfigError)
        check_bool(_OWNER, "fused", self.fused, error=ConfigError)
        check_int(_OWNER, "chunk_size", self.chunk_size, minimum=1, error=ConfigError)
        check_int(_OWNER, "vocab_size", self.vocab_size, minimum=260, error=ConfigError)  # 256 bytes + specials
        check_int(_OWNER, "block_size", self.block_size, minimum=2, error=ConfigError)
        check_number(_OWNER, "eval_fraction", self.eval_fraction, minimum=0.0, strict=True, error=ConfigError)
        if self.eval_fraction >= 1.0:
            raise fail(_OWNER, "eval_fraction", "a value in (0, 1)", self.eval_fraction, error=ConfigError)
        if not isinstance(self.loss_params, dict):
            raise fail(_OWNER, "loss_params", "a mapping", self.loss_params, error=ConfigError)
        if self.method == "ce" and self.loss_params:
            raise fail(_OWNER, "loss_params", "none for method 'ce'", self.loss_params, error=ConfigError)
        if not isinstance(self.corpus, str) or not self.corpus:
            raise fail(_OWNER, "corpus", "'pydoc_topics' or a text file's path", self.corpus, error=ConfigError)
