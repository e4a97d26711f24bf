"""Pieces shared by the implicit-GEMM kernels (forward, dgrad, wgrad, stem) and their launchers."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import gemm_plan
from .splitk import split_reduce


@triton.jit
def aligned(value, VEC: tl.constexpr):
    """``value`` (a multiple of VEC, which the launcher checked) in a form Triton's divisibility
    analysis sees as one: loads and masks built from it vectorise to VEC elements."""
    return (value // VEC) * VEC


@triton.jit
def pixel_walk(first, BLOCK: tl.constexpr, P, Q, USE_INT64: tl.constexpr):
    """Pixel coordinates (n, p, q) of first + arange(BLOCK) in (n, p, q) order, and the digits
    (step_n, step_p, step_q) of a BLOCK-pixel step, for ``advance_pixels``: the divisions of a
    pixel walk, done once before its loop."""
    j = first + tl.arange(0, BLOCK)
    if USE_INT64:
        j = j.to(tl.int64)
    return j // (P * Q), (j // Q) % P, j % Q, BLOCK // (P * Q), (BLOCK % (P * Q)) // Q, BLOCK % Q


@triton.jit
def advance_pixels(n, p, q, step_n, step_p, step_q, P, Q):
    """(n, p, q) of the pixel ``step`` = (step_n*P + step_p)*Q + step_q positions further in
    (n, p, q) order, for 0 <= step_p < P and 0 <= step_q < Q: a mixed-radix add with one carry
    per digit, so a main loop walks pixels without a division."""
    q = q + step_q
    carry = (q >= Q).to(q.dtype)
    q -= carry * Q
    p = p + step_p + carry
    carry = (p >= P).to(p.dtype)
    p -= carry * P
    n = n + step_n + carry
    return n, p, q


@triton.jit
def split_range(iterations, split, SPLIT_K: tl.constexpr):
    """[first, last) of the main-loop iterations that reduction part ``split`` of SPLIT_K runs."""
    per_split = tl.cdiv(iterations, SPLIT_K)
    first = split * per_split
    return first, tl.minimum(first + per_split, iterations)


def nhwc(t: torch.Tensor) -> torch.Tensor:
    """``t`` with channels contiguous (itself when it already is): the GEMM kernels' operand layout.

    NCHW and strided callers are served by the channels_last kernels through this one copy
    (the planner's layout decision; a GPU measurement showing a strided path faster would
    change it here). Other strides stay as they are: the vector width follows them.
    """
    return t if t.size(1) == 1 or t.stride(1) == 1 else t.contiguous(memory_format=torch.channels_last)


def row_strides(t: torch.Tensor):
    """The strides of dims 0, 2, 3 (batch or K, rows, columns) the kernels form addresses from,
    0 for a dimension of size 1 (never stepped along): a 1x1 weight's arbitrary tap strides, or a
    batch of one's, must not lower the vector width."""
    return tuple(t.stride(d) if t.size(d) > 1 else 0 for d in (0, 2, 3))


def vector_width_for(dtype: torch.dtype, *values: int, tensors=()) -> int:
    return gemm_plan.vector_width(torch.empty((), dtype=dtype).element_size(), *values, tensors=tensors)


def finish(result: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """The kernels write channels_last; PyTorch's rule may ask for NCHW (one copy out). An empty
    tensor counts as contiguous in every format, so it is made anew in NCHW strides."""
    if channels_last:
        return result
    if result.numel() == 0:
        return torch.empty(result.shape, dtype=result.dtype, device=result.device)
    return result.contiguous()


def reduce_if_split(chosen, part, out, pixels, out_strides, **epilogue) -> None:
    """After a planned launch: add the split-K partials into ``out`` when the chosen config split."""
    splits = chosen.kwargs["SPLIT_K"]
    if splits > 1:
        split_reduce(part[:splits], out, pixels, out_strides, **epilogue)
