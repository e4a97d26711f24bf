"""Fused convolution + BatchNorm (+ residual) (+ activation) inference: ``kernels.conv2d_bn`` (and
``conv3d_bn``, the same in 3-D).

At inference BatchNorm is a per-output-channel affine map, ``y = conv * scale + shift`` with
``scale = gamma / sqrt(running_var + eps)`` and ``shift = beta + (conv_bias - running_mean) * scale``.
``conv2d_bn`` computes those two fp32 vectors (fp64 for fp64 inputs) and hands them to the
algorithm's forward kernel, whose shared epilogue (``kernels/ops/epilogue.py``) applies scale/shift,
the residual add and the activation before the single store: one launch, the output written once.

The weight itself is not rescaled for the kernel: an fp16/bf16 weight multiplied by the BN scale
and rounded again would add a rounding error (and can overflow for a tiny ``running_var``);
applying the scale in fp32 to the fp32 accumulator is exact to fp32 and costs one FMA per
output. ``fold_bn`` gives the folded (weight, bias) pair for code that wants a plain conv.

The (scale, shift) pair is cached, so repeated inference does not refold. The cache is keyed on
the identity (weakref) of the BN / bias tensors plus their version counters and data pointers,
so in-place updates (``bn.running_var.add_(...)``, ``load_state_dict``, an optimizer step) and
``tensor.data = other`` invalidate it. Limitation: writes through a ``.data`` alias
(``bn.running_var.data.add_(...)``) do not bump the tensor's version counter, so the cache cannot
see them; call ``kernels.fused.clear_fold_cache()`` after such a write. Inference tensors (made
under ``torch.inference_mode``) have no version counter and are never cached.
"""
from __future__ import annotations

import weakref
from typing import Dict, Optional, Tuple, Union

import torch

from .autograd.functions import conv_fused_inference
from .core.checks import autocast_inputs, check_device, check_inference
from .core.params import ConvParams, IntOrPair
from .dispatch import resolve
from .ops.epilogue import activation_code


def _bn_vector(t: Optional[torch.Tensor], name: str, k: int, required: bool, op: str = "conv2d_bn") -> None:
    if t is None:
        if required:
            raise RuntimeError(f"{op}: {name} must be a Tensor, got None")
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor or None, got {type(t).__name__}")
    if not t.is_floating_point():
        raise RuntimeError(f"{op}: {name} must be a floating-point tensor, got {t.dtype}")
    if t.numel() != k or t.dim() != 1:
        # F.batch_norm's wording: "running_mean should contain 6 elements not 5".
        raise RuntimeError(
            f"{op}: {name} should contain {k} elements not {t.numel()} "
            f"(one per output channel; got {name} of size {list(t.shape)})"
        )


def _fold_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def bn_scale_shift(
    bias: Optional[torch.Tensor],
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    bn_weight: Optional[torch.Tensor],
    bn_bias: Optional[torch.Tensor],
    eps: float,
    dtype: torch.dtype = torch.float32,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with ``batch_norm(conv + bias) == conv * scale + shift``, in ``dtype``."""
    with torch.no_grad():
        var = running_var.to(dtype)
        scale = torch.rsqrt(var + eps)
        if bn_weight is not None:
            scale = scale * bn_weight.to(dtype)
        centred = -running_mean.to(dtype)
        if bias is not None:
            centred = centred + bias.to(dtype)
        shift = centred * scale
        if bn_bias is not None:
            shift = shift + bn_bias.to(dtype)
        return scale.contiguous(), shift.contiguous()


def fold_bn(
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    bn_weight: Optional[torch.Tensor] = None,
    bn_bias: Optional[torch.Tensor] = None,
    eps: float = 1e-5,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fold an inference BatchNorm into the convolution before it.

    Returns ``(weight', bias')`` in fp32 (fp64 for an fp64 weight) such that
    ``conv2d(x, weight', bias') == batch_norm(conv2d(x, weight, bias), running_mean, running_var,
    bn_weight, bn_bias, training=False, eps=eps)``. Cast them to the input's dtype yourself if you
    want a plain low-precision conv (``conv2d_bn`` does not: it keeps the weight and applies the
    scale in fp32 in the epilogue). Nothing of the caller's is modified.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise RuntimeError(
            f"fold_bn: expected weight to be a 4-dimensional Tensor, got "
            f"{list(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}"
        )
    k = weight.shape[0]
    _bn_vector(bias, "bias", k, required=False)
    _bn_vector(running_mean, "running_mean", k, required=True)
    _bn_vector(running_var, "running_var", k, required=True)
    _bn_vector(bn_weight, "bn_weight", k, required=False)
    _bn_vector(bn_bias, "bn_bias", k, required=False)
    dtype = _fold_dtype(weight.dtype)
    scale, shift = bn_scale_shift(bias, running_mean, running_var, bn_weight, bn_bias, eps, dtype)
    with torch.no_grad():
        folded = weight.to(dtype) * scale.view(-1, 1, 1, 1).to(weight.device)
    return folded, shift


class _FoldCache:
    """(scale, shift) per (bias, BN tensors, eps, dtype), valid while none of them changed."""

    def __init__(self):
        self._entries: Dict[tuple, tuple] = {}

    @staticmethod
    def _state(t: torch.Tensor) -> tuple:
        return (t._version, t.data_ptr())

    def get(self, tensors, eps: float, dtype: torch.dtype):
        present = [t for t in tensors if t is not None]
        if any(t.is_inference() for t in present):
            return None, None  # no version counter to trust
        key = (tuple(None if t is None else id(t) for t in tensors), float(eps), dtype)
        entry = self._entries.get(key)
        if entry is not None:
            refs, states, value = entry
            if all(ref() is t for ref, t in zip(refs, present)) and states == [self._state(t) for t in present]:
                return key, value
        return key, None

    def put(self, key, tensors, value) -> None:
        present = [t for t in tensors if t is not None]
        entries = self._entries

        def evict(_ref, key=key):
            entries.pop(key, None)

        refs = [weakref.ref(t, evict) for t in present]
        entries[key] = (refs, [self._state(t) for t in present], value)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


_FOLD_CACHE = _FoldCache()


def clear_fold_cache() -> None:
    """Forget every cached (scale, shift): needed only after writes the cache cannot see (``.data``)."""
    _FOLD_CACHE.clear()


def cached_scale_shift(bias, running_mean, running_var, bn_weight, bn_bias, eps, dtype):
    """``bn_scale_shift`` through the cache (recomputed when any of the tensors changed)."""
    tensors = (bias, running_mean, running_var, bn_weight, bn_bias)
    key, value = _FOLD_CACHE.get(tensors, eps, dtype)
    if value is None:
        value = bn_scale_shift(bias, running_mean, running_var, bn_weight, bn_bias, eps, dtype)
        if key is not None:
            _FOLD_CACHE.put(key, tensors, value)
    return value


def _check_residual(residual, output_shape, dtype, device, op: str = "conv2d_bn") -> torch.Tensor:
    if not isinstance(residual, torch.Tensor):
        raise TypeError(f"{op}: residual must be a Tensor or None, got {type(residual).__name__}")
    if residual.dtype != dtype:
        raise RuntimeError(
            f"{op}: residual type ({residual.dtype}) and input type ({dtype}) should be the same"
        )
    if residual.device != device:
        raise RuntimeError(f"{op}: residual must be on the input's device {device}, got {residual.device}")
    try:
        return residual.expand(output_shape)  # broadcasting as in `bn_out + residual`; stride 0 is fine
    except RuntimeError:
        raise RuntimeError(
            f"{op}: residual of size {list(residual.shape)} does not broadcast to the convolution's "
            f"output size {list(output_shape)}"
        ) from None


def conv2d_bn(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    bn_weight: Optional[torch.Tensor] = None,
    bn_bias: Optional[torch.Tensor] = None,
    eps: float = 1e-5,
    stride: IntOrPair = 1,
    padding: Union[IntOrPair, str] = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    *,
    residual: Optional[torch.Tensor] = None,
    activation: Optional[str] = None,
    algorithm: str = "auto",
) -> torch.Tensor:
    """``act(batch_norm(conv2d(input, weight, bias, ...), training=False, eps=eps) + residual)`` in the
    algorithm's forward kernel: one launch (Winograd's three-stage path: its three; a split-K plan:
    one more, the reduce, which applies the epilogue).

    Arguments as in ``kernels.conv2d`` and ``F.batch_norm`` (``bn_weight`` / ``bn_bias`` may be
    None, as for ``affine=False``); ``residual`` has (or broadcasts to) the output's shape, in any
    layout, with the input's dtype; ``activation`` is one of ``None, "relu", "relu6", "silu",
    "hardswish", "hardsigmoid", "sigmoid"``. The output has ``F.conv2d``'s shape, dtype and memory
    format. Inference only: raises when grad mode is on and an argument requires grad.
    """
    return _fused("conv2d_bn", input, weight, bias, running_mean, running_var, bn_weight, bn_bias, eps, stride,
                  padding, dilation, groups, residual, activation, algorithm)


def conv3d_bn(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    bn_weight: Optional[torch.Tensor] = None,
    bn_bias: Optional[torch.Tensor] = None,
    eps: float = 1e-5,
    stride: IntOrPair = 1,
    padding: Union[IntOrPair, str] = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    *,
    residual: Optional[torch.Tensor] = None,
    activation: Optional[str] = None,
    algorithm: str = "auto",
) -> torch.Tensor:
    """``conv2d_bn`` for ``nn.Conv3d`` -> ``nn.BatchNorm3d`` (-> add) (-> act): ``kernels.conv3d``'s
    arguments and output, the same epilogue in one implicit-GEMM launch. Inference only."""
    return _fused("conv3d_bn", input, weight, bias, running_mean, running_var, bn_weight, bn_bias, eps, stride,
                  padding, dilation, groups, residual, activation, algorithm)


def _fused(op, input, weight, bias, running_mean, running_var, bn_weight, bn_bias, eps, stride, padding, dilation,
           groups, residual, activation, algorithm):
    """``conv2d_bn`` / ``conv3d_bn`` (``op``)."""
    code = activation_code(activation)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps < 0:
        raise TypeError(f"{op}: eps must be a non-negative float, got {eps!r}")
    if isinstance(input, torch.Tensor) and isinstance(weight, torch.Tensor):
        input, weight, bias = autocast_inputs(input, weight, bias)
        if residual is not None and isinstance(residual, torch.Tensor):
            (residual,) = autocast_inputs(residual)
    params = ConvParams.from_tensors(input, weight, bias, stride, padding, dilation, groups, op=op[:-3])
    entry = resolve(algorithm, params)
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("bn_weight", bn_weight), ("bn_bias", bn_bias)):
        _bn_vector(t, name, params.k, required=name.startswith("running"), op=op)
        if t is not None and t.device != input.device:
            raise RuntimeError(f"{op}: {name} must be on the input's device {input.device}, got {t.device}")
    check_inference(op, (("input", input), ("weight", weight), ("bias", bias), ("bn_weight", bn_weight),
                         ("bn_bias", bn_bias), ("residual", residual)),
                    what="BatchNorm with running statistics, no backward",
                    advice="; to train, use kernels.conv2d followed by F.batch_norm")
    check_device(input, weight, bias, residual)

    batched = input.unsqueeze(0) if params.unbatched else input
    if residual is not None:
        out_shape = params.output_shape[1:] if params.unbatched else params.output_shape
        residual = _check_residual(residual, out_shape, input.dtype, input.device, op)
        if params.unbatched:
            residual = residual.unsqueeze(0)
    fold = bn_scale_shift if torch.compiler.is_compiling() else cached_scale_shift  # no weakrefs in graphs
    scale, shift = fold(bias, running_mean, running_var, bn_weight, bn_bias, eps, _fold_dtype(params.dtype))
    # The conv bias is inside `shift`: the kernel does not add it again.
    with torch.no_grad():
        out = conv_fused_inference(batched, weight, scale, shift, residual, list(params.strides),
                                   list(params.padding), list(params.dilations), params.groups, code, entry.name)
    return out.squeeze(0) if params.unbatched else out
