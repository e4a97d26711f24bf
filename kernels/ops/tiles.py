"""``@triton.jit`` helpers shared by the kernels of every family: tile order, output tiles, pixel
walks, split ranges and the digits of a reduction counter.

Each is inlined where it is called; none adds a division to a main loop (the pixel walk's
divisions happen once, before it).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def grouped_tile(pid, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """Map a linear program id to (pid_m, pid_n), GROUP_M row-tiles at a time, for L2 reuse."""
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % num_pid_in_group) % group_size_m
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def gemm_tile(pid, ROWS, COLS, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """The output tile of program ``pid`` in a ROWS x COLS GEMM, tiles in grouped order: its row and
    column indices (offs_m, offs_n) and their bounds masks (mask_m, mask_n)."""
    pid_m, pid_n = grouped_tile(pid, tl.cdiv(ROWS, BLOCK_M), tl.cdiv(COLS, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    return offs_m, offs_n, offs_m < ROWS, offs_n < COLS


@triton.jit
def carry(digit, LIMIT, higher):
    """One digit of a mixed-radix counter: ``digit`` wraps to 0 when it reaches LIMIT and carries one
    into ``higher``. A main loop steps (tap, channel block) counters this way, without a division."""
    wrap = (digit >= LIMIT).to(tl.int32)
    return digit * (1 - wrap), higher + wrap


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
def voxel_walk(first, BLOCK: tl.constexpr, O, P, Q, USE_INT64: tl.constexpr):
    """``pixel_walk`` in 3-D: voxel coordinates (n, o, p, q) of first + arange(BLOCK) in that order,
    and the digits (step_n, step_o, step_p, step_q) of a BLOCK-voxel step, for ``advance_voxels``."""
    j = first + tl.arange(0, BLOCK)
    if USE_INT64:
        j = j.to(tl.int64)
    return (j // (O * P * Q), (j // (P * Q)) % O, (j // Q) % P, j % Q,
            BLOCK // (O * P * Q), (BLOCK // (P * Q)) % O, (BLOCK // Q) % P, BLOCK % Q)


@triton.jit
def advance_voxels(n, o, p, q, step_n, step_o, step_p, step_q, O, P, Q):
    """``advance_pixels`` with a depth digit: (n, o, p, q) of the voxel a (step_n, step_o, step_p,
    step_q) step further, one carry per digit, no division."""
    o, p, q = advance_pixels(o, p, q, step_o, step_p, step_q, P, Q)
    carry = (o >= O).to(o.dtype)
    return n + step_n + carry, o - carry * O, p, q


@triton.jit
def split_range(iterations, split, SPLIT_K: tl.constexpr):
    """[first, last) of the main-loop iterations that reduction part ``split`` of SPLIT_K runs."""
    per_split = tl.cdiv(iterations, SPLIT_K)
    first = split * per_split
    return first, tl.minimum(first + per_split, iterations)
