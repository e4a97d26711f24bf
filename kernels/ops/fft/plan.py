"""The FFT planner: orientation, DFT tile, kernel chunks, tile batches and block sizes of a layer.

Tiled overlap-save (cuDNN's FFT_TILING): the output is cut into MH x MW tiles; each reads a
TH x TW input patch (MH = TH - reach_h + 1), whose 2-D DFT times the filter's conjugate spectrum is
the circular correlation, exact on its first MH x MW outputs.

* Orientation: an R x 1 kernel (reach 1 along the width) runs transposed, as 1 x R: the launcher
  swaps the height and width strides, so only the height may lack a transform (TH = 1: a 1-D FFT
  along the width, as for every ``conv1d``).
* Tile: per axis a power of two in ``TILES_2D`` (``DEPTHWISE_TILES_2D`` on the fused path) (``TILES_1D`` when TH = 1) at least the kernel's
  reach: the one with the fewest multiplies per output pixel (``_cost``: the transform GEMMs and
  the per-frequency products, the counts ``forward.fft_counts`` reports) whose workspace fits.
* Kernel chunks: a kernel reaching further than half the largest tile is split into chunks of
  taps that reach at most that far; each chunk is one overlap-save pass, the passes summed through
  the epilogue's residual (``forward.py``). Reductions grow with the number of chunks, so very long
  1-D filters take the decomposed full-length path instead (``long.py``).
* Workspace: the transformed tensors (input spectra V, products Y, filter spectrum U; fp32, fp64 for
  fp64) are bounded by ``WORKSPACE_MULTIPLE`` x (input + weight + output bytes), or
  ``WORKSPACE_FLOOR`` when that is larger: the tiles run in batches (``tile_batch``) whose V and Y
  fit beside U. A layer whose U alone (or one batch of ``MIN_TILE_BATCH`` tiles) does not fit is
  rejected by ``why_not`` before anything is allocated. The depthwise path keeps V and Y in
  registers (one kernel per tile: DFT -> multiply -> inverse DFT): only U is in memory.

Block sizes are chosen here too (no autotuning: the transforms' register tiles are fixed by T).
None of this was timed on a GPU: the cost model counts multiplies, nothing more.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import triton

from ...core.interpreter import interpreting
from ...core.params import ConvParams

TILES_2D = (16, 32, 64)
TILES_1D = (16, 32, 64, 128, 256)
# The fused depthwise kernel holds both transforms' matrices and its patches at once: a 64 x 64 tile
# needs 576 KB of shared memory on sm_90 (the compile check), a 32 x 32 one fits.
DEPTHWISE_TILES_2D = (16, 32)
# 1-D depthwise (Hyena's long convolutions): full-length DFTs of N = TH * TW points, N1 = TW = 64 and
# N2 = TH (``dft.py``, LONG), up to 4096 points; longer filters run in chunks of up to 2048 taps.
LONG_TILES = ((16, 64), (32, 64), (64, 64))
WORKSPACE_MULTIPLE = 8
WORKSPACE_FLOOR = 2**30
MIN_TILE_BATCH = 16

TILED = "tiled"
DEPTHWISE = "depthwise"


@dataclass(frozen=True)
class Geometry:
    """A 2-D problem in the kernels' orientation (height and width swapped when ``transposed``)."""

    h: int
    w: int
    p: int
    q: int
    r: int
    s: int
    pad_h: int
    pad_w: int
    dil_h: int
    dil_w: int

    @property
    def reach(self) -> Tuple[int, int]:
        return self.dil_h * (self.r - 1) + 1, self.dil_w * (self.s - 1) + 1


@dataclass(frozen=True)
class FFTPlan:
    transposed: bool
    geometry: Geometry
    th: int
    tw: int
    chunk_r: int  # taps per kernel chunk (== r and s when the kernel is not chunked)
    chunk_s: int
    path: str
    tile_batch: int  # tiles per launch batch
    spectrum_dtype: torch.dtype
    long: bool = False  # one full-length 1-D DFT of TH * TW points per tile (``dft.py``, LONG)

    @property
    def mh(self) -> int:
        return 1 if self.long else self.th - self.geometry.dil_h * (self.chunk_r - 1)

    @property
    def mw(self) -> int:
        return (self.th if self.long else 1) * self.tw - self.geometry.dil_w * (self.chunk_s - 1)

    @property
    def frequencies(self) -> int:
        return self.th * self.tw

    @property
    def tiles_h(self) -> int:
        return triton.cdiv(self.geometry.p, self.mh)

    @property
    def tiles_w(self) -> int:
        return triton.cdiv(self.geometry.q, self.mw)

    @property
    def kernel_chunks(self) -> Tuple[int, int]:
        return triton.cdiv(self.geometry.r, self.chunk_r), triton.cdiv(self.geometry.s, self.chunk_s)


def oriented(params: ConvParams) -> Tuple[bool, Geometry]:
    """(transposed, geometry): R x 1 kernels swap height and width."""
    reach_h = params.dilation[0] * (params.r - 1) + 1
    reach_w = params.dilation[1] * (params.s - 1) + 1
    g = Geometry(params.h, params.w, params.p, params.q, params.r, params.s, params.pad_top, params.pad_left,
                 *params.dilation)
    if reach_w == 1 and reach_h > 1:
        return True, Geometry(g.w, g.h, g.q, g.p, g.s, g.r, g.pad_w, g.pad_h, g.dil_w, g.dil_h)
    return False, g


def spectrum_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunk_taps(taps: int, dilation: int, largest: int) -> int:
    """Taps per chunk so that a chunk reaches at most half the largest tile."""
    reach = dilation * (taps - 1) + 1
    if reach <= largest // 2:
        return taps
    return max(1, (largest // 2 - 1) // dilation + 1)


def transform_macs(th: int, tw: int) -> Tuple[int, int]:
    """Real MACs of the forward (real patch -> spectrum) and inverse (spectrum -> real patch) DFT GEMMs."""
    width = th * tw * 2 * tw  # [TH, TW] @ [TW, 2TW]
    height = tw * 2 * th * 2 * th if th > 1 else 0  # [TW, 2TH] @ [2TH, 2TH]
    return width + height, height + width


def product_macs(th: int, tw: int, params: ConvParams, path: str) -> int:
    """Real MACs of the frequency-domain products of one tile (4 per complex multiply)."""
    per_channel_pair = 4 * th * tw
    if path == DEPTHWISE:
        return per_channel_pair * params.k
    return per_channel_pair * params.c_per_group * params.k


def _cost(th, tw, mh, mw, params, path) -> float:
    forward, inverse = transform_macs(th, tw)
    per_tile = forward * params.c + inverse * params.k + product_macs(th, tw, params, path)
    return per_tile / (mh * mw)


def _itemsize(dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def workspace_budget(params: ConvParams) -> int:
    """The most bytes the transformed tensors may take: WORKSPACE_MULTIPLE x (input + weight + output
    bytes), at least WORKSPACE_FLOOR."""
    element = _itemsize(params.dtype)
    io = (params.n * params.c * params.h * params.w + params.k * params.c_per_group * params.r * params.s
          + params.n * params.k * params.p * params.q) * element
    return max(WORKSPACE_MULTIPLE * io, WORKSPACE_FLOOR)


def workspace_bytes(plan: FFTPlan, params: ConvParams, tiles: Optional[int] = None) -> dict:
    """Bytes of the transformed tensors one batch of ``tiles`` tiles (default ``plan.tile_batch``) holds."""
    element = _itemsize(plan.spectrum_dtype)
    tiles = plan.tile_batch if tiles is None else tiles
    f = plan.frequencies
    filt = 2 * f * params.k * params.c_per_group * element
    if plan.path == DEPTHWISE:
        inp = out = 0
    else:
        inp, out = 2 * f * tiles * params.c * element, 2 * f * tiles * params.k * element
    partial = params.n * params.k * params.p * params.q * element if plan.kernel_chunks != (1, 1) else 0
    return {"transformed_input_bytes": inp, "transformed_output_bytes": out, "transformed_filter_bytes": filt,
            "partial_output_bytes": partial, "workspace_bytes": inp + out + filt + partial}


class DoesNotFit(ValueError):
    pass


def make_plan(params: ConvParams) -> FFTPlan:
    """The plan for ``params`` (stride 1): raises ``DoesNotFit`` naming the budget when the
    workspace cannot be bounded."""
    transposed, g = oriented(params)
    reach_h, reach_w = g.reach
    one_d = reach_h == 1
    path = DEPTHWISE if params.c_per_group == 1 and params.groups > 1 else TILED
    tiles_2d = TILES_2D if path == TILED else DEPTHWISE_TILES_2D
    longs = LONG_TILES if one_d and path == DEPTHWISE else ()
    largest_w = max([TILES_1D[-1]] + [th * tw for th, tw in longs]) if one_d else tiles_2d[-1]
    chunk_r = g.r if one_d else _chunk_taps(g.r, g.dil_h, tiles_2d[-1])
    chunk_s = _chunk_taps(g.s, g.dil_w, largest_w)
    creach_h, creach_w = g.dil_h * (chunk_r - 1) + 1, g.dil_w * (chunk_s - 1) + 1
    heights = (1,) if one_d else [t for t in tiles_2d if t >= creach_h]
    widths = [t for t in (TILES_1D if one_d else tiles_2d) if t >= creach_w]
    shapes = [(th, tw, False) for th in heights for tw in widths]
    shapes += [(th, tw, True) for th, tw in longs if th * tw >= creach_w]
    ranked = []
    for th, tw, long in shapes:
        if True:
            mh, mw = (1, th * tw - creach_w + 1) if long else (th - creach_h + 1, tw - creach_w + 1)
            # Tiles beyond the output only add work: count the whole tiles that cover it.
            cost = _cost(th, tw, mh, mw, params, path)
            cost *= triton.cdiv(g.p, mh) * mh * triton.cdiv(g.q, mw) * mw / max(1, g.p * g.q)
            ranked.append((cost, th, tw, long))
    budget = workspace_budget(params)
    smallest = None
    for _, th, tw, long in sorted(ranked):
        plan = FFTPlan(transposed, g, th, tw, chunk_r, chunk_s, path, 1, spectrum_dtype(params.dtype), long)
        tiles = max(1, params.n * plan.tiles_h * plan.tiles_w)
        fixed = workspace_bytes(plan, params, 0)["workspace_bytes"]
        per_tile = workspace_bytes(plan, params, 1)["workspace_bytes"] - fixed
        batch = tiles if per_tile == 0 else min(tiles, max(0, budget - fixed) // per_tile)
        least = min(MIN_TILE_BATCH, tiles)
        if batch >= least:
            return dataclasses.replace(plan, tile_batch=int(batch))
        need = fixed + per_tile * least
        if smallest is None or need < smallest[0]:
            smallest = (need, th, tw, least)
    need, th, tw, least = smallest
    raise DoesNotFit(
        f"fft's transformed tensors do not fit its workspace bound: with the smallest, {th}x{tw} tiles, the "
        f"filter spectrum and {least} tiles need {need} bytes, more than the {budget} allowed "
        f"({WORKSPACE_MULTIPLE} x input + weight + output bytes, at least {WORKSPACE_FLOOR})")


def weight_grad_tile_batch(plan: FFTPlan, params: ConvParams) -> int:
    """Tiles per launch batch of grad_weight (``weight_grad.py``): its input and grad_output spectra (V, G)
    beside the filter gradient's spectrum DW within ``workspace_budget``; raises ``DoesNotFit`` (before
    anything is allocated) when not even ``MIN_TILE_BATCH`` tiles fit. The depthwise forward keeps V in
    registers; its grad_weight cannot (the sum over tiles crosses programs), so it batches too."""
    element = _itemsize(plan.spectrum_dtype)
    f = plan.frequencies
    fixed = 2 * f * params.k * params.c_per_group * element
    per_tile = 2 * f * (params.c + params.k) * element
    tiles = max(1, params.n * plan.tiles_h * plan.tiles_w)
    budget = workspace_budget(params)
    batch = min(tiles, max(0, budget - fixed) // per_tile)
    least = min(MIN_TILE_BATCH, tiles)
    if batch < least:
        raise DoesNotFit(
            f"fft's grad_weight does not fit its workspace bound: {fixed + per_tile * least} bytes for the filter "
            f"gradient's spectrum and {least} tiles' spectra, more than the {budget} allowed")
    return int(batch)


# Register-tile budgets (fp32 elements of the largest transform intermediate per program).
_GPU_ELEMENTS = 16384
_INTERPRETER_ELEMENTS = 1 << 16


def transform_blocks(th: int, tw: int, columns: int, tiles: int, fused: bool = False) -> Tuple[int, int]:
    """(BLOCK_T, BLOCK_C) of a transform kernel: BLOCK_T tiles x BLOCK_C channels per program,
    their complex patches ([BLOCK_T * BLOCK_C, 2 * TH * TW] fp32) within the register budget, no more
    tiles than there are; every dot has >= 16 rows (BLOCK_T * BLOCK_C * TH). ``fused`` (the depthwise
    kernel holds both transforms at once): half the budget (the full one spilled 216-312 B on sm_90).
    The kernels' static config lists are never used as such: ``TunedKernel.launch`` runs this plan."""
    budget = _INTERPRETER_ELEMENTS if interpreting() else _GPU_ELEMENTS // (2 if fused else 1)
    patches = max(1, budget // (2 * th * tw))
    block_c = min(triton.next_power_of_2(max(columns, 1)), 16, patches)
    block_t = max(1, min(patches // block_c, triton.next_power_of_2(max(tiles, 1))))
    while block_t * block_c * th < 16:
        block_t *= 2
    return block_t, block_c
