"""``kernels.enable()``: every 1-D, 2-D and 3-D convolution of unmodified PyTorch code on our kernels.

Every convolution PyTorch runs (``F.conv1d/2d``, ``F.conv_transpose1d/2d``, the ``nn.Conv*`` and
``nn.ConvTranspose*`` modules, ``padding="same"``, torchvision models ...) reaches the dispatcher
as ``aten::convolution``, and its gradient as ``aten::convolution_backward``. ``enable()``
registers our implementations of those two ops for the CUDA dispatch key (and the CPU key when
Triton runs on its interpreter) with ``torch.library``, the way kernel libraries such as FlagGems
override aten ops; ``disable()`` removes them, which restores PyTorch's. Nothing Python-level is
patched. Everything above the backend key stays PyTorch's: autocast casts before us, autograd
records ``convolution`` and calls ``convolution_backward`` (ours), double backward and
forward-mode AD are convolutions again (ours), vmap's batching rules fold the vmapped dimension
into one bigger convolution (ours), meta and fake tensors keep PyTorch's shape functions.

Passed through unchanged to the kernel PyTorch had registered before us (taken with
``torch.library.get_kernel``): dtypes other than
float16 / bfloat16 / float32 / float64, non-strided (sparse, mkldnn) tensors, and calls whose
arguments our validation rejects, so that the error raised is PyTorch's own.
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from collections import Counter
from typing import Optional

import torch

from .autograd.ops import conv2d_grad_bias_op, conv2d_grad_input_op, conv2d_grad_weight_op, conv2d_op
from .core.interpreter import interpreting
from .core.layout import memory_format, output_channels_last
from .core.params import SUPPORTED_DTYPES, ConvParams
from .core.variant_params import TransposedParams
from .dispatch import ALGORITHMS

# Calls into the registered ops while enabled: "convolution" and "convolution_backward" ran on our
# kernels, "passed_through" went to PyTorch's (tests read it).
ROUTED: Counter = Counter()


class _State:
    library: Optional[torch.library.Library] = None
    algorithm: str = "auto"


def _ours(input: torch.Tensor, weight: torch.Tensor, *others: Optional[torch.Tensor]) -> bool:
    """The convolutions we implement: 1-D, 2-D and 3-D (input and weight of the same rank, 3, 4 or 5),
    one of our dtypes for all operands, strided tensors on one device."""
    tensors = [t for t in (input, weight, *others) if t is not None]
    return (input.dim() in (3, 4, 5) and all(t.dim() == input.dim() for t in tensors[:2])
            and input.dtype in SUPPORTED_DTYPES and all(t.dtype == input.dtype for t in tensors)
            and all(t.layout == torch.strided and t.device == input.device for t in tensors))


def _pass_through(original, keyset, *args):
    """The kernel PyTorch had for this op and dispatch key before ``enable()``."""
    ROUTED["passed_through"] += 1
    return original.call_boxed(keyset, *args)


def _lift(t: Optional[torch.Tensor], one_d: bool) -> Optional[torch.Tensor]:
    return t.unsqueeze(2) if one_d and t is not None else t


def _lift_args(one_d: bool, stride, padding, dilation, output_padding):
    """1-D arguments as the 2-D ones over (N, C, 1, L)."""
    if not one_d:
        return list(stride), list(padding), list(dilation), list(output_padding)
    return [1, *stride], [0, *padding], [1, *dilation], [0, *output_padding]


def _problem(input_shape, weight_shape, stride, padding, dilation, transposed, output_padding, groups, dtype,
             bias_shape=None):
    """ConvParams, or TransposedParams, of the (lifted) call: raises what our validation raises."""
    three_d = len(weight_shape) == 5
    if transposed:
        return TransposedParams.from_shapes(input_shape, weight_shape, stride, padding, output_padding, groups,
                                            dilation, dtype=dtype, bias_shape=bias_shape,
                                            op="conv_transpose3d" if three_d else "conv_transpose2d")
    return ConvParams.from_shapes(input_shape, weight_shape, stride, padding, dilation, groups, dtype=dtype,
                                  bias_shape=bias_shape, op="conv3d" if three_d else "conv2d")


def _convolution(original, keyset, input, weight, bias, stride, padding, dilation, transposed, output_padding,
                 groups):
    args = (input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    if not _ours(input, weight, bias):
        return _pass_through(original, keyset, *args)
    one_d = input.dim() == 3
    x, w = _lift(input, one_d), _lift(weight, one_d)
    stride2, padding2, dilation2, output_padding2 = _lift_args(one_d, stride, padding, dilation, output_padding)
    try:
        problem = _problem(x.shape, w.shape, stride2, padding2, dilation2, transposed, output_padding2, groups,
                           x.dtype, None if bias is None else bias.shape)
    except (RuntimeError, TypeError):
        return _pass_through(original, keyset, *args)
    ROUTED["convolution"] += 1
    algorithm = _State.algorithm
    if transposed:
        out = conv2d_grad_input_op(x, w, list(problem.conv_input_shape), output_channels_last(x, w),
                                   *problem.op_geometry(algorithm))
        out = problem.finish(out, bias)
    else:
        out = conv2d_op(x, w, bias, stride2, list(problem.padding), dilation2, groups, algorithm)
    return out.squeeze(2) if one_d else out


def _convolution_backward(original, keyset, grad_output, input, weight, bias_sizes, stride, padding, dilation,
                          transposed, output_padding, groups, output_mask):
    args = (grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed, output_padding, groups,
            output_mask)
    if not _ours(input, weight, grad_output) or grad_output.dim() != input.dim():
        return _pass_through(original, keyset, *args)
    one_d = input.dim() == 3
    gy, x, w = (_lift(t, one_d) for t in (grad_output, input, weight))
    stride2, padding2, dilation2, output_padding2 = _lift_args(one_d, stride, padding, dilation, output_padding)
    try:
        problem = _problem(x.shape, w.shape, stride2, padding2, dilation2, transposed, output_padding2, groups,
                           x.dtype)
    except (RuntimeError, TypeError):
        return _pass_through(original, keyset, *args)
    ROUTED["convolution_backward"] += 1
    algorithm = _State.algorithm
    layout = output_channels_last(x, w)  # PyTorch's: the forward's memory format, whatever grad_output's
    want_input, want_weight, want_bias = output_mask
    g_input = g_weight = g_bias = None
    if transposed:
        # The convolution behind it maps (the uncropped part of) the output back to the input.
        conv = problem.conv
        gy_conv = gy[(slice(None), slice(None)) + tuple(slice(0, size) for size in conv.input_shape[2:])]
        geo = problem.op_geometry(algorithm)
        if want_input:
            g_input = conv2d_op(gy_conv, w, None, *geo)
            g_input = g_input.contiguous(memory_format=memory_format(layout, g_input.dim()))
        if want_weight:
            g_weight = conv2d_grad_weight_op(x, gy_conv, list(w.shape), layout, *geo)
    else:
        geo = (stride2, list(problem.padding), dilation2, groups, algorithm)
        if want_input:
            g_input = conv2d_grad_input_op(gy, w, list(x.shape), layout, *geo)
        if want_weight:
            g_weight = conv2d_grad_weight_op(gy, x, list(w.shape), layout, *geo)
    if want_bias:
        g_bias = conv2d_grad_bias_op(gy)
    if one_d:
        g_input, g_weight = (None if g is None else g.squeeze(2) for g in (g_input, g_weight))
    return g_input, g_weight, g_bias


def _dispatch_keys():
    return ("CUDA", "CPU") if interpreting() else ("CUDA",)


def enable(algorithm: str = "auto") -> None:
    """Route every 1-D, 2-D and 3-D convolution (forward and backward) of CUDA tensors, and of CPU
    tensors under Triton's interpreter, to our kernels with ``algorithm`` (one of
    ``kernels.ALGORITHMS``; an explicit algorithm that does not apply to some convolution raises
    ``ValueError`` there, as ``kernels.conv2d`` does). Calling it again changes the algorithm."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"kernels.enable: unknown algorithm={algorithm!r}; expected one of {list(ALGORITHMS)}")
    if not hasattr(torch.library, "get_kernel"):
        raise RuntimeError("kernels.enable needs torch.library.get_kernel (a newer PyTorch) to keep PyTorch's own "
                           "kernels for what it passes through")
    _State.algorithm = algorithm
    if _State.library is not None:
        return
    library = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():
        # convolution_backward has CPU and CUDA kernels of its own: replacing them is the point.
        warnings.filterwarnings("ignore", message=".*Overriding a previously registered kernel.*")
        for key in _dispatch_keys():
            for op, impl in (("convolution", _convolution), ("convolution_backward", _convolution_backward)):
                original = torch.library.get_kernel(f"aten::{op}", key)  # taken before ours replaces it
                library.impl(op, functools.partial(impl, original), key, with_keyset=True)
    _State.library = library


def disable() -> None:
    """Remove the registrations: PyTorch's own convolution kernels again."""
    if _State.library is not None:
        _State.library._destroy()
        _State.library = None


def is_enabled() -> bool:
    return _State.library is not None


def current_algorithm() -> Optional[str]:
    """The algorithm convolutions are routed with, or None when not enabled."""
    return _State.algorithm if is_enabled() else None


@contextlib.contextmanager
def enabled(algorithm: str = "auto"):
    """``with kernels.enabled(algorithm=...):`` — ``enable(algorithm)`` inside the block; on exit
    the state before it (disabled, or enabled with another algorithm) comes back."""
    before = current_algorithm()
    enable(algorithm)
    try:
        yield
    finally:
        if before is None:
            disable()
        else:
            _State.algorithm = before
