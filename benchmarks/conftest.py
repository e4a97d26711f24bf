"""pytest-benchmark set-up for ``pytest benchmarks --benchmark-only``.

Importing the ``benchmarks`` package switches Triton's interpreter on when there is no GPU
(before triton is imported). Options pick the cases; the defaults are the same as
``python -m benchmarks`` (on the CPU: the ``--quick`` layers, scaled down).
"""
import pytest

import benchmarks  # noqa: F401  (sets TRITON_INTERPRET on CPU-only machines)
from benchmarks.environment import ON_GPU, PRECISIONS
from benchmarks.layers import LAYOUTS
from benchmarks.networks import all_suites


def pytest_addoption(parser):
    group = parser.getgroup("convolution benchmarks")
    group.addoption("--bench-suites", nargs="+", default=all_suites(), choices=all_suites())
    group.addoption("--bench-batch", type=int, default=None,
                    help="default: on a GPU the suite's own batch (networks.SUITE_BATCHES) or 32; 1 on the CPU")
    group.addoption("--bench-dtype", default="float16" if ON_GPU else "float32", choices=list(PRECISIONS))
    group.addoption("--bench-layout", default="channels_last", choices=LAYOUTS)
    group.addoption("--bench-all-layers", action="store_true", default=ON_GPU,
                    help="every unique layer (default on a GPU; on the CPU only the --quick layers)")


@pytest.fixture
def bench_rounds():
    """(rounds, warmup rounds) per benchmark: one interpreter run on the CPU."""
    return (50, 5) if ON_GPU else (1, 0)
