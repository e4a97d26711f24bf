"""The arguments of the convolutions built on ``ConvParams``: transposed and 1-D.

* A transposed convolution is the input gradient (dgrad) of the ordinary convolution that maps
  its output back to its input. ``TransposedParams`` validates every argument form of
  ``F.conv_transpose2d`` in that function's own terms (PyTorch's exception types; messages name
  the argument and its value) and holds that convolution as a ``ConvParams``, which is what the
  kernels read.
* A 1-D convolution is a 2-D one over (N, C, 1, L): ``lift_1d`` turns the arguments of
  ``F.conv1d`` / ``F.conv_transpose1d`` into their 2-D forms (stride (1, s), padding (0, p), ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .layout import output_channels_last
from .params import ConvParams, IntOrPair, check_tensors, index_argument, pair_argument, triple_argument


def _bottom_pad_and_crop(pad: int, output_padding: int, stride: int) -> Tuple[int, int]:
    """The convolution behind a transposed one pads its input (the transposed output, of size
    H_out) by ``pad`` on top and by b at the bottom, and must map it back to H_in rows:
    (H_out + pad + b - reach) // stride + 1 = H_in, i.e. 0 <= output_padding + b - pad < stride.
    b = max(0, pad - output_padding) does it unless output_padding exceeds pad + stride - 1
    (allowed when output_padding < dilation); then the last ``crop`` rows of the output, which no
    input pixel reaches (they hold the bias only), are left out of the convolution."""
    bottom = max(0, pad - output_padding)
    crop = max(0, output_padding - pad - (stride - 1))
    return bottom, crop


@dataclass(frozen=True)
class TransposedParams:
    """A validated ``conv_transpose2d`` problem as the dgrad of ``conv``.

    ``conv``: the convolution whose input is this call's output (less the ``crop`` rows and
    columns) and whose output is this call's input; its weight is this call's weight as given,
    (in_channels, out_channels / groups, kH, kW), and its (top, left) padding is ``padding``.
    """

    conv: ConvParams
    output_padding: Tuple[int, ...]
    crop: Tuple[int, ...]  # trailing output rows / columns (/ frames) outside ``conv`` (bias only; see above)
    channels_last: bool  # output memory format

    @property
    def unbatched(self) -> bool:
        return self.conv.unbatched

    @property
    def output_shape(self) -> Tuple[int, ...]:
        """(N, out_channels, (D_out,) H_out, W_out), batched."""
        n, c, *sizes = self.conv.input_shape
        return (n, c, *(size + crop for size, crop in zip(sizes, self.crop)))

    @property
    def conv_input_shape(self) -> Tuple[int, ...]:
        """The shape dgrad writes: the output less the crop, batched."""
        return self.conv.input_shape

    @property
    def macs(self) -> int:
        """Multiply-accumulates as ``torch.utils.flop_counter.FlopCounterMode`` counts a transposed
        convolution (FLOPs / 2): every input pixel times every tap, the taps that land in the
        cropped-off padding included. That is ``conv``'s MAC count."""
        return self.conv.macs

    def op_geometry(self, algorithm: str):
        """The custom ops' geometry arguments (stride, padding, dilation, groups, algorithm) of ``conv``."""
        c = self.conv
        return (list(c.strides), list(c.padding), list(c.dilations), c.groups, algorithm)

    def finish(self, out: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """dgrad's result -> this transposed convolution's output: the cropped rows and columns back
        (zeros; see ``crop``), then the bias (dgrad has no bias epilogue)."""
        if any(self.crop):
            out = F.pad(out, [v for crop in reversed(self.crop) for v in (0, crop)])
        return out if bias is None else out + bias.view(1, -1, *[1] * len(self.crop))

    @staticmethod
    def from_shapes(
        input_shape: Sequence[int],
        weight_shape: Sequence[int],
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        output_padding: IntOrPair = 0,
        groups: int = 1,
        dilation: IntOrPair = 1,
        *,
        dtype: torch.dtype = torch.float32,
        bias_shape: Optional[Sequence[int]] = None,
        channels_last: bool = False,
        op: str = "conv_transpose2d",
    ) -> "TransposedParams":
        """``op`` "conv_transpose3d" validates a 3-D one (5-D weight, triples), else a 2-D one."""
        input_shape = tuple(int(d) for d in input_shape)
        weight_shape = tuple(int(d) for d in weight_shape)
        spatial = 3 if op == "conv_transpose3d" else 2
        if len(input_shape) not in (spatial + 1, spatial + 2):
            raise RuntimeError(
                f"{op}: expected {spatial + 1}D (unbatched) or {spatial + 2}D (batched) input, but got input of size: "
                f"{list(input_shape)}")
        if len(weight_shape) != spatial + 2:
            raise RuntimeError(
                f"{op}: expected weight to be {spatial + 2}-dimensional (in_channels, out_channels/groups, "
                f"{'kT, ' if spatial == 3 else ''}kH, kW), but got weight of size {list(weight_shape)}")
        argument = pair_argument if spatial == 2 else triple_argument
        stride = argument(stride, "stride", op)
        padding = argument(padding, "padding", op)
        output_padding = argument(output_padding, "output_padding", op)
        dilation = argument(dilation, "dilation", op)
        groups = index_argument(groups, "groups", "an int", op)
        for name, value, least in (("stride", stride, 1), ("dilation", dilation, 1), ("padding", padding, 0),
                                   ("output_padding", output_padding, 0)):
            if min(value) < least:
                kind = "non-positive" if least else "negative"
                raise RuntimeError(f"{op}: {kind} {name} is not supported, got {name}={list(value)}")
        if groups <= 0:
            raise RuntimeError(f"{op}: non-positive groups is not supported, got groups={groups}")

        unbatched = len(input_shape) == spatial + 1
        n, c_in, *sizes = (1,) + input_shape if unbatched else input_shape
        k_in, c_out_per_group, *kernel = weight_shape
        if k_in <= 0 or c_out_per_group <= 0:
            raise RuntimeError(f"{op}: expected weight to have at least 1 input and 1 output channel per group, "
                               f"got weight of size {list(weight_shape)}")
        if k_in % groups != 0:
            raise RuntimeError(f"{op}: given groups={groups}, expected weight to be divisible by {groups} at "
                               f"dimension 0, but got weight of size {list(weight_shape)}")
        if c_in != k_in:
            raise RuntimeError(f"{op}: given weight of size {list(weight_shape)}, expected input {list(input_shape)} "
                               f"to have {k_in} channels, but got {c_in} channels")
        for axis, op_, st, dil in zip(("depth", "height", "width")[-spatial:], output_padding, stride, dilation):
            if op_ >= st and op_ >= dil:
                raise RuntimeError(
                    f"{op}: output padding must be smaller than either stride or dilation, but got "
                    f"output_padding={list(output_padding)} (the {axis}'s {op_}) with stride={list(stride)} and "
                    f"dilation={list(dilation)}")
        c_out = c_out_per_group * groups
        if bias_shape is not None and tuple(bias_shape) != (c_out,):
            raise RuntimeError(f"{op}: given weight of size {list(weight_shape)}, expected bias to be 1-dimensional "
                               f"with {c_out} elements, but got bias of size {list(bias_shape)}")
        out_size = [(size - 1) * st - 2 * pad + dil * (k - 1) + op_ + 1
                    for size, st, pad, dil, k, op_ in zip(sizes, stride, padding, dilation, kernel, output_padding)]
        if min(out_size) <= 0 or min(kernel) <= 0:
            raise RuntimeError(f"{op}: given input size per channel ({' x '.join(map(str, sizes))}), weight of size "
                               f"{list(weight_shape)}, stride={list(stride)}, padding={list(padding)}, "
                               f"dilation={list(dilation)}, output_padding={list(output_padding)}: the calculated "
                               f"output size per channel ({' x '.join(map(str, out_size))}) is too small")

        ends = [_bottom_pad_and_crop(pad, op_, st) for pad, op_, st in zip(padding, output_padding, stride)]
        crop = tuple(c for _, c in ends)
        conv_input = (c_out, *(size - c for size, c in zip(out_size, crop)))
        conv = ConvParams.from_shapes(
            conv_input if unbatched else (n,) + conv_input, weight_shape, stride, dilation=dilation, groups=groups,
            pads=tuple(v for pad, (end, _) in zip(padding, ends) for v in (pad, end)), dtype=dtype,
            has_bias=bias_shape is not None, channels_last=channels_last, op="conv3d" if spatial == 3 else "conv2d")
        assert list(conv.output_shape[2:]) == sizes, "the convolution behind a transposed one must map back to its input"
        return TransposedParams(conv=conv, output_padding=output_padding, crop=crop, channels_last=channels_last)

    @staticmethod
    def from_tensors(
        input: torch.Tensor,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor] = None,
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        output_padding: IntOrPair = 0,
        groups: int = 1,
        dilation: IntOrPair = 1,
        op: str = "conv_transpose2d",
    ) -> "TransposedParams":
        """Validate tensors (types, dtypes, devices) and their shapes against the arguments."""
        check_tensors(input, weight, bias, op)
        rank = 5 if op == "conv_transpose3d" else 4
        return TransposedParams.from_shapes(
            input.shape, weight.shape, stride, padding, output_padding, groups, dilation,
            dtype=input.dtype, bias_shape=None if bias is None else bias.shape,
            # PyTorch's rule, as for conv2d: channels_last if input (seen batched) or weight is.
            channels_last=input.dim() in (rank - 1, rank) and weight.dim() == rank
            and output_channels_last(input if input.dim() == rank else input.unsqueeze(0), weight),
            op=op,
        )


# --- 1-D --------------------------------------------------------------------------------------

def _single(value, name: str, op: str) -> int:
    """An int or a one-element sequence of one (what F.conv1d accepts for its 1-D arguments)."""
    if isinstance(value, (tuple, list, torch.Size)):
        values = [index_argument(v, name, "an int or a list of 1 int", op) for v in value]
        if len(values) != 1:
            raise RuntimeError(f"{op}: expected {name} to be a single integer value or a list of 1 values to match "
                               f"the convolution dimensions, but got {name}={values}")
        return values[0]
    return index_argument(value, name, "an int or a list of 1 int", op)


def lift_1d(op: str, input, weight, *, padding: Union[IntOrPair, str], **int_args) -> dict:
    """The 2-D forms of a 1-D convolution's arguments, after checking the ranks of its tensors.

    ``int_args`` are stride, dilation (1 in the lifted height) and output_padding (0 there);
    ``padding`` is 0 in the height, and the strings "same" / "valid" stay strings.
    """
    if isinstance(input, torch.Tensor) and input.dim() not in (2, 3):
        raise RuntimeError(
            f"{op}: expected 2D (unbatched) or 3D (batched) input, but got input of size: {list(input.shape)}")
    if isinstance(weight, torch.Tensor) and weight.dim() != 3:
        raise RuntimeError(f"{op}: expected weight to be 3-dimensional (out_channels, in_channels/groups, kW) for "
                           f"conv1d, (in_channels, out_channels/groups, kW) for conv_transpose1d, but got weight of "
                           f"size {list(weight.shape)}")
    lifted = {name: (1 if name in ("stride", "dilation") else 0, _single(value, name, op))
              for name, value in int_args.items()}
    lifted["padding"] = padding if isinstance(padding, str) else (0, _single(padding, "padding", op))
    return lifted
