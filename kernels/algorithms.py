"""Imports every algorithm module; each registers itself in ``kernels.registry.REGISTRY``.

The import order is the order tests and reports list the algorithms.
"""
from .ops import im2col  # noqa: F401
from .ops import direct  # noqa: F401
from .ops import stem  # noqa: F401
from .ops import pointwise  # noqa: F401
from .ops import depthwise  # noqa: F401
from .ops import winograd  # noqa: F401
