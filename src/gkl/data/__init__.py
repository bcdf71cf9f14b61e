"""Datasets and data loading: registry, CIFAR, ImageNet(-LT), ImageNet-R / -Sketch (test only), bundled offline sets,
generated images, recipe transforms and the per-image / in-memory loaders."""

from . import bundled, cifar, imagenet, imagenet_lt, imagenet_shift, segmentation  # noqa: F401  (register the datasets)
from .base import InfoDataset, MemorySplit
from .generated import GeneratedImages
from .imagenet_lt import build_imagenet_lt_split
from .in_memory import InMemoryLoader, random_crop_flip
from .label_noise import LabelNoise
from .loaders import build_loader
from .registry import DatasetInfo, build_dataset, dataset_info, list_datasets
from .splits import split_dataset, stratified_split

__all__ = [
    "DatasetInfo",
    "GeneratedImages",
    "InMemoryLoader",
    "InfoDataset",
    "LabelNoise",
    "MemorySplit",
    "build_dataset",
    "build_imagenet_lt_split",
    "build_loader",
    "dataset_info",
    "list_datasets",
    "random_crop_flip",
    "split_dataset",
    "stratified_split",
]
