"""Triton convolution kernels for PyTorch.

``kernels.conv2d`` is a drop-in for ``torch.nn.functional.conv2d`` (same numbers, gradients,
errors and memory formats) running on Triton kernels; ``algorithm=`` picks one of
``kernels.ALGORITHMS``. ``conv_transpose2d``, ``conv1d`` and ``conv_transpose1d`` are the same
for their ``F.`` namesakes; ``kernels.enable()`` routes unmodified code's convolutions here.
"""
from .tuning import interpreting as _interpreting

if _interpreting():
    from . import interpreter_compat as _interpreter_compat

    _interpreter_compat.apply()

from . import algorithms as _algorithms  # noqa: F401  (registers the algorithms)
from .aten import disable, enable, enabled
from .autograd import Conv2dFunction
from .conv1d import conv1d, conv_transpose1d
from .flops import conv2d_flops
from .functional import conv2d
from .fused import conv2d_bn, fold_bn
from .params import ConvParams
from .registry import ALIASES, REGISTRY
from .transposed import conv_transpose2d

ALGORITHMS = ("auto",) + tuple(REGISTRY) + tuple(ALIASES)

__all__ = ["ALGORITHMS", "REGISTRY", "Conv2dFunction", "ConvParams", "conv1d", "conv2d", "conv2d_bn", "conv2d_flops",
           "conv_transpose1d", "conv_transpose2d", "disable", "enable", "enabled", "fold_bn"]
