"""ConvParams: every argument form ``F.conv2d`` accepts, normalised and validated once.

Kernels never re-derive sizes: they read them from here. Validation raises the
exception type PyTorch raises for the same call (``RuntimeError`` in torch 2.13 for
shapes, dtypes, strides, groups and padding strings) with a message that names the
offending argument and its value.
"""
from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch

from .layout import output_channels_last

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

IntOrPair = Union[int, Sequence[int]]


def index_argument(value, name: str, what: str, op: str = "conv2d") -> int:
    """``value`` as an int, accepting what F.conv2d accepts (``operator.index``: int, NumPy
    integers, integer 0-d tensors) and rejecting the rest (bool, float, str) with a TypeError.
    ``op`` names the function in the message."""
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"{op}: {name} must be {what}, got {value!r}")


def pair_argument(value: IntOrPair, name: str, op: str = "conv2d") -> Tuple[int, int]:
    """``value`` as a (height, width) pair: an int for both, or a sequence of one or two ints."""
    what = "an int or a pair of ints"
    if isinstance(value, (tuple, list, torch.Size)):
        values = tuple(index_argument(v, name, what, op) for v in value)
        if len(values) == 1:
            return (values[0], values[0])
        if len(values) == 2:
            return values  # type: ignore[return-value]
        raise RuntimeError(
            f"{op}: expected {name} to be a single integer value or a list of 2 values "
            f"to match the convolution dimensions, but got {name}={list(values)}"
        )
    v = index_argument(value, name, what, op)
    return (v, v)


def triple_argument(value, name: str, op: str = "conv3d") -> Tuple[int, int, int]:
    """``value`` as a (depth, height, width) triple: an int for all three, or a sequence of one or three."""
    what = "an int or a triple of ints"
    if isinstance(value, (tuple, list, torch.Size)):
        values = tuple(index_argument(v, name, what, op) for v in value)
        if len(values) in (1, 3):
            return values * 3 if len(values) == 1 else values  # type: ignore[return-value]
        raise RuntimeError(
            f"{op}: expected {name} to be a single integer value or a list of 3 values "
            f"to match the convolution dimensions, but got {name}={list(values)}"
        )
    v = index_argument(value, name, what, op)
    return (v, v, v)


def check_tensors(input, weight, bias=None, op: str = "conv2d") -> None:
    """Types, dtypes and devices of a convolution's operands, as PyTorch checks them (``op`` names
    the function in the message)."""
    for name, t in (("input", input), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    if bias is not None and not isinstance(bias, torch.Tensor):
        raise TypeError(f"{op}: bias must be a Tensor or None, got {type(bias).__name__}")
    if input.dtype != weight.dtype:
        raise RuntimeError(
            f"{op}: input type ({input.dtype}) and weight type ({weight.dtype}) should be the same"
        )
    if bias is not None and bias.dtype != input.dtype:
        raise RuntimeError(
            f"{op}: input type ({input.dtype}) and bias type ({bias.dtype}) should be the same"
        )
    if input.dtype not in SUPPORTED_DTYPES:
        raise RuntimeError(
            f"{op}: input dtype {input.dtype} is not supported; "
            f"expected one of {[str(d) for d in SUPPORTED_DTYPES]}"
        )
    devices = {t.device for t in (input, weight, bias) if t is not None}
    if len(devices) > 1:
        raise RuntimeError(
            f"{op}: input, weight and bias must be on the same device, got {sorted(map(str, devices))}"
        )


@dataclass(frozen=True)
class ConvParams:
    """A validated 2-D convolution problem (always batched: unbatched input is viewed as N=1)."""

    n: int
    c: int  # input channels (all groups)
    h: int
    w: int
    k: int  # output channels (all groups)
    r: int  # kernel height
    s: int  # kernel width
    stride: Tuple[int, int]
    pad_top: int
    pad_left: int
    pad_bottom: int
    pad_right: int
    dilation: Tuple[int, int]
    groups: int
    p: int  # output height
    q: int  # output width
    dtype: torch.dtype
    has_bias: bool
    unbatched: bool
    channels_last: bool  # output memory format
    # A 3-D convolution (spatial_dims == 3) adds a depth: input depth d, kernel depth t, output depth o,
    # and the depth's stride, padding (front, back) and dilation. A 2-D one has d = t = o = 1.
    spatial_dims: int = 2
    d: int = 1
    t: int = 1
    o: int = 1
    stride_d: int = 1
    pad_front: int = 0
    pad_back: int = 0
    dil_d: int = 1

    @property
    def c_per_group(self) -> int:
        return self.c // self.groups

    @property
    def k_per_group(self) -> int:
        return self.k // self.groups

    @property
    def padding(self) -> Tuple[int, ...]:
        """(top, bottom, left, right), the form the custom op carries; a 3-D problem puts
        (front, back) first."""
        plane = (self.pad_top, self.pad_bottom, self.pad_left, self.pad_right)
        return (self.pad_front, self.pad_back) + plane if self.spatial_dims == 3 else plane

    @property
    def strides(self) -> Tuple[int, ...]:
        """The stride per spatial dimension, as the custom op carries it ((depth,) height, width)."""
        return ((self.stride_d,) if self.spatial_dims == 3 else ()) + self.stride

    @property
    def dilations(self) -> Tuple[int, ...]:
        return ((self.dil_d,) if self.spatial_dims == 3 else ()) + self.dilation

    @property
    def depth_geometry(self) -> Tuple[int, int, int]:
        """(stride_d, pad_front, dil_d): the 3-D kernels' depth geometry arguments."""
        return (self.stride_d, self.pad_front, self.dil_d)

    @property
    def input_shape(self) -> Tuple[int, ...]:
        depth = (self.d,) if self.spatial_dims == 3 else ()
        return (self.n, self.c) + depth + (self.h, self.w)

    @property
    def weight_shape(self) -> Tuple[int, ...]:
        depth = (self.t,) if self.spatial_dims == 3 else ()
        return (self.k, self.c_per_group) + depth + (self.r, self.s)

    @property
    def geometry(self) -> Tuple[int, int, int, int, int, int]:
        """(stride_h, stride_w, pad_top, pad_left, dil_h, dil_w): the kernels' geometry arguments."""
        return (*self.stride, self.pad_top, self.pad_left, *self.dilation)

    @property
    def output_shape(self) -> Tuple[int, ...]:
        depth = (self.o,) if self.spatial_dims == 3 else ()
        return (self.n, self.k) + depth + (self.p, self.q)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the direct definition."""
        return self.n * self.k * self.o * self.p * self.q * self.c_per_group * self.t * self.r * self.s

    @staticmethod
    def from_shapes(
        input_shape: Sequence[int],
        weight_shape: Sequence[int],
        stride: IntOrPair = 1,
        padding: Union[IntOrPair, str] = 0,
        dilation: IntOrPair = 1,
        groups: int = 1,
        *,
        dtype: torch.dtype = torch.float32,
        has_bias: bool = False,
        bias_shape: Optional[Sequence[int]] = None,
        channels_last: bool = False,
        pads: Optional[Sequence[int]] = None,
        op: str = "conv2d",
    ) -> "ConvParams":
        """Validate and normalise from shapes only (also used for FLOP counts and profiles).

        ``pads`` = (top, bottom, left, right) overrides ``padding``: the already-normalised form
        that the custom op carries.
        """
        input_shape = tuple(int(d) for d in input_shape)
        weight_shape = tuple(int(d) for d in weight_shape)
        if op == "conv3d":
            return _from_shapes_3d(input_shape, weight_shape, stride, padding, dilation, groups, dtype=dtype,
                                   has_bias=has_bias, bias_shape=bias_shape, channels_last=channels_last, pads=pads)
        return _from_shapes_2d(input_shape, weight_shape, stride, padding, dilation, groups, dtype=dtype,
                               has_bias=has_bias, bias_shape=bias_shape, channels_last=channels_last, pads=pads, op=op)

    @staticmethod
    def from_tensors(
        input: torch.Tensor,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor] = None,
        stride: IntOrPair = 1,
        padding: Union[IntOrPair, str] = 0,
        dilation: IntOrPair = 1,
        groups: int = 1,
        op: str = "conv2d",
    ) -> "ConvParams":
        """Validate tensors (types, dtypes, devices) and their shapes against the arguments
        (``op``: "conv2d", or "conv3d" for a 3-D convolution)."""
        check_tensors(input, weight, bias, op)
        rank = 5 if op == "conv3d" else 4
        params = ConvParams.from_shapes(
            input.shape, weight.shape, stride, padding, dilation, groups,
            dtype=input.dtype,
            bias_shape=None if bias is None else bias.shape,
            # Unbatched input runs as a batch of one, as in PyTorch, and follows the same rule.
            channels_last=input.dim() in (rank - 1, rank) and weight.dim() == rank
            and output_channels_last(input if input.dim() == rank else input.unsqueeze(0), weight),
            op=op,
        )
        return params


def _from_shapes_2d(input_shape, weight_shape, stride, padding, dilation, groups, *, dtype, has_bias, bias_shape,
                    channels_last, pads, op) -> ConvParams:
    """``ConvParams.from_shapes`` for a 2-D convolution (and the plane of a 3-D one, ``op`` naming it)."""
    if len(input_shape) not in (3, 4):
        raise RuntimeError(
            f"{op}: expected 3D (unbatched) or 4D (batched) input, "
            f"but got input of size: {list(input_shape)}"
        )
    if len(weight_shape) != 4:
        raise RuntimeError(
            f"{op}: expected weight to be 4-dimensional (out_channels, in_channels/groups, kH, kW), "
            f"but got weight of size {list(weight_shape)}"
        )
    unbatched = len(input_shape) == 3
    n, c, h, w = (1,) + input_shape if unbatched else input_shape
    k, c_per_group, r, s = weight_shape

    stride = pair_argument(stride, "stride", op)
    dilation = pair_argument(dilation, "dilation", op)
    groups = index_argument(groups, "groups", "an int", op)
    if min(stride) <= 0:
        raise RuntimeError(f"{op}: non-positive stride is not supported, got stride={list(stride)}")
    if min(dilation) <= 0:
        raise RuntimeError(
            f"{op}: non-positive dilation is not supported, got dilation={list(dilation)}"
        )
    if groups <= 0:
        raise RuntimeError(f"{op}: non-positive groups is not supported, got groups={groups}")

    if pads is not None:
        pads = tuple(int(v) for v in pads)
        if len(pads) != 4 or min(pads) < 0:
            raise RuntimeError(f"{op}: expected 4 non-negative pads (top, bottom, left, right), got {list(pads)}")
    elif isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise RuntimeError(
                    f"{op}: padding='same' is not supported for strided convolutions, got stride={list(stride)}"
                )
            total_h = dilation[0] * (r - 1)
            total_w = dilation[1] * (s - 1)
            # PyTorch puts the odd extra pixel on the bottom / right.
            pads = (total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2)
        else:
            raise RuntimeError(
                f"{op}: Invalid padding string: {padding!r}; expected 'same', 'valid' or int(s)"
            )
    else:
        ph, pw = pair_argument(padding, "padding", op)
        if ph < 0 or pw < 0:
            raise RuntimeError(
                f"{op}: negative padding is not supported, got padding={[ph, pw]}"
            )
        pads = (ph, ph, pw, pw)
    pad_top, pad_bottom, pad_left, pad_right = pads

    if k <= 0:
        raise RuntimeError(
            f"{op}: expected weight to have at least 1 output channel, got weight of size {list(weight_shape)}"
        )
    if k % groups != 0:
        raise RuntimeError(
            f"{op}: groups={groups} must divide the weight's out_channels, "
            f"but got weight of size {list(weight_shape)}"
        )
    if c_per_group * groups != c:
        raise RuntimeError(
            f"{op}: given groups={groups} and weight of size {list(weight_shape)}, expected input "
            f"{list(input_shape)} to have {c_per_group * groups} channels, but got {c} channels"
        )
    padded_h = h + pad_top + pad_bottom
    padded_w = w + pad_left + pad_right
    eff_r = dilation[0] * (r - 1) + 1
    eff_s = dilation[1] * (s - 1) + 1
    if padded_h < eff_r or padded_w < eff_s or r <= 0 or s <= 0:
        raise RuntimeError(
            f"{op}: calculated padded input size per channel: ({padded_h} x {padded_w}). "
            f"Kernel size: ({eff_r} x {eff_s}) (weight {list(weight_shape)}, dilation={list(dilation)}). "
            "Kernel size can't be greater than actual input size"
        )
    if bias_shape is not None and tuple(bias_shape) != (k,):
        raise RuntimeError(
            f"{op}: given weight of size {list(weight_shape)}, expected bias to be 1-dimensional "
            f"with {k} elements, but got bias of size {list(bias_shape)}"
        )
    p = (padded_h - eff_r) // stride[0] + 1
    q = (padded_w - eff_s) // stride[1] + 1
    return ConvParams(
        n=n, c=c, h=h, w=w, k=k, r=r, s=s, stride=stride,
        pad_top=pad_top, pad_left=pad_left, pad_bottom=pad_bottom, pad_right=pad_right,
        dilation=dilation, groups=groups, p=p, q=q, dtype=dtype,
        has_bias=has_bias or bias_shape is not None, unbatched=unbatched,
        channels_last=channels_last,
    )


def _from_shapes_3d(input_shape, weight_shape, stride, padding, dilation, groups, *, dtype, has_bias, bias_shape,
                    channels_last, pads) -> ConvParams:
    """``ConvParams.from_shapes`` for ``F.conv3d``: the depth is validated here, the (height, width)
    plane by the 2-D rules (messages naming the 3-D shapes)."""
    op = "conv3d"
    if len(input_shape) not in (4, 5):
        raise RuntimeError(f"{op}: expected 4D (unbatched) or 5D (batched) input, but got input of size: "
                           f"{list(input_shape)}")
    if len(weight_shape) != 5:
        raise RuntimeError(f"{op}: expected weight to be 5-dimensional (out_channels, in_channels/groups, kT, kH, kW), "
                           f"but got weight of size {list(weight_shape)}")
    unbatched = len(input_shape) == 4
    n, c, d, h, w = (1,) + input_shape if unbatched else input_shape
    k, c_per_group, t, r, s = weight_shape
    stride = triple_argument(stride, "stride")
    dilation = triple_argument(dilation, "dilation")
    if min(stride) <= 0:
        raise RuntimeError(f"{op}: non-positive stride is not supported, got stride={list(stride)}")
    if min(dilation) <= 0:
        raise RuntimeError(f"{op}: non-positive dilation is not supported, got dilation={list(dilation)}")
    if pads is not None:
        pads = tuple(int(v) for v in pads)
        if len(pads) != 6 or min(pads) < 0:
            raise RuntimeError(f"{op}: expected 6 non-negative pads (front, back, top, bottom, left, right), "
                               f"got {list(pads)}")
    elif isinstance(padding, str):
        if padding == "valid":
            pads = (0,) * 6
        elif padding == "same":
            if stride != (1, 1, 1):
                raise RuntimeError(f"{op}: padding='same' is not supported for strided convolutions, "
                                   f"got stride={list(stride)}")
            totals = [dil * (size - 1) for dil, size in zip(dilation, (t, r, s))]
            # PyTorch puts the odd extra element at the back / bottom / right.
            pads = tuple(v for total in totals for v in (total // 2, total - total // 2))
        else:
            raise RuntimeError(f"{op}: Invalid padding string: {padding!r}; expected 'same', 'valid' or int(s)")
    else:
        values = triple_argument(padding, "padding")
        if min(values) < 0:
            raise RuntimeError(f"{op}: negative padding is not supported, got padding={list(values)}")
        pads = tuple(v for value in values for v in (value, value))
    padded = (d + pads[0] + pads[1], h + pads[2] + pads[3], w + pads[4] + pads[5])
    reach = tuple(dil * (size - 1) + 1 for dil, size in zip(dilation, (t, r, s)))
    if min(t, r, s) <= 0 or any(p < e for p, e in zip(padded, reach)):
        raise RuntimeError(
            f"{op}: calculated padded input size per channel: ({' x '.join(map(str, padded))}). "
            f"Kernel size: ({' x '.join(map(str, reach))}) (weight {list(weight_shape)}, dilation={list(dilation)}). "
            "Kernel size can't be greater than actual input size")
    plane_input, plane_weight = (n, c, h, w), (k, c_per_group, r, s)
    try:
        plane = _from_shapes_2d(plane_input, plane_weight, stride[1:], padding=0, dilation=dilation[1:], groups=groups,
                                dtype=dtype, has_bias=has_bias, bias_shape=bias_shape,
                                       channels_last=channels_last, pads=pads[2:], op=op)
    except RuntimeError as error:  # the plane's message, naming the 3-D shapes
        message = str(error).replace(str(list(plane_weight)), str(list(weight_shape)))
        raise RuntimeError(message.replace(str(list(plane_input)), str(list(input_shape)))) from None
    return dataclasses.replace(
        plane, unbatched=unbatched, spatial_dims=3, d=d, t=t, o=(padded[0] - reach[0]) // stride[0] + 1,
        stride_d=stride[0], pad_front=pads[0], pad_back=pads[1], dil_d=dilation[0])
