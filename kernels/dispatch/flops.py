"""FLOP accounting: what the definition needs (macs) and what an algorithm really multiplies."""
from __future__ import annotations

from typing import Dict, Sequence, Union

from ..core.params import ConvParams, IntOrPair
from .auto import resolve


def conv2d_flops(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: IntOrPair = 1,
    padding: Union[IntOrPair, str] = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    algorithm: str = "im2col",
) -> Dict[str, int]:
    """Counts for one convolution.

    ``macs``: multiply-accumulates of the direct definition (N*K*P*Q*C/groups*R*S).
    ``multiplies``: the multiplies the algorithm performs (Winograd's reduced count, with its
    transform operations under separate keys). ``flops`` = 2 * macs, the figure TFLOP/s is
    reported against.
    """
    params = ConvParams.from_shapes(input_shape, weight_shape, stride, padding, dilation, groups)
    entry = resolve(algorithm, params)
    counts = dict(entry.count(params))
    counts["flops"] = 2 * counts["macs"]
    counts["algorithm"] = entry.name
    return counts
