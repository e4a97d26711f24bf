"""Video ResNets (Tran et al. 2018, "A Closer Look at Spatiotemporal Convolutions for Action
Recognition"), torchvision's ``models.video``, on 3-D convolutions (N, C, T, H, W):

* ``r3d_18``: 3x3x3 convolutions everywhere;
* ``mc3_18`` (mixed convolutions): 3x3x3 in the first stage, 1x3x3 (spatial only) after it;
* ``r2plus1d_18``: every 3x3x3 factored into a 1x3x3 spatial and a 3x1x1 temporal convolution
  with a BN-ReLU between, the middle width chosen to keep the 3x3x3's parameter count.

Module names, ``state_dict`` keys, order and shapes are torchvision's, so its Kinetics-400
checkpoints load with ``strict=True``.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn

from .conv import Conv3d
from .layers import init_weights, no_pretrained_weights

Triple = Tuple[int, int, int]


def midplanes(in_planes: int, out_planes: int) -> int:
    """The width between R(2+1)D's spatial and temporal convolutions that gives the pair about the
    parameters of one 3x3x3 convolution: in * out * 27 = mid * (in * 9 + 3 * out), rounded down."""
    return (in_planes * out_planes * 3 * 3 * 3) // (in_planes * 3 * 3 + 3 * out_planes)


class Conv3DSimple(Conv3d):
    """A full 3x3x3 spatiotemporal convolution, strided in time and space alike."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: Optional[int] = None, stride: int = 1,
                 padding: int = 1):
        super().__init__(in_planes, out_planes, kernel_size=(3, 3, 3), stride=stride, padding=padding, bias=False)

    @staticmethod
    def get_downsample_stride(stride: int) -> Triple:
        return stride, stride, stride


class Conv3DNoTemporal(Conv3d):
    """A 1x3x3 convolution: spatial only, frames kept apart (and the time axis not strided)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: Optional[int] = None, stride: int = 1,
                 padding: int = 1):
        super().__init__(in_planes, out_planes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                         padding=(0, padding, padding), bias=False)

    @staticmethod
    def get_downsample_stride(stride: int) -> Triple:
        return 1, stride, stride


class Conv2Plus1D(nn.Sequential):
    """(2+1)D: a 1x3x3 spatial convolution to ``midplanes``, BN, ReLU, then a 3x1x1 temporal one."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1, padding: int = 1):
        super().__init__(
            Conv3d(in_planes, midplanes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                   padding=(0, padding, padding), bias=False),
            nn.BatchNorm3d(midplanes),
            nn.ReLU(inplace=True),
            Conv3d(midplanes, out_planes, kernel_size=(3, 1, 1), stride=(stride, 1, 1), padding=(padding, 0, 0),
                   bias=False),
        )

    @staticmethod
    def get_downsample_stride(stride: int) -> Triple:
        return stride, stride, stride


ConvBuilder = Type[Union[Conv3DSimple, Conv3DNoTemporal, Conv2Plus1D]]


class BasicBlock(nn.Module):
    """Two (conv_builder, BN) units, the first with ReLU, and an identity (or projected) shortcut."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, conv_builder: ConvBuilder, stride: int = 1,
                 downsample: Optional[nn.Module] = None):
        super().__init__()
        mid = midplanes(inplanes, planes)
        self.conv1 = nn.Sequential(conv_builder(inplanes, planes, mid, stride), nn.BatchNorm3d(planes),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(conv_builder(planes, planes, mid), nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1x1 reduce, the conv_builder's convolution (stride here), 1x1x1 expand x4, plus the shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, conv_builder: ConvBuilder, stride: int = 1,
                 downsample: Optional[nn.Module] = None):
        super().__init__()
        # torchvision sizes the middle width from (inplanes, planes) here too, though the
        # builder's convolution maps planes to planes.
        mid = midplanes(inplanes, planes)
        self.conv1 = nn.Sequential(Conv3d(inplanes, planes, kernel_size=1, bias=False), nn.BatchNorm3d(planes),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(conv_builder(planes, planes, mid, stride), nn.BatchNorm3d(planes),
                                   nn.ReLU(inplace=True))
        self.conv3 = nn.Sequential(Conv3d(planes, planes * self.expansion, kernel_size=1, bias=False),
                                   nn.BatchNorm3d(planes * self.expansion))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.conv2(self.conv1(x)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


Block = Type[Union[BasicBlock, Bottleneck]]


class BasicStem(nn.Sequential):
    """A 3x7x7 convolution, stride (1, 2, 2), to 64 channels, BN, ReLU (R3D and MC3)."""

    def __init__(self):
        super().__init__(
            Conv3d(3, 64, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(64),
            nn.ReLU(inplace=True),
        )


class R2Plus1dStem(nn.Sequential):
    """The stem factored as R(2+1)D's blocks are: 1x7x7 to 45 channels, BN, ReLU, 3x1x1 to 64, BN, ReLU."""

    def __init__(self):
        super().__init__(
            Conv3d(3, 45, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(45),
            nn.ReLU(inplace=True),
            Conv3d(45, 64, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(64),
            nn.ReLU(inplace=True),
        )


class VideoResNet(nn.Module):
    """Stem, four stages of residual blocks (64, 128, 256, 512 planes; stride 2 from the second
    stage, in time too unless the stage's builder keeps frames apart), global average pool, linear
    head. Arguments as torchvision's ``VideoResNet``: ``conv_makers`` holds one builder per stage.

    ``zero_init_residual`` zeroes the last BN of every residual branch (BasicBlock's ``conv2[1]``,
    Bottleneck's ``conv3[1]``), so each block starts as the identity. (torchvision's looks for a
    Bottleneck ``bn3`` that its video blocks do not have: a no-op for its 18-layer models.)
    """

    def __init__(
        self,
        block: Block,
        conv_makers: Sequence[ConvBuilder],
        layers: Sequence[int],
        stem: Callable[[], nn.Module],
        num_classes: int = 400,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        self.inplanes = 64
        self.stem = stem()
        self.layer1 = self._make_layer(block, conv_makers[0], 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, conv_makers[1], 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, conv_makers[2], 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, conv_makers[3], 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        init_weights(self, linear_std=0.01)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    branch_end = m.conv3 if isinstance(m, Bottleneck) else m.conv2
                    nn.init.zeros_(branch_end[1].weight)

    def _make_layer(self, block: Block, conv_builder: ConvBuilder, planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                Conv3d(self.inplanes, planes * block.expansion, kernel_size=1,
                       stride=conv_builder.get_downsample_stride(stride), bias=False),
                nn.BatchNorm3d(planes * block.expansion),
            )
        layers: List[nn.Module] = [block(self.inplanes, planes, conv_builder, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, conv_builder))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def _video_resnet(name: str, conv_makers: Sequence[ConvBuilder], stem: Callable[[], nn.Module], weights,
                  kwargs: dict) -> VideoResNet:
    no_pretrained_weights(weights, name)
    return VideoResNet(BasicBlock, conv_makers, [2, 2, 2, 2], stem, **kwargs)


def r3d_18(*, weights=None, progress: bool = True, **kwargs) -> VideoResNet:
    """R3D-18: 3x3x3 convolutions in every block."""
    return _video_resnet("r3d_18", [Conv3DSimple] * 4, BasicStem, weights, kwargs)


def mc3_18(*, weights=None, progress: bool = True, **kwargs) -> VideoResNet:
    """MC3-18: 3x3x3 convolutions in the first stage, 1x3x3 in the other three."""
    return _video_resnet("mc3_18", [Conv3DSimple] + [Conv3DNoTemporal] * 3, BasicStem, weights, kwargs)


def r2plus1d_18(*, weights=None, progress: bool = True, **kwargs) -> VideoResNet:
    """R(2+1)D-18: every 3x3x3 (and the stem) as a spatial then a temporal convolution."""
    return _video_resnet("r2plus1d_18", [Conv2Plus1D] * 4, R2Plus1dStem, weights, kwargs)
