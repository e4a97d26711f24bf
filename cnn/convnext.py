"""ConvNeXt Tiny / Small / Base / Large (Liu et al. 2022) with torchvision's names, keys and outputs.

A 4x4/4 patchify stem (conv with bias, then LayerNorm over channels), four stages of ConvNeXt
blocks with a LayerNorm + 2x2/2 conv downsampling between them, then global average pooling,
LayerNorm and a linear head. A block is a 7x7 depthwise convolution (with bias: on the depthwise
kernel's halo path, ``kernels/ops/depthwise.py``), then channels-last LayerNorm (eps 1e-6), a 4x
Linear expansion, GELU and the Linear projection (torchvision's ``Permute`` around them), a learned
per-channel layer scale (initialised to 1e-6) and stochastic depth (torchvision's "row" mode:
each sample's branch dropped with the block's probability in training, which grows linearly from 0
to ``stochastic_depth_prob`` over the blocks; the identity in eval), added to the input.

Tiny: 28,589,128 parameters, 4.46 GMACs at 224x224 (torchvision's published 4.456 "GFLOPS", which
count multiply-adds). Nothing here folds: the model has no BatchNorm; the LayerNorms normalise each
pixel over its channels with statistics of the input, which no convolution's weights can absorb,
and the depthwise convolution's bias is already added in the kernel's epilogue.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .conv import Conv2d
from .layers import ConvNormActivation, StochasticDepth, no_pretrained_weights


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) tensor (each pixel normalised on its own)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    """``x.permute(dims)``: a view, no copy (torchvision's ``ops.misc.Permute``)."""

    def __init__(self, dims: List[int]):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.permute(x, self.dims)


class CNBlock(nn.Module):
    """7x7 depthwise conv, channels-last LayerNorm, Linear 4x, GELU, Linear, layer scale, stochastic
    depth, + input (``block`` holds the seven steps under torchvision's keys 0 ... 6)."""

    def __init__(self, dim: int, layer_scale: float, stochastic_depth_prob: float,
                 norm_layer: Optional[Callable[..., nn.Module]] = None):
        super().__init__()
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)
        self.block = nn.Sequential(
            Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            norm_layer(dim),
            nn.Linear(dim, 4 * dim, bias=True),
            nn.GELU(),
            nn.Linear(4 * dim, dim, bias=True),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        result = self.stochastic_depth(self.layer_scale * self.block(input))
        return result + input


class CNBlockConfig:
    """One stage: its blocks' channels, the channels its downsampling layer goes to (None: the last
    stage, no downsampling), and its number of blocks."""

    def __init__(self, input_channels: int, out_channels: Optional[int], num_layers: int):
        self.input_channels = input_channels
        self.out_channels = out_channels
        self.num_layers = num_layers

    def __repr__(self) -> str:
        return (f"CNBlockConfig(input_channels={self.input_channels}, out_channels={self.out_channels}, "
                f"num_layers={self.num_layers})")


class ConvNeXt(nn.Module):
    """Stem, stages and downsamplings in ``features`` (torchvision's indices), ``avgpool``, and the
    ``classifier`` (LayerNorm2d, Flatten, Linear); truncated-normal (std 0.02) conv and linear weights."""

    def __init__(
        self,
        block_setting: Sequence[CNBlockConfig],
        stochastic_depth_prob: float = 0.0,
        layer_scale: float = 1e-6,
        num_classes: int = 1000,
        block: Optional[Callable[..., nn.Module]] = None,
        norm_layer: Optional[Callable[..., nn.Module]] = None,
    ):
        super().__init__()
        if not block_setting:
            raise ValueError("The block_setting should not be empty")
        if not (isinstance(block_setting, Sequence) and all(isinstance(s, CNBlockConfig) for s in block_setting)):
            raise TypeError("The block_setting should be List[CNBlockConfig]")
        block = block or CNBlock
        norm_layer = norm_layer or partial(LayerNorm2d, eps=1e-6)

        layers: List[nn.Module] = [
            ConvNormActivation(3, block_setting[0].input_channels, kernel_size=4, stride=4, padding=0,
                               norm_layer=norm_layer, activation_layer=None, bias=True)
        ]
        total_blocks = sum(cnf.num_layers for cnf in block_setting)
        block_id = 0
        for cnf in block_setting:
            stage = []
            for _ in range(cnf.num_layers):
                # max(1, ...) only guards a one-block network, where torchvision divides by zero.
                sd_prob = stochastic_depth_prob * block_id / max(total_blocks - 1.0, 1.0)
                stage.append(block(cnf.input_channels, layer_scale, sd_prob))
                block_id += 1
            layers.append(nn.Sequential(*stage))
            if cnf.out_channels is not None:
                layers.append(nn.Sequential(
                    norm_layer(cnf.input_channels),
                    Conv2d(cnf.input_channels, cnf.out_channels, kernel_size=2, stride=2),
                ))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last = block_setting[-1]
        last_channels = last.out_channels if last.out_channels is not None else last.input_channels
        self.classifier = nn.Sequential(norm_layer(last_channels), nn.Flatten(1), nn.Linear(last_channels, num_classes))

        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))


# (stage channels, blocks per stage, default stochastic-depth rate), torchvision's builders.
_SETTINGS = {
    "convnext_tiny": ((96, 192, 384, 768), (3, 3, 9, 3), 0.1),
    "convnext_small": ((96, 192, 384, 768), (3, 3, 27, 3), 0.4),
    "convnext_base": ((128, 256, 512, 1024), (3, 3, 27, 3), 0.5),
    "convnext_large": ((192, 384, 768, 1536), (3, 3, 27, 3), 0.5),
}


def _convnext(name: str, weights, kwargs) -> ConvNeXt:
    no_pretrained_weights(weights, name)
    channels, depths, sd_prob = _SETTINGS[name]
    setting = [CNBlockConfig(c, channels[i + 1] if i + 1 < len(channels) else None, n)
               for i, (c, n) in enumerate(zip(channels, depths))]
    return ConvNeXt(setting, stochastic_depth_prob=kwargs.pop("stochastic_depth_prob", sd_prob), **kwargs)


def convnext_tiny(*, weights=None, progress: bool = True, **kwargs) -> ConvNeXt:
    return _convnext("convnext_tiny", weights, kwargs)


def convnext_small(*, weights=None, progress: bool = True, **kwargs) -> ConvNeXt:
    return _convnext("convnext_small", weights, kwargs)


def convnext_base(*, weights=None, progress: bool = True, **kwargs) -> ConvNeXt:
    return _convnext("convnext_base", weights, kwargs)


def convnext_large(*, weights=None, progress: bool = True, **kwargs) -> ConvNeXt:
    return _convnext("convnext_large", weights, kwargs)
