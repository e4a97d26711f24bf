"""The one table of algorithms: name -> eligibility, forward launcher, FLOP count, backward.

Tests and benchmarks iterate ``REGISTRY``, so an algorithm registered here is swept by the
equivalence tests, compiled by the sm_90 check and benchmarked without touching them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

from .params import ConvParams


@dataclass(frozen=True)
class Algorithm:
    """One convolution algorithm.

    ``unsupported(params)`` returns None when the algorithm applies, else the failed
    condition in words. ``forward(x, w, bias, params, *, scale, shift, residual, activation)``
    returns a new output. ``grad_input`` / ``grad_weight`` default to the generic
    implicit-GEMM backward kernels.
    """

    name: str
    unsupported: Callable[[ConvParams], Optional[str]]
    forward: Callable
    count: Callable[[ConvParams], Dict[str, int]]
    grad_input: Optional[Callable] = None
    grad_weight: Optional[Callable] = None
    description: str = ""

    def eligible(self, params: ConvParams) -> bool:
        return self.unsupported(params) is None


REGISTRY: Dict[str, Algorithm] = {}


def register(algorithm: Algorithm) -> Algorithm:
    if algorithm.name in REGISTRY or algorithm.name == "auto":
        raise ValueError(f"algorithm {algorithm.name!r} is registered twice")
    REGISTRY[algorithm.name] = algorithm
    return algorithm


def direct_macs(params: ConvParams) -> Dict[str, int]:
    """Counts for algorithms that perform every multiply of the definition."""
    return {"macs": params.macs, "multiplies": params.macs}
