"""The custom ops behind ``kernels.conv2d`` and the autograd Functions over them.

Two layers:

* ``torch.library`` custom ops (``convkernels::conv2d``, ``conv2d_grad_input``,
  ``conv2d_grad_weight``, ``conv2d_grad_bias``, ``conv2d_fused``) launch the Triton kernels.
  They carry validated, normalised arguments (4-D input, padding as (top, bottom, left, right)),
  are opaque to ``torch.compile`` (fake implementations reproduce the real output's strides, so
  ``fullgraph=True`` traces through them), run on meta tensors without a launch, and have vmap
  rules (``batching.py``).
* ``torch.autograd.Function``s give them every derivative ``F.conv2d`` has. A convolution is
  bilinear, so each derivative is again one of these four operations on our kernels:

      y  = conv(x, w) + b
      gx = dgrad(gy, w)        d gx = dgrad(d gy, w) + dgrad(gy, d w);  backward: gy <- conv(ggx, w),  w <- wgrad(gy, ggx)
      gw = wgrad(gy, x)        d gw = wgrad(d gy, x) + wgrad(gy, d x);  backward: gy <- conv(x, ggw),  x <- dgrad(gy, ggw)
      gb = sum(gy)             backward: gy <- ggb broadcast

  Backward (any order: ``create_graph=True``, ``gradgradcheck``), forward mode (``jvp``, dual
  tensors) and vmap (``generate_vmap_rule``: the Function runs under vmap on the ops' vmap rules)
  all reduce to the same ops. As in PyTorch's ``convolution_backward``, the gradient Functions
  take (gy, x, w) whether or not they read them, so a gradient taken with ``create_graph=True``
  requires grad exactly when ``F.conv2d``'s does.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch._prims_common import suggest_memory_format

from .batching import register_vmap_rules
from .dispatch import resolve
from .ops import backward
from .params import ConvParams, output_channels_last

_LIB = "convkernels"


def _params(input_shape, weight_shape, stride, padding, dilation, groups, dtype, channels_last=False, has_bias=False):
    return ConvParams.from_shapes(
        input_shape, weight_shape, stride, dilation=dilation, groups=groups, pads=padding,
        dtype=dtype, channels_last=channels_last, has_bias=has_bias,
    )


def _empty_like_layout(shape, like: torch.Tensor, channels_last: bool) -> torch.Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)


def _output_channels_last(input: torch.Tensor, weight: torch.Tensor) -> bool:
    """PyTorch's output layout, with its meta-device exception: F.conv2d on meta tensors is always
    contiguous (no backend to ask), while fake tensors under torch.compile follow the real rule."""
    if input.device.type == "meta":
        return False
    return output_channels_last(input, weight)


# --- the custom ops ----------------------------------------------------------------------------

@torch.library.custom_op(f"{_LIB}::conv2d", mutates_args=())
def conv2d_op(
    input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
    stride: List[int], padding: List[int], dilation: List[int], groups: int, algorithm: str,
) -> torch.Tensor:
    params = _params(input.shape, weight.shape, stride, padding, dilation, groups, input.dtype,
                     output_channels_last(input, weight), bias is not None)
    return resolve(algorithm, params).forward(input, weight, bias, params)


@conv2d_op.register_fake
def _(input, weight, bias, stride, padding, dilation, groups, algorithm):
    params = _params(input.shape, weight.shape, stride, padding, dilation, groups, input.dtype)
    return _empty_like_layout(params.output_shape, input, _output_channels_last(input, weight))


@torch.library.custom_op(f"{_LIB}::conv2d_fused", mutates_args=())
def conv2d_fused_op(
    input: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
    residual: Optional[torch.Tensor], stride: List[int], padding: List[int], dilation: List[int],
    groups: int, activation: int, algorithm: str,
) -> torch.Tensor:
    """Inference only: act(conv(input, weight) * scale + shift + residual) in one launch."""
    params = _params(input.shape, weight.shape, stride, padding, dilation, groups, input.dtype,
                     output_channels_last(input, weight))
    return resolve(algorithm, params).forward(
        input, weight, None, params, scale=scale, shift=shift, residual=residual, activation=activation)


@conv2d_fused_op.register_fake
def _(input, weight, scale, shift, residual, stride, padding, dilation, groups, activation, algorithm):
    params = _params(input.shape, weight.shape, stride, padding, dilation, groups, input.dtype)
    return _empty_like_layout(params.output_shape, input, _output_channels_last(input, weight))


@torch.library.custom_op(f"{_LIB}::conv2d_grad_input", mutates_args=())
def conv2d_grad_input_op(
    grad_output: torch.Tensor, weight: torch.Tensor, input_shape: List[int], channels_last: bool,
    stride: List[int], padding: List[int], dilation: List[int], groups: int, algorithm: str,
) -> torch.Tensor:
    params = _params(input_shape, weight.shape, stride, padding, dilation, groups, grad_output.dtype)
    entry = resolve(algorithm, params)
    launch = entry.grad_input or backward.grad_input
    return launch(grad_output, weight, params, channels_last)


@conv2d_grad_input_op.register_fake
def _(grad_output, weight, input_shape, channels_last, stride, padding, dilation, groups, algorithm):
    return _empty_like_layout(tuple(input_shape), grad_output, channels_last)


@torch.library.custom_op(f"{_LIB}::conv2d_grad_weight", mutates_args=())
def conv2d_grad_weight_op(
    grad_output: torch.Tensor, input: torch.Tensor, weight_shape: List[int], channels_last: bool,
    stride: List[int], padding: List[int], dilation: List[int], groups: int, algorithm: str,
) -> torch.Tensor:
    params = _params(input.shape, weight_shape, stride, padding, dilation, groups, grad_output.dtype)
    entry = resolve(algorithm, params)
    launch = entry.grad_weight or backward.grad_weight
    return launch(grad_output, input, params, channels_last)


@conv2d_grad_weight_op.register_fake
def _(grad_output, input, weight_shape, channels_last, stride, padding, dilation, groups, algorithm):
    return _empty_like_layout(tuple(weight_shape), grad_output, channels_last)


@torch.library.custom_op(f"{_LIB}::conv2d_grad_bias", mutates_args=())
def conv2d_grad_bias_op(grad_output: torch.Tensor) -> torch.Tensor:
    n, k, p, q = grad_output.shape
    params = ConvParams.from_shapes((n, k, p, q), (k, 1, 1, 1), groups=k, dtype=grad_output.dtype)
    return backward.grad_bias(grad_output, params)


@conv2d_grad_bias_op.register_fake
def _(grad_output):
    return grad_output.new_empty((grad_output.shape[1],))


register_vmap_rules(conv2d_op, conv2d_grad_input_op, conv2d_grad_weight_op, conv2d_grad_bias_op)


# --- the autograd Functions ----------------------------------------------------------------------
# ``geometry`` below is (stride, padding, dilation, groups, algorithm), already normalised.

def _add(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return b if a is None else a if b is None else a + b


def _gradient_layout(input: torch.Tensor, weight: torch.Tensor) -> bool:
    """Both gradients come back in the convolution's memory format (channels_last if input or
    weight is), whatever the layout of grad_output: PyTorch's rule for raw gradients."""
    return suggest_memory_format(input) == torch.channels_last or suggest_memory_format(weight) == torch.channels_last


# Dynamo cannot trace an autograd.Function that defines ``jvp`` (a graph break, so no
# fullgraph). Each Function below therefore has a twin without ``jvp`` for torch.compile, where
# forward-mode AD is not traced anyway; ``_apply`` picks the one to run.
def _without_jvp(cls):
    members = {name: vars(cls)[name] for name in ("forward", "setup_context", "backward", "generate_vmap_rule")}
    return type(f"{cls.__name__}Traced", (torch.autograd.Function,), members)


def _apply(eager, traced, *args):
    return (traced if torch.compiler.is_compiling() else eager).apply(*args)


def conv_forward(x, w, b, geometry):
    """conv(x, w) + b on our kernels, differentiable to any order."""
    return _apply(ConvForward, ConvForwardTraced, x, w, b, *geometry)


def dgrad(gy, w, input_shape, channels_last, geometry, x=None):
    return _apply(ConvGradInput, ConvGradInputTraced, gy, x, w, list(input_shape), channels_last, *geometry)


def wgrad(gy, x, weight_shape, channels_last, geometry, w=None):
    return _apply(ConvGradWeight, ConvGradWeightTraced, gy, x, w, list(weight_shape), channels_last, *geometry)


def bias_grad(gy, x=None, w=None):
    return _apply(ConvGradBias, ConvGradBiasTraced, gy, x, w)


def conv(x, w, geometry):
    return conv_forward(x, w, None, geometry)


class ConvForward(torch.autograd.Function):
    """y = conv(input, weight) + bias on normalised arguments (4-D input, 4 pads)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(input, weight, bias, stride, padding, dilation, groups, algorithm):
        return conv2d_op(input, weight, bias, stride, padding, dilation, groups, algorithm)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, *geometry = inputs
        ctx.geometry = geometry
        ctx.has_bias = bias is not None
        ctx.channels_last = _gradient_layout(input, weight)
        ctx.save_for_backward(input, weight)
        ctx.save_for_forward(input, weight)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = dgrad(gy, w, x.shape, ctx.channels_last, ctx.geometry, x=x)
        if ctx.needs_input_grad[1]:
            gw = wgrad(gy, x, w.shape, ctx.channels_last, ctx.geometry, w=w)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = bias_grad(gy, x, w)
        return gx, gw, gb, None, None, None, None, None

    @staticmethod
    def jvp(ctx, tx, tw, tb, *_):
        x, w = ctx.saved_tensors
        t = _add(None if tx is None else conv(tx, w, ctx.geometry), None if tw is None else conv(x, tw, ctx.geometry))
        if tb is not None:
            tb = tb.view(1, -1, 1, 1)
            stride, padding, dilation, groups, _ = ctx.geometry
            shape = _params(x.shape, w.shape, stride, padding, dilation, groups, x.dtype).output_shape
            t = tb.expand(shape) if t is None else t + tb
        return t


class ConvGradInput(torch.autograd.Function):
    """gx = dgrad(gy, weight) into ``input_shape``; ``input`` is not read (see the module docstring)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gy, input, weight, input_shape, channels_last, stride, padding, dilation, groups, algorithm):
        return conv2d_grad_input_op(gy, weight, input_shape, channels_last, stride, padding, dilation, groups,
                                    algorithm)

    @staticmethod
    def setup_context(ctx, inputs, output):
        gy, _input, weight, input_shape, channels_last, *geometry = inputs
        ctx.geometry, ctx.input_shape, ctx.channels_last = geometry, input_shape, channels_last
        ctx.save_for_backward(gy, weight)
        ctx.save_for_forward(gy, weight)

    @staticmethod
    def backward(ctx, ggx):
        return grad_input_backward(ctx, ggx)

    @staticmethod
    def jvp(ctx, t_gy, _t_input, t_w, *_):
        gy, w = ctx.saved_tensors
        args = (ctx.input_shape, ctx.channels_last, ctx.geometry)
        return _add(None if t_gy is None else dgrad(t_gy, w, *args), None if t_w is None else dgrad(gy, t_w, *args))


def grad_input_backward(ctx, ggx):
    """ConvGradInput's backward (a function, so that a subclass's backward can call it under Dynamo)."""
    gy, w = ctx.saved_tensors
    g_gy = conv(ggx, w, ctx.geometry) if ctx.needs_input_grad[0] else None
    g_w = wgrad(gy, ggx, w.shape, ctx.channels_last, ctx.geometry) if ctx.needs_input_grad[2] else None
    return (g_gy, None, g_w) + (None,) * 7


class ConvGradWeight(torch.autograd.Function):
    """gw = wgrad(gy, input) into ``weight_shape``; ``weight`` is not read (see the module docstring)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gy, input, weight, weight_shape, channels_last, stride, padding, dilation, groups, algorithm):
        return conv2d_grad_weight_op(gy, input, weight_shape, channels_last, stride, padding, dilation, groups,
                                     algorithm)

    @staticmethod
    def setup_context(ctx, inputs, output):
        gy, input, _weight, weight_shape, channels_last, *geometry = inputs
        ctx.geometry, ctx.weight_shape, ctx.channels_last = geometry, weight_shape, channels_last
        ctx.save_for_backward(gy, input)
        ctx.save_for_forward(gy, input)

    @staticmethod
    def backward(ctx, ggw):
        gy, x = ctx.saved_tensors
        g_gy = conv(x, ggw, ctx.geometry) if ctx.needs_input_grad[0] else None
        g_x = dgrad(gy, ggw, x.shape, ctx.channels_last, ctx.geometry) if ctx.needs_input_grad[1] else None
        return (g_gy, g_x) + (None,) * 8

    @staticmethod
    def jvp(ctx, t_gy, t_x, *_):
        gy, x = ctx.saved_tensors
        args = (ctx.weight_shape, ctx.channels_last, ctx.geometry)
        return _add(None if t_gy is None else wgrad(t_gy, x, *args), None if t_x is None else wgrad(gy, t_x, *args))


class ConvGradBias(torch.autograd.Function):
    """gb = gy summed over (N, P, Q); ``input`` and ``weight`` are not read (see the module docstring)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gy, input, weight):
        return conv2d_grad_bias_op(gy)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.gy_shape = inputs[0].shape

    @staticmethod
    def backward(ctx, ggb):
        g_gy = ggb.view(1, -1, 1, 1).expand(ctx.gy_shape) if ctx.needs_input_grad[0] else None
        return g_gy, None, None

    @staticmethod
    def jvp(ctx, t_gy, *_):
        return None if t_gy is None else bias_grad(t_gy)


class ConvFusedInference(torch.autograd.Function):
    """``conv2d_bn``'s op under autograd. BatchNorm with running statistics is an inference
    operation here, so every derivative raises a clear error instead of a silent zero."""

    generate_vmap_rule = True

    @staticmethod
    def forward(*args):
        return conv2d_fused_op(*args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, _grad):
        raise RuntimeError(_NOT_DIFFERENTIABLE.format(mode="reverse-mode"))

    @staticmethod
    def jvp(ctx, *_tangents):
        raise RuntimeError(_NOT_DIFFERENTIABLE.format(mode="forward-mode (jvp, dual tensors)"))


_NOT_DIFFERENTIABLE = ("kernels.conv2d_bn is inference-only and has no {mode} derivative; to differentiate, use "
                       "kernels.conv2d followed by F.batch_norm")


def conv_fused_inference(*args):
    """act(conv(input, weight) * scale + shift + residual): ``conv2d_fused_op``'s arguments. While
    torch.compile traces, the op itself (graphs do not trace forward mode, and ``conv2d_bn``
    refuses inputs that require grad)."""
    if torch.compiler.is_compiling():
        return conv2d_fused_op(*args)
    return ConvFusedInference.apply(*args)


ConvForwardTraced, ConvGradInputTraced, ConvGradWeightTraced, ConvGradBiasTraced = (
    _without_jvp(cls) for cls in (ConvForward, ConvGradInput, ConvGradWeight, ConvGradBias))


class Conv2dFunction(ConvForward):
    """``Conv2dFunction.apply(input, weight, bias, stride, padding, dilation, groups, algorithm)``.

    The autograd Function form of ``kernels.conv2d``, for code that composes Functions: the
    arguments are those of ``F.conv2d`` (validated and normalised exactly as in
    ``kernels.conv2d``, unbatched input included), and the result has every derivative above.
    """

    @classmethod
    def apply(cls, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, algorithm="auto"):
        from .functional import conv2d

        return conv2d(input, weight, bias, stride, padding, dilation, groups, algorithm=algorithm)
