"""Optional timing autotune for ``algorithm="auto"``, like ``torch.backends.cudnn.benchmark``.

Off by default (then ``auto`` follows the routing in ``auto.py`` and is
deterministic). Switched on by ``KERNELS_AUTOTUNE=1`` or ``enable()``: the first call of a
(shape, dtype, layout, device, triton version) times every eligible algorithm's forward on
random data of that shape and keeps the fastest, in memory and in a JSON file under the
user's cache directory (``$KERNELS_CACHE_DIR``, else ``$XDG_CACHE_HOME/triton-convkernels``,
else ``~/.cache/triton-convkernels``), so later processes reuse it without timing again.

Timing needs a GPU: on the CPU interpreter, or while ``torch.compile`` traces, only an
already cached choice is used.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import torch

from ..core.interpreter import interpreting
from ..core.layout import memory_format
from ..core.params import ConvParams

ENV_SWITCH = "KERNELS_AUTOTUNE"
_switch: Optional[bool] = None  # None: follow the environment variable
_memory: Dict[str, str] = {}


def enable(on: bool = True) -> None:
    """Turn the timing autotune on or off for this process (overrides ``KERNELS_AUTOTUNE``)."""
    global _switch
    _switch = on


def enabled() -> bool:
    if _switch is not None:
        return _switch
    return os.environ.get(ENV_SWITCH, "0").lower() in ("1", "true", "yes", "on")


def cache_file() -> Path:
    root = os.environ.get("KERNELS_CACHE_DIR")
    if root is None:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "triton-convkernels")
    return Path(root) / "autotune.json"


def cache_key(params: ConvParams, device_name: str) -> str:
    import triton

    return "|".join(str(v) for v in (
        (params.n, params.c, params.h, params.w), (params.k, params.c_per_group, params.r, params.s),
        params.stride, params.padding, params.dilation, params.groups, params.has_bias,
        str(params.dtype).replace("torch.", ""), "channels_last" if params.channels_last else "nchw",
        device_name, f"triton-{triton.__version__}",
    ))


def _load() -> Dict[str, str]:
    try:
        return json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _store(key: str, name: str) -> None:
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = _load()
        entries[key] = name
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
        tmp.replace(path)  # atomic: concurrent processes never read half a file
    except OSError:
        pass  # an unwritable cache directory only costs re-timing in the next process


def _gpu_timer(params: ConvParams) -> Callable[[str], float]:
    """Median forward time (ms) of an algorithm on random CUDA data of this problem."""
    import triton.testing

    from .table import REGISTRY

    x = torch.randn(params.input_shape, device="cuda", dtype=params.dtype).to(
        memory_format=memory_format(params.channels_last, len(params.input_shape)))
    w = torch.randn(params.weight_shape, device="cuda", dtype=params.dtype)
    b = torch.randn(params.k, device="cuda", dtype=params.dtype) if params.has_bias else None

    def time_ms(name: str) -> float:
        forward = REGISTRY[name].forward
        return triton.testing.do_bench(lambda: forward(x, w, b, params), return_mode="median")

    return time_ms


def choose(params: ConvParams, candidates: Sequence[str], timer: Optional[Callable[[str], float]] = None,
           device_name: Optional[str] = None) -> Optional[str]:
    """The fastest of ``candidates`` for ``params`` (cached), or None when it cannot be timed."""
    if not candidates:
        return None
    if device_name is None:
        if not torch.cuda.is_available():
            return None
        device_name = torch.cuda.get_device_name()
    key = cache_key(params, device_name)
    if key not in _memory:
        cached = _load().get(key)
        if cached is not None:
            _memory[key] = cached
    if _memory.get(key) in candidates:
        return _memory[key]
    if timer is None:
        if interpreting() or torch.compiler.is_compiling() or not torch.cuda.is_available():
            return None
        timer = _gpu_timer(params)
    times = {name: timer(name) for name in candidates}
    best = min(candidates, key=lambda name: (times[name], list(candidates).index(name)))
    _memory[key] = best
    _store(key, best)
    return best
