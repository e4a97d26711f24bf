"""The launch planner of the implicit-GEMM family: tiles, split-K and vector width, per problem.

Every GEMM-shaped kernel of the package (im2col forward, pointwise, dgrad, wgrad, stem) is
launched through ``plan``: it returns the candidate configs for one problem, best predicted
first. On a GPU the autotuner times them (``TunedKernel.launch``); under the interpreter the first
one runs with interpreter-sized tiles. The decisions, all functions of the problem alone:

* **BLOCK_K**: 64 for 16-bit types (32 for fp32), smaller when the reduction block is short
  (C = 24 runs at BLOCK_K = 32, not 64: three quarters of a 64-wide block would be padding);
  never below 32 for 8-bit operands (float8 / int8 ``tl.dot`` needs K >= 32).
* **Tiles**: up to 128x128 at 4 warps; 128x256 / 256x128 at 8 warps only for loops that do not
  decode kernel taps (a flattened tap x channel loop has been miscompiled by Triton at
  num_warps=8, pytorch#173068 / triton#1254: such loops stay at <= 4 warps until a GPU test
  proves 8 correct). No tile is larger than the GEMM it covers.
* **Stages**: as many as fit in shared memory, 2 to 5 (4 at BLOCK_K = 64), never more than the
  loop has iterations.
* **Split-K**: when a config's tile grid fills less than one wave of the GPU's SMs, the reduction
  is split into the fewest parts that fill it (each part keeping at least
  ``MIN_ITERATIONS_PER_SPLIT`` iterations, at most ``MAX_SPLITS`` parts). Parts write fp32 partial
  sums that ``splitk.py`` adds in a fixed order: deterministic, no atomics.
* **Order**: configs that give every SM at least one CTA first, then by a simple time model
  (waves of CTAs x each CTA's share of the reduction on its tile, larger tiles more efficient).
  Only the order is predicted; on a GPU the candidates are timed.
* **Data path** (``data_paths``): TMA first on sm_90 where the descriptor rules hold, cp.async for
  every call; on a GPU both are timed once per problem and the faster kept (``run_on_fastest_path``).
* **Vector width**: the largest power of two (up to 16 bytes) dividing every channel count,
  channel offset and row stride a kernel forms addresses from; the kernels assert it with
  ``tl.multiple_of``, so channel runs of 24 or 40 elements still load as 16-byte vectors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
import triton

from ...core import device
from ...core.interpreter import interpreting
from ...core.launcher import config, run_fastest

MIN_ITERATIONS_PER_SPLIT = 2
MAX_SPLITS = 256
MAX_CANDIDATES = 4
FLATTENED_LOOP_MAX_WARPS = 4  # see the module docstring: pytorch#173068

# SMs the interpreter plans for: 1, so tests run unsplit unless they ask for more (test_splitk.py).
INTERPRETER_SMS = 1

# (BLOCK_M, BLOCK_N, num_warps, relative efficiency of the tile on Hopper): larger tiles reuse
# each loaded operand more; the factors only order the candidates (the GPU times them).
_TILES = [
    (128, 256, 8, 1.10), (256, 128, 8, 1.10),
    (128, 128, 4, 1.00), (128, 64, 4, 0.85), (64, 128, 4, 0.85),
    (64, 64, 4, 0.70), (128, 32, 4, 0.60), (64, 32, 4, 0.50), (64, 16, 4, 0.35),
]
# The interpreter runs one small tile (every tl.dot dimension >= 16, as on the GPU).
_INTERPRETER_TILE = (32, 16, 16)
MIN_BLOCK_K_8BIT = 32  # tl.dot's K >= 32 for float8 / int8 operands (on the GPU; the interpreter follows)
INTERPRETER_CONFIG = config(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16, SPLIT_K=1, GROUP_M=2, num_warps=4, num_stages=1)


# The two pipelined operand tiles of every GEMM kernel, for ``TunedKernel``'s shared-memory estimate.
TILE_OPERANDS = [("BLOCK_M", "BLOCK_K"), ("BLOCK_K", "BLOCK_N")]
# The autotune key of the backward GEMM kernels (dgrad, wgrad): everything the plan depends on.
BACKWARD_KEY = ["N", "H", "W", "P", "Q", "C_PER_GROUP", "K_PER_GROUP", "R", "S", "stride_h", "stride_w", "dil_h",
                "dil_w", "D", "O", "T", "stride_d", "dil_d", "VEC", "ACC_DTYPE", "DOT_PRECISION", "USE_INT64"]


@dataclass(frozen=True)
class GemmProblem:
    """One launch of a GEMM-shaped kernel.

    m, n: the output tile grid's extent (GEMM rows and columns of one program axis);
    reduction_block: length of the innermost reduction run (channels per group, or the pixels of a
    wgrad chunk), which BLOCK_K steps through; outer_blocks: reduction runs outside it (kernel taps);
    programs: independent GEMMs on the other grid axes (groups, stride phases, taps);
    flattened: the main loop decodes taps (<= 4 warps, see the module docstring);
    persistent: one program per SM walks many tiles in one pipelined loop (the TMA kernels), so
    the pipeline's depth is not capped by one tile's reduction steps.
    """

    m: int
    n: int
    reduction_block: int
    outer_blocks: int
    programs: int
    element_bytes: int
    flattened: bool = True
    persistent: bool = False


def block_k(reduction_block: int, element_bytes: int) -> int:
    """The widest BLOCK_K in {16, 32, 64} (32 at most for fp32) that pads the run by <= 12.5%,
    else the one that pads it least."""
    widest = 64 if element_bytes <= 2 else 32
    # 8-bit operands: tl.dot needs K >= 32 (one e4m3 / s8 wgmma is 32 deep)
    choices = [b for b in (64, 32, 16) if b <= widest and (element_bytes > 1 or b >= 32)]
    padded = {b: triton.cdiv(max(reduction_block, 1), b) * b for b in choices}
    for b in choices:
        if padded[b] - reduction_block <= reduction_block / 8:
            return b
    return min(choices, key=lambda b: (padded[b], -b))


def splits_for(tiles: int, iterations: int, sms: int, resident: int = 1) -> int:
    """Split-K parts for ``tiles`` output tiles of ``iterations`` reduction steps on ``sms`` SMs
    holding ``resident`` CTAs each: 1 when the tiles fill the SMs. Else at least enough parts to
    give every SM a CTA, each part keeping >= MIN_ITERATIONS_PER_SPLIT steps (at most MAX_SPLITS),
    chosen by time = waves x resident CTAs x steps per part (co-resident CTAs share an SM): the
    fewest parts within 5% of the best. So 9 tiles on 132 SMs do not split into 15 parts (135 CTAs,
    a second wave 2% full) but into 28 (252 CTAs, both waves >= 90% full)."""
    if tiles >= sms:
        return 1
    most = max(1, min(iterations // MIN_ITERATIONS_PER_SPLIT, MAX_SPLITS))
    least = triton.cdiv(sms, tiles)
    if least >= most:
        return most
    time = {s: math.ceil(tiles * s / (sms * resident)) * resident * triton.cdiv(iterations, s)
            for s in range(least, most + 1)}
    best = min(time.values())
    return min(s for s, t in time.items() if t <= 1.05 * best)


def resident_ctas(bm: int, bn: int, bk: int, warps: int, stages: int, element_bytes: int) -> int:
    """CTAs of this config one SM of the target device holds: shared memory, threads and
    (estimated) registers."""
    gpu = device.target()
    smem = stages * (bm + bn) * bk * element_bytes + gpu.smem_reserved_per_block
    registers = min(255, bm * bn // (gpu.warp_size * warps) + 64)  # fp32 accumulators + addressing
    per_warp = triton.cdiv(registers * gpu.warp_size, gpu.reg_alloc_unit) * gpu.reg_alloc_unit
    return max(1, min(gpu.smem_per_sm // smem, gpu.threads_per_sm // (gpu.warp_size * warps),
                      gpu.regs_per_sm // (per_warp * warps), gpu.blocks_per_sm))


def _stages(bm: int, bn: int, bk: int, element_bytes: int, iterations: int, smem_per_block: int) -> int:
    per_stage = (bm + bn) * bk * element_bytes
    budget = smem_per_block - 16 * 1024  # the epilogue's layout conversion needs some too
    most = 4 if bk >= 64 else 5
    return max(2, min(most, budget // per_stage, iterations + 1))


def device_sms() -> int:
    """SMs of the GPU the plan is for (the interpreter's: ``INTERPRETER_SMS``)."""
    return INTERPRETER_SMS if interpreting() else device.target().sms


def plan(problem: GemmProblem) -> List[triton.Config]:
    """Candidate configs (BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K, GROUP_M, warps, stages), best first."""
    sms = device_sms()
    if interpreting():
        bm, bn, bk = _INTERPRETER_TILE
        bk = max(bk, MIN_BLOCK_K_8BIT) if problem.element_bytes == 1 else bk
        iterations = problem.outer_blocks * triton.cdiv(max(problem.reduction_block, 1), bk)
        tiles = triton.cdiv(problem.m, bm) * triton.cdiv(problem.n, bn) * problem.programs
        return [config(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=splits_for(tiles, iterations, sms),
                       GROUP_M=2, num_warps=4, num_stages=1)]

    bk = block_k(problem.reduction_block, problem.element_bytes)
    iterations = problem.outer_blocks * triton.cdiv(max(problem.reduction_block, 1), bk)
    m_cap = max(64, triton.next_power_of_2(problem.m))
    n_cap = max(16, triton.next_power_of_2(problem.n))
    scored = []
    for bm, bn, warps, efficiency in _TILES:
        if bm > m_cap or bn > n_cap or (problem.flattened and warps > FLATTENED_LOOP_MAX_WARPS):
            continue
        if problem.element_bytes != 2 and bm * bn > 128 * 128:
            # fp32 accumulators and operands of 256-wide tiles do not fit; 8-bit ones at 8 warps
            # spilled 8-32 B in the sm_90 compile check (255 registers)
            continue
        tiles = triton.cdiv(problem.m, bm) * triton.cdiv(problem.n, bn) * problem.programs
        stages = _stages(bm, bn, bk, problem.element_bytes, 1 << 20 if problem.persistent else iterations,
                         device.target().smem_per_block)
        resident = resident_ctas(bm, bn, bk, warps, stages, problem.element_bytes)
        split = splits_for(tiles, iterations, sms, resident)
        ctas = tiles * split
        # Predicted time: waves of co-resident CTAs, each doing its share of the reduction on
        # this tile (co-resident CTAs share the SM's tensor cores).
        work = bm * bn * triton.cdiv(iterations, split) / efficiency
        time = math.ceil(ctas / (sms * resident)) * resident * work
        # Configs that give every SM a CTA come first; then the predicted time.
        stages = min(stages, triton.cdiv(iterations, split) + 1) if split > 1 and not problem.persistent else stages
        scored.append((ctas < sms, time, -bm * bn,
                       config(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=split, GROUP_M=8, num_warps=warps,
                              num_stages=max(2, stages))))
    scored.sort(key=lambda item: item[:3])
    return [cfg for *_, cfg in scored[:MAX_CANDIDATES]]


def data_paths(tma_unsupported: Optional[str]) -> List[str]:
    """The operand data paths that may serve a GEMM launch, predicted best first: TMA (tensor
    descriptors, ``tma.py``) wherever its rules hold (``tma_unsupported``, the reason they do not, is
    None) and the target has a copy engine (sm_90), then cp.async, which serves every call. Hopper's
    fastest GEMMs all load by TMA, so it goes first; on a GPU ``run_on_fastest_path`` times both."""
    return (["tma"] if tma_unsupported is None else []) + ["cp.async"]


def run_on_fastest_path(family: str, key, tma: Optional[Callable], cp_async: Callable):
    """Run one GEMM launch on its data paths' fastest and return the result: ``tma`` (a thunk, None
    where the descriptor rules fail) and ``cp_async`` (a thunk) in ``data_paths``' order; on a GPU
    the first call per (family, key) times both (``launcher.run_fastest``), elsewhere TMA runs."""
    runs = {"tma": tma, "cp.async": cp_async}
    return run_fastest(family, key, {name: runs[name] for name in data_paths(None if tma else "no TMA")})


def static_menu(flattened: bool, element_bytes: int = 2) -> List[triton.Config]:
    """Every tile config ``plan`` can return (unsplit) on sm_90, for the autotuner's static list and
    the sm_90 compile check (built at import: no device is asked)."""
    bk = 64 if element_bytes <= 2 else 32
    return [config(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=1, GROUP_M=8, num_warps=warps,
                   num_stages=_stages(bm, bn, bk, element_bytes, 1 << 20, device.H100.smem_per_block))
            for bm, bn, warps, _ in _TILES if not (flattened and warps > FLATTENED_LOOP_MAX_WARPS)]


def unsplit(candidates: Sequence[triton.Config], max_tile: int = 1 << 30) -> List[triton.Config]:
    """``candidates`` with SPLIT_K = 1 (duplicates dropped): for launches whose sums must not go
    through fp32 partials (the 8-bit forward's exact int32 sums). Tiles of more than ``max_tile``
    outputs are narrowed (BLOCK_N halved) to fit."""
    out, seen = [], set()
    for cfg in candidates:
        kwargs = dict(cfg.kwargs, SPLIT_K=1)
        while kwargs["BLOCK_M"] * kwargs["BLOCK_N"] > max_tile and kwargs["BLOCK_N"] > 16:
            kwargs["BLOCK_N"] //= 2
        key = (tuple(sorted(kwargs.items())), cfg.num_warps, cfg.num_stages)
        if key not in seen:
            seen.add(key)
            out.append(config(num_warps=cfg.num_warps, num_stages=cfg.num_stages, **kwargs))
    return out


def largest_split(candidates: Sequence[triton.Config]) -> int:
    return max(cfg.kwargs["SPLIT_K"] for cfg in candidates)


def vector_width(element_bytes: int, *values: int, tensors: Sequence[torch.Tensor] = ()) -> int:
    """The largest power of two v <= 16 / element_bytes dividing every value (strides, channel
    counts and offsets, in elements) and every tensor's address in elements."""
    v = max(1, 16 // element_bytes)
    for t in tensors:
        values = values + (t.data_ptr() // element_bytes if t.data_ptr() % element_bytes == 0 else 1,)
    while v > 1 and any(value % v for value in values):
        v //= 2
    return v


def vector_width_for(dtype: torch.dtype, *values: int, tensors=()) -> int:
    """``vector_width`` for elements of ``dtype``."""
    return vector_width(torch.empty((), dtype=dtype).element_size(), *values, tensors=tensors)


def row_strides(t: torch.Tensor):
    """The strides of dims 0, 2, 3 (batch or K, rows, columns) the kernels form addresses from,
    0 for a dimension of size 1 (never stepped along): a 1x1 weight's arbitrary tap strides, or a
    batch of one's, must not lower the vector width."""
    dims = (0, 2, 3) if t.dim() == 4 else (0, 3, 4)  # a 5-D tensor's depth: ``common.depth_stride``
    return tuple(t.stride(d) if t.size(d) > 1 else 0 for d in dims)
