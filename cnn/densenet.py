"""DenseNet-BC (Huang et al. 2017) with torchvision's keys: every layer sees all earlier feature maps.

A dense layer is pre-activation, BN -> ReLU -> 1x1 conv (to ``bn_size`` x ``growth_rate``) ->
BN -> ReLU -> 3x3 conv (to ``growth_rate``), applied to the concatenation of the block's input
and every earlier layer's output; transitions (BN -> ReLU -> 1x1 conv halving the channels ->
2x2 average pool) join the four blocks. At 224x224: DenseNet-121 7,978,856 parameters and 2.834
GMACs, -161 28,681,000 / 7.728, -169 14,149,480 / 3.360, -201 20,013,928 / 4.291.

``cnn.fuse`` folds only the BatchNorms that follow a convolution (the stem's norm0, and norm2
after each 1x1 bottleneck, with their ReLUs); the pre-activation ones (each layer's norm1, the
transitions' norm, norm5) are followed by a ReLU before their convolution, so no fold into
that convolution is exact, and they stay as they are.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import List, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint

from .conv import Conv2d
from .layers import no_pretrained_weights

# Old torchvision checkpoints (the published DenseNet files) name a dense layer's modules
# "norm.1", "conv.2", ...; these keys load as "norm1", "conv2".
_LEGACY_KEY = re.compile(r"^(norm|relu|conv)\.([12])\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv bottleneck then BN-ReLU-3x3 conv: ``growth_rate`` new channels.

    Takes the list of earlier feature maps (or one tensor). ``memory_efficient`` recomputes the
    concatenation and bottleneck in the backward pass instead of storing them (checkpointing).
    """

    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int, drop_rate: float,
                 memory_efficient: bool = False):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = Conv2d(num_input_features, bn_size * growth_rate, kernel_size=1, stride=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def bottleneck(self, *features: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))

    def forward(self, features: Union[torch.Tensor, List[torch.Tensor]]) -> torch.Tensor:
        if not isinstance(features, (list, tuple)):
            features = [features]
        if self.memory_efficient and any(t.requires_grad for t in features):
            out = checkpoint.checkpoint(self.bottleneck, *features, use_reentrant=False)
        else:
            out = self.bottleneck(*features)
        out = self.conv2(self.relu2(self.norm2(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key in [k for k in state_dict if k.startswith(prefix)]:
            match = _LEGACY_KEY.match(key[len(prefix):])
            if match:
                state_dict[f"{prefix}{match[1]}{match[2]}.{match[3]}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers (``denselayer1``, ...); returns the input and all their outputs, concatenated."""

    _version = 2

    def __init__(self, num_layers: int, num_input_features: int, bn_size: int, growth_rate: int,
                 drop_rate: float, memory_efficient: bool = False):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(
                num_input_features + i * growth_rate, growth_rate, bn_size, drop_rate, memory_efficient))

    def forward(self, init_features: torch.Tensor) -> torch.Tensor:
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN -> ReLU -> 1x1 conv -> 2x2 average pool, between dense blocks."""

    def __init__(self, num_input_features: int, num_output_features: int):
        super().__init__(OrderedDict([
            ("norm", nn.BatchNorm2d(num_input_features)),
            ("relu", nn.ReLU(inplace=True)),
            ("conv", Conv2d(num_input_features, num_output_features, kernel_size=1, stride=1, bias=False)),
            ("pool", nn.AvgPool2d(kernel_size=2, stride=2)),
        ]))


class DenseNet(nn.Module):
    """``features``: stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool), dense blocks and transitions, norm5;
    then ReLU, global average pool and the linear ``classifier``.

    ``growth_rate`` is the paper's k, ``block_config`` the layers per block, ``bn_size`` the
    bottleneck width in units of k; arguments as torchvision's.
    """

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        drop_rate: float = 0,
        num_classes: int = 1000,
        memory_efficient: bool = False,
    ):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", Conv2d(3, num_init_features, kernel_size=7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        ]))
        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(
                num_layers, channels, bn_size, growth_rate, drop_rate, memory_efficient))
            channels += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", Transition(channels, channels // 2))
                channels //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(F.relu(self.features(x), inplace=True), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def _densenet(name: str, growth_rate: int, block_config: Sequence[int], num_init_features: int, weights,
              kwargs: dict) -> DenseNet:
    no_pretrained_weights(weights, name)
    return DenseNet(growth_rate, block_config, num_init_features, **kwargs)


def densenet121(*, weights=None, progress: bool = True, **kwargs) -> DenseNet:
    return _densenet("densenet121", 32, (6, 12, 24, 16), 64, weights, kwargs)


def densenet161(*, weights=None, progress: bool = True, **kwargs) -> DenseNet:
    return _densenet("densenet161", 48, (6, 12, 36, 24), 96, weights, kwargs)


def densenet169(*, weights=None, progress: bool = True, **kwargs) -> DenseNet:
    return _densenet("densenet169", 32, (6, 12, 32, 32), 64, weights, kwargs)


def densenet201(*, weights=None, progress: bool = True, **kwargs) -> DenseNet:
    return _densenet("densenet201", 32, (6, 12, 48, 32), 64, weights, kwargs)
