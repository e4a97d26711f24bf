"""EfficientNet B0-B7 (Tan & Le 2019) with torchvision's keys: MBConv blocks, compound scaling.

An MBConv block is a 1x1 expansion (x6, SiLU), a 3x3 or 5x5 depthwise convolution (SiLU),
squeeze-and-excitation (squeeze to a quarter of the block's input channels, SiLU, sigmoid gate)
and a linear 1x1 projection; stochastic depth on the residual branch (the identity in eval).
B0 is the architecture search's result (the paper's Table 1); B1-B7 scale its width and depth
by (1.0, 1.1), (1.1, 1.2), (1.2, 1.4), (1.4, 1.8), (1.6, 2.2), (1.8, 2.6), (2.0, 3.1) and are
meant for 240 ... 600 pixel inputs. B0: 5,288,548 parameters and 0.386 GMACs at 224x224.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn as nn

from .layers import (
    ConvNormActivation, SqueezeExcitation, StochasticDepth, make_divisible, no_pretrained_weights,
)

NormLayer = Callable[[int], nn.Module]


@dataclass
class MBConvConfig:
    """One stage of the table: (expansion, kernel, first stride, in, out, layers), scaled by width / depth."""

    expand_ratio: float
    kernel: int
    stride: int
    input_channels: int
    out_channels: int
    num_layers: int
    width_mult: float = 1.0
    depth_mult: float = 1.0

    def __post_init__(self):
        self.input_channels = self.adjust_channels(self.input_channels, self.width_mult)
        self.out_channels = self.adjust_channels(self.out_channels, self.width_mult)
        self.num_layers = int(math.ceil(self.num_layers * self.depth_mult))

    @staticmethod
    def adjust_channels(channels: float, width_mult: float, min_value: Optional[int] = None) -> int:
        return make_divisible(channels * width_mult, 8, min_value)


class MBConv(nn.Module):
    """[1x1 expand,] kxk depthwise, squeeze-excitation, 1x1 linear projection (``block``); the input
    is added back through stochastic depth when the shapes allow."""

    def __init__(self, cnf: MBConvConfig, stochastic_depth_prob: float, norm_layer: NormLayer,
                 se_layer: Callable[..., nn.Module] = SqueezeExcitation):
        super().__init__()
        if not 1 <= cnf.stride <= 2:
            raise ValueError("illegal stride value")
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        expanded = cnf.adjust_channels(cnf.input_channels, cnf.expand_ratio)
        layers: List[nn.Module] = []
        if expanded != cnf.input_channels:
            layers.append(ConvNormActivation(cnf.input_channels, expanded, kernel_size=1, norm_layer=norm_layer,
                                             activation_layer=nn.SiLU))
        layers += [
            ConvNormActivation(expanded, expanded, kernel_size=cnf.kernel, stride=cnf.stride, groups=expanded,
                               norm_layer=norm_layer, activation_layer=nn.SiLU),
            se_layer(expanded, max(1, cnf.input_channels // 4), activation=nn.SiLU),
            ConvNormActivation(expanded, cnf.out_channels, kernel_size=1, norm_layer=norm_layer,
                               activation_layer=None),
        ]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")
        self.out_channels = cnf.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return self.stochastic_depth(out) + x if self.use_res_connect else out


class EfficientNet(nn.Module):
    """3x3/2 SiLU stem, the MBConv stages (``features.1`` ... ``features.7``), 1x1 to 4x channels
    (or ``last_channel``), pooled dropout + linear ``classifier``.

    The stochastic depth probability grows linearly from 0 to ``stochastic_depth_prob`` over the blocks.
    """

    def __init__(
        self,
        inverted_residual_setting: Sequence[MBConvConfig],
        dropout: float,
        stochastic_depth_prob: float = 0.2,
        num_classes: int = 1000,
        norm_layer: Optional[NormLayer] = None,
        last_channel: Optional[int] = None,
    ):
        super().__init__()
        if not inverted_residual_setting:
            raise ValueError("The inverted_residual_setting should not be empty")
        if not all(isinstance(s, MBConvConfig) for s in inverted_residual_setting):
            raise TypeError("The inverted_residual_setting should be List[MBConvConfig]")
        norm_layer = norm_layer or nn.BatchNorm2d
        layers: List[nn.Module] = [ConvNormActivation(3, inverted_residual_setting[0].input_channels, kernel_size=3,
                                                      stride=2, norm_layer=norm_layer, activation_layer=nn.SiLU)]
        total_blocks = sum(cnf.num_layers for cnf in inverted_residual_setting)
        block_id = 0
        for cnf in inverted_residual_setting:
            stage: List[nn.Module] = []
            for i in range(cnf.num_layers):
                block_cnf = copy.copy(cnf)
                if i > 0:
                    block_cnf.input_channels, block_cnf.stride = block_cnf.out_channels, 1
                stage.append(MBConv(block_cnf, stochastic_depth_prob * block_id / total_blocks, norm_layer))
                block_id += 1
            layers.append(nn.Sequential(*stage))
        last_in = inverted_residual_setting[-1].out_channels
        last_out = last_channel if last_channel is not None else 4 * last_in
        layers.append(ConvNormActivation(last_in, last_out, kernel_size=1, norm_layer=norm_layer,
                                         activation_layer=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(last_out, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def efficientnet_config(width_mult: float, depth_mult: float) -> List[MBConvConfig]:
    """The seven stages of B0 (the paper's Table 1), scaled."""
    stage = partial(MBConvConfig, width_mult=width_mult, depth_mult=depth_mult)
    return [
        stage(1, 3, 1, 32, 16, 1),
        stage(6, 3, 2, 16, 24, 2),
        stage(6, 5, 2, 24, 40, 2),
        stage(6, 3, 2, 40, 80, 3),
        stage(6, 5, 1, 80, 112, 3),
        stage(6, 5, 2, 112, 192, 4),
        stage(6, 3, 1, 192, 320, 1),
    ]


# name: (width multiplier, depth multiplier, default dropout); B5-B7 use the TF-ported BN settings.
SCALING = {
    "efficientnet_b0": (1.0, 1.0, 0.2),
    "efficientnet_b1": (1.0, 1.1, 0.2),
    "efficientnet_b2": (1.1, 1.2, 0.3),
    "efficientnet_b3": (1.2, 1.4, 0.3),
    "efficientnet_b4": (1.4, 1.8, 0.4),
    "efficientnet_b5": (1.6, 2.2, 0.4),
    "efficientnet_b6": (1.8, 2.6, 0.5),
    "efficientnet_b7": (2.0, 3.1, 0.5),
}
TF_BATCH_NORM = ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7")


def _efficientnet(name: str, weights, kwargs: dict) -> EfficientNet:
    no_pretrained_weights(weights, name)
    width, depth, dropout = SCALING[name]
    if name in TF_BATCH_NORM:
        kwargs.setdefault("norm_layer", partial(nn.BatchNorm2d, eps=0.001, momentum=0.01))
    return EfficientNet(efficientnet_config(width, depth), kwargs.pop("dropout", dropout), **kwargs)


def efficientnet_b0(*, weights=None, progress: bool = True, **kwargs) -> EfficientNet:
    return _efficientnet("efficientnet_b0", weights, kwargs)


def efficientnet_b1(*, weights=None, progress: bool = True, **kwargs) -> EfficientNet:
    return _efficientnet("efficientnet_b1", weights, kwargs)


def efficientnet_b2(*, weights=None, progress: bool = True, **kwargs) -> EfficientNet:
    return _efficientnet("efficientnet_b2", weights, kwargs)


def efficientnet_b3(*, weights=None, progress: bool = True, **kwargs) -> EfficientNet:
    return _efficientnet("efficientnet_b3", weights, kwargs)


def efficientnet_b4(*, weights=None, progress: bool = True, **kwargs) -> EfficientNet:
    return _efficientnet("efficientnet_b4", weights, kwargs)


def efficientnet_b5(*, weights=None, progress: bool = True, **kwargs) -> EfficientNet:
    return _efficientnet("efficientnet_b5", weights, kwargs)


def efficientnet_b6(*, weights=None, progress: bool = True, **kwargs) -> EfficientNet:
    return _efficientnet("efficientnet_b6", weights, kwargs)


def efficientnet_b7(*, weights=None, progress: bool = True, **kwargs) -> EfficientNet:
    return _efficientnet("efficientnet_b7", weights, kwargs)
