"""Benchmarks: every algorithm of ``kernels.REGISTRY`` against cuDNN on the conv layers of real
networks and end to end (``python -m benchmarks``; ``pytest benchmarks --benchmark-only``).

Without a GPU the benchmarks are the project's CPU demo: like the tests, they run the kernels
under Triton's interpreter, which must be switched on before triton is imported.
"""
import os
import sys

import torch

if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
