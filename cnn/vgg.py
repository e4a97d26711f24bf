"""VGG (Simonyan & Zisserman 2014): stacks of 3x3 convolutions and max-pools, three linear layers.

Configurations A, B, D, E are VGG-11, -13, -16, -19; ``_bn`` adds BatchNorm after each conv.
Keys and shapes are torchvision's (``features.N``, ``classifier.N``).
"""
from __future__ import annotations

from typing import List, Sequence, Union

import torch
import torch.nn as nn

from .conv import Conv2d
from . import layers
from .layers import no_pretrained_weights

# Output channels of each 3x3 conv; "M" is a 2x2 max-pool.
CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_features(config: Sequence[Union[int, str]], batch_norm: bool = False) -> nn.Sequential:
    modules: List[nn.Module] = []
    in_channels = 3
    for item in config:
        if item == "M":
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        modules.append(Conv2d(in_channels, item, kernel_size=3, padding=1))
        if batch_norm:
            modules.append(nn.BatchNorm2d(item))
        modules.append(nn.ReLU(inplace=True))
        in_channels = item
    return nn.Sequential(*modules)


class VGG(nn.Module):
    """``features`` (convs), adaptive average pool to 7x7, ``classifier`` (4096-4096-num_classes, dropout)."""

    def __init__(self, features: nn.Module, num_classes: int = 1000, init_weights: bool = True,
                 dropout: float = 0.5):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        if init_weights:
            layers.init_weights(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _vgg(name: str, batch_norm: bool, weights, kwargs) -> VGG:
    no_pretrained_weights(weights, name + ("_bn" if batch_norm else ""))
    return VGG(make_features(CONFIGS[name], batch_norm), **kwargs)


def vgg11(*, weights=None, progress: bool = True, **kwargs) -> VGG:
    return _vgg("vgg11", False, weights, kwargs)


def vgg11_bn(*, weights=None, progress: bool = True, **kwargs) -> VGG:
    return _vgg("vgg11", True, weights, kwargs)


def vgg13(*, weights=None, progress: bool = True, **kwargs) -> VGG:
    return _vgg("vgg13", False, weights, kwargs)


def vgg13_bn(*, weights=None, progress: bool = True, **kwargs) -> VGG:
    return _vgg("vgg13", True, weights, kwargs)


def vgg16(*, weights=None, progress: bool = True, **kwargs) -> VGG:
    return _vgg("vgg16", False, weights, kwargs)


def vgg16_bn(*, weights=None, progress: bool = True, **kwargs) -> VGG:
    return _vgg("vgg16", True, weights, kwargs)


def vgg19(*, weights=None, progress: bool = True, **kwargs) -> VGG:
    return _vgg("vgg19", False, weights, kwargs)


def vgg19_bn(*, weights=None, progress: bool = True, **kwargs) -> VGG:
    return _vgg("vgg19", True, weights, kwargs)
