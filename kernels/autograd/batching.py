"""``torch.func.vmap`` rules for the convolution custom ops: a vmapped problem is one bigger convolution.

The rules are the ones functorch has for PyTorch's own convolution op, applied to ours:
* only the activations (input, or grad_output) carry the vmap dimension B: B folds into the batch N;
* a weight (or, for grad_weight, one of its two operands) carries it: B folds into the groups,
  every sample its own block of channels: input [N, B*C, H, W], weight [B*K, C/g, R, S],
  groups B*g. An operand without the vmap dimension is repeated B times along its channels.
So vmap over inputs, over weights, and per-sample gradients (``vmap(grad(loss))``, which
vmaps grad_weight over both dy and x) each run as a single launch on our kernels. Where the
requested algorithm does not apply to the folded problem (Winograd needs groups == 1), the
samples run one launch each, with that algorithm.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..core.params import ConvParams
from ..dispatch import resolve


def _front(t: Optional[torch.Tensor], bdim: Optional[int]) -> Optional[torch.Tensor]:
    return t if t is None or bdim is None else t.movedim(bdim, 0)


def _sample_shape(t: torch.Tensor, bdim: Optional[int]):
    shape = list(t.shape)
    if bdim is not None:
        del shape[bdim]
    return shape


def _fold_batch(t: torch.Tensor, bdim: int) -> torch.Tensor:
    """[.., B at bdim, ..] -> [B*N, ...]."""
    return _front(t, bdim).flatten(0, 1)


def _fold_channels(t: torch.Tensor, bdim: Optional[int], batch: int) -> torch.Tensor:
    """[B, N, C, H, W] (or an unbatched [N, C, H, W], repeated) -> [N, B*C, H, W], sample-major channels."""
    if bdim is None:
        return t.repeat(1, batch, *[1] * (t.dim() - 2))
    return _front(t, bdim).transpose(0, 1).flatten(1, 2)


def _fold_out_channels(t: torch.Tensor, bdim: Optional[int], batch: int) -> torch.Tensor:
    """A weight [B, K, ...] (or an unbatched [K, ...], repeated) -> [B*K, ...]; also bias vectors."""
    if bdim is None:
        return t.repeat(batch, *([1] * (t.dim() - 1)))
    return _front(t, bdim).flatten(0, 1)


def _folds_into_groups(algorithm: str, input_shape, weight_shape, stride, padding, dilation, groups, batch) -> bool:
    """True when ``algorithm`` applies to the problem with ``batch`` samples folded into the groups."""
    n, c, *spatial = input_shape
    params = ConvParams.from_shapes((n, batch * c, *spatial), (batch * weight_shape[0], *weight_shape[1:]), stride,
                                    dilation=dilation, groups=batch * groups, pads=padding,
                                    op="conv3d" if len(weight_shape) == 5 else "conv2d")
    try:
        resolve(algorithm, params)
    except ValueError:
        return False
    return True


def _per_sample(op, in_dims, args, batch: int):
    """``op`` once per sample (a tensor argument without the vmap dimension is shared), stacked on dim 0."""
    dims = [d if isinstance(a, torch.Tensor) else None for a, d in zip(args, in_dims)]
    fronted = [_front(a, d) if d is not None else a for a, d in zip(args, dims)]
    outs = [op(*[a if d is None else a[i] for a, d in zip(fronted, dims)]) for i in range(batch)]
    return torch.stack(outs), 0


def register_vmap_rules(conv2d_op, grad_input_op, grad_weight_op, grad_bias_op) -> None:
    """Register the rules on the ops of ``kernels.autograd``."""

    @torch.library.register_vmap(conv2d_op)
    def _(info, in_dims, input, weight, bias, stride, padding, dilation, groups, algorithm):
        x_dim, w_dim, b_dim = in_dims[:3]
        batch = info.batch_size
        geometry = (stride, padding, dilation, groups)
        if w_dim is None and b_dim is None:
            out = conv2d_op(_fold_batch(input, x_dim), weight, bias, *geometry, algorithm)
            return out.unflatten(0, (batch, -1)), 0
        if not _folds_into_groups(algorithm, _sample_shape(input, x_dim), _sample_shape(weight, w_dim), *geometry,
                                  batch):
            return _per_sample(conv2d_op, in_dims, (input, weight, bias, *geometry, algorithm), batch)
        out = conv2d_op(
            _fold_channels(input, x_dim, batch), _fold_out_channels(weight, w_dim, batch),
            None if bias is None else _fold_out_channels(bias, b_dim, batch),
            stride, padding, dilation, groups * batch, algorithm)
        return out.unflatten(1, (batch, -1)), 1

    @torch.library.register_vmap(grad_input_op)
    def _(info, in_dims, grad_output, weight, input_shape, channels_last, stride, padding, dilation, groups, algorithm):
        dy_dim, w_dim = in_dims[:2]
        batch = info.batch_size
        n, c, *spatial = input_shape
        if w_dim is None:
            dx = grad_input_op(_fold_batch(grad_output, dy_dim), weight, [batch * n, c, *spatial], channels_last,
                               stride, padding, dilation, groups, algorithm)
            return dx.unflatten(0, (batch, n)), 0
        if not _folds_into_groups(algorithm, input_shape, _sample_shape(weight, w_dim), stride, padding, dilation,
                                  groups, batch):
            return _per_sample(grad_input_op, in_dims, (grad_output, weight, input_shape, channels_last, stride,
                                                        padding, dilation, groups, algorithm), batch)
        dx = grad_input_op(_fold_channels(grad_output, dy_dim, batch), _fold_out_channels(weight, w_dim, batch),
                           [n, batch * c, *spatial], channels_last, stride, padding, dilation, groups * batch, algorithm)
        return dx.unflatten(1, (batch, c)), 1

    @torch.library.register_vmap(grad_weight_op)
    def _(info, in_dims, grad_output, input, weight_shape, channels_last, stride, padding, dilation, groups, algorithm):
        dy_dim, x_dim = in_dims[:2]
        batch = info.batch_size
        if not _folds_into_groups(algorithm, _sample_shape(input, x_dim), weight_shape, stride, padding, dilation,
                                  groups, batch):
            return _per_sample(grad_weight_op, in_dims, (grad_output, input, weight_shape, channels_last, stride,
                                                         padding, dilation, groups, algorithm), batch)
        dw = grad_weight_op(_fold_channels(grad_output, dy_dim, batch), _fold_channels(input, x_dim, batch),
                            [batch * weight_shape[0], *weight_shape[1:]], channels_last, stride, padding, dilation,
                            groups * batch, algorithm)
        return dw.unflatten(0, (batch, weight_shape[0])), 0

    @torch.library.register_vmap(grad_bias_op)
    def _(info, in_dims, grad_output):
        batch = info.batch_size
        db = grad_bias_op(_fold_channels(grad_output, in_dims[0], batch))
        return db.unflatten(0, (batch, -1)), 0
