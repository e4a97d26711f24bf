"""Test set-up: run the kernels on CUDA when a GPU is present, else under Triton's interpreter.

TRITON_INTERPRET must be set before triton is imported (importing torch does not import it).
"""
import os
import zlib

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import dataclasses  # noqa: E402

import pytest  # noqa: E402

import kernels  # noqa: E402,F401
from kernels.ops import common  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _interpreter_without_overflow_checks():
    """Triton's interpreter checks every int32 add/sub/mul for overflow (about half of its time on
    our kernels). The tests' tensors are far too small to overflow int32 offsets (the int64 path is
    tested by forcing it), so the check is off unless KERNELS_SANITIZE_OVERFLOW=1."""
    from triton.runtime import interpreter

    builder = getattr(interpreter, "interpreter_builder", None)
    options = getattr(builder, "options", None)
    if hasattr(options, "sanitize_overflow") and os.environ.get("KERNELS_SANITIZE_OVERFLOW") != "1":
        builder.options = dataclasses.replace(options, sanitize_overflow=False)


if DEVICE == "cpu":
    _interpreter_without_overflow_checks()
    # KERNELS_TEST_SMS=132: the launch planner plans for that many SMs, as on an H100, so the
    # suite's small problems run split-K as they will there (by default it plans for one SM).
    if os.environ.get("KERNELS_TEST_SMS"):
        from kernels.ops.gemm import plan as gemm_plan

        gemm_plan.INTERPRETER_SMS = int(os.environ["KERNELS_TEST_SMS"])


@pytest.fixture(autouse=True)
def _seed_poison_and_precision(request):
    """Per-test seed (from the test id), NaN-poisoned output buffers, IEEE fp32 by default."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    common.POISON_OUTPUTS = True
    allow_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = allow_tf32
    common.POISON_OUTPUTS = False


@pytest.fixture
def device():
    return DEVICE
