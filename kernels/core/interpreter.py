"""Triton's CPU interpreter: whether it is on, and work-arounds for its bugs (applied only when it is).

Library code reads ``TRITON_INTERPRET``, never sets it: tests and the CPU demo set it before
triton is imported.

* Triton's interpreter stores bfloat16 as raw uint16 bits and its ``tl.dot`` multiplies those
  bits as integers (seen in triton 3.9), so a bf16 ``tl.dot`` returns garbage there. On a GPU
  the same kernels are right; here we widen bf16 dot operands to fp32 (exact) first.
* Triton's interpreter rounds fp32 -> float8e4nv (e4m3) by adding the first cut-off bit to the
  mantissa, without carrying into the exponent or breaking ties to even (seen in triton 3.9:
  127.5 -> 64, 17 -> 18). sm_90 converts with ``cvt.rn.satfinite.e4m3x2.f32``, round to nearest
  even; here the cast goes through PyTorch's float8_e4m3fn conversion (also round to nearest even;
  the quantized store clamps to +-448 first, so neither saturates nor overflows).
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


def _fp8_rounding(interpreter, tl) -> None:
    builder = interpreter.InterpreterBuilder
    original = builder.create_fp_to_fp
    if getattr(original, "_fp8_fixed", False):
        return

    def create_fp_to_fp(self, src, dst_type, rounding_mode):
        if dst_type.scalar == tl.float8e4nv and src.dtype.scalar in (tl.float32, tl.float16):
            import torch

            wide = torch.from_numpy(np.ascontiguousarray(src.data, dtype=np.float32))
            bits = wide.to(torch.float8_e4m3fn).view(torch.uint8).numpy()
            return interpreter.TensorHandle(bits.reshape(src.data.shape), dst_type.scalar)
        return original(self, src, dst_type, rounding_mode)

    create_fp_to_fp._fp8_fixed = True
    builder.create_fp_to_fp = create_fp_to_fp


def apply() -> None:
    """Patch the interpreter (idempotent); call only when ``interpreting()``."""
    import triton.language as tl
    from triton.runtime import interpreter

    if hasattr(interpreter, "_patch_lang_tensor"):
        _scalar_index(interpreter)

    builder = interpreter.InterpreterBuilder
    _fp8_rounding(interpreter, tl)
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
