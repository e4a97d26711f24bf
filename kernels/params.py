"""``kernels.params`` is ``kernels.core.params``: the old path, kept because the shared
``launch_report`` tool imports ``ConvParams`` from it to label launches with their algorithm."""
from .core.params import ConvParams  # noqa: F401
