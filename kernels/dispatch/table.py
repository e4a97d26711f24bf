"""THE table of algorithms: every ``algorithm=`` name, what it runs and where it applies.

Tests and benchmarks iterate ``REGISTRY`` (in this order, the order reports list them), so an
algorithm added here is swept by the equivalence tests, compiled by the sm_90 check and
benchmarked without touching them. The kernels and their eligibility rules live in ``kernels.ops``;
this table is the only place that names them as algorithms.
"""
from __future__ import annotations

import functools
from typing import Callable, Dict

from ..core.params import ConvParams
from ..ops import depthwise, direct
from ..ops.fft import forward as fft
from ..ops.fft.weight_grad import fft_grad_weight
from ..ops.gemm import stem
from ..ops.gemm.dgrad import grad_input
from ..ops.gemm.forward import im2col_forward, pointwise_unsupported
from ..ops.gemm.wgrad import grad_weight
from ..ops.winograd import forward as winograd
from ..ops.winograd.transforms import F2, F4
from .algorithm import Algorithm, direct_macs


def _winograd(tile) -> Algorithm:
    return Algorithm(
        name=tile.name,
        unsupported=winograd.unsupported,
        forward=functools.partial(winograd.winograd_forward, tile),
        count=functools.partial(winograd.winograd_counts, tile),
        grad_input=grad_input,
        grad_weight=grad_weight,
        description=f"Winograd F({tile.m}x{tile.m},3x3): input transform, one GEMM per tile position over "
                    f"{tile.positions} positions, output transform (or one fused kernel where the planner "
                    f"predicts the transformed tensors' traffic dominates)",
        error_ratio=winograd.MEASURED_ERROR_RATIO[tile.name].__getitem__,
    )


_TABLE = [
    Algorithm(
        name="im2col",
        unsupported=lambda params: None,  # implicit GEMM serves every shape F.conv2d accepts
        forward=im2col_forward, count=direct_macs, grad_input=grad_input, grad_weight=grad_weight,
        description="implicit GEMM: N*P*Q x K/groups x (R*S*C/groups), one pipelined loop, split-K",
        three_d=True,
    ),
    Algorithm(
        name="direct",
        unsupported=lambda params: None,  # the definition itself: every shape F.conv2d accepts
        forward=direct.direct_forward, count=direct_macs, grad_input=grad_input, grad_weight=grad_weight,
        description="direct: explicit multiply-accumulate over (c, r, s), outer products, no tl.dot",
    ),
    Algorithm(
        name="stem",
        unsupported=stem.unsupported,
        forward=stem.stem_forward, count=direct_macs, grad_input=grad_input, grad_weight=stem.stem_grad_weight,
        description="small-channel stem: implicit GEMM reducing along contiguous runs of padded NHWC rows",
    ),
    Algorithm(
        name="pointwise",
        unsupported=pointwise_unsupported,
        forward=im2col_forward, count=direct_macs, grad_input=grad_input, grad_weight=grad_weight,
        description="1x1 as a GEMM: N*P*Q x K/groups x C/groups, stride by indexing",
        three_d=True,
    ),
    Algorithm(
        name="depthwise",
        unsupported=depthwise.unsupported,
        forward=depthwise.depthwise_forward, count=direct_macs,
        grad_input=depthwise.depthwise_grad_input, grad_weight=depthwise.depthwise_grad_weight,
        description="depthwise: per-channel R x S filters vectorised over channels; filter rows of 7+ taps on the halo kernel (one banded tl.dot per filter row)",
        three_d=True,  # forward on the depthwise kernel, gradients on the implicit GEMM
    ),
    _winograd(F2),
    _winograd(F4),
    Algorithm(
        name="fft",
        unsupported=fft.unsupported,
        forward=fft.fft_forward, count=fft.fft_counts, grad_input=fft.fft_grad_input, grad_weight=fft_grad_weight,
        description="FFT: tiled overlap-save, the DFTs and the per-frequency complex channel reduction as "
                    "tensor-core GEMMs (depthwise: DFT -> multiply -> inverse DFT in one kernel per tile); "
                    "grad_input and grad_weight as correlations on the same kernels",
        error_ratio=fft.MEASURED_ERROR_RATIO.__getitem__,
    ),
]

REGISTRY: Dict[str, Algorithm] = {entry.name: entry for entry in _TABLE}

# Names that stand for a choice among the table's algorithms: name -> chooser(params) -> a name.
ALIASES: Dict[str, Callable[[ConvParams], str]] = {
    "winograd": winograd.choose_tile,
}

# Every value ``algorithm=`` takes.
ALGORITHMS = ("auto",) + tuple(REGISTRY) + tuple(ALIASES)

assert len(REGISTRY) == len(_TABLE) and not set(REGISTRY) & (set(ALIASES) | {"auto"}), "a name is listed twice"
