"""Zero-shot classification of a CLIP model from class names × prompt templates.

The classifier is OpenCLIP's: for each class, the mean of the normalised text embeddings
of ``template.format(classname)`` over the templates, normalised again; an image's
class scores are the cosine similarities of its normalised embedding to those columns.
ImageNet's class names and the OpenAI / simple templates are OpenCLIP's
(``open_clip.zero_shot_metadata``). :func:`folder_classnames` maps the folders of any
ImageFolder-layout set to names: ImageNet wnids (val, -Sketch, -R, -A), class indices
0..999 (ImageNet-V2), or the folder names themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import torch
from torch import nn

from gkl.utils.distributed import all_reduce_sum
from gkl.utils.errors import InputError
from gkl.utils.modules import unwrap_model

__all__ = [
    "zero_shot_classifier",
    "ZeroShotEvaluator",
    "label_rank",
    "folder_classnames",
    "imagenet_templates",
    "IMAGENET_CLASSNAMES",
]

from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

_WNID = re.compile(r"^n\d{8}$")


def imagenet_templates(kind: str = "openai") -> tuple[Callable[[str], str], ...]:
    """OpenCLIP's ImageNet prompt templates: ``"openai"`` (80) or ``"simple"`` (7)."""
    if kind == "openai":
        return tuple(OPENAI_IMAGENET_TEMPLATES)
    if kind == "simple":
        return tuple(SIMPLE_IMAGENET_TEMPLATES)
    raise InputError(f"zero-shot templates: expected 'openai' or 'simple', got {kind!r}")


def _imagenet_wnids() -> list[str]:
    text = resources.files("timm.data._info").joinpath("imagenet_synsets.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def folder_classnames(classes: Sequence[str]) -> list[str]:
    """Class names for an ImageFolder's (sorted) folder names.

    All ImageNet wnids -> OpenCLIP's ImageNet names of those synsets (any subset, so
    ImageNet-R's 200 classes work); all integers in 0..999 -> ``IMAGENET_CLASSNAMES[int]``
    (ImageNet-V2's layout); otherwise the folder names with ``_`` read as spaces.
    """
    classes = list(classes)
    if classes and all(_WNID.match(c) for c in classes):
        index = {w: i for i, w in enumerate(_imagenet_wnids())}
        unknown = [c for c in classes if c not in index]
        if unknown:
            raise InputError(f"zero-shot: folders {unknown[:5]} are not ImageNet-1k wnids")
        return [IMAGENET_CLASSNAMES[index[c]] for c in classes]
    if classes and all(c.isdigit() and int(c) < 1000 for c in classes):
        return [IMAGENET_CLASSNAMES[int(c)] for c in classes]
    return [c.replace("_", " ") for c in classes]


def _format(template: str | Callable[[str], str], name: str) -> str:
    return template(name) if callable(template) else template.format(name)


@torch.no_grad()
def zero_shot_classifier(
    model: nn.Module,
    tokenizer: Callable[[Sequence[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str | Callable[[str], str]],
    *,
    device: torch.device | str = "cpu",
    classes_per_batch: int = 32,
) -> torch.Tensor:
    """(embed_dim, num_classes) matrix of normalised mean prompt embeddings (OpenCLIP's recipe)."""
    if not classnames or not templates:
        raise InputError("zero-shot classifier: needs at least one class name and one template")
    clip: Any = unwrap_model(model)  # an OpenCLIP model (encode_text / encode_image)
    columns = []
    for start in range(0, len(classnames), classes_per_batch):
        names = classnames[start : start + classes_per_batch]
        texts = [_format(t, name) for name in names for t in templates]
        emb = clip.encode_text(tokenizer(texts).to(device), normalize=True)
        emb = emb.view(len(names), len(templates), -1).mean(dim=1)
        columns.append(emb / emb.norm(dim=-1, keepdim=True))
    return torch.cat(columns).T.contiguous()


def label_rank(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """0-based rank of each example's label among its class scores (N, C), ties broken towards
    the lower class index (as ``argmax``): the number of classes scored higher, plus the classes
    of a lower index scored equal. A top-k hit is ``rank < k``; ``torch.topk`` leaves ties unordered."""
    own = scores.gather(1, labels[:, None])
    lower = torch.arange(scores.shape[1], device=scores.device)[None, :] < labels[:, None]
    return (scores > own).sum(dim=1) + ((scores == own) & lower).sum(dim=1)


class ZeroShotEvaluator:
    """Evaluator protocol: ``evaluator(model, loader, *, device, dist) -> {"zeroshot_top1", ...}``.

    ``loader`` yields (images, labels) with labels indexing ``classnames``. The text
    classifier is rebuilt on every call (the model changes during training). Counts are
    summed over ranks; a DistributedSampler that pads the last batch counts the
    repeated images twice (evaluate on one process for exact numbers on odd sizes).
    """

    def __init__(
        self,
        classnames: Sequence[str],
        templates: Sequence[str | Callable[[str], str]],
        tokenizer: Callable[[Sequence[str]], torch.Tensor],
        *,
        topk: Sequence[int] = (1, 5),
        prefix: str = "zeroshot_",
    ) -> None:
        self.classnames = list(classnames)
        self.templates = list(templates)
        self.tokenizer = tokenizer
        self.topk = tuple(k for k in topk if k <= len(self.classnames))
        self.prefix = prefix

    @torch.no_grad()
    def __call__(
        self, model: nn.Module, loader, *, device: torch.device | str = "cpu", dist: Any = None
    ) -> dict[str, Any]:
        clip: Any = unwrap_model(model)  # an OpenCLIP model
        was_training = clip.training
        clip.eval()
        try:
            classifier = zero_shot_classifier(clip, self.tokenizer, self.classnames, self.templates, device=device)
            correct = torch.zeros(len(self.topk), dtype=torch.float64, device=device)
            count = torch.zeros((), dtype=torch.float64, device=device)
            for images, labels in loader:
                images, labels = images.to(device), torch.as_tensor(labels).to(device)
                scores = clip.encode_image(images, normalize=True).float() @ classifier.float()
                rank = label_rank(scores, labels)
                for i, k in enumerate(self.topk):
                    correct[i] += (rank < k).sum()
                count += labels.numel()
            all_reduce_sum(correct, dist)
            all_reduce_sum(count, dist)
        finally:
            clip.train(was_training)
        total = max(float(count), 1.0)
        out: dict[str, Any] = {
            f"{self.prefix}top{k}": 100.0 * float(correct[i]) / total for i, k in enumerate(self.topk)
        }
        out[f"{self.prefix}count"] = int(count)
        return out
