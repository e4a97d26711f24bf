"""Work-arounds for Triton CPU-interpreter bugs, applied only when the interpreter is active.

Triton's interpreter stores bfloat16 as raw uint16 bits and its ``tl.dot`` multiplies those
bits as integers (seen in triton 3.9), so a bf16 ``tl.dot`` returns garbage there. On a GPU
the same kernels are right; here we widen bf16 dot operands to fp32 (exact) first.
"""
import numpy as np


def _bf16_bits_to_fp32(data: np.ndarray) -> np.ndarray:
    return (data.astype(np.uint32) << 16).view(np.float32)


def apply() -> None:
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    if getattr(builder.create_dot, "_bf16_fixed", False):
        return
    original = builder.create_dot

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.dtype.scalar == tl.bfloat16:
            a = interpreter.TensorHandle(_bf16_bits_to_fp32(a.data), tl.float32)
        if b.dtype.scalar == tl.bfloat16:
            b = interpreter.TensorHandle(_bf16_bits_to_fp32(b.data), tl.float32)
        return original(self, a, b, d, input_precision, max_num_imprecise_acc)

    create_dot._bf16_fixed = True
    builder.create_dot = create_dot
