"""The checks every public entry point makes before tracing: where the tensors live, and autocast.

``check_device`` is the one device check of the package (the shared launch_report tool finds it by
name to let CPU tensors through while it records what an H100 would launch).
"""
from __future__ import annotations

from typing import Optional

import torch

from .interpreter import interpreting


def check_device(*tensors: Optional[torch.Tensor]) -> None:
    """Our kernels run on CUDA tensors, or on CPU tensors under Triton's interpreter; meta tensors
    only compute shapes (nothing is launched)."""
    for t in tensors:
        if t is not None and t.device.type not in ("cuda", "meta") and not interpreting():
            raise RuntimeError(
                f"kernels: Triton kernels need CUDA tensors, got a tensor on {t.device} "
                "(set TRITON_INTERPRET=1 before importing triton to run them on the CPU interpreter)"
            )


def autocast_inputs(*tensors: Optional[torch.Tensor]):
    """Cast floating inputs to the autocast dtype when autocast is on, as F.conv2d does."""
    device_type = next(t for t in tensors if t is not None).device.type
    if device_type not in ("cuda", "cpu") or not torch.is_autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(
        t.to(dtype) if t is not None and t.is_floating_point() and t.dtype != torch.float64 else t
        for t in tensors
    )
