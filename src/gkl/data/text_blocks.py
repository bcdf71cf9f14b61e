"""Token-id data of causal language models: a text corpus, a byte-level BPE tokenizer trained on its
training part, and fixed-length blocks of token ids served in batches (docs/llm.md).

``pydoc_topics`` is the text that ships with every CPython (``pydoc_data.topics``, ~465k
characters): an offline corpus, no download. Any other value is the path of a UTF-8 text file.
The last ``eval_fraction`` of the characters is held out; the tokenizer (``tokenizers``, the
``llm`` extra) is trained on the rest only, deterministically, so every run of a config sees the
same token ids.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from gkl.utils.errors import InputError

__all__ = ["PYDOC_TOPICS", "corpus_text", "tokenize_corpus", "TokenBlockLoader"]

PYDOC_TOPICS = "pydoc_topics"


def corpus_text(corpus: str) -> str:
    """The text of ``corpus``: ``pydoc_topics`` (the sorted topics of ``pydoc_data``) or a file's contents."""
    if corpus == PYDOC_TOPICS:
        from pydoc_data.topics import topics

        return "\n\n".join(topics[key] for key in sorted(topics))
    path = Path(corpus)
    if not path.is_file():
        raise InputError(f"lm corpus: expected {PYDOC_TOPICS!r} or a UTF-8 text file, got {corpus!r} (no such file)")
    return path.read_text(encoding="utf-8")


def tokenize_corpus(corpus: str, vocab_size: int, eval_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(train ids, eval ids) as 1-D int64 tensors: a byte-level BPE of ``vocab_size`` entries trained
    on the first 1 − ``eval_fraction`` of the characters, applied to both parts. Deterministic: a
    process keeps the last text's token ids (a file is read each time; its text is the key) and hands
    out copies."""
    train, evaluation = _tokenized(corpus_text(corpus), vocab_size, eval_fraction)
    return train.clone(), evaluation.clone()


@functools.lru_cache(maxsize=1)
def _tokenized(text: str, vocab_size: int, eval_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from tokenizers import ByteLevelBPETokenizer
    except ImportError as err:  # the optional extra
        raise InputError("lm corpus: the tokenizer needs the 'tokenizers' package (pip install 'gkl[llm]')") from err
    cut = int(len(text) * (1.0 - eval_fraction))
    train_text, eval_text = text[:cut], text[cut:]
    tokenizer = ByteLevelBPETokenizer()
    chunks = [train_text[i : i + 10_000] for i in range(0, len(train_text), 10_000)]
    tokenizer.train_from_iterator(chunks, vocab_size=vocab_size, min_frequency=2, show_progress=False)

    def encode(part: str) -> torch.Tensor:
        ids = [i for piece in part.split("\n\n") for i in tokenizer.encode(piece + "\n\n").ids]
        return torch.tensor(ids, dtype=torch.long)

    return encode(train_text), encode(eval_text)


class TokenBlockLoader:
    """Batches (B, L) of non-overlapping blocks of ``block_size`` token ids from a 1-D stream.

    ``shuffle``: the block order is drawn per epoch from ``(seed, epoch)`` (``set_epoch``) and the
    last incomplete batch is dropped; otherwise blocks come in order, the last batch may be short.
    """

    def __init__(self, ids: torch.Tensor, block_size: int, batch_size: int, *, seed: int, shuffle: bool) -> None:
        count = ids.numel() // block_size
        if count < 1 or (shuffle and count < batch_size):
            raise InputError(
                f"lm data: {ids.numel()} tokens make {count} blocks of {block_size}; expected at least "
                f"{batch_size if shuffle else 1} (lower the block size or the batch size)"
            )
        self.blocks = ids[: count * block_size].reshape(count, block_size)
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.order = torch.arange(count)

    def set_epoch(self, epoch: int) -> None:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
            self.order = torch.randperm(len(self.blocks), generator=g)

    def __len__(self) -> int:
        n = len(self.blocks)
        return n // self.batch_size if self.shuffle else -(-n // self.batch_size)

    def __iter__(self):
        for i in range(len(self)):
            yield self.blocks[self.order[i * self.batch_size : (i + 1) * self.batch_size]]
