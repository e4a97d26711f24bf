"""MnasNet-B1 (Tan et al. 2019) with torchvision's keys: an architecture found by mobile-latency-aware search.

A separable stem, then six stacks of inverted residuals (1x1 expansion x3 or x6, 3x3 or 5x5
depthwise, linear 1x1 projection, all ReLU + BN) and a 1x1 to 1280. ``alpha`` scales every depth
(rounded to multiples of 8, preferring up). 1.0: 4,383,312 parameters and 0.314 GMACs at 224x224.
"""
from __future__ import annotations

import warnings
from typing import List

import torch
import torch.nn as nn

from .conv import Conv2d
from .layers import make_divisible, no_pretrained_weights

# The paper's TensorFlow momentum 0.9997, as PyTorch counts momentum.
_BN_MOMENTUM = 1 - 0.9997


class MNASInvertedResidual(nn.Module):
    """1x1 expand (ReLU), kxk depthwise (ReLU), 1x1 linear projection (``layers``); residual when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, expansion_factor: int,
                 bn_momentum: float = 0.1):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2 instead of {stride}")
        if kernel_size not in (3, 5):
            raise ValueError(f"kernel_size should be 3 or 5 instead of {kernel_size}")
        mid = in_ch * expansion_factor
        self.apply_residual = in_ch == out_ch and stride == 1
        self.layers = nn.Sequential(
            Conv2d(in_ch, mid, 1, bias=False),
            nn.BatchNorm2d(mid, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            Conv2d(mid, mid, kernel_size, padding=kernel_size // 2, stride=stride, groups=mid, bias=False),
            nn.BatchNorm2d(mid, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            Conv2d(mid, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch, momentum=bn_momentum),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) + x if self.apply_residual else self.layers(x)


def stack(in_ch: int, out_ch: int, kernel_size: int, stride: int, exp_factor: int, repeats: int,
          bn_momentum: float) -> nn.Sequential:
    """``repeats`` inverted residuals; only the first changes width and stride."""
    if repeats < 1:
        raise ValueError(f"repeats should be >= 1, instead got {repeats}")
    blocks = [MNASInvertedResidual(in_ch, out_ch, kernel_size, stride, exp_factor, bn_momentum)]
    blocks += [MNASInvertedResidual(out_ch, out_ch, kernel_size, 1, exp_factor, bn_momentum)
               for _ in range(1, repeats)]
    return nn.Sequential(*blocks)


def depths(alpha: float) -> List[int]:
    """The eight depths scaled by ``alpha``: multiples of 8, rounded up unless within 10% (MobileNet's rule)."""
    return [make_divisible(d * alpha, 8) for d in (32, 16, 24, 40, 80, 96, 192, 320)]


def _stem(stem_channels: int, separable_channels: int) -> List[nn.Module]:
    """3x3/2 conv, then a depthwise-separable pair with no skip: the first 8 entries of ``layers``."""
    return [
        Conv2d(3, stem_channels, 3, padding=1, stride=2, bias=False),
        nn.BatchNorm2d(stem_channels, momentum=_BN_MOMENTUM),
        nn.ReLU(inplace=True),
        Conv2d(stem_channels, stem_channels, 3, padding=1, stride=1, groups=stem_channels, bias=False),
        nn.BatchNorm2d(stem_channels, momentum=_BN_MOMENTUM),
        nn.ReLU(inplace=True),
        Conv2d(stem_channels, separable_channels, 1, padding=0, stride=1, bias=False),
        nn.BatchNorm2d(separable_channels, momentum=_BN_MOMENTUM),
    ]


class MNASNet(nn.Module):
    """``layers`` (stem, six stacks, 1x1 to 1280 + BN + ReLU), global mean, ``classifier`` (dropout, linear)."""

    # Version 2 scales the stem with alpha; a version-1 checkpoint (fixed 32/16 stem) still loads.
    _version = 2

    def __init__(self, alpha: float, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        if alpha <= 0.0:
            raise ValueError(f"alpha should be greater than 0.0 instead of {alpha}")
        self.alpha = alpha
        self.num_classes = num_classes
        d = depths(alpha)
        layers = _stem(d[0], d[1]) + [
            stack(d[1], d[2], 3, 2, 3, 3, _BN_MOMENTUM),
            stack(d[2], d[3], 5, 2, 3, 3, _BN_MOMENTUM),
            stack(d[3], d[4], 5, 2, 6, 3, _BN_MOMENTUM),
            stack(d[4], d[5], 3, 1, 6, 2, _BN_MOMENTUM),
            stack(d[5], d[6], 5, 2, 6, 4, _BN_MOMENTUM),
            stack(d[6], d[7], 3, 1, 6, 1, _BN_MOMENTUM),
            Conv2d(d[7], 1280, 1, padding=0, stride=1, bias=False),
            nn.BatchNorm2d(1280, momentum=_BN_MOMENTUM),
            nn.ReLU(inplace=True),
        ]
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(1280, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, mode="fan_out", nonlinearity="sigmoid")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layers(x).mean([2, 3]))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        version = local_metadata.get("version", None)
        if version not in (1, 2):
            raise ValueError(f"version should be set to 1 or 2 instead of {version}")
        if version == 1 and self.alpha != 1.0:
            # Rebuild the version-1 stem (and the first stack, which reads its output) to load the old layout.
            d = depths(self.alpha)
            for i, layer in enumerate(_stem(32, 16) + [stack(16, d[2], 3, 2, 3, 3, _BN_MOMENTUM)]):
                self.layers[i] = layer
            self._version = 1
            warnings.warn(f"MNASNet: loading a version-1 checkpoint (fixed 32/16-channel stem) into alpha="
                          f"{self.alpha}; the model now has that stem and keeps working as saved", UserWarning)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


def _mnasnet(name: str, alpha: float, weights, kwargs: dict) -> MNASNet:
    no_pretrained_weights(weights, name)
    return MNASNet(alpha, **kwargs)


def mnasnet0_5(*, weights=None, progress: bool = True, **kwargs) -> MNASNet:
    return _mnasnet("mnasnet0_5", 0.5, weights, kwargs)


def mnasnet0_75(*, weights=None, progress: bool = True, **kwargs) -> MNASNet:
    return _mnasnet("mnasnet0_75", 0.75, weights, kwargs)


def mnasnet1_0(*, weights=None, progress: bool = True, **kwargs) -> MNASNet:
    return _mnasnet("mnasnet1_0", 1.0, weights, kwargs)


def mnasnet1_3(*, weights=None, progress: bool = True, **kwargs) -> MNASNet:
    return _mnasnet("mnasnet1_3", 1.3, weights, kwargs)
