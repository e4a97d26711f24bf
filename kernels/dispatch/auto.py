"""Resolve an ``algorithm=`` argument to a registered Algorithm, checking eligibility.

``algorithm="auto"`` routes by, in order:
1. the timing autotune, when switched on (``autotune_cache``), among the algorithms that are not
   transform algorithms (``TRANSFORM_ALGORITHMS``);
2. a committed per-device routing table (``kernels/dispatch/routing/<device name>.json``), made
   from a GPU measurement of that device: its first rule that matches the problem, if that
   algorithm applies;
3. the static rules below, which route only to what "fast by construction" predicts fastest
   (tensor cores through the implicit GEMM, except where there is no reduction to put on them):
   no rule routes to Winograd, FFT or direct until a committed measurement says so.

Transform algorithms (Winograd, FFT) compute on transformed tiles: their error is larger than a
GEMM's (docs/winograd.md, docs/fft.md) and a NaN or Inf in an input tile spreads to that tile's
outputs (docs/semantics.md). ``auto`` picks one only where a committed per-device table says so.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from ..core import device
from ..core.params import ConvParams
from . import autotune_cache
from .algorithm import Algorithm
from .table import ALIASES, REGISTRY

# Algorithms that change the error and the NaN/Inf semantics of a convolution: only a committed
# routing table (a reviewed GPU measurement) routes ``auto`` to one.
TRANSFORM_ALGORITHMS = frozenset({"winograd_f2", "winograd_f4", "fft"})

# The static routing table: (algorithm, applies when, why). First match wins; every rule only
# picks an algorithm that is eligible for the shapes it matches.
ROUTES: List[Tuple[str, Callable[[ConvParams], bool], str]] = [
    ("depthwise", lambda p: p.groups == p.c and p.groups > 1,
     "one channel per group: no reduction for a tl.dot, memory-bound, vectorised over channels"),
    ("stem", lambda p: REGISTRY["stem"].eligible(p),
     "at most 8 input channels (the RGB stem): the reduction runs along padded NHWC row runs on tensor cores"),
    ("pointwise", lambda p: (p.r, p.s) == (1, 1),
     "1x1: a plain GEMM over channels, no tap loop (8-warp tiles allowed), stride by indexing"),
]
# Everything else: the implicit GEMM serves every shape on tensor cores (narrow groups included:
# a quarter-full tensor-core reduction still outruns direct's fp32 FMAs).
FALLBACK = "im2col"

ROUTING_TABLES = Path(__file__).parent / "routing"


def heuristic_choice(params: ConvParams) -> str:
    """The first rule of ``ROUTES`` that matches, else ``FALLBACK``."""
    for name, applies, _why in ROUTES:
        # A 3-D problem skips the rules whose algorithm has no 3-D kernels (or, as pointwise for a
        # 3x1x1 kernel, does not apply).
        if name in REGISTRY and applies(params) and (params.spatial_dims == 2 or REGISTRY[name].eligible(params)):
            return name
    return FALLBACK


@lru_cache(maxsize=None)
def routing_table(device_name: str) -> List[Dict]:
    """The committed rules for ``device_name`` (empty when no measurement was committed).

    File ``ROUTING_TABLES/<device name>.json`` (the name ``torch.cuda.get_device_name()`` reports,
    e.g. ``NVIDIA H200.json``): ``{"device": ..., "measured": <results file and
    commit>, "rules": [{"when": {...}, "algorithm": ..., "why": ...}, ...]}``. ``when`` keys, all
    optional: ``kernel`` [R, S], ``stride`` [sh, sw], ``groups`` ("1", "depthwise" or "grouped"),
    ``dtype`` (list of names), ``min_channels`` / ``max_channels`` (on min(C, K) / max(C, K)).
    """
    path = Path(ROUTING_TABLES) / f"{device_name}.json"
    try:
        return list(json.loads(path.read_text())["rules"])
    except (OSError, ValueError, KeyError):
        return []


def groups_class(params: ConvParams) -> str:
    if params.groups == 1:
        return "1"
    return "depthwise" if params.groups == params.c else "grouped"


def rule_matches(when: Dict, params: ConvParams) -> bool:
    checks = {
        "kernel": lambda v: [params.r, params.s] == list(v),
        "stride": lambda v: list(params.stride) == list(v),
        "groups": lambda v: groups_class(params) == str(v),
        "dtype": lambda v: str(params.dtype).replace("torch.", "") in v,
        "min_channels": lambda v: min(params.c, params.k) >= v,
        "max_channels": lambda v: max(params.c, params.k) <= v,
    }
    return all(checks[key](value) for key, value in when.items())


def table_choice(params: ConvParams, device_name: Optional[str]) -> Optional[str]:
    """The committed table's algorithm for ``params`` on ``device_name``, if a rule matches and applies."""
    if device_name is None:
        return None
    for rule in routing_table(device_name):
        name = rule["algorithm"]
        if rule_matches(rule.get("when", {}), params) and name in REGISTRY and REGISTRY[name].eligible(params):
            return name
    return None


def choose_auto(params: ConvParams) -> str:
    """``algorithm="auto"``: the timing autotune when on (``KERNELS_AUTOTUNE=1`` or
    ``kernels.dispatch.autotune_cache.enable()``; transform algorithms are not timed), else the device's
    committed routing table, else ``ROUTES``.
    Off by default: deterministic."""
    if autotune_cache.enabled():
        eligible = [name for name, entry in REGISTRY.items()
                    if name not in TRANSFORM_ALGORITHMS and entry.eligible(params)]
        timed = autotune_cache.choose(params, eligible)
        if timed is not None:
            return timed
    return table_choice(params, device.current_name()) or heuristic_choice(params)


def resolve(algorithm: str, params: ConvParams) -> Algorithm:
    """The table's entry for ``algorithm`` ("auto", an alias or a name) on ``params``: raises
    ValueError naming the algorithm and the failed condition where it does not apply."""
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
    reason = entry.why_not(params)
    if reason is not None:
        raise ValueError(f"conv{params.spatial_dims}d: algorithm={name!r} does not apply to this convolution: {reason}")
    return entry
