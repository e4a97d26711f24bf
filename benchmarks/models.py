"""End-to-end forward (inference) of the networks, four ways:

* ``eager``: the model with ``nn.Conv2d`` / ``nn.Conv3d`` (cuDNN, ``cudnn.benchmark = True``), BatchNorm unfused;
* ``compile``: ``torch.compile`` of ``eager`` (Inductor, default mode);
* ``kernels``: the ``cnn`` model, every convolution on ``kernels.conv2d`` / ``kernels.conv3d`` (``algorithm="auto"``);
* ``kernels_fused``: ``cnn.fuse`` of it (conv+BN(+add)(+activation) in one kernel).

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
    """A copy of ``model`` whose ``cnn`` convolutions (``cnn.Conv2d``, ``cnn.Conv3d``, ...) are
    PyTorch's (``nn.Conv2d``, ``nn.Conv3d``, ...; a subclass keeps its other bases), same weights."""
    from cnn.conv import FAMILIES

    copied = copy.deepcopy(model)
    for module in copied.modules():
        for torch_class, (ours, _) in FAMILIES.items():
            if isinstance(module, ours):
                bases = [b for b in type(module).__mro__ if issubclass(b, torch_class) and not issubclass(b, ours)]
                module.__class__ = bases[0]
    return copied


def calibrate_batch_norms(model: nn.Module, sample: Sequence[int], generator: torch.Generator) -> None:
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
        model(torch.randn(4, *sample, generator=generator).to(next(model.parameters()).device))
        model.eval()
        for norm in norms:
            norm.momentum = 0.1


def fused_available() -> bool:
    import cnn

    return callable(getattr(cnn, "fuse", None))


def memory_format(layout: str, sample: Sequence[int]) -> torch.memory_format:
    """The memory format of ``layout`` for a batch of ``sample``-sized inputs (channels_last_3d for clips)."""
    if layout != "channels_last":
        return torch.contiguous_format
    return torch.channels_last_3d if len(sample) == 4 else torch.channels_last


def build_variants(suite: str, precision: Precision, layout: str, compile_model: bool, sample: Sequence[int],
                   builder_args: Optional[dict] = None) -> Dict[str, nn.Module]:
    """impl name -> the model (eval mode, on the device, in the dtype and layout)."""
    import cnn

    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    ours = SUITES[suite](**(builder_args or {})).eval()
    if not any(isinstance(m, cnn.conv.KERNEL_CLASSES) for m in ours.modules()):
        cnn.convert(ours)
    eager = with_torch_convs(ours).to(DEVICE)
    with precision_mode(Precision("float32", torch.float32)):
        calibrate_batch_norms(eager, sample, generator)  # in fp32 on PyTorch's convolutions (fast everywhere)
    ours.load_state_dict(eager.state_dict())
    variants = {"eager": eager}
    if compile_model and ON_GPU:
        variants["compile"] = torch.compile(eager)
    variants["kernels"] = ours
    if fused_available():
        variants["kernels_fused"] = cnn.fuse(ours)
    fmt = memory_format(layout, sample)
    for name, model in variants.items():
        if name != "compile":  # shares eager's (already moved) parameters
            model.to(device=DEVICE, dtype=precision.dtype, memory_format=fmt)
    return variants


def warm_model(suite: str, batch: int, sample: Sequence[int], precision: Precision, layout: str,
               impls: Optional[Sequence[str]] = None, builder_args: Optional[dict] = None) -> Dict[str, str]:
    """Run our variants of ``suite``'s network (those of ``impls`` if given) once, untimed and
    unchecked, so that their kernels are compiled into Triton's cache (``python -m benchmarks
    --warm``). Returns name -> failure for the variants that raised."""
    sample = tuple(sample)
    fmt = memory_format(layout, sample)
    failures: Dict[str, str] = {}
    with torch.no_grad(), precision_mode(precision):
        variants = build_variants(suite, precision, layout, False, sample, builder_args)
        x = torch.randn(batch, *sample, device=DEVICE, dtype=precision.dtype).to(memory_format=fmt)
        for name, model in variants.items():
            if name == "eager" or (impls is not None and name not in impls):
                continue
            try:
                model(x)
                synchronize()
            except Exception as error:  # noqa: BLE001 - the timed run reports it
                failures[name] = f"failed: {type(error).__name__}: {error}"[:300]
    return failures


def run_model(suite: str, batch: int, sample: Sequence[int], precision: Precision, layout: str,
              compile_model: bool = True, builder_args: Optional[dict] = None,
              impls: Optional[Sequence[str]] = None) -> List[dict]:
    """One row per variant of ``suite``'s network (those of ``impls`` if given) on a ``batch`` x 3
    x ``image``^2 input."""
    sample = tuple(sample)
    fmt = memory_format(layout, sample)
    with torch.no_grad(), precision_mode(precision):
        variants = build_variants(suite, precision, layout, compile_model, sample, builder_args)
        make = lambda: torch.randn(batch, *sample, device=DEVICE, dtype=precision.dtype).to(memory_format=fmt)
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
            model=suite, batch=batch, image=sample[-1], input=list(sample), builder_args=builder_args or {},
            dtype=str(precision.dtype).replace("torch.", ""),
            tf32=precision.tf32, precision=precision.name, layout=layout, impl=name, ms=ms,
            timing=timing.method if timing else failures[name],
            speedup_vs_eager=eager_ms / ms if ON_GPU and ms and eager_ms and name != "eager" else None,
            rel_err=errors.get(name), ok=name in errors and errors[name] <= TOLERANCE[precision.name],
        ))
    return rows
