"""Small causal language models built from a transformers config, without any download (docs/llm.md).

``gpt2`` is ``GPT2LMHeadModel(GPT2Config(...))`` and ``llama`` ``LlamaForCausalLM(LlamaConfig(...))``;
keyword arguments are the config's own (``n_layer``, ``n_embd``, ``n_head`` / ``hidden_size``,
``num_hidden_layers``, ...). Dropout defaults to 0. Needs the ``llm`` extra (transformers).
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["CAUSAL_LM_NAMES", "build_causal_lm", "body_and_head"]

CAUSAL_LM_NAMES = ("gpt2", "llama")
#: the locally trained tokenizers have no special tokens (the configs' defaults lie outside a small vocabulary)
_NO_SPECIAL = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}


def build_causal_lm(name: str, vocab_size: int, block_size: int, **kwargs: Any) -> nn.Module:
    """A randomly initialised causal LM ``name`` over ``vocab_size`` tokens and ``block_size`` positions."""
    try:
        import transformers
    except ImportError as err:
        raise ImportError("gkl.lm.models needs transformers: pip install 'gkl[llm]'") from err
    if name == "gpt2":
        options = {
            "n_positions": block_size,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            **_NO_SPECIAL,
            **kwargs,
        }
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=vocab_size, **options))
    if name == "llama":
        options = {"max_position_embeddings": block_size, **_NO_SPECIAL, **kwargs}
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=vocab_size, **options))
    raise ValueError(f"model.name: expected one of {list(CAUSAL_LM_NAMES)}, got {name!r}")


def body_and_head(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """The body giving the last hidden states (``model.base_model``) and the output projection
    (``model.get_output_embeddings()``) of a transformers causal LM."""
    body = getattr(model, "base_model", None)
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if body is None or body is model or not isinstance(head, nn.Linear):
        raise ValueError(
            f"model: expected a transformers causal LM with a body and a linear output head, got {type(model).__name__}"
        )
    return body, head
