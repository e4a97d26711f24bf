"""Sub-pixel stride phases, shared by the transposed-convolution (grad_input) kernels.

Input rows h with the same (h + pad) mod stride are reached by the same kernel taps, so a
grad_input program serves one phase (a grid axis) and visits only the taps that reach it: the
phase's first tap r0 (``first_tap``), then every ``tap_step``-th one, each moving the grad_output
row by ``row_step`` — no division per tap.
"""
import math

import triton
import triton.language as tl


@triton.jit
def stride_phase(phase, stride_h, stride_w, pad_h, pad_w):
    """Decode a phase index into (phase_h, phase_w, h_first, w_first): the phase's residues and its
    first input row / column, i.e. the smallest h >= 0 with (h + pad_h) % stride_h == phase_h."""
    phase_h = phase // stride_w
    phase_w = phase % stride_w
    h_first = ((phase_h - pad_h) % stride_h + stride_h) % stride_h
    w_first = ((phase_w - pad_w) % stride_w + stride_w) % stride_w
    return phase_h, phase_w, h_first, w_first


@triton.jit
def first_tap(phase, TAPS: tl.constexpr, dil, stride):
    """The smallest tap t < TAPS with (phase - t*dil) divisible by stride (TAPS if none): the
    first tap of the kernel that reaches the input rows of this stride phase."""
    first = TAPS
    for t in tl.static_range(TAPS):
        hit = (((phase - t * dil) % stride) == 0) & (first == TAPS)
        first = tl.where(hit, t, first)
    return first


def tap_steps(stride: int, dilation: int):
    """(tap step, dy row step) between the taps one stride phase uses."""
    tap_step = stride // math.gcd(stride, dilation)
    return tap_step, tap_step * dilation // stride
