"""Weight layout for the GEMM kernels: (K, R, S, C) order, i.e. channels_last.

With c contiguous, a kernel's weight tile loads as 16-byte vectors and its loop can be
software-pipelined (cp.async needs provably contiguous >= 4-byte loads). A weight that is
already channels_last (``model.to(memory_format=torch.channels_last)`` makes it so) is used
as is; any other is copied per call. The copy is deliberately not cached: a cache keyed on
the tensor's version counter returns stale weights after ``weight.data`` is updated in place
(gradcheck and older training code do that), a silent wrong answer.
"""
import torch


def channels_last_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` with c contiguous: itself when it already is, else a channels_last copy."""
    return weight.contiguous(memory_format=torch.channels_last)
