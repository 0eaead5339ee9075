"""Model zoo: the CIFAR/MNIST architectures used in the pruning literature.

Names (``build(name, **kwargs)`` or ``prunekit.models.build_model("zoo:<name>", ...)``):

* ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19``, ``vgg(depth=...)`` — CIFAR VGG with BN
  (Network Slimming, Liu et al. 2017);
* ``preresnet164``, ``preresnet(depth=9n+2)`` — pre-activation bottleneck ResNet;
* ``densenet40``, ``densenet(depth=3n+4, growth_rate=k)`` — CIFAR DenseNet;
* ``lenet_300_100``, ``lenet5`` — MNIST networks of Han et al. 2015;
* ``digits_cnn`` — a small CNN for 8×8 digits (the demo model);
* Intel Distiller's zoo under its own names (:mod:`prunekit.zoo.distiller_cifar`,
  :mod:`prunekit.zoo.distiller_imagenet`): ``resnet20_cifar`` … ``resnet110_cifar``,
  ``preact_resnet20_cifar`` … (and ``…_conv_ds``), ``plain20_cifar``, ``vgg11_cifar`` …
  ``vgg19_bn_cifar``, ``mobilenet`` (v1, and ``mobilenet_025/050/075``), ``alexnet_bn``;
* ``word_lm`` — PyTorch's word-level LSTM/GRU language model (:mod:`prunekit.zoo.word_lm`).

Every model takes ``num_classes``, ``in_channels`` and ``cfg`` (the per-layer widths, so a
pruned architecture can be rebuilt), uses plain torch modules only, and never hard-codes a
channel count in ``forward``.

Example:
    >>> model = build("vgg19", num_classes=100)
    >>> "preresnet164" in list_models()
    True
"""

from __future__ import annotations

from prunekit.zoo import (
    densenet,
    distiller_cifar,
    distiller_imagenet,
    lenet,
    preresnet,
    small,
    vgg,
    word_lm,
)
from prunekit.zoo._registry import MODELS, build, list_models, register_model, slimming_init
from prunekit.zoo.densenet import DenseNet, densenet_cfg
from prunekit.zoo.lenet import LeNet5, LeNet300100
from prunekit.zoo.preresnet import PreResNet, preresnet_cfg
from prunekit.zoo.vgg import VGG_CFGS, CifarVGG

__all__ = [
    "MODELS",
    "VGG_CFGS",
    "CifarVGG",
    "DenseNet",
    "LeNet5",
    "LeNet300100",
    "PreResNet",
    "build",
    "densenet",
    "densenet_cfg",
    "distiller_cifar",
    "distiller_imagenet",
    "lenet",
    "list_models",
    "preresnet",
    "preresnet_cfg",
    "register_model",
    "slimming_init",
    "small",
    "vgg",
    "word_lm",
]
