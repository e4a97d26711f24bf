"""The CUDA smoke of every registered algorithm (stage 2 of ``bash benchmarks/gpu_session.sh first``):
forward and backward, fp16 / bf16 / fp32, channels_last and NCHW, a few shapes each, checked as
test_forward.py and test_backward.py check them (float64 reference, their tolerances).

The tests iterate ``kernels.REGISTRY``, so a new algorithm is smoked without touching this file.
They are ordered so that a run cut by its time budget has covered the most: every algorithm in
every dtype, layout and pass on its first shape before any algorithm's second shape; the first
shape is one the GPU's tiles see whole (channels in multiples of 16), the others the sweep's small
ones (masked tails). ``KERNELS_SMOKE_SHARD=I/N`` keeps every N-th test from the I-th, so that N
pytest processes compile in parallel.

Without a GPU the tests are skipped (the same checks run under the interpreter in
test_forward.py / test_backward.py); ``KERNELS_SMOKE_ON_CPU=1`` runs them there anyway.
"""
import os

import pytest
import torch

import kernels
from cases import CORE, SWEEP, applies
from reference import Case
from test_backward import _check_backward
from test_forward import _check_forward

DTYPES = ("float16", "bfloat16", "float32")
LAYOUTS = ("channels_last", "nchw")
PASSES = ("forward", "backward")
SHAPES_PER_ALGORITHM = 3

# Shapes at sizes the GPU tiles see whole: a 3x3 (im2col, direct, Winograd), a 1x1 (pointwise),
# the RGB stem, a depthwise 3x3.
GPU_CASES = [
    Case(2, 64, 16, 16, 64, 3, 3, padding=1),
    Case(2, 64, 16, 16, 128, 1, 1),
    Case(2, 3, 32, 32, 64, 7, 7, stride=2, padding=3),
    Case(2, 64, 16, 16, 64, 3, 3, padding=1, groups=64),
]


def smoke_shapes(algorithm: str):
    """The algorithm's shapes: the first GPU-sized one it applies to, then the small ones."""
    gpu = [case for case in GPU_CASES if applies(algorithm, case)][:1]
    small = [case for case in dict.fromkeys(CORE + SWEEP) if applies(algorithm, case)]
    return (gpu + small)[:SHAPES_PER_ALGORITHM]


def smoke_params(shard=None):
    """(algorithm, case, dtype, layout, pass) in priority order (see the module docstring); with
    ``shard`` = (I, N), every N-th from the I-th."""
    shapes = {name: smoke_shapes(name) for name in kernels.REGISTRY}
    params = []
    for index in range(SHAPES_PER_ALGORITHM):
        for dtype in DTYPES:
            for layout in LAYOUTS:
                for direction in PASSES:
                    for name in kernels.REGISTRY:
                        if index < len(shapes[name]):
                            case = shapes[name][index]
                            params.append(pytest.param(name, case, dtype, layout, direction,
                                                       id=f"{name}-{direction}-{dtype}-{layout}-{case}"))
    if shard is not None:
        first, count = shard
        params = params[first::count]
    return params


def _shard_from_environment():
    text = os.environ.get("KERNELS_SMOKE_SHARD")
    if not text:
        return None
    first, count = (int(part) for part in text.split("/"))
    return first, count


pytestmark = pytest.mark.skipif(not torch.cuda.is_available() and not os.environ.get("KERNELS_SMOKE_ON_CPU"),
                                reason="the CUDA smoke (the same checks run under the interpreter in "
                                       "test_forward.py and test_backward.py)")


@pytest.mark.parametrize("algorithm,case,dtype,layout,direction", smoke_params(_shard_from_environment()))
def test_smoke(algorithm, case, dtype, layout, direction, device):
    check = _check_forward if direction == "forward" else _check_backward
    check(algorithm, case, getattr(torch, dtype), layout, device)
