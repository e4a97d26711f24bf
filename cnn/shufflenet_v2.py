"""ShuffleNet V2 (Ma et al. 2018) with torchvision's keys: channel split, two branches, channel shuffle.

A stride-1 unit splits its channels in half, keeps one half and runs the other through 1x1 ->
3x3 depthwise -> 1x1 (``branch2``); a stride-2 unit runs the whole input through a depthwise
-> 1x1 ``branch1`` and ``branch2``, doubling the channels. The halves are concatenated and
shuffled so that information crosses between them. x1.0: 2,278,604 parameters and 0.145 GMACs
at 224x224 (x0.5 1,366,792 / 0.04, x1.5 3,503,624 / 0.296, x2.0 7,393,996 / 0.583).
"""
from __future__ import annotations

from typing import Callable, List, Sequence

import torch
import torch.fx
import torch.nn as nn

from .conv import Conv2d
from .layers import no_pretrained_weights


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups: [a0 a1 .. b0 b1 ..] -> [a0 b0 a1 b1 ..].

    A channels_last input stays channels_last (one copy either way).
    """
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        nhwc = x.permute(0, 2, 3, 1)
        return nhwc.unflatten(3, (groups, -1)).transpose(3, 4).contiguous().flatten(3).permute(0, 3, 1, 2)
    return x.unflatten(1, (groups, -1)).transpose(1, 2).contiguous().flatten(1, 2)


torch.fx.wrap("channel_shuffle")  # one node in a traced graph (its branch on the layout is not traceable)


def depthwise_conv(channels: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = False) -> Conv2d:
    return Conv2d(channels, channels, kernel_size, stride, padding, bias=bias, groups=channels)


class InvertedResidual(nn.Module):
    """The ShuffleNet V2 unit (Fig. 3 c/d of the paper); ``oup`` output channels, half from each branch."""

    def __init__(self, inp: int, oup: int, stride: int):
        super().__init__()
        if not 1 <= stride <= 3:
            raise ValueError("illegal stride value")
        self.stride = stride
        branch_features = oup // 2
        if stride == 1 and inp != branch_features << 1:
            raise ValueError(f"Invalid combination of stride {stride}, inp {inp} and oup {oup} values. "
                             "If stride == 1 then inp should be equal to oup // 2 << 1.")
        if stride > 1:
            self.branch1 = nn.Sequential(
                depthwise_conv(inp, 3, stride, 1),
                nn.BatchNorm2d(inp),
                Conv2d(inp, branch_features, kernel_size=1, bias=False),
                nn.BatchNorm2d(branch_features),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            Conv2d(inp if stride > 1 else branch_features, branch_features, kernel_size=1, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
            depthwise_conv(branch_features, 3, stride, 1),
            nn.BatchNorm2d(branch_features),
            Conv2d(branch_features, branch_features, kernel_size=1, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, processed = x.chunk(2, dim=1)  # `processed` is a channel slice: a strided view
            out = torch.cat((kept, self.branch2(processed)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """3x3/2 stem (``conv1``), max-pool, ``stage2``-``stage4`` of units, 1x1 ``conv5``, global mean, ``fc``."""

    def __init__(self, stages_repeats: Sequence[int], stages_out_channels: Sequence[int], num_classes: int = 1000,
                 inverted_residual: Callable[..., nn.Module] = InvertedResidual):
        super().__init__()
        if len(stages_repeats) != 3:
            raise ValueError("expected stages_repeats as list of 3 positive ints")
        if len(stages_out_channels) != 5:
            raise ValueError("expected stages_out_channels as list of 5 positive ints")
        self._stage_out_channels = list(stages_out_channels)
        channels = stages_out_channels[0]
        self.conv1 = nn.Sequential(Conv2d(3, channels, 3, 2, 1, bias=False), nn.BatchNorm2d(channels),
                                   nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for name, repeats, out in zip(("stage2", "stage3", "stage4"), stages_repeats, stages_out_channels[1:]):
            units: List[nn.Module] = [inverted_residual(channels, out, 2)]
            units += [inverted_residual(out, out, 1) for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*units))
            channels = out
        last = stages_out_channels[-1]
        self.conv5 = nn.Sequential(Conv2d(channels, last, 1, 1, 0, bias=False), nn.BatchNorm2d(last),
                                   nn.ReLU(inplace=True))
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean([2, 3]))


# Output channels of conv1, stage2-4 and conv5 for each width (the paper's Table 5).
STAGE_OUT_CHANNELS = {
    "shufflenet_v2_x0_5": [24, 48, 96, 192, 1024],
    "shufflenet_v2_x1_0": [24, 116, 232, 464, 1024],
    "shufflenet_v2_x1_5": [24, 176, 352, 704, 1024],
    "shufflenet_v2_x2_0": [24, 244, 488, 976, 2048],
}


def _shufflenet_v2(name: str, weights, kwargs: dict) -> ShuffleNetV2:
    no_pretrained_weights(weights, name)
    return ShuffleNetV2([4, 8, 4], STAGE_OUT_CHANNELS[name], **kwargs)


def shufflenet_v2_x0_5(*, weights=None, progress: bool = True, **kwargs) -> ShuffleNetV2:
    return _shufflenet_v2("shufflenet_v2_x0_5", weights, kwargs)


def shufflenet_v2_x1_0(*, weights=None, progress: bool = True, **kwargs) -> ShuffleNetV2:
    return _shufflenet_v2("shufflenet_v2_x1_0", weights, kwargs)


def shufflenet_v2_x1_5(*, weights=None, progress: bool = True, **kwargs) -> ShuffleNetV2:
    return _shufflenet_v2("shufflenet_v2_x1_5", weights, kwargs)


def shufflenet_v2_x2_0(*, weights=None, progress: bool = True, **kwargs) -> ShuffleNetV2:
    return _shufflenet_v2("shufflenet_v2_x2_0", weights, kwargs)
