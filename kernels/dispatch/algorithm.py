"""The Algorithm type: what the dispatch layer knows about one convolution algorithm."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

from ..core.params import ConvParams


@dataclass(frozen=True)
class Algorithm:
    """One convolution algorithm.

    ``unsupported(params)`` returns None when the algorithm applies, else the failed
    condition in words.
    ``forward(x, w, bias, params, *, scale=None, shift=None, residual=None, activation=0)``
    launches one kernel that ends in ``ops.epilogue.store_conv_tile`` and returns a new
    output (N, K, P, Q) in PyTorch's memory format: scale/shift are per-output-channel fp32
    vectors (folded BatchNorm), residual a tensor of the output's shape in any layout, activation
    a code from ``ops.epilogue.ACTIVATIONS``.
    ``count(params)`` returns at least ``macs`` and ``multiplies``.
    ``grad_input(dy, w, params, channels_last)`` / ``grad_weight(dy, x, params, channels_last)``:
    the table gives every algorithm both (most share the implicit-GEMM backward kernels).
    """

    name: str
    unsupported: Callable[[ConvParams], Optional[str]]
    forward: Callable
    count: Callable[[ConvParams], Dict[str, int]]
    grad_input: Callable
    grad_weight: Callable
    description: str = ""
    # Worst measured forward error relative to im2col's, per dtype (Winograd's transforms
    # amplify rounding); the test sweeps scale their tolerance by it. 1.0: as exact as a GEMM.
    error_ratio: Callable[[torch.dtype], float] = lambda dtype: 1.0
    # Serves 3-D convolutions (``kernels.conv3d``): its kernels read the depth (``ConvParams.spatial_dims``).
    three_d: bool = False

    def why_not(self, params: ConvParams) -> Optional[str]:
        """None when the algorithm applies to ``params``, else the failed condition in words."""
        if params.spatial_dims == 3 and not self.three_d:
            return f"{self.name} has no 3-D kernels (3-D convolutions run on the implicit GEMM)"
        return self.unsupported(params)

    def eligible(self, params: ConvParams) -> bool:
        return self.why_not(params) is None


def direct_macs(params: ConvParams) -> Dict[str, int]:
    """Counts for algorithms that perform every multiply of the definition."""
    return {"macs": params.macs, "multiplies": params.macs}
