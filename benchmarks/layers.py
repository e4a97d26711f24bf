"""The conv-layer benchmark: one case (a network's layer at a batch, precision and layout),
every implementation that applies to it, each timed and checked.

Implementations: ``cudnn`` (``F.conv2d`` with ``cudnn.benchmark = True``, or the layer's own
``F.conv_transpose2d`` / ``F.conv1d`` / ``F.conv3d``; GPU only), ``auto`` and every eligible
algorithm of ``kernels.REGISTRY`` (so the benchmark grows as algorithms land; for transposed and
1-D layers, those that apply to the 2-D convolution our kernels run for them; for 3-D layers
``auto`` alone until ``kernels.dispatch`` resolves 3-D problems), ``torch_fft`` where ``algorithm="fft"``
applies to a 1-D or 2-D layer (``fft_reference.fft_conv``: a torch.fft convolution as users write it),
and optionally ``inductor``
(``torch.compile(mode="max-autotune")`` of the same conv).
Every output is compared with a reference computed from the same inputs: cuDNN in fp32 with
TF32 off on a GPU, PyTorch in float64 on the CPU.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import torch

import kernels
from kernels.dispatch import resolve

from .fft_reference import fft_conv
from .environment import DEVICE, ON_GPU, Precision, precision_mode
from .networks import ConvCase
from .timing import Rotation, Timing, bound_and_fraction, run_once, synchronize, time_calls

# Relative error (L2 norm of the difference over the norm of the reference) above which a
# result counts as wrong. Rounding the output alone costs about 3e-4 (fp16), 2e-3 (bf16),
# 1e-7 (fp32) and TF32's 10-bit inputs about 5e-4: these leave room for Winograd's transforms.
TOLERANCE = {"float16": 1e-2, "bfloat16": 5e-2, "float32": 1e-4, "tf32": 1e-2}

LAYOUTS = ("channels_last", "nchw")


def conv_params(case: ConvCase) -> kernels.ConvParams:
    """The 2-D convolution our kernels run for ``case`` (for a transposed layer, the one it is the dgrad of)."""
    return case.problem()[0]


def eligible_algorithms(case: ConvCase) -> List[str]:
    """Registered algorithms that apply to ``case``, in registry order (a 3-D layer's: those with 3-D
    kernels that apply)."""
    params = conv_params(case)
    return [name for name, algorithm in kernels.REGISTRY.items() if algorithm.eligible(params)]


def counts(case: ConvCase) -> Dict[str, Dict[str, int]]:
    """``kernels.conv2d_flops`` of ``case`` for ``auto`` and every eligible algorithm. A transposed
    layer runs as a dgrad, whatever the algorithm: its multiplies are its MACs (as
    ``torch.utils.flop_counter`` counts them), the algorithm's forward count does not apply."""
    if case.op == "conv2d":
        args = dict(case.conv_args())
        return {name: kernels.conv2d_flops(case.input_shape, case.weight_shape, **args, algorithm=name)
                for name in ("auto", *eligible_algorithms(case))}
    params = conv_params(case)
    result = {}
    for name in ("auto", *eligible_algorithms(case)):
        entry = resolve(name, params)
        found = {"macs": params.macs, "multiplies": params.macs} if case.transposed else dict(entry.count(params))
        result[name] = dict(found, flops=2 * found["macs"], algorithm=entry.name)
    return result


def traffic_bytes(case: ConvCase, element_size: int) -> int:
    """The least memory traffic of the layer: read input and weight (and bias), write output once."""
    elements = math.prod(case.input_shape) + math.prod(case.weight_shape) + math.prod(case.output_shape)
    return (elements + (case.k if case.bias else 0)) * element_size


def make_inputs(case: ConvCase, precision: Precision, layout: str):
    """Fresh random input, weight (scaled by 1/sqrt(fan-in), so outputs are of unit scale) and bias."""
    fan_in = case.c // case.groups * case.t * case.r * case.s
    x = torch.randn(case.input_shape, device=DEVICE, dtype=precision.dtype)
    w = torch.randn(case.weight_shape, device=DEVICE, dtype=precision.dtype) / math.sqrt(fan_in)
    b = torch.randn(case.k, device=DEVICE, dtype=precision.dtype) if case.bias else None
    if layout == "channels_last" and case.one_d:  # (N, C, L) with the channels innermost
        x, w = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (x, w))
    elif layout == "channels_last":
        fmt = torch.channels_last_3d if case.three_d else torch.channels_last
        x, w = x.contiguous(memory_format=fmt), w.contiguous(memory_format=fmt)
    elif layout != "nchw":
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return x, w, b


def reference_output(x, w, b, case: ConvCase) -> torch.Tensor:
    """cuDNN in fp32 with TF32 off on a GPU; float64 on the CPU (the tests' oracle)."""
    dtype = torch.float32 if ON_GPU else torch.float64
    cast = (lambda t: None if t is None else t.to(dtype))
    with precision_mode(Precision("float32", torch.float32)):
        return case.functional(cast(x), cast(w), cast(b), **case.conv_args())


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    diff = torch.linalg.vector_norm(out.to(ref.dtype) - ref).item()
    norm = torch.linalg.vector_norm(ref).item()
    return diff / norm if norm > 0 else diff


def implementations(case: ConvCase, rotation: Rotation, inductor: bool = False) -> Dict[str, Callable]:
    """name -> a call that runs ``case`` on the next rotated inputs."""
    args = case.conv_args()
    impls: Dict[str, Callable] = {}
    if ON_GPU:
        impls["cudnn"] = lambda: case.functional(*rotation.next(), **args)
    for name in ("auto", *eligible_algorithms(case)):
        impls[name] = lambda name=name: case.ours(*rotation.next(), **args, algorithm=name)
    if "fft" in impls and case.op in ("conv1d", "conv2d"):
        impls["torch_fft"] = lambda: fft_conv(*rotation.next(), **args)
    if inductor and ON_GPU:
        compiled = torch.compile(lambda x, w, b: case.functional(x, w, b, **args), mode="max-autotune", dynamic=False)
        impls["inductor"] = lambda: compiled(*rotation.next())
    return impls


def warm_case(case: ConvCase, precision: Precision, layout: str) -> Dict[str, str]:
    """Run ``auto`` and every eligible algorithm on ``case`` once, untimed and unchecked, so that
    their kernels are compiled into Triton's cache (``python -m benchmarks --warm``). Returns
    name -> failure for the calls that raised."""
    failures: Dict[str, str] = {}
    with torch.no_grad(), precision_mode(precision):
        x, w, b = make_inputs(case, precision, layout)
        for name in ("auto", *eligible_algorithms(case)):
            try:
                case.ours(x, w, b, **case.conv_args(), algorithm=name)
                synchronize()
            except Exception as error:  # noqa: BLE001 - the timed run reports it
                failures[name] = f"failed: {type(error).__name__}: {error}"[:300]
    return failures


def case_fields(case: ConvCase) -> dict:
    return dict(suite=case.suite, layer=case.layer, count=case.count, n=case.n, c=case.c, d=case.d, h=case.h,
                w=case.w, k=case.k, t=case.t, r=case.r, s=case.s, stride=case.stride, padding=case.padding,
                dilation=case.dilation, groups=case.groups, bias=case.bias, op=case.op,
                output_padding=case.output_padding)


def run_case(case: ConvCase, precision: Precision, layout: str, peaks: dict,
             full_case: Optional[ConvCase] = None, inductor: bool = False) -> List[dict]:
    """One row per implementation of ``case``. ``full_case`` is the real layer when ``case`` is
    its scaled-down stand-in (interpreter runs): its MACs are reported beside the run's."""
    element_size = torch.finfo(precision.dtype).bits // 8
    with torch.no_grad(), precision_mode(precision):
        first = make_inputs(case, precision, layout)
        ref = reference_output(*first, case)
        bytes_per_set = sum(t.numel() * element_size for t in first if t is not None)
        rotation = Rotation([first] + [make_inputs(case, precision, layout)
                                       for _ in range(Rotation.count(bytes_per_set) - 1)])
        impls = implementations(case, rotation, inductor)
        errors: Dict[str, float] = {}
        failures: Dict[str, str] = {}
        once: Dict[str, Timing] = {}
        for name, fn in impls.items():
            rotation.index = 0  # the reference's inputs
            try:
                out, once[name] = run_once(fn)
                errors[name] = relative_error(out, ref)
            except Exception as error:  # noqa: BLE001 - reported as a failed row, the run goes on
                failures[name] = f"failed: {type(error).__name__}: {error}"[:300]
        timings = time_calls({name: fn for name, fn in impls.items() if name not in failures}) if ON_GPU else once
        del rotation, impls, ref, first

    flop_counts = counts(case)
    macs = flop_counts["auto"]["macs"]
    traffic = traffic_bytes(case, element_size)
    rows = []
    for name in list(timings) + list(failures):
        algorithm = flop_counts["auto"]["algorithm"] if name == "auto" else name
        row = result_row(case, precision, layout, name, timings, failures, errors, macs, traffic, peaks)
        row.update(algorithm=algorithm if algorithm in kernels.REGISTRY else None,
                   multiplies=flop_counts[algorithm]["multiplies"] if algorithm in flop_counts else None,
                   **{"pass": "forward"})
        if full_case is not None and full_case is not case:
            row["full"] = dict(case_fields(full_case), macs=full_case.macs)
        rows.append(row)
    return rows


def result_row(case: ConvCase, precision: Precision, layout: str, impl: str, timings: Dict[str, Timing],
               failures: Dict[str, str], errors: Dict[str, float], macs: int, traffic: int, peaks: dict) -> dict:
    """The fields every row of a case has: ``impl``'s time (or failure), TFLOP/s and the roofline
    bound from ``macs`` and ``traffic`` bytes, the speedup over cuDNN's row, the error and its verdict."""
    timing = timings.get(impl)
    ms = timing.ms if timing else None
    measured = ON_GPU and ms is not None
    bound, fraction = bound_and_fraction(2 * macs, traffic, ms, peaks, precision.name) if measured else (None, None)
    cudnn = timings.get("cudnn")
    error = errors.get(impl)
    return dict(
        case_fields(case), dtype=str(precision.dtype).replace("torch.", ""), tf32=precision.tf32,
        precision=precision.name, layout=layout, impl=impl, ms=ms,
        timing=timing.method if timing else failures[impl],
        tflops=2 * macs / (ms * 1e-3) / 1e12 if measured else None,
        pct_peak=100 * fraction if fraction is not None else None, bound=bound,
        intensity=2 * macs / traffic,
        speedup=cudnn.ms / ms if measured and cudnn and cudnn.ms and impl != "cudnn" else None,
        rel_err=error, ok=error is not None and error <= TOLERANCE[precision.name], macs=macs,
    )
