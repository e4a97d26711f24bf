"""Resolve an ``algorithm=`` argument to a registered Algorithm, checking eligibility."""
from __future__ import annotations

from typing import Callable, List, Tuple

import torch

from . import autotune_cache
from .params import ConvParams
from .registry import ALIASES, REGISTRY, Algorithm

# The routing table for algorithm="auto": (algorithm, applies when, why). First match wins;
# every rule only picks an algorithm that is eligible for the shapes it matches.
ROUTES: List[Tuple[str, Callable[[ConvParams], bool], str]] = [
    ("depthwise", lambda p: p.groups == p.c and p.groups > 1,
     "one channel per group: no reduction for a tl.dot, memory-bound, vectorised over channels"),
    ("direct", lambda p: p.c_per_group < 8,
     "under 8 channels per group (the C=3 stem): a tl.dot reduction block of >= 16 would be mostly padding"),
    ("pointwise", lambda p: (p.r, p.s) == (1, 1),
     "1x1: a plain GEMM over channels, no tap loop, stride by indexing"),
    ("winograd_f2", lambda p: REGISTRY["winograd_f2"].eligible(p) and min(p.c, p.k) >= 64
     and p.dtype in (torch.float16, torch.bfloat16),
     "fp16/bf16 3x3 stride 1, >= 64 channels: F(2x2,3x3) does 2.25x fewer multiplies at ~2x im2col's error (README)"),
]
# Everything else: the implicit GEMM serves every shape on tensor cores.
FALLBACK = "im2col"


def heuristic_choice(params: ConvParams) -> str:
    """The first rule of ``ROUTES`` that matches, else ``FALLBACK``."""
    for name, applies, _why in ROUTES:
        if name in REGISTRY and applies(params):
            return name
    return FALLBACK


def choose_auto(params: ConvParams) -> str:
    """``algorithm="auto"``: the routing table, or with the timing autotune on
    (``KERNELS_AUTOTUNE=1`` or ``kernels.autotune_cache.enable()``) the fastest eligible
    algorithm measured once per shape and cached on disk. Off by default: deterministic.
    """
    if autotune_cache.enabled():
        eligible = [name for name, entry in REGISTRY.items() if entry.eligible(params)]
        timed = autotune_cache.choose(params, eligible)
        if timed is not None:
            return timed
    return heuristic_choice(params)


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
