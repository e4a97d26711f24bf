"""grad_bias of every algorithm: dy summed over (N, P, Q) per output channel, deterministically.

The reduction is split into fixed chunks (``common.reduction_splits``, a function of the shape
alone); each program sums one chunk of pixels for a block of channels, and the parts are added in
order on the host side of the launch.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..core.launcher import TunedKernel, config
from ..core.params import ConvParams
from .common import acc_dtype, needs_int64, new_buffer, reduction_splits
from .tiles import advance_pixels, pixel_walk


@triton.jit
def _bias_grad_kernel(
    # pointers: grad_output, per-chunk partial sums
    dy_ptr, part_ptr,
    # sizes (CHUNK: output pixels per reduction part) and the strides of grad_output
    N, K, P, Q, CHUNK,
    sd_n, sd_k, sd_p, sd_q,
    # meta-parameters
    ACC_DTYPE: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Each program sums dy over one CHUNK of N*P*Q for BLOCK_N channels: part[split, k].

    Grid: (channel blocks, splits). Pixel coordinates advance by a mixed-radix add, no division.
    """
    pid_k = tl.program_id(0)
    split = tl.program_id(1)
    k = pid_k * BLOCK_N + tl.arange(0, BLOCK_N)
    k_ok = k < K
    if USE_INT64:
        k = k.to(tl.int64)
    start = split * CHUNK
    end = tl.minimum(start + CHUNK, N * P * Q)
    n, p, q, step_n, step_p, step_q = pixel_walk(start, BLOCK_M, P, Q, USE_INT64)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for j0 in range(start, end, BLOCK_M):
        rows = n * sd_n + p * sd_p + q * sd_q
        row_ok = (j0 + tl.arange(0, BLOCK_M)) < end
        v = tl.load(dy_ptr + rows[:, None] + k[None, :] * sd_k, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        acc += v.to(ACC_DTYPE)
        n, p, q = advance_pixels(n, p, q, step_n, step_p, step_q, P, Q)
    tl.store(part_ptr + split * K + k, tl.sum(acc, axis=0), mask=k_ok)


BIAS_GRAD = TunedKernel(
    _bias_grad_kernel,
    configs=[config(BLOCK_M=64, BLOCK_N=64, num_stages=2), config(BLOCK_M=128, BLOCK_N=32, num_stages=2)],
    key=["N", "K", "P", "Q", "CHUNK", "ACC_DTYPE", "USE_INT64"],
    interpreter_config=config(BLOCK_M=16, BLOCK_N=16, num_stages=1),
)



def grad_bias(dy: torch.Tensor, params: ConvParams) -> torch.Tensor:
    """db = dy summed over N, P, Q, deterministic."""
    npq = params.n * params.p * params.q
    if npq == 0:
        return torch.zeros(params.k, dtype=dy.dtype, device=dy.device)
    splits, chunk = reduction_splits(npq, triton.cdiv(params.k, 64))
    part_dtype = torch.float64 if dy.dtype == torch.float64 else torch.float32
    part = new_buffer((splits, params.k), part_dtype, dy.device)
    grid = lambda meta: (triton.cdiv(params.k, meta["BLOCK_N"]), splits)
    BIAS_GRAD[grid](
        dy, part, params.n, params.k, params.p, params.q, chunk, *dy.stride(),
        ACC_DTYPE=acc_dtype(dy.dtype), USE_INT64=needs_int64(dy),
    )
    return part.sum(0).to(dy.dtype)
