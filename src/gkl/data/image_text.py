"""Image-text pairs for CLIP: caption CSV/TSV files, webdataset tar shards, captioned digits.

Every dataset yields ``(image, tokens)``: the image through an OpenCLIP transform
(``gkl.models.clip.image_transform``) and the caption through an OpenCLIP tokenizer
(one row of ``tokenizer([caption])``), so a default DataLoader collates batches of
``(images (B, 3, H, W), tokens (B, L))``.

* :class:`CaptionCsv`: a CSV/TSV file with a header; the image path column (default
  ``filepath``) and the caption column (default ``title``) are those of OpenCLIP's
  ``--csv-img-key`` / ``--csv-caption-key``. Relative paths are relative to the file's
  folder. Every image is checked to exist at construction.
* :func:`webdataset_pairs`: tar shards in the webdataset layout (``<key>.jpg`` /
  ``.png`` / ``.webp`` + ``<key>.txt`` per sample), split by node and worker.
* :class:`CaptionedDigits`: scikit-learn's 8 × 8 digits as RGB images with captions
  "a photo of the digit seven" etc. (several templates), the offline demo set.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from gkl.utils.errors import InputError

__all__ = [
    "CaptionCsv",
    "webdataset_pairs",
    "expand_shards",
    "CaptionedDigits",
    "DIGIT_NAMES",
    "DIGIT_TEMPLATES",
    "IMAGE_EXTENSIONS",
    "LabelledDigits",
]

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_TEMPLATES = (
    "a photo of the digit {}.",
    "a handwritten {}.",
    "a blurry photo of the number {}.",
    "an image of a {}.",
    "a low resolution photo of the digit {}.",
)

Tokenizer = Callable[[Sequence[str]], torch.Tensor]


def _open_rgb(path: str) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def caption_separator(path: Path, separator: str | None) -> str:
    """The column separator of caption file ``path``: ``separator``, else tab for ``.tsv``, comma otherwise."""
    if separator is not None:
        return separator
    return "\t" if path.suffix.lower() == ".tsv" else ","


class CaptionCsv(Dataset):
    """(image, tokens) pairs from a caption file with a header row (CSV, or TSV for ``.tsv``).

    ``image_ids[i]`` numbers the distinct image paths (several captions of one image share
    an id), which retrieval metrics use. A missing column, an empty file or a missing
    image is an InputError naming the file (and the row and path of the first missing image).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        transform: Callable[[Image.Image], Any],
        tokenizer: Tokenizer,
        image_key: str = "filepath",
        caption_key: str = "title",
        separator: str | None = None,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"caption file {str(self.path)!r} does not exist")
        separator = caption_separator(self.path, separator)
        base = Path(root) if root is not None else self.path.parent
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter=separator)
            columns = reader.fieldnames or []
            for key in (image_key, caption_key):
                if key not in columns:
                    raise InputError(
                        f"caption file {str(self.path)!r}: no column {key!r} "
                        f"(columns: {columns}, separator {separator!r})"
                    )
            rows = [(r[image_key], r[caption_key]) for r in reader]
        if not rows:
            raise InputError(f"caption file {str(self.path)!r} has no rows")
        self.samples: list[tuple[str, str]] = []
        for line, (image, caption) in enumerate(rows, start=2):
            full = Path(image) if Path(image).is_absolute() else base / image
            if not full.is_file():
                missing = sum(1 for im, _ in rows if not (Path(im) if Path(im).is_absolute() else base / im).is_file())
                raise InputError(
                    f"caption file {str(self.path)!r} line {line}: image {str(full)!r} does not exist "
                    f"({missing} of {len(rows)} images missing)"
                )
            self.samples.append((str(full), caption))
        ids: dict[str, int] = {}
        self.image_ids = [ids.setdefault(p, len(ids)) for p, _ in self.samples]
        self.captions = [c for _, c in self.samples]
        self.transform = transform
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path, caption = self.samples[index]
        return self.transform(_open_rgb(path)), self.tokenizer([caption])[0]


def expand_shards(urls: str | Sequence[str]) -> list[str]:
    """Shard list from ``"a/{000..009}.tar"`` brace notation, ``::``-joined lists, or a sequence.

    Local shards must exist (InputError naming the first missing one); URLs (``http://``,
    ``pipe:``, ``s3://``...) are passed through unchecked.
    """
    import braceexpand

    parts = urls.split("::") if isinstance(urls, str) else list(urls)
    shards = [s for part in parts for s in braceexpand.braceexpand(part)]
    if not shards:
        raise InputError(f"webdataset shards {urls!r}: no shard names")
    for shard in shards:
        if "://" not in shard and not shard.startswith("pipe:") and not os.path.isfile(shard):
            raise InputError(f"webdataset shard {shard!r} does not exist")
    return shards


def webdataset_pairs(
    urls: str | Sequence[str],
    *,
    transform: Callable[[Image.Image], Any],
    tokenizer: Tokenizer,
    shuffle: int = 0,
    seed: int = 0,
    resampled: bool = False,
    samples_per_epoch: int | None = None,
    batch_size: int | None = None,
):
    """An iterable dataset of (image, tokens) from webdataset tar shards.

    Shards are split over ranks (``split_by_node``) and DataLoader workers; ``shuffle``
    is the sample shuffle buffer (0: shard order). With ``resampled=True`` shards are
    drawn with replacement forever, and ``samples_per_epoch`` (global) with
    ``batch_size`` (per rank) sets the epoch length, as OpenCLIP's ``--train-num-samples``;
    the paper re-samples 15M pairs from DataComp-1B per epoch this way.
    """
    import webdataset as wds

    shards = expand_shards(urls)
    stages: list[Any] = [wds.ResampledShards(shards, seed=seed) if resampled else wds.SimpleShardList(shards)]
    if not resampled:
        stages += [wds.split_by_node, wds.split_by_worker]
    stages += [wds.tarfile_to_samples(handler=wds.warn_and_continue)]
    if shuffle:
        stages.append(wds.shuffle(shuffle, seed=seed))
    stages += [
        wds.decode("pilrgb", handler=wds.warn_and_continue),
        wds.to_tuple(";".join(IMAGE_EXTENSIONS), "txt"),
        wds.map_tuple(transform, lambda text: tokenizer([text])[0]),
    ]
    pipeline = wds.DataPipeline(*stages)
    if samples_per_epoch is not None:
        if batch_size is None:
            raise InputError("webdataset_pairs: samples_per_epoch needs batch_size")
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        pipeline = pipeline.with_epoch(max(1, samples_per_epoch // world))
    return pipeline


class CaptionedDigits(Dataset):
    """scikit-learn digits (8 × 8, fixed stratified split) as RGB images with class-name captions.

    Item i is ``(transform(image_i), tokens)`` of a caption ``template.format(DIGIT_NAMES[y_i])``
    whose template is drawn with torch's global RNG on each access (a caption augmentation;
    seeded DataLoader workers make it reproducible), or always ``templates[0]`` with
    ``random_caption=False``. ``labels`` holds the digit classes (for zero-shot evaluation).
    """

    def __init__(
        self,
        train: bool,
        *,
        transform: Callable[[Image.Image], Any],
        tokenizer: Tokenizer,
        templates: Sequence[str] = DIGIT_TEMPLATES,
        random_caption: bool = True,
    ) -> None:
        from gkl.data.bundled import digits_split

        inputs, labels = digits_split(train)
        pixels = (inputs.squeeze(1) * 255).round().to(torch.uint8).numpy()
        self.images = [Image.fromarray(p).convert("RGB") for p in pixels]
        self.labels = labels
        self.templates = tuple(templates)
        if not self.templates or any("{}" not in t for t in self.templates):
            raise InputError(f"CaptionedDigits: templates must be non-empty strings with '{{}}', got {templates!r}")
        self.transform = transform
        self.tokenizer = tokenizer
        self.random_caption = random_caption
        # (templates, 10, context) tokens of every (template, class) caption, computed once
        self.caption_tokens = torch.stack([tokenizer([t.format(name) for name in DIGIT_NAMES]) for t in self.templates])

    def __len__(self) -> int:
        return len(self.images)

    def caption(self, index: int, template: int = 0) -> str:
        return self.templates[template].format(DIGIT_NAMES[int(self.labels[index])])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        template = int(torch.randint(len(self.templates), ())) if self.random_caption else 0
        return self.transform(self.images[index]), self.caption_tokens[template, int(self.labels[index])]


class LabelledDigits(Dataset):
    """The same digits as (image, label) for zero-shot classification."""

    def __init__(self, train: bool, *, transform: Callable[[Image.Image], Any]) -> None:
        from gkl.data.bundled import digits_split

        inputs, labels = digits_split(train)
        pixels = (inputs.squeeze(1) * 255).round().to(torch.uint8).numpy()
        self.images = [Image.fromarray(p).convert("RGB") for p in pixels]
        self.labels = labels
        self.transform = transform
        self.classes = list(DIGIT_NAMES)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])
