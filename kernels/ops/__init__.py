"""The Triton kernels and their launchers, by family. Nothing here imports ``kernels.dispatch``:
the algorithm table there points at the launchers and eligibility rules defined here.

    gemm/        implicit GEMM: forward (im2col, pointwise), stem, dgrad, wgrad, split-K, the planner
    winograd/    F(2x2,3x3) and F(4x4,3x3): transforms, three-stage and fused paths, path planner
    direct.py    the definition as explicit multiply-accumulates
    depthwise.py one channel per group, forward and both gradients
    bias_grad.py grad_bias of every algorithm
    epilogue.py  the one epilogue every forward kernel ends with
    tiles.py     shared jit helpers: tile order, pixel walks, split ranges, tap counters
    phases.py    stride phases of the transposed (grad_input) kernels
    common.py    launch-side helpers: output buffers, 64-bit offsets, accumulator type

Notation (kernel arguments, launchers and docstrings):

    N            batch
    C, K         input and output channels (C_PER_GROUP, K_PER_GROUP: of one group)
    H, W         input height and width
    P, Q         output height and width
    R, S         kernel height and width (taps r, s)
    n c h w k p q r s   coordinates along those axes
    M            GEMM rows (output pixels N*P*Q for a forward), and BLOCK_M / BLOCK_N / BLOCK_K the
                 tile's rows, columns and reduction step
    stride_h/_w, pad_h/_w, dil_h/_w   the convolution's geometry (pad: top and left)
    sx_*  strides of the input x        (sx_n, sx_c, sx_h, sx_w)
    sw_*  strides of the weight w       (sw_k, sw_c, sw_r, sw_s)
    so_*  strides of the output         (so_n, so_k, so_p, so_q)
    sr_*  strides of the residual       (as the output's)
    sd_*  strides of grad_output dy     (sd_n, sd_k, sd_p, sd_q)
    VEC   the vector width (elements) every channel count and row stride is a multiple of
    USE_INT64    64-bit offsets (a tensor past 2**31 elements)
    SPLIT_K      reduction parts (split-K); their fp32 partials are added in order by gemm/splitk.py

Grids are given in each kernel's docstring; "program" is one CTA.
"""
