"""How a call is timed, and the device's measured peaks.

GPU: the call is warmed up outside the timing (autotuning, cuDNN's algorithm search), then
timed with device events by ``triton.testing.do_bench`` (median; L2 flushed before each
run). Calls that take less than ``GRAPH_BELOW_MS`` are re-timed as a CUDA graph of many
unrolled calls (``do_bench_cudagraph``, median), so the host's launch overhead does not
swamp the kernel; the method used is recorded. Inputs are rotated (``Rotation``) so that
back-to-back calls do not find their operands in L2.

CPU (Triton interpreter): the wall-clock time of the one run that is checked for correctness
(``run_once``); the interpreter is too slow to run anything twice. These are interpreter
timings, not GPU timings, and no speed claim is made from them.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

import torch

from .environment import ON_GPU

GRAPH_BELOW_MS = 0.1
# Rotate enough input sets to cover several times the L2 cache (read from the device: 50 MiB on an
# H100, 60 MiB on an H200; 50 MiB where the properties do not say) ...
ROTATION_BYTES = 4 * 50 * 2**20
# ... but never hold more than this in rotated copies.
ROTATION_CAP_BYTES = 8 * 2**30
MAX_SETS = 16


@dataclass
class Timing:
    ms: Optional[float]
    method: str  # "do_bench", "cuda_graph" or "interpreter"


class Rotation:
    """Cycles through ``len(sets)`` independent copies of a call's inputs."""

    def __init__(self, sets: Sequence[tuple]):
        self.sets = list(sets)
        self.index = 0

    def next(self) -> tuple:
        item = self.sets[self.index]
        self.index = (self.index + 1) % len(self.sets)
        return item

    @staticmethod
    def count(bytes_per_set: int) -> int:
        """How many sets to make for inputs of ``bytes_per_set`` bytes (1 on the CPU)."""
        if not ON_GPU or bytes_per_set <= 0:
            return 1
        l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or 50 * 2**20
        wanted = math.ceil(max(ROTATION_BYTES, 4 * l2) / bytes_per_set)
        affordable = max(1, ROTATION_CAP_BYTES // bytes_per_set)
        return int(max(1, min(wanted, affordable, MAX_SETS)))


def synchronize() -> None:
    if ON_GPU:
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], graph: bool = False, warmup_calls: int = 3) -> Timing:
    """Median time of ``fn()`` in milliseconds: device events (``graph=False``) or a CUDA graph
    of unrolled calls (``graph=True``; falls back to events if the call cannot be captured)."""
    if not ON_GPU:
        return run_once(fn)[1]
    import triton.testing

    for _ in range(warmup_calls):  # autotuning and cudnn.benchmark's search happen here
        fn()
    torch.cuda.synchronize()
    if graph:
        try:
            with torch.cuda.stream(torch.cuda.Stream()):  # capture never runs on the default stream
                ms = triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median")
            return Timing(ms, "cuda_graph")
        except Exception as error:  # noqa: BLE001 - a call that cannot be captured keeps event timing
            torch.cuda.synchronize()
            print(f"\n  (CUDA graph capture failed, timing with events instead: {type(error).__name__}: {error})")
    return Timing(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"), "do_bench")


def run_once(fn: Callable[[], object]):
    """``fn()``'s result and its wall-clock time (what an interpreter run reports)."""
    start = time.perf_counter()
    result = fn()
    synchronize()
    return result, Timing((time.perf_counter() - start) * 1e3, "interpreter" if not ON_GPU else "wall_clock")


def time_calls(fns: Dict[str, Callable[[], object]]) -> Dict[str, Timing]:
    """Time every call of one case with the same method: events, or CUDA graphs for all of them
    when the fastest takes under ``GRAPH_BELOW_MS`` (launch overhead would dominate). A call
    that raises gets ``Timing(None, "failed: ...")`` instead of stopping the run."""

    def safe(fn, **kwargs) -> Timing:
        try:
            return time_call(fn, **kwargs)
        except Exception as error:  # noqa: BLE001 - reported in the results, the run goes on
            synchronize()
            return Timing(None, f"failed: {type(error).__name__}: {error}"[:300])

    timings = {name: safe(fn) for name, fn in fns.items()}
    fastest = min((t.ms for t in timings.values() if t.ms is not None), default=float("inf"))
    if ON_GPU and fastest < GRAPH_BELOW_MS:
        timings = {name: safe(fn, graph=True, warmup_calls=1) if timings[name].ms is not None else timings[name]
                   for name, fn in fns.items()}
    return timings


def measure_peaks(dtypes: Sequence[str]) -> Dict[str, object]:
    """The device's own ceilings, measured once at start: dense matmul TFLOP/s per dtype (a
    large square GEMM through cuBLAS) and copy bandwidth (a large device-to-device copy,
    bytes read + written). On the CPU there are no GPU peaks to measure."""
    if not ON_GPU:
        return {}
    from .environment import PRECISIONS, precision_mode

    peaks: Dict[str, object] = {"matmul_size": 8192, "tflops": {}}
    size = 8192
    for name in dtypes:
        precision = PRECISIONS[name]
        if precision.quantized:
            continue  # no plain matmul of 8-bit operands: no measured ceiling, rows give no % of peak
        with precision_mode(precision):
            a = torch.randn(size, size, device="cuda", dtype=precision.dtype)
            b = torch.randn(size, size, device="cuda", dtype=precision.dtype)
            ms = time_call(lambda: a @ b).ms
            peaks["tflops"][name] = 2 * size**3 / (ms * 1e-3) / 1e12
            del a, b
    n_bytes = 2 * 2**30
    src = torch.empty(n_bytes, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    ms = time_call(lambda: dst.copy_(src)).ms
    peaks["copy_bytes"] = n_bytes
    peaks["bandwidth_gbs"] = 2 * n_bytes / (ms * 1e-3) / 1e9
    del src, dst
    torch.cuda.empty_cache()
    return peaks


def bound_and_fraction(flops: float, n_bytes: float, ms: float, peaks: dict, precision: str):
    """Which roof bounds a call of ``flops`` and ``n_bytes`` (minimum traffic), and the
    fraction of that roof reached in ``ms``: the roofline's ridge point decides."""
    peak_tflops = peaks.get("tflops", {}).get(precision)
    bandwidth = peaks.get("bandwidth_gbs")
    if not peak_tflops or not bandwidth or not ms:
        return None, None
    intensity = flops / n_bytes
    ridge = peak_tflops * 1e12 / (bandwidth * 1e9)
    if intensity >= ridge:
        return "compute", flops / (ms * 1e-3) / (peak_tflops * 1e12)
    return "memory", n_bytes / (ms * 1e-3) / (bandwidth * 1e9)
