"""Resolve an ``algorithm=`` argument to a registered Algorithm, checking eligibility."""
from __future__ import annotations

from .params import ConvParams
from .registry import ALIASES, REGISTRY, Algorithm


def choose_auto(params: ConvParams) -> str:
    """The routing table for ``algorithm="auto"``.

    For now every shape goes to the implicit GEMM, the one algorithm that serves them all.
    """
    return "im2col"


def resolve(algorithm: str, params: ConvParams) -> Algorithm:
    if not isinstance(algorithm, str):
        raise TypeError(f"conv2d: algorithm must be a str, got {type(algorithm).__name__}")
    if algorithm == "auto":
        name = choose_auto(params)
    elif algorithm in ALIASES:
        name = ALIASES[algorithm](params)
    else:
        name = algorithm
    entry = REGISTRY.get(name)
    if entry is None:
        raise ValueError(
            f"conv2d: unknown algorithm={algorithm!r}; expected one of {['auto', *REGISTRY, *ALIASES]}"
        )
    reason = entry.unsupported(params)
    if reason is not None:
        raise ValueError(f"conv2d: algorithm={name!r} does not apply to this convolution: {reason}")
    return entry
