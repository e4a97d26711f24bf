"""The one table of algorithms: name -> eligibility, forward launcher, FLOP count, backward.

Tests and benchmarks iterate ``REGISTRY``, so an algorithm registered here is swept by the
equivalence tests, compiled by the sm_90 check and benchmarked without touching them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

from .params import ConvParams


@dataclass(frozen=True)
class Algorithm:
    """One convolution algorithm.

    ``unsupported(params)`` returns None when the algorithm applies, else the failed
    condition in words.
    ``forward(x, w, bias, params, *, scale=None, shift=None, residual=None, activation=0)``
    launches one kernel that ends in ``kernels.epilogue.store_conv_tile`` and returns a new
    output (N, K, P, Q) in PyTorch's memory format (``ops.common.new_output``): scale/shift
    are per-output-channel fp32 vectors (folded BatchNorm), residual a tensor of the output's
    shape in any layout, activation a code from ``kernels.epilogue.ACTIVATIONS``.
    ``count(params)`` returns at least ``macs`` and ``multiplies``.
    ``grad_input(dy, w, params, channels_last)`` / ``grad_weight(dy, x, params, channels_last)``
    default to the generic implicit-GEMM backward kernels (``ops/backward.py``).
    """

    name: str
    unsupported: Callable[[ConvParams], Optional[str]]
    forward: Callable
    count: Callable[[ConvParams], Dict[str, int]]
    grad_input: Optional[Callable] = None
    grad_weight: Optional[Callable] = None
    description: str = ""
    # Worst measured forward error relative to im2col's, per dtype (Winograd's transforms
    # amplify rounding); the test sweeps scale their tolerance by it. 1.0: as exact as a GEMM.
    error_ratio: Callable[[torch.dtype], float] = lambda dtype: 1.0

    def eligible(self, params: ConvParams) -> bool:
        return self.unsupported(params) is None


REGISTRY: Dict[str, Algorithm] = {}

# Names that stand for a choice among registered algorithms (e.g. "winograd" -> "winograd_f2"
# or "winograd_f4"): name -> chooser(params) returning a registered name.
ALIASES: Dict[str, Callable[[ConvParams], str]] = {}


def register_alias(name: str, chooser: Callable[[ConvParams], str]) -> None:
    if name in REGISTRY or name in ALIASES or name == "auto":
        raise ValueError(f"algorithm name {name!r} is registered twice")
    ALIASES[name] = chooser


def register(algorithm: Algorithm) -> Algorithm:
    if algorithm.name in REGISTRY or algorithm.name in ALIASES or algorithm.name == "auto":
        raise ValueError(f"algorithm {algorithm.name!r} is registered twice")
    REGISTRY[algorithm.name] = algorithm
    return algorithm


def direct_macs(params: ConvParams) -> Dict[str, int]:
    """Counts for algorithms that perform every multiply of the definition."""
    return {"macs": params.macs, "multiplies": params.macs}
