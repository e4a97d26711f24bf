"""The autograd Functions over the custom ops (``ops.py``): every derivative ``F.conv2d`` has.

A convolution is bilinear, so each derivative is again one of the four ops on our kernels:

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

from typing import Optional

import torch

from ..core.layout import memory_format, output_channels_last
from .ops import (
    conv2d_fused_op, conv2d_grad_bias_op, conv2d_grad_input_op, conv2d_grad_weight_op, conv2d_op, op_params,
)

# ``geometry`` below is (stride, padding, dilation, groups, algorithm), already normalised.


def _add(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return b if a is None else a if b is None else a + b


# Dynamo cannot trace an autograd.Function that defines ``jvp`` (a graph break, so no
# fullgraph). Each Function below therefore has a twin without ``jvp`` for torch.compile, where
# forward-mode AD is not traced anyway; ``apply_function`` picks the one to run.
def _without_jvp(cls):
    members = {name: vars(cls)[name] for name in ("forward", "setup_context", "backward", "generate_vmap_rule")}
    return type(f"{cls.__name__}Traced", (torch.autograd.Function,), members)


def apply_function(eager, traced, *args):
    """``eager.apply(*args)``, or its jvp-free twin ``traced`` while torch.compile traces."""
    return (traced if torch.compiler.is_compiling() else eager).apply(*args)


def conv_forward(x, w, b, geometry):
    """conv(x, w) + b on our kernels, differentiable to any order."""
    return apply_function(ConvForward, ConvForwardTraced, x, w, b, *geometry)


def dgrad(gy, w, input_shape, channels_last, geometry, x=None):
    return apply_function(ConvGradInput, ConvGradInputTraced, gy, x, w, list(input_shape), channels_last, *geometry)


def wgrad(gy, x, weight_shape, channels_last, geometry, w=None):
    return apply_function(ConvGradWeight, ConvGradWeightTraced, gy, x, w, list(weight_shape), channels_last, *geometry)


def bias_grad(gy, x=None, w=None):
    return apply_function(ConvGradBias, ConvGradBiasTraced, gy, x, w)


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
        ctx.channels_last = output_channels_last(input, weight)
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
            tb = tb.view(1, -1, *[1] * (x.dim() - 2))
            stride, padding, dilation, groups, _ = ctx.geometry
            shape = op_params(x.shape, w.shape, stride, padding, dilation, groups, x.dtype).output_shape
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
        g_gy = ggb.view(1, -1, *[1] * (len(ctx.gy_shape) - 2)).expand(ctx.gy_shape) if ctx.needs_input_grad[0] else None
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


class ConvTransposeForward(ConvGradInput):
    """``ConvGradInput`` as a transposed convolution's forward. Only the layout of the input's
    gradient differs: PyTorch gives a transposed convolution's input gradient in the forward's
    memory format (channels_last when input or weight is), not in the upstream gradient's."""

    @staticmethod
    def backward(ctx, grad):
        g_input, *rest = grad_input_backward(ctx, grad)
        if g_input is not None:
            g_input = g_input.contiguous(memory_format=memory_format(ctx.channels_last, g_input.dim()))
        return (g_input, *rest)


ConvTransposeForwardTraced = type("ConvTransposeForwardTraced", (ConvGradInputTraced,),
                                  {"backward": staticmethod(ConvTransposeForward.backward)})


def conv_transpose_forward(x, w, conv_input_shape, channels_last, geometry):
    """The transposed convolution whose input is ``x``: dgrad of the convolution ``geometry``
    describes into ``conv_input_shape``, differentiable to any order."""
    return apply_function(ConvTransposeForward, ConvTransposeForwardTraced, x, None, w, list(conv_input_shape),
                          channels_last, *geometry)
