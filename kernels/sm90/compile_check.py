"""The sm_90 compile check: what Triton's JIT compiles for an H100 from real calls, without a GPU.

Every call of ``CALLS`` (a real layer at batch 32, channels_last, fp16 and/or bf16, the passes
it names of forward, dgrad and wgrad) goes through ``kernels.conv2d`` (and ``out.backward``)
under ``kernels.sm90.launch_plan.recording()`` (one recording per call, on two worker processes): the JIT
specialises the real arguments (unit strides to the constant 1, pointers and channel counts
divisible by 16) and ``triton.autotune`` compiles every pruned config of every kernel launched.
Every registered algorithm that no call reaches gets a call of its own (fp16, the first layer it
applies to), and every config the real calls pruned is compiled for the first launch of its
kernel, so each config of each ``TunedKernel`` in ``kernels.core.launcher.ALL_KERNELS`` is compiled.

One row per kernel x config x variant (a variant = one JIT specialisation, named after the
call that produced it): registers, spill bytes, shared memory, ``mma`` (wgmma | mma.sync |
none), ``async_copy`` (tma | cp.async | none), CTAs per SM from registers, shared memory and
warps, and the grid and waves on 132 SMs of the call.

    python -m kernels.sm90.compile_check [--json FILE] [--markdown FILE] [--workers N] [--layouts ...]

Needs a process without ``TRITON_INTERPRET``. Exit status 1 if a call or a config fails to
compile or fit, or a kernel of ALL_KERNELS is compiled by nothing.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

BATCH = 32
DTYPES = ("fp16", "bf16")  # a call's, unless it names others


@dataclass(frozen=True)
class Layer:
    """A conv layer of a real network (torchvision's shape), square input, batch ``BATCH``."""

    name: str
    c: int
    h: int
    k: int
    r: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    bias: bool = False
    first: bool = False  # reads the image: no grad_input in training
    d: int = 0  # frames of a 3-D layer's clip (0: a 2-D layer), whose kernel is t x r x r
    t: int = 1

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return (BATCH, self.c) + ((self.d,) if self.d else ()) + (self.h, self.h)

    @property
    def weight_shape(self) -> Tuple[int, ...]:
        return (self.k, self.c // self.groups) + ((self.t,) if self.d else ()) + (self.r, self.r)


ALL_PASSES = ("fwd", "dgrad", "wgrad")  # with a bias, the backward also runs the bias gradient
FWD_DGRAD = ("fwd", "dgrad")


@dataclass(frozen=True)
class Call:
    layer: Layer
    algorithm: str
    dtypes: Tuple[str, ...] = DTYPES
    passes: Tuple[str, ...] = ALL_PASSES
    tma: bool = True  # False: with TMA off (``kernels.ops.gemm.tma.ENABLED``), the cp.async kernels serve it


# Chosen to reach each specialisation the networks make once, and no more (a compile costs about
# a CPU second; the TMA kernels, ``kernels.ops.gemm.pointwise_tma`` / ``conv_tma``, take every
# stride-1 layer below whose descriptors are legal): 3x3 / 1x1 / 7x7 taps, unit and larger strides (the JIT specialises stride 1),
# bias, channel counts that are not multiples of 16 (MobileNetV2's 24), depthwise, a small-M
# layer (1568 output pixels).
VGG_3X3 = Layer("vgg16.features.12", 256, 56, 256, 3, padding=1, bias=True)
RESNET_1X1 = Layer("resnet50.layer1.0.conv1", 64, 56, 64, 1)
STEM = Layer("resnet50.conv1", 3, 224, 64, 7, stride=2, padding=3, first=True)
CALLS: List[Call] = [
    # The hot paths in fp16 and bf16: im2col forward, dgrad, wgrad, bias grad; the 1x1 GEMM
    # forward and grad_input with 64 and 24 input channels, 1x1 wgrad; the C=3 stem and the
    # small-M 3x3 as auto routes them.
    Call(VGG_3X3, "im2col", tma=False),
    Call(RESNET_1X1, "pointwise", ("fp16",)),
    Call(RESNET_1X1, "pointwise", ("bf16",), FWD_DGRAD),
    Call(Layer("mobilenet_v2.features.3.conv.0.0", 24, 56, 144, 1), "pointwise", passes=FWD_DGRAD),
    Call(STEM, "auto"),
    Call(Layer("resnet50.layer4.1.conv2", 512, 7, 512, 3, padding=1), "auto"),
    # The cp.async kernels serve what TMA's rules refuse (fp64, channels not a multiple of 8, odd sizes of a
    # strided layer ...): compiled at real sizes with TMA off (the 3x3 above too): ResNet's strided 1x1
    # downsample, forward / dgrad by stride phases / wgrad, fp16 and bf16.
    Call(Layer("resnet50.layer2.0.downsample.0", 256, 56, 512, 1, stride=2), "pointwise", tma=False),
    # More specialisations, fp16: 24 output channels, stride 2 (dgrad by stride phases), depthwise.
    Call(Layer("mobilenet_v2.features.2.conv.2", 96, 56, 24, 1), "pointwise", ("fp16",), ("fwd",)),
    Call(Layer("resnet50.layer2.0.conv2", 128, 56, 128, 3, stride=2, padding=1), "auto", ("fp16",), FWD_DGRAD),
    Call(Layer("mobilenet_v2.features.3.conv.1.0", 144, 56, 144, 3, padding=1, groups=144), "auto", ("fp16",)),
    # Winograd's fused kernel: its planner keeps the few-channel layers there (the wide ones, which
    # the per-algorithm calls below reach, take the three-stage path).
    Call(Layer("vgg16.features.2", 64, 224, 64, 3, padding=1), "winograd_f2", ("fp16",), ("fwd",)),
    Call(Layer("vgg16.features.2", 64, 224, 64, 3, padding=1), "winograd_f4", ("fp16",), ("fwd",)),
    Call(Layer("vgg16.features.12", 256, 56, 256, 3, padding=1), "winograd_f2", passes=("fwd",)),
    Call(Layer("vgg16.features.12", 256, 56, 256, 3, padding=1), "winograd_f4", passes=("fwd",)),
    # The fused Winograd kernel in the wide types the CUDA test suite runs: its shared memory
    # grows with the element size past the plan's (F(4x4) fp64 needed 319 KB at two stages).
    Call(Layer("tests.winograd", 16, 8, 16, 3, padding=1), "winograd_f2", ("fp32", "fp64"), ("fwd",)),
    Call(Layer("tests.winograd", 16, 8, 16, 3, padding=1), "winograd_f4", ("fp32", "fp64"), ("fwd",)),
    # Large-kernel depthwise (the halo forward; the direct dgrad / wgrad at 31 x 31 taps) in the three
    # training dtypes: RepLKNet-31B's first-stage 31x31 and last-stage 13x13, ConvNeXt's 7x7 (with bias).
    Call(Layer("replknet31b.stages.0.lk", 128, 56, 128, 31, padding=15, groups=128), "depthwise", ("fp16", "bf16", "fp32")),
    Call(Layer("replknet31b.stages.3.lk", 1024, 7, 1024, 13, padding=6, groups=1024), "depthwise",
         ("fp16", "bf16", "fp32"), ("fwd",)),
    Call(Layer("convnext_tiny.features.1.0.block.0", 96, 56, 96, 7, padding=3, groups=96, bias=True), "auto",
         ("fp16", "bf16", "fp32"), ("fwd",)),
    # FFT: a dense 7x7 (tiled path: spectra, per-frequency GEMM, inverse; grad_input and grad_weight on the
    # same kernels) and RepLKNet's 31x31 depthwise (the fused per-tile kernel, its kernel in 2 x 2 chunks of
    # 32x32 tiles; grad_weight's elementwise reduction over tiles).
    Call(Layer("large_kernel.dense7x7", 128, 56, 128, 7, padding=3), "fft", ("fp16",)),
    Call(Layer("replknet31b.stages.0.lk31x31", 128, 56, 128, 31, padding=15, groups=128), "fft", ("fp16",), ("fwd", "wgrad")),
    # 3-D (the DEPTH variants of the implicit-GEMM kernels): R3D-18's 3x3x3 block conv and 1x1x1 downsample.
    Call(Layer("r3d_18.layer2.1.conv1.0", 128, 28, 128, 3, padding=1, d=8, t=3), "auto", ("fp16",)),
    Call(Layer("r3d_18.layer2.0.downsample.0", 64, 56, 128, 1, stride=2, d=16), "auto", ("fp16",)),
]
# 8-bit inference (``kernels.conv2d_scaled``, forward only, bf16 out): the im2col kernel with e4m3 / s8
# operands on ResNet-50's 3x3 and 1x1 layers with >= 256 channels, a depthwise (groups as a grid axis)
# and the C=3 stem.
EIGHT_BIT = ("fp8", "int8")
SCALED_CALLS: List[Call] = [
    Call(Layer("resnet50.layer3.1.conv2", 256, 14, 256, 3, padding=1), "im2col", EIGHT_BIT, ("fwd",)),
    Call(Layer("resnet50.layer3.1.conv1", 1024, 14, 256, 1), "pointwise", EIGHT_BIT, ("fwd",)),
    Call(Layer("resnet50.layer4.0.conv3", 512, 7, 2048, 1), "pointwise", EIGHT_BIT, ("fwd",)),
    Call(Layer("mobilenet_v2.features.3.conv.1.0", 144, 56, 144, 3, padding=1, groups=144), "im2col", ("int8",),
         ("fwd",)),
    Call(STEM, "im2col", ("fp8",), ("fwd",)),
]
CALLS += SCALED_CALLS

_TORCH_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32", "fp64": "float64",
                 "fp8": "float8_e4m3fn", "int8": "int8"}


def _params(layer: Layer, dtype: str = "fp16"):
    import torch

    from ..core.params import ConvParams

    x = torch.empty(layer.input_shape, dtype=getattr(torch, _TORCH_DTYPES[dtype]), device="meta")
    w = torch.empty(layer.weight_shape, dtype=x.dtype, device="meta")
    return ConvParams.from_tensors(x, w, None, layer.stride, layer.padding, 1, layer.groups,
                                   op="conv3d" if layer.d else "conv2d")


def all_calls(calls: Sequence[Call] = CALLS) -> List[Call]:
    """``calls`` plus, for every registered algorithm none of them resolves to, an fp16 call on
    the first of their layers it applies to."""
    from ..dispatch import REGISTRY, resolve

    reached = {resolve(call.algorithm, _params(call.layer)).name for call in calls}
    extra = []
    for name, algorithm in REGISTRY.items():
        if name not in reached:
            layer = next((c.layer for c in calls if algorithm.eligible(_params(c.layer))), None)
            if layer is not None:
                extra.append(Call(layer, name, ("fp16",)))
    return list(calls) + extra


def _record(task: Tuple[int, Call, str, str], extra_configs=None) -> dict:
    """Record one call (``task``: its index, the call, dtype, layout) in this process, plus the
    configs ``extra_configs`` names ({kernel_id: config indices}) for its kernels; as JSON."""
    import torch

    from ..core import launcher
    from ..ops.gemm import tma
    from . import launch_plan

    torch.set_num_threads(1)
    index, call, dtype, layout = task
    tma.ENABLED = call.tma
    with launch_plan.recording() as plan:
        for kernel_id, configs in (extra_configs or {}).items():
            plan.extra_configs[kernel_id] = [launcher.ALL_KERNELS[kernel_id].configs[j] for j in configs]
        layer = call.layer
        launch_plan.record_conv2d(
            plan, layer.input_shape, layer.weight_shape,
            stride=layer.stride, padding=layer.padding, groups=layer.groups, bias=layer.bias,
            dtype=getattr(torch, _TORCH_DTYPES[dtype]), channels_last=layout == "channels_last",
            algorithm=call.algorithm, backward=call.passes != ("fwd",),
            input_grad="dgrad" in call.passes and not layer.first, weight_grad="wgrad" in call.passes,
            layer=layer.name + ("" if call.tma else " [TMA off]"), call=index)
    return plan.to_json()


def _variant(launch: dict) -> str:
    labels = launch["labels"]
    return f"{labels['layout']} {launch['phase']} {labels['algorithm']} {labels['layer']} ({labels['shape']})"


# What a row takes from the compiled candidate (the rest comes from its launch).
_COMPILED_FIELDS = ("registers", "spill_bytes", "local_bytes", "smem_bytes", "mma", "async_copy", "cp_async_bytes",
                    "ctas_per_sm", "limiter", "num_warps", "num_stages", "grid", "ctas", "waves", "last_wave",
                    "dot_loops", "hash")


def _row(launch: dict, compiled: dict, variant: str) -> dict:
    labels = launch["labels"]
    return dict(kernel=launch["kernel"], kernel_id=launch["kernel_id"], config=compiled["config"],
                dtype=launch["dtype"], variant=variant, layout=labels["layout"], phase=launch["phase"],
                algorithm=labels["algorithm"], layer=labels["layer"], launched=compiled["hash"] == launch["hash"],
                **{k: compiled[k] for k in _COMPILED_FIELDS},
                constexprs=launch["constexprs"], ones=launch["ones"], not_div16=launch["not_div16"], calls=[variant])


def rows_of(recordings: Sequence[dict]) -> Tuple[List[dict], List[str]]:
    """One row per kernel x config x variant (= compiled binary), and the failures (calls, configs)."""
    rows: Dict[tuple, dict] = {}
    failures = [f"{e.get('layer')} {e.get('layout')} {e.get('algorithm')}: {e['error']}"
                for data in recordings for e in data["errors"]]
    for data in recordings:
        for launch in data["launches"]:
            variant = _variant(launch)
            for compiled in [launch] + launch["candidates"]:
                if "error" in compiled:
                    failures.append(f"{launch['kernel']} {compiled['config']} [{launch['dtype']} {variant}]: "
                                    f"{compiled['error']}")
                    continue
                key = (launch["kernel_id"], launch["kernel"], compiled["config"], compiled["hash"])
                if key not in rows:
                    rows[key] = _row(launch, compiled, variant)
                    continue
                rows[key]["launched"] |= compiled["hash"] == launch["hash"]
                if variant not in rows[key]["calls"]:
                    rows[key]["calls"].append(variant)
    return list(rows.values()), failures


def _uncovered(rows: Sequence[dict]) -> Tuple[Dict[int, List[int]], List[str]]:
    """(kernel_id -> indices of configs no row has, kernels no call launched)."""
    from .launch_plan import config_name
    from ..core.launcher import ALL_KERNELS

    compiled: Dict[int, set] = {}
    for row in rows:
        compiled.setdefault(row["kernel_id"], set()).add(row["config"])
    missing, never = {}, []
    for i, kernel in enumerate(ALL_KERNELS):
        if i not in compiled:
            never.append(f"{kernel.name} (ALL_KERNELS[{i}]): no call launches it; "
                         "add one to kernels.sm90.compile_check.CALLS")
            continue
        names = [config_name(dict(c.kwargs), c.num_warps, c.num_stages) for c in kernel.configs]
        todo = [j for j, name in enumerate(names) if name not in compiled[i]]
        if todo:
            missing[i] = todo
    return missing, never


def run(calls: Sequence[Call] = CALLS, layouts: Sequence[str] = ("channels_last",), workers: int = 2,
        dtypes: Sequence[str] = ("fp16", "bf16", "fp32", "fp64", "fp8", "int8")) -> dict:
    """Compile every call in every dtype (one task each, on ``workers`` processes), then the
    configs no call compiled; returns {"rows", "failures", "seconds"}."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("compile_check: unset TRITON_INTERPRET (the interpreter compiles nothing)")
    import kernels  # noqa: F401  (every algorithm registered)

    # As the tests and benchmarks set it (Triton's default today), so all three share compiled kernels.
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    start = time.perf_counter()
    calls = all_calls(calls)
    # One task (and recording: the autotuner tunes afresh) per call, dtype and layout, handed out
    # as workers free up. Calls that share a kernel specialisation (two 3x3 stride-1 layers'
    # dgrad) reuse it through Triton's disk cache.
    tasks = [(i, call, dtype, layout) for layout in layouts for i, call in enumerate(calls)
             for dtype in dtypes if dtype in call.dtypes]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=context) as pool:
        recordings = list(pool.map(_record, tasks))
    rows, failures = rows_of(recordings)
    missing, never = _uncovered(rows)
    more_rows, more_failures = _compile_missing(calls, recordings, rows, missing)
    rows += more_rows
    failures += more_failures + never
    rows.sort(key=lambda r: (r["kernel_id"], r["dtype"], r["variant"], r["config"]))
    return dict(rows=rows, failures=failures, layouts=list(layouts), seconds=round(time.perf_counter() - start, 1))


def _compile_missing(calls: Sequence[Call], recordings: Sequence[dict], rows: Sequence[dict],
                     missing: Dict[int, List[int]]) -> Tuple[List[dict], List[str]]:
    """Compile the configs that every real call pruned, each for the first launch of its kernel."""
    first = {}
    for data in recordings:
        for launch in data["launches"]:
            first.setdefault(launch["kernel_id"], launch)
    new_rows, failures = [], []
    for kernel_id, configs in missing.items():
        launch = first[kernel_id]
        index = launch["labels"]["call"]
        task = (index, calls[index], launch["dtype"], launch["labels"]["layout"])
        extra, extra_failures = rows_of([_record(task, {kernel_id: configs})])
        have = {row["config"] for row in rows if row["kernel_id"] == kernel_id}
        for row in extra:
            if row["kernel_id"] == kernel_id and row["config"] not in have:
                new_rows.append(dict(row, variant=row["variant"] + " [config pruned for it: compiled for coverage]"))
        failures += extra_failures
    return new_rows, failures


def _copies(row: dict) -> str:
    sizes = "/".join(str(b) for b in row["cp_async_bytes"])
    return row["async_copy"] + (f" ({sizes} B)" if sizes else "")


def format_table(rows: Sequence[dict]) -> str:
    header = (f"{'kernel':<26} {'dtype':<5} {'config':<26} {'regs':>4} {'spill':>5} {'smem KB':>7} "
              f"{'CTA/SM':>12} {'mma':<8} {'async copy':<17} {'grid':>14} {'waves':>5}  variant")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['kernel'].strip('_'):<26} {r['dtype']:<5} {r['config'] + (' *' if r['launched'] else ''):<26} "
            f"{r['registers']:>4} {r['spill_bytes']:>5} {r['smem_bytes'] / 1024:>7.1f} "
            f"{str(r['ctas_per_sm']) + ' (' + r['limiter'] + ')':>12} {r['mma']:<8} {_copies(r):<17} "
            f"{'x'.join(map(str, r['grid'])):>14} {r['waves']:>5}  {r['variant']}")
    return "\n".join(lines)


def summary(rows: Sequence[dict]) -> List[str]:
    from collections import Counter

    def count(key):
        return ", ".join(f"{k} {v}" for k, v in Counter(r[key] for r in rows).most_common())

    spills = sorted({f"{r['kernel'].strip('_')} {r['dtype']} {r['layout']}" for r in rows if r["spill_bytes"]})
    return [
        f"{len(rows)} kernel x config x variant compiles of {len({r['kernel_id'] for r in rows})} kernels "
        f"({sum(r['launched'] for r in rows)} of them the config launched for a call).",
        f"mma: {count('mma')}; async copies: {count('async_copy')}.",
        f"register spills: {sum(1 for r in rows if r['spill_bytes'])} compiles"
        + (f" ({', '.join(spills)})" if spills else ""),
    ]


def _span(values) -> str:
    values = list(values)
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}–{high}"


def kernel_table(rows: Sequence[dict]) -> List[str]:
    """Markdown: one line per kernel x dtype x layout, over its configs and variants."""
    groups: Dict[tuple, List[dict]] = {}
    for row in rows:
        groups.setdefault((row["kernel_id"], row["kernel"], row["dtype"], row["layout"]), []).append(row)
    out = ["| kernel | algorithms | dtype | layout | compiles | regs | spill B | smem KB | CTA/SM | mma | async copy |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (_, kernel, dtype, layout), group in sorted(groups.items(), key=lambda item: item[0][:1] + item[0][2:]):
        algorithms = ", ".join(sorted({r["algorithm"] for r in group}))
        out.append(f"| {kernel.strip('_')} | {algorithms} | {dtype} | {layout} | {len(group)} | "
                   f"{_span(r['registers'] for r in group)} | {_span(r['spill_bytes'] for r in group)} | "
                   f"{_span(round(r['smem_bytes'] / 1024) for r in group)} | "
                   f"{_span(r['ctas_per_sm'] for r in group)} | {'/'.join(sorted({r['mma'] for r in group}))} | "
                   f"{'/'.join(sorted({_copies(r) for r in group}))} |")
    return out


def markdown(result: dict) -> str:
    import triton

    rows = result["rows"]
    out = ["# sm_90 compile check (no GPU: real calls compiled by Triton's JIT for an H100)", "",
           f"`python -m kernels.sm90.compile_check --layouts {' '.join(result['layouts'])}` (`make compile-check`: "
           f"channels_last only), triton {triton.__version__}, target `GPUTarget(\"cuda\", 90, 32)` with H100 "
           f"properties, batch {BATCH}, {result['seconds']:.0f} s here. **Nothing ran on a GPU.** "
           "Each variant is one JIT specialisation of a real call (named after it: layout, pass, algorithm, "
           "layer); every config the autotuner would time for it is compiled. `*` = the config recorded as "
           "launched (the first that fits: an H100's autotuner picks by timing). CTA/SM from registers, "
           "shared memory and warps (limit in brackets); waves on 132 SMs for the call's grid.", ""]
    out += [f"- {line}" for line in summary(rows)]
    out += [f"- FAILED: {f}" for f in result["failures"]] or ["- failures: none."]
    out += ["", "## Per kernel", ""] + kernel_table(rows) + ["", "## Every kernel x config x variant", ""]
    out += ["| kernel | dtype | variant | config | regs | spill B | smem KB | CTA/SM | mma | async copy | grid | waves |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['kernel'].strip('_')} | {r['dtype']} | {r['variant']} | "
                   f"{r['config']}{' *' if r['launched'] else ''} | {r['registers']} | {r['spill_bytes']} | "
                   f"{r['smem_bytes'] / 1024:.1f} | "
                   f"{r['ctas_per_sm']} ({r['limiter']}) | {r['mma']} | {_copies(r)} | "
                   f"{'×'.join(map(str, r['grid']))} | {r['waves']} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write {rows, failures} to this file (one row per kernel x config x variant)")
    parser.add_argument("--markdown", help="write the report as Markdown to this file")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--layouts", nargs="+", default=["channels_last"], choices=["channels_last", "nchw"])
    args = parser.parse_args(argv)
    result = run(layouts=args.layouts, workers=args.workers)
    print(format_table(result["rows"]))
    print("\n".join(summary(result["rows"])) + f"\n({result['seconds']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(markdown(result))
    for failure in result["failures"]:
        print("FAILED:", failure, file=sys.stderr)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
