"""Hopper's tensor descriptors (TMA) for the implicit-GEMM kernels: the host-side rules and descriptors.

A TMA kernel receives its operands as ``triton.tools.tensor_descriptor.TensorDescriptor`` objects
(host-built: a global shape, strides and a box shape, in Triton 3.4 and later; the JIT's signature
spells one ``tensordesc<fp16[1, 128, 64]>``) instead of pointers. On sm_90 each ``desc.load`` is one
``cp.async.bulk.tensor`` of a whole box into shared memory: no per-thread address, no mask; a box
coordinate outside the global shape (negative, or past the end) reads zeros, which is how the kernels
get channel tails and convolution padding for free. Under Triton's interpreter the same descriptors
are emulated (zero fill included), so the TMA kernels are tested on the CPU.

What the copy engine accepts (``kernels.core.device.DeviceSpec``: 16-byte aligned base and strides,
unit last stride, boxes <= 256 per dimension, rank <= 5) is checked HERE, once, by
``descriptor_unsupported``; where it fails the launcher keeps the cp.async kernel. So do, on
purpose:

* float64 (TMA has the type, but no tensor core multiplies it: fp64 has nothing to gain, and
  gradcheck stays on the proven kernels) and 8-bit types (served by the low-precision kernels);
* problems whose box coordinates might not fit int32 (``needs_int64``: a descriptor's shape and
  strides are 64-bit, its coordinates are 32-bit; the epilogue's pointer offsets are 32-bit here):
  every TMA kernel serves a call only when no tensor of it is past 2^30 elements of offset, beyond
  that the int64 cp.async kernels do.

The box shape is the autotuned config's (BLOCK_M x BLOCK_K and so on): a kernel's configs carry a
``pre_hook`` (``with_pre_hook``; ``triton.autotune`` runs it before timing and before launching a
config) that sets every descriptor's box (``set_blocks``); the launcher sets them for the config
that runs under the interpreter.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import triton

from ...core import device
from ...core.interpreter import interpreting

try:  # Triton >= 3.4
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - an older Triton: every call keeps the cp.async kernels
    TensorDescriptor = None

# Element types a TMA kernel takes: 16-bit (wgmma) and fp32 (tf32 wgmma, or IEEE FMA).
TMA_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# False: every call takes the cp.async kernels (the sm_90 compile check sets it to compile them at the
# real layer sizes the TMA kernels would otherwise take).
ENABLED = True

# Box shapes: a tuple of meta-parameter names or ints per descriptor argument.
BoxSpec = Dict[str, Tuple]


def available() -> bool:
    """Tensor descriptors exist in this Triton and the target has a copy engine for them (sm_90+;
    the interpreter emulates them). On a GPU the target is read from the active driver (the
    compile-only driver of ``kernels.sm90`` says sm_90)."""
    if TensorDescriptor is None or not ENABLED:
        return False
    if interpreting():
        return True
    from triton.runtime import driver

    target = driver.active.get_current_target()
    return target.backend == "cuda" and isinstance(target.arch, int) and target.arch >= 90 and device.target().has_tma


def _strides(t: torch.Tensor, shape: Sequence[int], strides: Sequence[int]):
    """``strides`` with every size-1 dimension's (never stepped along: PyTorch leaves it arbitrary, 0
    or unaligned) replaced by 16 bytes, so it cannot fail the rules or reach the copy engine as 0."""
    return [int(s) if d != 1 or i == len(shape) - 1 else max(1, 16 // t.element_size())
            for i, (d, s) in enumerate(zip(shape, strides))]


def descriptor_unsupported(t: torch.Tensor, shape: Sequence[int], strides: Sequence[int]) -> Optional[str]:
    """Why a descriptor over ``t`` with this global ``shape`` and ``strides`` (in elements) cannot be
    built, or None. Box sizes are the planner's (<= 256, checked by ``box_unsupported``)."""
    gpu = device.target()
    strides = _strides(t, shape, strides)
    if t.dtype not in TMA_DTYPES:
        return f"dtype {t.dtype} (TMA kernels take {', '.join(map(str, TMA_DTYPES))})"
    if len(shape) > gpu.tma_max_rank:
        return f"rank {len(shape)} > {gpu.tma_max_rank}"
    size = t.element_size()
    if t.data_ptr() % gpu.tma_alignment:
        return f"base address not {gpu.tma_alignment}-byte aligned"
    if strides[-1] != 1:
        return "last dimension not contiguous"
    bad = [s for s in strides[:-1] if s <= 0 or (s * size) % gpu.tma_alignment]
    if bad:
        return f"stride {bad[0]} x {size} B not a multiple of {gpu.tma_alignment} B"
    if any(d <= 0 or d >= 2**31 for d in shape):
        return f"shape {tuple(shape)}: every dimension must be in [1, 2^31)"
    return None


def box_unsupported(box: Sequence[int], element_bytes: int) -> Optional[str]:
    """Why a box shape is not a TMA box (each dimension <= 256 elements, the innermost >= 16 bytes
    and a multiple of 16 bytes), or None."""
    gpu = device.target()
    if max(box) > gpu.tma_max_box:
        return f"box {tuple(box)} has a dimension > {gpu.tma_max_box}"
    inner = box[-1] * element_bytes
    if inner < gpu.tma_alignment or inner % gpu.tma_alignment:
        return f"box {tuple(box)}: its innermost {inner} B is not a multiple of {gpu.tma_alignment} B"
    return None


def descriptor(t: torch.Tensor, shape: Sequence[int], strides: Sequence[int]) -> "TensorDescriptor":
    """A descriptor over ``t`` (rules checked by ``descriptor_unsupported``); its box is set per config
    (``block_hook`` / ``set_blocks``), a placeholder of ones until then."""
    shape, strides = [int(d) for d in shape], _strides(t, shape, strides)
    placeholder = [1] * (len(shape) - 1) + [max(1, 16 // t.element_size())]
    return TensorDescriptor(t, shape, strides, placeholder)


def box(spec: Tuple, meta: dict):
    """A box shape from its spec (meta-parameter names or ints) and a config's meta-parameters."""
    return [meta[d] if isinstance(d, str) else d for d in spec]


def set_blocks(nargs: dict, boxes: BoxSpec, meta: dict) -> None:
    """Give every descriptor argument named in ``boxes`` the box of this config's meta-parameters."""
    for name, spec in boxes.items():
        nargs[name].block_shape = box(spec, meta)


def with_pre_hook(configs: Sequence[triton.Config], hook):
    """``configs`` with ``hook`` as their pre_hook: ``triton.autotune`` calls it with every argument and
    meta-parameter by name before it times or launches the config (a TMA kernel's sets its descriptors'
    boxes to the config's tile: ``set_blocks``)."""
    return [triton.Config(dict(c.kwargs), num_warps=c.num_warps, num_stages=c.num_stages, pre_hook=hook)
            for c in configs]


def boxes_unsupported(configs: Sequence[triton.Config], boxes: BoxSpec, element_bytes: int) -> Optional[str]:
    """Why some config's box is not a TMA box, or None."""
    for cfg in configs:
        for spec in boxes.values():
            why = box_unsupported(box(spec, cfg.kwargs), element_bytes)
            if why:
                return why
    return None


def rows_view(t: torch.Tensor) -> Optional[Tuple[int, int]]:
    """(rows, channels) of a channels-innermost tensor whose batch and spatial dimensions fold into
    one run of rows (N*H*W rows of C, each row ``C`` elements after the previous): a dense
    channels_last (channels_last_3d) tensor, or a (K, C, 1, 1) weight. None otherwise."""
    order = (0,) + tuple(range(2, t.dim())) + (1,)
    dense = t.permute(order)
    if not dense.is_contiguous():
        return None
    return t.numel() // max(t.size(1), 1), t.size(1)
