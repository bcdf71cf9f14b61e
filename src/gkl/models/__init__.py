"""Model registry: ``create_model(name, num_classes)`` for every architecture the project uses.

Families (one module each): the CIFAR distillation zoo (:mod:`gkl.models.cifar`),
ImageNet models (:mod:`gkl.models.imagenet`), robust WideResNets for adversarial
training (:mod:`gkl.models.robust_wrn`) and small models for the bundled offline
data (:mod:`gkl.models.small`). Importing this package registers all of them.
"""

# Importing the family modules registers their models.
from gkl.models import cifar, imagenet, robust_wrn, segmentation, small, vit  # noqa: F401
from gkl.models.checkpoint import load_run_weights, load_weights
from gkl.models.registry import (
    INPUT_SHAPES,
    InputKind,
    ModelEntry,
    create_model,
    get_model_entry,
    list_models,
    model_input_kind,
    model_input_shape,
    register_model,
)
from gkl.models.vit_pretrained import load_usb_pretrained

__all__ = [
    "INPUT_SHAPES",
    "InputKind",
    "ModelEntry",
    "create_model",
    "get_model_entry",
    "list_models",
    "load_run_weights",
    "load_usb_pretrained",
    "load_weights",
    "model_input_kind",
    "model_input_shape",
    "register_model",
]
