"""What an H100 would launch for each conv layer of the benchmark networks: compiled, not run.

For every unique conv layer of ResNet-50, VGG-16 and MobileNetV2 (``benchmarks.networks``, traced
from the ``cnn`` models) at batch 32, ``kernels.conv2d`` forward and ``out.backward(dy)`` are
called on CPU tensors of the real sizes under ``kernels.sm90.launch_plan.recording()``: the package's
own routing, planners and autotuner pick what to launch, Triton's JIT compiles it for sm_90, and
each launch is recorded with its kernel, config, grid and waves on 132 SMs, registers, spills,
tensor-core instruction and async copies. Nothing is timed.

    TRITON_INTERPRET=0 python -m benchmarks.launch_plan [--suites ...] [--batch 32] [--only LAYERS] [--out DIR]

(``python -m benchmarks`` runs it in a subprocess when there is no GPU: ``benchmarks/__init__``
turns the interpreter on there, and the interpreter compiles nothing.) Writes ``report-b<batch>.md``
and ``launches-b<batch>.json``; the JSON has the fields ``../shared/tools/launch_report/judge.py``
reads (``{suite: {args, errors, launches}}``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import List, Sequence

import torch

from .environment import metadata
from .networks import ACTIVATION_INPUT, SUITES, suite_cases
from .report import _table

OUT = Path(__file__).resolve().parent / "results" / "h100-launch-plan"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
          # 8-bit: kernels.conv2d_scaled, forward only (``record_conv2d``)
          "float8_e4m3fn": torch.float8_e4m3fn, "int8": torch.int8}


def record_suite(suite: str, batch: int, dtype: torch.dtype, channels_last: bool, only: Sequence[str] = ()):
    """Forward and backward of every unique conv layer of ``suite`` (or of those named in
    ``only``): the Recording."""
    from kernels.sm90 import launch_plan

    with launch_plan.recording() as plan:
        for index, case in enumerate(suite_cases(suite, batch=batch)):
            if only and case.layer not in only:
                continue
            t0 = time.perf_counter()
            launch_plan.record_conv2d(
                plan, case.input_shape, case.weight_shape, **case.conv_args(), bias=case.bias, dtype=dtype,
                # the first layer reads the image (a suite of ACTIVATION_INPUT: an activation)
                channels_last=channels_last, input_grad=index > 0 or suite in ACTIVATION_INPUT,
                net=suite, layer=case.layer, count=case.count, shape=case.describe())
            print(f"[{suite}] {case.layer:<28} {case.describe():<26} {time.perf_counter() - t0:6.1f} s",
                  file=sys.stderr, flush=True)
    return plan


def _loops(launch: dict) -> str:
    loops = launch["dot_loops"]
    if not loops:
        return "no dot"
    return ", ".join(f"{'?' if d['restarts'] is None else d['restarts']}×{'?' if d['trips'] is None else d['trips']}"
                     + ("" if d["async_copies"] or d["tma_copies"] else " sync") for d in loops)


def _candidates(launch: dict) -> str:
    compiled = [c for c in launch["candidates"] if "error" not in c]
    if not compiled:  # the autotuner's cache: the same key was tuned at an earlier launch
        return launch["tuning"].replace("autotune cache: tuned at launch ", "as ")
    regs = [c["registers"] for c in compiled]
    spills = max(c["spill_bytes"] for c in compiled)
    failed = len(launch["candidates"]) - len(compiled)
    return (f"{len(compiled)}: {min(regs)}–{max(regs)} regs" + (f", spills ≤ {spills} B" if spills else "")
            + (f", {failed} failed" if failed else ""))


def summary(launches: Sequence[dict]) -> List[str]:
    """Bullets, weighted by how often each unique layer occurs in the network (one pass = fwd + bwd)."""
    weight = lambda launch: launch["labels"].get("count", 1)  # noqa: E731
    def counted(key):
        totals = Counter()
        for launch in launches:
            totals[key(launch)] += weight(launch)
        return ", ".join(f"{name} {n}" for name, n in totals.most_common())

    spilling = [f"{l['labels']['layer']} {l['phase']} {l['kernel'].strip('_')} {l['config']} ({l['spill_bytes']} B)"
                for l in launches if l["spill_bytes"]]
    few = [f"{l['labels']['layer']} {l['phase']} {l['kernel'].strip('_')} ({l['ctas']})"
           for l in launches if l["ctas"] < 132]
    restarts = [f"{l['labels']['layer']} {l['phase']} {l['kernel'].strip('_')} ({_loops(l)})"
                for l in launches if any((d["restarts"] or 1) > 1 for d in l["dot_loops"])]
    return [
        f"launches per training step (forward + backward, each layer × its count): "
        f"{sum(weight(l) for l in launches)} ({counted(lambda l: l['kernel'].strip('_'))}); "
        f"{len(launches)} for the unique layers.",
        f"tensor cores: {counted(lambda l: l['mma'])}; async copies: {counted(lambda l: l['async_copy'])}.",
        "register spills in the launched configs: " + ("; ".join(spilling) if spilling else "none") + ".",
        f"fewer CTAs than the 132 SMs: {len(few)} launches" + (": " + "; ".join(few) if few else "") + ".",
        f"dot loop entered more than once per CTA (one pipeline fill and drain per entry): {len(restarts)} launches"
        + (": " + "; ".join(restarts) if restarts else "") + ".",
    ]


def markdown(data: dict, meta: dict) -> str:
    first = next(iter(data.values()))
    args = first["args"]
    out = [f"# What an H100 would launch: batch {args['batch']}, {args['dtype']}, {args['layout']}, "
           "forward and backward",
           "",
           f"Compiled for sm_90 (`GPUTarget(\"cuda\", 90, 32)`, H100 SXM properties) on a machine without a GPU by "
           f"`python -m benchmarks.launch_plan` (`kernels/sm90/launch_plan.py`): commit {meta.get('commit')}, triton "
           f"{first['triton']}, torch {meta.get('torch')}. **Nothing ran on a GPU and nothing was timed.** Each layer "
           "went through `kernels.conv2d(algorithm=\"auto\")` and `out.backward(dy)` on CPU tensors of the real sizes; "
           "the package's routing and planners chose the kernels, Triton's JIT specialised the real arguments and "
           "compiled them. **Config**: the first autotune candidate that compiles and fits; an H100's autotuner "
           "times every candidate (column *candidates*: how many, their register range; `as #i` = the "
           "autotuner's cache reuses what it tuned for launch *i*, same key) and may pick another.",
           "",
           "Columns: *CTA/SM* resident CTAs per SM from registers, shared memory and warps (the binding limit in "
           "brackets); *waves* on 132 SMs and how full the last one is; *mma*: `wgmma` (Hopper's warpgroup MMA), "
           "`mma.sync` (Ampere's), none; *async copy*: TMA, cp.async (copy sizes in bytes; 16 = vectorised) or none; "
           "*dot loops*: for each loop holding a `tl.dot`, entries per CTA × trips per entry (each entry fills and "
           "drains the software pipeline; `sync` = loads not pipelined).", ""]
    for suite, rec in data.items():
        launches = rec["launches"]
        out += [f"## {suite}", ""] + [f"- {line}" for line in summary(launches)]
        out += [f"- FAILED: {e.get('layer')} ({e.get('shape')}): {e['error']}" for e in rec["errors"]]
        out += [""]
        out += _table(
            ["#", "layer (×n)", "shape", "algorithm", "pass", "kernel", "config", "grid", "CTAs", "regs", "spill B",
             "smem KB", "CTA/SM", "waves", "mma", "async copy", "dot loops", "candidates"],
            [[l["index"], f"{l['labels']['layer']} (×{l['labels'].get('count', 1)})", l["labels"]["shape"],
              l["labels"]["algorithm"], l["phase"], l["kernel"].strip("_"), l["config"], "×".join(map(str, l["grid"])),
              l["ctas"], l["registers"],
              l["spill_bytes"], f"{l['smem_bytes'] / 1024:.1f}", f"{l['ctas_per_sm']} ({l['limiter']})",
              f"{l['waves']} ({100 * l['last_wave']:.0f}%)", l["mma"],
              l["async_copy"] + (f" ({'/'.join(map(str, l['cp_async_bytes']))})" if l["cp_async_bytes"] else ""),
              _loops(l), _candidates(l)] for l in launches])
    return "\n".join(out)


def _dump(data: dict) -> str:
    """JSON with one launch per line: compact, and a diff shows which launches changed."""
    suites = []
    for suite, rec in data.items():
        head = json.dumps({k: v for k, v in rec.items() if k != "launches"})[:-1]
        launches = ",\n".join(json.dumps(launch, separators=(",", ":")) for launch in rec["launches"])
        suites.append(f'{json.dumps(suite)}: {head}, "launches": [\n{launches}\n]}}')
    return "{\n" + ",\n".join(suites) + "\n}\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", nargs="+", default=list(SUITES))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", default="float16", choices=list(DTYPES))
    parser.add_argument("--layout", default="channels_last", choices=["channels_last", "nchw"])
    parser.add_argument("--only", help="comma-separated layer names (default: every unique layer)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("benchmarks.launch_plan: run with TRITON_INTERPRET=0 (the interpreter compiles nothing)")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        print(f"benchmarks.launch_plan: skipping suites it does not know: {unknown}", file=sys.stderr)
    meta = metadata()
    data = {}
    for suite in [s for s in args.suites if s in SUITES]:
        start = time.perf_counter()
        plan = record_suite(suite, args.batch, DTYPES[args.dtype], args.layout == "channels_last",
                            args.only.split(",") if args.only else ())
        settings = dict(batch=args.batch, dtype=args.dtype, layout=args.layout, algorithm="auto", passes="both")
        data[suite] = dict(plan.to_json(brief_candidates=True), torch=torch.__version__,
                           seconds=round(time.perf_counter() - start, 1), args=settings)
    if not data:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [args.out / f"launches-b{args.batch}.json", args.out / f"report-b{args.batch}.md"]
    paths[0].write_text(_dump(data))
    paths[1].write_text(markdown(data, meta) + "\n")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 1 if any(rec["errors"] for rec in data.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
