"""The networks behind the transposed and 1-D benchmark suites, as their papers define them:

* ``dcgan``: the DCGAN generator (Radford et al. 2016; the PyTorch example's nz=100, ngf=64)
  from a 100-d latent to a 64x64 RGB image: five ConvTranspose2d, 4x4 kernels, stride 2;
* ``unet``: U-Net (Ronneberger et al. 2015, with padding 1) on 256x256: its decoder's four
  2x2 stride-2 up-convolutions (1024 -> 512 ... 128 -> 64);
* ``longconv``: Hyena's long causal depthwise convolution (Poli et al. 2023; FlashFFTConv's benchmark):
  filter length = sequence length L = 1K, 4K, 16K, 768 channels (``conv1d(u, k, padding=L-1,
  groups=768)[..., :L]``), batch 8;
* ``mamba_conv1d``: the short causal depthwise convolution of a Mamba block (Gu & Dao 2023;
  ``nn.Conv1d(d_inner, d_inner, 4, groups=d_inner, padding=3)``) at Mamba-1.4B's d_inner = 4096,
  sequence length 2048.

``benchmarks.networks.conv_layers`` finds the cases by running them on the meta device.
"""
from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn


class DCGANGenerator(nn.Module):
    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3):
        super().__init__()

        def up(c_in, c_out, stride=2, padding=1, last=False):
            layers = [nn.ConvTranspose2d(c_in, c_out, 4, stride, padding, bias=False)]
            return layers + ([nn.Tanh()] if last else [nn.BatchNorm2d(c_out), nn.ReLU(True)])

        self.main = nn.Sequential(*up(nz, ngf * 8, 1, 0), *up(ngf * 8, ngf * 4), *up(ngf * 4, ngf * 2),
                                  *up(ngf * 2, ngf), *up(ngf, nc, last=True))

    def forward(self, z):
        return self.main(z)


class UNet(nn.Module):
    def __init__(self, in_channels: int = 3, classes: int = 2, width: int = 64):
        super().__init__()
        widths = [width * 2**i for i in range(5)]  # 64 ... 1024

        def conv_bn_relu(c_in, c_out):
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]

        def double_conv(c_in, c_out):
            return nn.Sequential(*conv_bn_relu(c_in, c_out), *conv_bn_relu(c_out, c_out))

        self.down = nn.ModuleList([double_conv(in_channels, widths[0])] + [
            double_conv(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.up = nn.ModuleList([nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths[:-1], widths[1:])][::-1])
        self.decode = nn.ModuleList([double_conv(b, a) for a, b in zip(widths[:-1], widths[1:])][::-1])
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        for up, block, skip in zip(self.up, self.decode, skips[-2::-1]):
            x = block(torch.cat([up(x), skip], 1))
        return self.head(x)


class MambaShortConv(nn.Module):
    """The causal depthwise Conv1d of a Mamba block (padding k-1, the tail cut off)."""

    def __init__(self, d_inner: int = 4096, d_conv: int = 4):
        super().__init__()
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)

    def forward(self, x):
        return self.conv1d(x)[..., : x.shape[-1]]


class LongConv(nn.Module):
    """Hyena's long causal convolutions at the lengths of ``LENGTHS``: the input (768, 16K) is cut to
    each length, each filter as long as its sequence."""

    LENGTHS = (1024, 4096, 16384)

    def __init__(self, channels: int = 768):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv1d(channels, channels, n, groups=channels, padding=n - 1, bias=False)
                                    for n in self.LENGTHS])

    def forward(self, x):
        return [conv(x[..., :n])[..., :n] for conv, n in zip(self.convs, self.LENGTHS)]


class VariantSuite(NamedTuple):
    build: Callable[[], nn.Module]
    input_size: Tuple[int, ...]  # one sample
    only: Optional[Tuple[str, ...]] = None  # keep only convolutions of these ops
    # (channel_div, spatial_div) under the interpreter instead of the run's --scale: 4096
    # depthwise channels / 16 are still 256 one-channel groups, minutes for the interpreter.
    interpreter_scale: Optional[Tuple[int, int]] = None


VARIANT_SUITES: Dict[str, VariantSuite] = {
    "dcgan": VariantSuite(DCGANGenerator, (100, 1, 1)),
    "unet": VariantSuite(UNet, (3, 256, 256), only=("conv_transpose2d",)),
    "mamba_conv1d": VariantSuite(MambaShortConv, (4096, 2048), interpreter_scale=(256, 64)),
    # Under the interpreter: 768 / 384 = 2 channels, lengths / 64 (16 to 256 taps).
    "longconv": VariantSuite(LongConv, (768, 16384), interpreter_scale=(384, 64)),
}
