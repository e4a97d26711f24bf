"""The bottom layer: what every other layer of ``kernels`` builds on, importing nothing above it.

* ``params`` / ``variant_params``: ``ConvParams`` (every argument form of ``F.conv2d``, validated
  and normalised once) and the transposed / 1-D forms built on it;
* ``layout``: PyTorch's memory-format rules and the kernels' operand layout;
* ``checks``: the device check and autocast of the public entry points;
* ``device``: the one description of the GPUs (H100, H200) and of the one in use;
* ``launcher``: ``TunedKernel``, how every kernel is launched (autotuned on a GPU, one config under
  the interpreter) and counted;
* ``interpreter``: whether Triton's CPU interpreter is on, and work-arounds for its bugs.
"""
