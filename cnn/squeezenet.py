"""SqueezeNet (Iandola et al. 2016) with torchvision's keys: fire modules and a convolutional classifier.

A fire module squeezes with a 1x1 convolution, then expands with parallel 1x1 and 3x3
convolutions whose outputs are concatenated (all with bias and ReLU, no BatchNorm). The
classifier is a 1x1 convolution to the classes, ReLU and global average pool (no Linear layer).
Version 1.0: 1,248,424 parameters and 0.819 GMACs at 224x224; 1.1 (3x3 stem, earlier pools):
1,235,496 and 0.349.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .conv import Conv2d
from .layers import no_pretrained_weights


class Fire(nn.Module):
    """Squeeze (1x1 to ``squeeze_planes``), then 1x1 and 3x3 expansions, concatenated."""

    def __init__(self, inplanes: int, squeeze_planes: int, expand1x1_planes: int, expand3x3_planes: int):
        super().__init__()
        self.inplanes = inplanes
        self.squeeze = Conv2d(inplanes, squeeze_planes, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)


class SqueezeNet(nn.Module):
    """``features`` (stem conv, ReLU, max-pools and fire modules), ``classifier`` (dropout, 1x1 conv, ReLU, pool)."""

    def __init__(self, version: str = "1_0", num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.num_classes = num_classes
        if version == "1_0":
            stem = [Conv2d(3, 96, kernel_size=7, stride=2), nn.ReLU(inplace=True), _pool()]
            body = [Fire(96, 16, 64, 64), Fire(128, 16, 64, 64), Fire(128, 32, 128, 128), _pool(),
                    Fire(256, 32, 128, 128), Fire(256, 48, 192, 192), Fire(384, 48, 192, 192),
                    Fire(384, 64, 256, 256), _pool(), Fire(512, 64, 256, 256)]
        elif version == "1_1":
            stem = [Conv2d(3, 64, kernel_size=3, stride=2), nn.ReLU(inplace=True), _pool()]
            body = [Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), _pool(),
                    Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), _pool(),
                    Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256),
                    Fire(512, 64, 256, 256)]
        else:
            raise ValueError(f"Unsupported SqueezeNet version {version}: 1_0 or 1_1 expected")
        self.features = nn.Sequential(*stem, *body)
        final_conv = Conv2d(512, num_classes, kernel_size=1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d((1, 1)))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


def squeezenet1_0(*, weights=None, progress: bool = True, **kwargs) -> SqueezeNet:
    no_pretrained_weights(weights, "squeezenet1_0")
    return SqueezeNet("1_0", **kwargs)


def squeezenet1_1(*, weights=None, progress: bool = True, **kwargs) -> SqueezeNet:
    no_pretrained_weights(weights, "squeezenet1_1")
    return SqueezeNet("1_1", **kwargs)
