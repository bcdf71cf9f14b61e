"""Image-text retrieval recall@K of a CLIP model on a caption set.

Rows are (image, caption) pairs; rows naming the same image share an image id (several
captions per image, as in COCO / Flickr30k). Image→text recall@K: fraction of distinct
images with at least one of their captions among the K most similar captions.
Text→image recall@K: fraction of captions whose image is among the K most similar images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from gkl.utils.errors import InputError
from gkl.utils.modules import unwrap_model

__all__ = ["retrieval_recall", "RetrievalEvaluator"]


def retrieval_recall(
    image_features: torch.Tensor, text_features: torch.Tensor, image_ids: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@K (in %) from per-row normalised features; ``image_ids[r]`` is row r's image.

    ``image_features`` has one row per caption row (duplicates of one image are
    de-duplicated by id, keeping the first).
    """
    if not (image_features.shape[0] == text_features.shape[0] == image_ids.shape[0]):
        raise InputError("retrieval: image features, text features and image ids need one row per caption")
    ids = image_ids.long()
    unique, first = _first_occurrence(ids)
    images = image_features[first]  # (I, D), image j has id unique[j]
    sims = text_features.float() @ images.float().T  # (T, I)
    target = torch.searchsorted(unique, ids)  # column of each caption's image
    out: dict[str, float] = {}
    t2i_rank = (sims > sims.gather(1, target[:, None])).sum(dim=1)  # images scored above the true one
    i2t = sims.T  # (I, T)
    owns = target[None, :] == torch.arange(len(unique))[:, None]
    best_own = torch.where(owns, i2t, torch.full_like(i2t, float("-inf"))).max(dim=1, keepdim=True).values
    i2t_rank = (i2t > best_own).sum(dim=1)  # captions scored above the image's best own caption
    for k in ks:
        out[f"t2i_R@{k}"] = 100.0 * float((t2i_rank < k).float().mean())
        out[f"i2t_R@{k}"] = 100.0 * float((i2t_rank < k).float().mean())
    return out


def _first_occurrence(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    unique, inverse = torch.unique(ids, sorted=True, return_inverse=True)
    rows = torch.arange(ids.numel())
    first = torch.full((unique.numel(),), ids.numel(), dtype=torch.long).scatter_reduce(0, inverse, rows, reduce="amin")
    return unique, first


class RetrievalEvaluator:
    """Evaluator protocol: ``evaluator(model, loader, *, device, dist) -> {"i2t_R@1", ..., "t2i_R@10"}``.

    ``loader.dataset`` yields (image, tokens) rows and may have ``image_ids`` (as
    :class:`gkl.data.image_text.CaptionCsv`); without it every row is its own image.
    Every rank encodes the whole set with a sequential loader of the same batch size,
    so all ranks return identical numbers without collectives (caption test sets are
    small: Flickr30k 5k captions, COCO 25k).
    """

    def __init__(self, ks: Sequence[int] = (1, 5, 10), *, prefix: str = "") -> None:
        self.ks = tuple(ks)
        self.prefix = prefix

    @torch.no_grad()
    def __call__(
        self, model: nn.Module, loader, *, device: torch.device | str = "cpu", dist: Any = None
    ) -> dict[str, Any]:
        dataset = loader.dataset
        sequential = DataLoader(
            dataset, batch_size=loader.batch_size or 64, shuffle=False, num_workers=getattr(loader, "num_workers", 0)
        )
        clip: Any = unwrap_model(model)  # an OpenCLIP model (encode_image / encode_text)
        was_training = clip.training
        clip.eval()
        try:
            img, txt = [], []
            for images, tokens in sequential:
                img.append(clip.encode_image(images.to(device), normalize=True).float().cpu())
                txt.append(clip.encode_text(tokens.to(device), normalize=True).float().cpu())
        finally:
            clip.train(was_training)
        image_ids = torch.as_tensor(getattr(dataset, "image_ids", range(len(dataset))))
        recalls = retrieval_recall(torch.cat(img), torch.cat(txt), image_ids, self.ks)
        return {f"{self.prefix}{k}": v for k, v in recalls.items()}
