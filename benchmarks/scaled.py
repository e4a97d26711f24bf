"""The 8-bit rows of the benchmark (``--dtypes float8_e4m3fn int8``): ``kernels.conv2d_scaled`` per
layer and ``cnn.quantize``'d networks end to end, each against fp16.

Per layer (2-D convolutions; transposed, 1-D and 3-D layers have no 8-bit path and no rows):
``cudnn_fp16`` (``F.conv2d`` in fp16, GPU only), ``ours_fp16`` (``kernels.conv2d``, auto, fp16) and
``scaled`` (``kernels.conv2d_scaled`` on the operands quantized per tensor / per output channel,
fp16 output). Every output is compared with the float64 (CPU) / fp32 (GPU) convolution of the
dequantized operands, so ``rel_err`` is the kernel's error, not the quantization's (which
``benchmarks.quantization_accuracy`` measures); ``speedup`` is over ``cudnn_fp16``.

End to end: ``eager`` (PyTorch's convolutions, fp16), ``kernels_fused`` (``cnn.fuse``, fp16) and
``quantized`` (``cnn.quantize`` calibrated on eight random batches, fp16 elsewhere; fp32 stands in for
fp16 in all three under the interpreter), compared with the
fp32 (float64 on the CPU) eager model; ``speedup_vs_fused`` is the quantized model's over ours in fp16.
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

import kernels

from .environment import DEVICE, ON_GPU, Precision
from .layers import case_fields, relative_error
from .networks import ConvCase
from .timing import run_once, time_calls

FP16 = Precision("float16", torch.float16)
# Relative error against the dequantized reference: fp32 sums rounded once to fp16.
TOLERANCE = 1e-2
# End to end, against the float model: quantization error compounds over the layers.
MODEL_TOLERANCE = {"float8_e4m3fn": 0.25, "int8": 0.1}


def quantize_operands(x: torch.Tensor, w: torch.Tensor, dtype: torch.dtype):
    from cnn.quantize import QMAX, quantize_tensor, weight_quantization

    x_scale = (x.abs().amax().float().clamp(min=1e-12) / QMAX[dtype]).reshape(1)
    wq, w_scale = weight_quantization(w, dtype)
    xq = quantize_tensor(x, x_scale, dtype)
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and x.dim() == 4 else None
    if fmt is not None:
        xq, wq = xq.contiguous(memory_format=fmt), wq.contiguous(memory_format=fmt)
    return xq, wq, x_scale, w_scale


def run_scaled_case(case: ConvCase, precision: Precision, layout: str, full_case: Optional[ConvCase] = None) -> List[dict]:
    """The rows of one layer at an 8-bit ``precision`` (none for a layer that is not a 2-D convolution)."""
    from .layers import make_inputs

    if case.op != "conv2d":
        return []
    args = case.conv_args()
    with torch.no_grad():
        x, w, b = make_inputs(case, FP16, layout)
        xq, wq, xs, ws = quantize_operands(x, w, precision.dtype)
        ref_dtype = torch.float32 if ON_GPU else torch.float64
        ref = F.conv2d(xq.to(ref_dtype) * xs.to(ref_dtype), wq.to(ref_dtype) * ws.to(ref_dtype).view(-1, 1, 1, 1),
                       None if b is None else b.to(ref_dtype), **args)
        bias32 = None if b is None else b.float()
        impls: Dict[str, Callable] = {}
        if ON_GPU:
            impls["cudnn_fp16"] = lambda: F.conv2d(x, w, b, **args)
        impls["ours_fp16"] = lambda: kernels.conv2d(x, w, b, **args)
        impls["scaled"] = lambda: kernels.conv2d_scaled(xq, wq, xs, ws, bias32, **args, out_dtype=torch.float16)
        errors, failures, once = {}, {}, {}
        for name, fn in impls.items():
            try:
                out, once[name] = run_once(fn)
                # fp16 rows against their own inputs' result: the float reference of x, w
                errors[name] = relative_error(out, ref if name == "scaled" else case.functional(
                    x.to(ref_dtype), w.to(ref_dtype), None if b is None else b.to(ref_dtype), **args))
            except Exception as error:  # noqa: BLE001 - reported as a failed row
                failures[name] = f"failed: {type(error).__name__}: {error}"[:300]
        timings = time_calls({n: f for n, f in impls.items() if n not in failures}) if ON_GPU else once
    cudnn = timings.get("cudnn_fp16")
    rows = []
    for name in list(timings) + list(failures):
        timing = timings.get(name)
        ms = timing.ms if timing else None
        row = dict(case_fields(case), dtype=str(precision.dtype).replace("torch.", ""), tf32=False,
                   precision=precision.name, layout=layout, impl=name, ms=ms,
                   timing=timing.method if timing else failures[name],
                   tflops=2 * case.macs / (ms * 1e-3) / 1e12 if ON_GPU and ms else None,
                   pct_peak=None, bound=None, intensity=None,
                   speedup=cudnn.ms / ms if ON_GPU and ms and cudnn and cudnn.ms and name != "cudnn_fp16" else None,
                   rel_err=errors.get(name), ok=name in errors and errors[name] <= TOLERANCE, macs=case.macs,
                   algorithm=None, multiplies=None, **{"pass": "forward"})
        if full_case is not None and full_case is not case:
            row["full"] = dict(case_fields(full_case), macs=full_case.macs)
        rows.append(row)
    return rows


def run_quantized_model(suite: str, batch: int, sample: Sequence[int], precision: Precision, layout: str,
                        builder_args: Optional[dict] = None) -> List[dict]:
    """End-to-end rows of ``suite`` at an 8-bit ``precision``: eager fp16, ``cnn.fuse`` fp16 and
    ``cnn.quantize``'d (fp16 between the quantized chains)."""
    import cnn

    from .models import build_variants, memory_format

    sample = tuple(sample)
    fmt = memory_format(layout, sample)
    with torch.no_grad():
        # fp16 on a GPU; fp32 on the CPU, whose fp16 convolutions are not a fair baseline (11% error seen)
        base = FP16 if ON_GPU else Precision("float32", torch.float32)
        variants = build_variants(suite, base, layout, False, sample, builder_args)
        make = lambda: torch.randn(batch, *sample, device=DEVICE, dtype=base.dtype).to(memory_format=fmt)
        x = make()
        ref_dtype = torch.float32 if ON_GPU else torch.float64
        reference = copy.deepcopy(variants["eager"]).to(ref_dtype)
        ref = reference(x.to(ref_dtype))
        del reference
        models = {"eager": variants["eager"], "kernels_fused": variants["kernels_fused"]}
        failures: Dict[str, str] = {}
        try:
            # 8 calibration batches: with 2 single images the max observer clipped MobileNetV2's test input
            models["quantized"] = cnn.quantize(variants["kernels"], [make() for _ in range(8)], precision.dtype)
        except Exception as error:  # noqa: BLE001 - reported as a failed row
            failures["quantized"] = f"failed: {type(error).__name__}: {error}"[:300]
        errors, once = {}, {}
        for name, model in models.items():
            try:
                out, once[name] = run_once(lambda m=model: m(x))
                errors[name] = relative_error(out, ref)
            except Exception as error:  # noqa: BLE001
                failures[name] = f"failed: {type(error).__name__}: {error}"[:300]
        timings = time_calls({n: (lambda m=m: m(x)) for n, m in models.items() if n not in failures}) if ON_GPU else once
    eager = timings.get("eager")
    fused = timings.get("kernels_fused")
    rows = []
    for name in list(timings) + list(failures):
        timing = timings.get(name)
        ms = timing.ms if timing else None
        tolerance = MODEL_TOLERANCE[precision.name] if name == "quantized" else 5e-2
        rows.append(dict(
            model=suite, batch=batch, image=sample[-1], input=list(sample), builder_args=builder_args or {},
            dtype=str(precision.dtype).replace("torch.", ""), tf32=False, precision=precision.name, layout=layout,
            impl=name, ms=ms, timing=timing.method if timing else failures[name],
            speedup_vs_eager=eager.ms / ms if ON_GPU and ms and eager and eager.ms and name != "eager" else None,
            speedup_vs_fused=fused.ms / ms if ON_GPU and ms and fused and fused.ms and name == "quantized" else None,
            rel_err=errors.get(name), ok=name in errors and errors[name] <= tolerance,
        ))
    return rows
