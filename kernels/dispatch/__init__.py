"""The dispatch layer: which algorithm runs a convolution.

* ``table``: THE table of algorithms (``REGISTRY``, ``ALIASES``), pointing at ``kernels.ops``;
* ``algorithm``: the ``Algorithm`` type;
* ``auto``: ``resolve`` (an ``algorithm=`` argument to a table entry, eligibility checked) and
  ``algorithm="auto"``'s routing: timing autotune, per-device routing tables (``routing/``), rules;
* ``autotune_cache``: the optional timing autotune and its on-disk cache;
* ``flops``: ``conv2d_flops``, what the definition needs and what an algorithm multiplies.
"""
from .algorithm import Algorithm
from .auto import resolve
from .table import ALGORITHMS, ALIASES, REGISTRY

__all__ = ["ALGORITHMS", "ALIASES", "REGISTRY", "Algorithm", "resolve"]
