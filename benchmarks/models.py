"""End-to-end forward (inference) of the networks, four ways:

* ``eager``: the model with ``nn.Conv2d`` (cuDNN, ``cudnn.benchmark = True``), BatchNorm unfused;
* ``compile``: ``torch.compile`` of ``eager`` (Inductor, default mode);
* ``kernels``: the ``cnn`` model, every convolution on ``kernels.conv2d`` (``algorithm="auto"``);
* ``kernels_fused``: ``cnn.fuse`` of it (conv+BN(+add)(+activation) in one kernel), once
  ``cnn.fuse`` exists.

All four hold the same weights and BatchNorm statistics (calibrated on random images, see
``calibrate_batch_norms``) and each output is compared with ``eager`` in fp32 with TF32 off
(float64 on the CPU); ``eager``'s own error against it is reported too.
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from .environment import DEVICE, ON_GPU, Precision, precision_mode
from .layers import relative_error
from .networks import SUITES
from .timing import Rotation, run_once, synchronize, time_calls

MODEL_IMPLS = ("eager", "compile", "kernels", "kernels_fused")

# Relative error of the logits against fp32 eager above which a variant counts as wrong: a
# layer's rounding error (see layers.TOLERANCE) compounds over some fifty layers.
TOLERANCE = {"float16": 5e-2, "bfloat16": 2e-1, "float32": 1e-3, "tf32": 5e-2}


def with_torch_convs(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``cnn.Conv2d`` modules are plain ``nn.Conv2d`` (same weights)."""
    import cnn

    copied = copy.deepcopy(model)
    for module in copied.modules():
        if isinstance(module, cnn.Conv2d):
            bases = [b for b in type(module).__mro__ if issubclass(b, nn.Conv2d) and not issubclass(b, cnn.Conv2d)]
            module.__class__ = bases[0]
    return copied


def calibrate_batch_norms(model: nn.Module, image: int, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial affine parameters, then running statistics measured on
    random images (as training would leave them), so that activations stay of unit scale through
    the network (a random-weight ResNet with default statistics overflows fp16) and folding
    BatchNorm into the convolution is not the identity."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    with torch.no_grad():
        for norm in norms:
            shape = norm.running_mean.shape
            if norm.affine:
                norm.weight.copy_(0.5 + torch.rand(shape, generator=generator))
                norm.bias.copy_(0.1 * torch.randn(shape, generator=generator))
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average over the calibration batch
        model.train()
        model(torch.randn(4, 3, image, image, generator=generator).to(next(model.parameters()).device))
        model.eval()
        for norm in norms:
            norm.momentum = 0.1


def fused_available() -> bool:
    import cnn

    return callable(getattr(cnn, "fuse", None))


def build_variants(suite: str, precision: Precision, layout: str, compile_model: bool, image: int,
                   builder_args: Optional[dict] = None) -> Dict[str, nn.Module]:
    """impl name -> the model (eval mode, on the device, in the dtype and layout)."""
    import cnn

    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    ours = SUITES[suite](**(builder_args or {})).eval()
    if not any(isinstance(m, cnn.Conv2d) for m in ours.modules()):
        cnn.convert(ours)
    eager = with_torch_convs(ours).to(DEVICE)
    with precision_mode(Precision("float32", torch.float32)):
        calibrate_batch_norms(eager, image, generator)  # in fp32 on PyTorch's convolutions (fast everywhere)
    ours.load_state_dict(eager.state_dict())
    variants = {"eager": eager}
    if compile_model and ON_GPU:
        variants["compile"] = torch.compile(eager)
    variants["kernels"] = ours
    if fused_available():
        variants["kernels_fused"] = cnn.fuse(ours)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    for name, model in variants.items():
        if name != "compile":  # shares eager's (already moved) parameters
            model.to(device=DEVICE, dtype=precision.dtype, memory_format=fmt)
    return variants


def warm_model(suite: str, batch: int, image: int, precision: Precision, layout: str,
               impls: Optional[Sequence[str]] = None, builder_args: Optional[dict] = None) -> Dict[str, str]:
    """Run our variants of ``suite``'s network (those of ``impls`` if given) once, untimed and
    unchecked, so that their kernels are compiled into Triton's cache (``python -m benchmarks
    --warm``). Returns name -> failure for the variants that raised."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    failures: Dict[str, str] = {}
    with torch.no_grad(), precision_mode(precision):
        variants = build_variants(suite, precision, layout, False, image, builder_args)
        x = torch.randn(batch, 3, image, image, device=DEVICE, dtype=precision.dtype).to(memory_format=fmt)
        for name, model in variants.items():
            if name == "eager" or (impls is not None and name not in impls):
                continue
            try:
                model(x)
                synchronize()
            except Exception as error:  # noqa: BLE001 - the timed run reports it
                failures[name] = f"failed: {type(error).__name__}: {error}"[:300]
    return failures


def run_model(suite: str, batch: int, image: int, precision: Precision, layout: str,
              compile_model: bool = True, builder_args: Optional[dict] = None,
              impls: Optional[Sequence[str]] = None) -> List[dict]:
    """One row per variant of ``suite``'s network (those of ``impls`` if given) on a ``batch`` x 3
    x ``image``^2 input."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    with torch.no_grad(), precision_mode(precision):
        variants = build_variants(suite, precision, layout, compile_model, image, builder_args)
        make = lambda: torch.randn(batch, 3, image, image, device=DEVICE, dtype=precision.dtype).to(memory_format=fmt)
        first = make()
        element_size = torch.finfo(precision.dtype).bits // 8
        rotation = Rotation([(first,)] + [(make(),) for _ in range(Rotation.count(first.numel() * element_size) - 1)])
        reference_dtype = torch.float32 if ON_GPU else torch.float64
        with precision_mode(Precision("float32", torch.float32)):
            reference_model = copy.deepcopy(variants["eager"]).to(reference_dtype)
            ref = reference_model(first.to(reference_dtype))
            del reference_model
        fns: Dict[str, Callable] = {name: (lambda m=model: m(*rotation.next())) for name, model in variants.items()
                                    if impls is None or name in impls}
        errors, failures, once = {}, {}, {}
        for name, fn in fns.items():
            rotation.index = 0
            try:
                out, once[name] = run_once(fn)
                errors[name] = relative_error(out, ref)
            except Exception as error:  # noqa: BLE001 - reported as a failed row, the run goes on
                failures[name] = f"failed: {type(error).__name__}: {error}"[:300]
        timings = time_calls({name: fn for name, fn in fns.items() if name not in failures}) if ON_GPU else once
    rows = []
    eager_ms = timings["eager"].ms if "eager" in timings else None
    for name in list(timings) + list(failures):
        timing = timings.get(name)
        ms = timing.ms if timing else None
        rows.append(dict(
            model=suite, batch=batch, image=image, builder_args=builder_args or {}, dtype=str(precision.dtype).replace("torch.", ""),
            tf32=precision.tf32, precision=precision.name, layout=layout, impl=name, ms=ms,
            timing=timing.method if timing else failures[name],
            speedup_vs_eager=eager_ms / ms if ON_GPU and ms and eager_ms and name != "eager" else None,
            rel_err=errors.get(name), ok=name in errors and errors[name] <= TOLERANCE[precision.name],
        ))
    return rows
