"""The checks every public entry point makes before tracing: where the tensors live, autocast, and
that an inference-only op is not asked for gradients.

``check_device`` is the one device check of the package (the shared launch_report tool finds it by
name to let CPU tensors through while it records what an H100 would launch).
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple

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


def check_inference(op: str, named_tensors: Iterable[Tuple[str, Optional[torch.Tensor]]], what: str = "no backward",
                    advice: str = "") -> None:
    """An inference-only op (``conv2d_bn``, ``conv2d_scaled``) raises, naming the argument, when grad
    mode is on and one of its tensors requires grad: it has no backward to give."""
    if not torch.is_grad_enabled():
        return
    for name, t in named_tensors:
        if t is not None and t.requires_grad:
            raise RuntimeError(
                f"{op} is inference-only ({what}), but {name} requires grad while grad mode is enabled. "
                f"Call it under torch.no_grad() or torch.inference_mode(), or detach {name}{advice}."
            )
