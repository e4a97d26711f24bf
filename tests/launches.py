"""Counting the package's kernel launches in tests.

A split-K launch is followed by a reduce launch (``kernels/ops/gemm/splitk.py``) that the planner adds
only when a problem's tile grid fills less than the GPU: never under the interpreter (it plans for
one SM), often on an H100 for the tests' small problems. Counts of "one launch per convolution"
leave the reduce out; ``test_splitk.py`` checks it runs.
"""
from collections import Counter

from kernels.core.launcher import LAUNCHES

SPLIT_REDUCE = "_split_reduce_kernel"


def launched_since(before: Counter) -> Counter:
    """Launches since ``before`` (a copy of ``LAUNCHES``), by kernel name, split-K reduces left out."""
    new = LAUNCHES - before
    new.pop(SPLIT_REDUCE, None)
    return new


def convolution_launches_since(before: Counter) -> int:
    return sum(launched_since(before).values())
