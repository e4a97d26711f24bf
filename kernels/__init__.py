"""Triton convolution kernels for PyTorch.

``kernels.conv2d`` is a drop-in for ``torch.nn.functional.conv2d`` (same numbers, gradients,
errors and memory formats) running on Triton kernels; ``algorithm=`` picks one of
``kernels.ALGORITHMS``. ``conv_transpose2d``, ``conv1d`` and ``conv_transpose1d`` are the same
for their ``F.`` namesakes; ``kernels.enable()`` routes unmodified code's convolutions here.

Layers, each importing only those below it: ``core`` (arguments, layouts, the device, the
launcher), ``ops`` (the kernels), ``dispatch`` (the algorithm table and routing), ``autograd``
(custom ops and their derivatives), and this package's modules (the public API). ``sm90`` is
offline tooling (what an H100 would compile), never imported at run time.
"""
from .core.interpreter import interpreting as _interpreting

if _interpreting():
    from .core import interpreter as _interpreter

    _interpreter.apply()

from .aten import disable, enable, enabled
from .core.params import ConvParams
from .dispatch import ALGORITHMS, ALIASES, REGISTRY
from .dispatch.flops import conv2d_flops
from .functional import Conv2dFunction, conv1d, conv2d, conv3d, conv_transpose1d, conv_transpose2d, conv_transpose3d
from .fused import conv2d_bn, conv3d_bn, fold_bn
from .scaled import conv2d_scaled

__all__ = ["ALGORITHMS", "ALIASES", "REGISTRY", "Conv2dFunction", "ConvParams", "conv1d", "conv2d", "conv2d_bn", "conv2d_scaled", "conv3d",
           "conv2d_flops", "conv3d_bn", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "disable", "enable", "enabled", "fold_bn"]
