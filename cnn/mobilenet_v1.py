"""MobileNet v1 (Howard et al. 2017): a 3x3 stem and 13 depthwise-separable blocks; torchvision has none.

At 224x224 and 1000 classes: 4,231,976 parameters and 569 M multiply-adds, the paper's 4.2 M / 569 M.
Laid out like torchvision's MobileNetV2 (``features``, ``classifier``) so the same tools apply.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import ConvNormActivation, init_weights, make_divisible, no_pretrained_weights

NormLayer = Callable[[int], nn.Module]

# (output channels, stride) of each depthwise-separable block, the paper's Table 1.
DEFAULT_SETTING = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                   (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv + BN + ReLU (``depthwise``), then 1x1 pointwise conv + BN + ReLU (``pointwise``)."""

    def __init__(self, inp: int, oup: int, stride: int, norm_layer: Optional[NormLayer] = None):
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        self.depthwise = ConvNormActivation(inp, inp, 3, stride, groups=inp, norm_layer=norm_layer)
        self.pointwise = ConvNormActivation(inp, oup, 1, norm_layer=norm_layer)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class MobileNetV1(nn.Module):
    """``features`` (stem + 13 blocks), global average pool, ``classifier`` (dropout, linear).

    ``width_mult`` is the paper's width multiplier alpha (channels rounded to multiples of
    ``round_nearest``); the resolution multiplier is just the input size.
    """

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, round_nearest: int = 8,
                 norm_layer: Optional[NormLayer] = None, dropout: float = 0.2):
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        channels = make_divisible(32 * width_mult, round_nearest)
        features: List[nn.Module] = [ConvNormActivation(3, channels, stride=2, norm_layer=norm_layer)]
        for out, stride in DEFAULT_SETTING:
            out = make_divisible(out * width_mult, round_nearest)
            features.append(DepthwiseSeparable(channels, out, stride, norm_layer))
            channels = out
        self.features = nn.Sequential(*features)
        self.last_channel = channels
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(channels, num_classes))
        init_weights(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v1(*, weights=None, progress: bool = True, **kwargs) -> MobileNetV1:
    no_pretrained_weights(weights, "mobilenet_v1")
    return MobileNetV1(**kwargs)
