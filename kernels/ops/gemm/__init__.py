"""The implicit-GEMM family: every convolution as a GEMM over NHWC operands, on tensor cores.

    forward.py  im2col forward (and pointwise: the same kernel with R = S = 1)
    stem.py     the small-channel stem (C <= 8): reduction along padded input-row runs
    dgrad.py    grad_input by stride phases
    wgrad.py    grad_weight, one GEMM per tap
    splitk.py   the split-K partials and their ordered reduction
    plan.py     the planner: tiles, stages, split-K, vector width; every launch of the family
"""
