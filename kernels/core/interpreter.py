"""Triton's CPU interpreter: whether it is on, and work-arounds for its bugs (applied only when it is).

Library code reads ``TRITON_INTERPRET``, never sets it: tests and the CPU demo set it before
triton is imported.

* Triton's interpreter stores bfloat16 as raw uint16 bits and its ``tl.dot`` multiplies those
  bits as integers (seen in triton 3.9), so a bf16 ``tl.dot`` returns garbage there. On a GPU
  the same kernels are right; here we widen bf16 dot operands to fp32 (exact) first.
* Triton 3.6's interpreter turns a scalar into a Python int with ``int(array)`` of its
  one-element 1-D array, which NumPy 2 refuses, so ``range(first, last)`` over values computed
  from ``tl.program_id`` raises TypeError there; 3.9 squeezes the array first, as we do.
"""
import os

import numpy as np


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _bf16_bits_to_fp32(data: np.ndarray) -> np.ndarray:
    return (data.astype(np.uint32) << 16).view(np.float32)


def _scalar_index(interpreter) -> None:
    original = interpreter._patch_lang_tensor
    if getattr(original, "_index_fixed", False):
        return

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).squeeze()))

    patch_lang_tensor._index_fixed = True
    interpreter._patch_lang_tensor = patch_lang_tensor


def apply() -> None:
    """Patch the interpreter (idempotent); call only when ``interpreting()``."""
    import triton.language as tl
    from triton.runtime import interpreter

    if hasattr(interpreter, "_patch_lang_tensor"):
        _scalar_index(interpreter)

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
