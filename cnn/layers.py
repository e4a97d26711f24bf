"""Building blocks shared by the model families."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .conv import Conv2d


def make_divisible(value: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """Round a channel count to a multiple of ``divisor`` (MobileNet's rule).

    Rounds to the nearest multiple, never below ``min_value`` (default ``divisor``), and never
    more than 10% below ``value``.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvNormActivation(nn.Sequential):
    """Conv -> norm -> activation as one Sequential (keys ``0``, ``1``), torchvision's Conv2dNormActivation.

    ``padding`` defaults to "same size at stride 1"; the convolution has a bias only when there is
    no norm layer (unless ``bias`` says otherwise). ``norm_layer`` / ``activation_layer`` may be None.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: Optional[int] = None,
        groups: int = 1,
        norm_layer: Optional[Callable[[int], nn.Module]] = nn.BatchNorm2d,
        activation_layer: Optional[Callable[..., nn.Module]] = nn.ReLU,
        dilation: int = 1,
        inplace: Optional[bool] = True,
        bias: Optional[bool] = None,
    ):
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        if bias is None:
            bias = norm_layer is None
        layers = [
            Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                   dilation=dilation, groups=groups, bias=bias)
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            layers.append(activation_layer() if inplace is None else activation_layer(inplace=inplace))
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al.): rescale each channel by a gate computed from the global average.

    gate = scale_activation(fc2(activation(fc1(mean over H, W)))), with fc1/fc2 as 1x1 convolutions
    (keys ``fc1``, ``fc2``, as torchvision's); returns ``gate * x``.
    """

    def __init__(
        self,
        input_channels: int,
        squeeze_channels: int,
        activation: Callable[..., nn.Module] = nn.ReLU,
        scale_activation: Callable[..., nn.Module] = nn.Sigmoid,
    ):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return gate * x


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU, keys ``conv`` and ``bn``: GoogLeNet's and Inception v3's unit.

    ``kwargs`` go to the convolution (kernel_size, stride, padding).
    """

    def __init__(self, in_channels: int, out_channels: int, **kwargs: Any):
        super().__init__()
        self.conv = Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class StochasticDepth(nn.Module):
    """Stochastic depth (Huang et al. 2016) on a residual branch: in training, zero the branch with
    probability ``p`` per sample (``mode="row"``) or for the whole batch (``"batch"``) and scale the
    survivors by 1 / (1 - p); the identity in eval mode (so ``cnn.fuse`` sees straight through it)."""

    def __init__(self, p: float, mode: str = "row"):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"drop probability has to be between 0 and 1, but got {p}")
        if mode not in ("row", "batch"):
            raise ValueError(f"mode has to be either 'batch' or 'row', but got {mode}")
        self.p = p
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = [x.shape[0]] + [1] * (x.dim() - 1) if self.mode == "row" else [1] * x.dim()
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        if keep > 0.0:
            mask.div_(keep)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


# The per-channel mean and std of ImageNet images (torchvision's normalisation).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_to_inception_input(x: torch.Tensor) -> torch.Tensor:
    """Re-normalise an ImageNet-normalised batch, ``(v - mean) / std``, to ``(v - 0.5) / 0.5``,
    the input Google's Inception checkpoints were trained on (``transform_input=True``)."""
    scale = x.new_tensor([s / 0.5 for s in IMAGENET_STD]).view(1, 3, 1, 1)
    shift = x.new_tensor([(m - 0.5) / 0.5 for m in IMAGENET_MEAN]).view(1, 3, 1, 1)
    return x * scale + shift


def init_weights(model: nn.Module, linear_std: Optional[float] = 0.01, conv_nonlinearity: str = "relu") -> None:
    """The classic initialisation: He (fan_out) convolutions (2-D and 3-D), unit norms, small normal linears.

    ``linear_std=None`` keeps PyTorch's default Linear initialisation (as ResNet does).
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity=conv_nonlinearity)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)


def no_pretrained_weights(weights, builder: str) -> None:
    """The builders never download: ``weights`` must be None (load a checkpoint with load_state_dict)."""
    if weights is not None:
        raise ValueError(
            f"{builder}: weights={weights!r} is not supported, cnn builders never download; build with "
            "weights=None and load a torchvision checkpoint with model.load_state_dict(torch.load(path))"
        )


def set_fixed(kwargs: dict, name: str, value, builder: str) -> None:
    """Set an argument the architecture fixes (e.g. ResNeXt's groups), refusing a different value."""
    if kwargs.get(name, value) != value:
        raise ValueError(f"{builder}: {name} is fixed to {value} by the architecture, got {name}={kwargs[name]!r}")
    kwargs[name] = value
