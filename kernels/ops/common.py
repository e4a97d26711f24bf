"""Launch-side helpers shared by every algorithm family: output buffers, 64-bit offsets, accumulator
type and precision, the split of a non-GEMM reduction."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..core import device
from ..core.interpreter import interpreting
from ..core.layout import memory_format
from ..core.params import ConvParams

# Tests set this to True so every buffer a kernel is meant to fill starts as NaN:
# an element the kernel forgets to write then fails the comparison instead of reading 0.
POISON_OUTPUTS = False

# Tests set this to True to run the 64-bit offset path on small tensors.
FORCE_INT64 = False

_INT32_LIMIT = 2**31 - 1


def acc_dtype(dtype: torch.dtype):
    """fp32 accumulation for fp16/bf16/fp32 and float8; fp64 stays fp64 (gradcheck); int8 sums in
    int32 (exact)."""
    if dtype == torch.int8:
        return tl.int32
    return tl.float64 if dtype == torch.float64 else tl.float32


def dot_precision(dtype: torch.dtype) -> str:
    """IEEE fp32 unless the user allowed TF32 for convolutions, as cuDNN does."""
    if dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"


def max_offset(t: torch.Tensor) -> int:
    """Largest element offset a kernel can form from this tensor's base pointer."""
    if t.numel() == 0:
        return 0
    return sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))


def needs_int64(*tensors: torch.Tensor) -> bool:
    """True when some offset into one of these tensors does not fit in int32."""
    if FORCE_INT64:
        return True
    return any(max_offset(t) > _INT32_LIMIT // 2 for t in tensors if t is not None)


def depth_stride(t: torch.Tensor) -> int:
    """The depth stride of a 5-D (N, C, D, H, W) tensor the 3-D kernels step along; 0 for a 4-D one or a
    depth of 1 (never stepped along, so it must not lower the vector width)."""
    return t.stride(2) if t.dim() == 5 and t.size(2) > 1 else 0


def folded_strides(t: torch.Tensor):
    """The four strides (n, c, h, w) the kernels address a 4-D tensor by; for a 5-D channels_last_3d
    one, (depth, c, h, w): its (N, D) dimensions fold into one of stride ``stride(2)`` (N's stride is
    D times it), which the kernels' first coordinate indexes."""
    if t.dim() == 4:
        return tuple(t.stride())
    assert t.size(0) <= 1 or t.stride(0) == t.size(2) * t.stride(2), "(N, D) must fold: a channels_last_3d tensor"
    return (t.stride(2), t.stride(1), t.stride(3), t.stride(4))


def foldable(t: torch.Tensor) -> torch.Tensor:
    """A 5-D tensor whose (N, D) fold into one dimension (``folded_strides``): itself, or a channels_last_3d
    copy (a broadcast residual, say)."""
    if t.size(0) <= 1 or t.stride(0) == t.size(2) * t.stride(2):
        return t
    copy = torch.empty(t.shape, dtype=t.dtype, device=t.device, memory_format=torch.channels_last_3d)
    return copy.copy_(t)


def new_buffer(shape, dtype, device, channels_last: bool = False) -> torch.Tensor:
    fmt = memory_format(channels_last and len(shape) in (4, 5), len(shape))
    out = torch.empty(shape, dtype=dtype, device=device, memory_format=fmt)
    if POISON_OUTPUTS:
        # int8 (a quantized output) has no NaN: -128, which only a saturated negative output stores.
        out.fill_(float("nan") if out.is_floating_point() else -128)
    return out


def new_output(params: ConvParams, device) -> torch.Tensor:
    """The forward output, (N, K, P, Q) in PyTorch's memory format for this call."""
    return new_buffer(params.output_shape, params.dtype, device, params.channels_last)


# Reduction chunks are multiples of this, so every BLOCK_K / BLOCK_M divides them.
_CHUNK_QUANTUM = 128


def reduction_splits(reduction: int, programs_per_split: int):
    """Pick (splits, chunk) for a reduction of ``reduction`` terms: a fixed function of the shape."""
    quantum = 16 if interpreting() else _CHUNK_QUANTUM
    most = triton.cdiv(max(reduction, 1), quantum)
    wanted = triton.cdiv(2 * device.target().sms, max(programs_per_split, 1))  # two waves of programs
    splits = max(1, min(most, wanted))
    chunk = triton.cdiv(triton.cdiv(max(reduction, 1), splits), quantum) * quantum
    return triton.cdiv(max(reduction, 1), chunk), chunk
