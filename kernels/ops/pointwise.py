"""Pointwise (1x1) convolution: the implicit-GEMM kernels with R = S = 1.

A 1x1 convolution has no taps: out[pixels, k] = x[pixels, c] @ w[c, k] per group, with
rows = the N*P*Q output pixels, reduction = C/groups, columns = K/groups. The forward is the
im2col kernel, whose main loop for R = S = 1 is a plain channel loop (so the planner may use
8-warp 128x256 tiles); stride and padding only change which input pixel a row reads (ResNet's
strided 1x1 downsample reads every second pixel by indexing, nothing is copied). grad_input is
the generic dgrad: for a stride-s 1x1 only one of the s*s phases has a tap, the others write
zeros. grad_weight is the generic wgrad, for a 1x1 exactly the GEMM dyᵀ · x.
"""
from __future__ import annotations

from ..params import ConvParams
from ..registry import Algorithm, direct_macs, register
from .im2col import im2col_forward


def _unsupported(params: ConvParams):
    if (params.r, params.s) != (1, 1):
        return f"pointwise needs a 1x1 kernel, got {params.r}x{params.s}"
    return None


register(Algorithm(
    name="pointwise",
    unsupported=_unsupported,
    forward=im2col_forward,
    count=direct_macs,
    description="1x1 as a GEMM: N*P*Q x K/groups x C/groups, stride by indexing",
))
