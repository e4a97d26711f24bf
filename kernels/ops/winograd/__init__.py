"""Winograd F(2x2,3x3) and F(4x4,3x3): see ``forward.py`` for scope and paths.

    forward.py     scope, path choice, counts, the F2 / F4 choice of ``algorithm="winograd"``
    transforms.py  the exact transform matrices and the filter-transform cache
    stages.py      the three-stage path: input transform, one GEMM per position, output transform
    fused.py       the fused path: every stage in one kernel
    tiles.py       jit helpers both paths share
    plan.py        which path a layer takes, and the transformed tensors' traffic
"""
