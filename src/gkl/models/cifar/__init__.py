"""The CIFAR distillation zoo; importing this package registers its 28 architectures."""

from gkl.models.cifar import mobilenetv2, resnet, resnet_large, shufflenetv1, shufflenetv2, vgg, wrn

__all__ = ["mobilenetv2", "resnet", "resnet_large", "shufflenetv1", "shufflenetv2", "vgg", "wrn"]
