"""Sub-pixel stride phases, shared by the transposed-convolution (grad_input) kernels.

Input rows h with the same (h + pad) mod stride are reached by the same kernel taps, so a
grad_input program serves one phase (a grid axis) and skips the taps that cannot reach it.
"""
import triton
import triton.language as tl  # noqa: F401  (the interpreter requires it in every @triton.jit module)


@triton.jit
def stride_phase(phase, stride_h, stride_w, pad_h, pad_w):
    """Decode a phase index into (phase_h, phase_w, h_first, w_first): the phase's residues and its
    first input row / column, i.e. the smallest h >= 0 with (h + pad_h) % stride_h == phase_h."""
    phase_h = phase // stride_w
    phase_w = phase % stride_w
    h_first = ((phase_h - pad_h) % stride_h + stride_h) % stride_h
    w_first = ((phase_w - pad_w) % stride_w + stride_w) % stride_w
    return phase_h, phase_w, h_first, w_first
