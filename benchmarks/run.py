"""`python -m benchmarks`: every algorithm of ``kernels.REGISTRY`` against cuDNN on the conv
layers of ResNet-50, VGG-16 and MobileNetV2 (cases derived from the ``cnn`` models), the 3-D
convolutions of R3D-18 (16-frame 112x112 clips, batch 8), and on the transposed convolutions of
DCGAN's generator and U-Net's decoder and Mamba's depthwise conv1d (``variant_networks``), and
the networks end to end; with ``--passes
backward`` also each layer's backward (``benchmarks/backward.py``) against cuDNN's; writes JSON, a
Markdown report and PNG plots under ``benchmarks/results/<device>/``.

Without a GPU it runs the same layers scaled down under Triton's interpreter: the FLOP tables
(real shapes) and the correctness column are real; the times are NOT GPU timings and no
speedup is claimed from them.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Tuple

import torch

from . import jsonfile
from .backward import run_backward_case
from .environment import ON_GPU, PRECISIONS, device_slug, metadata
from .layers import LAYOUTS, counts, run_case
from .models import MODEL_IMPLS
from .networks import (
    NOT_ON_INTERPRETER_BY_DEFAULT, SUITE_BATCHES, SUITES, ConvCase, all_suites, input_size, interpreter_scale,
    scaled_down, suite_cases,
)
from .progress import Progress
from .scaled import run_quantized_model, run_scaled_case
from .session import STAGE_VARIABLE
from .timing import measure_peaks

RESULTS = Path(__file__).resolve().parent / "results"
QUICK_LAYERS = 4
PASSES = ("forward", "backward")

# Under the interpreter, end to end runs reduced networks (a full-width image one takes minutes):
# builder arguments, and inputs of CPU_MODEL_IMAGE^2 pixels, or of their own size.
CPU_MODELS = {"mobilenet_v2": dict(width_mult=0.1), "r3d_18": {}}
CPU_MODEL_IMAGE = 32
CPU_MODEL_INPUTS = {"r3d_18": (3, 2, 16, 16)}  # R3D-18 has no width argument: full width, a 2-frame 16x16 clip


def cpu_model_input(suite: str) -> tuple:
    """One sample's input size for ``suite``'s end-to-end run under the interpreter."""
    return CPU_MODEL_INPUTS.get(suite, (3, CPU_MODEL_IMAGE, CPU_MODEL_IMAGE))


def shard(text: str) -> Tuple[int, int]:
    index, _, count = text.partition("/")
    try:
        index, count = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must be I/N with 0 <= I < N, got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard must be I/N with 0 <= I < N, got {text!r}")
    return index, count


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", nargs="+", choices=all_suites(),
                        help="default: all (on the CPU all but NOT_ON_INTERPRETER_BY_DEFAULT's, replknet31b)")
    parser.add_argument("--batches", nargs="+", type=int, help="default: 32 on a GPU, 1 on the CPU")
    parser.add_argument("--dtypes", nargs="+", choices=list(PRECISIONS),
                        help="tf32 = float32 with TF32 on; float8_e4m3fn / int8: kernels.conv2d_scaled per layer "
                             "and cnn.quantize end to end against fp16 (benchmarks/scaled.py); default: float16 "
                             "bfloat16 on a GPU, float32 on the CPU")
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=["channels_last"])
    parser.add_argument("--passes", nargs="+", choices=PASSES, default=["forward"],
                        help="backward: grad_input + grad_weight (+ grad_bias) per layer, cuDNN vs auto")
    parser.add_argument("--full", action="store_true",
                        help="batches 1 32 256, all four precisions, both layouts, both passes (hours on a GPU)")
    parser.add_argument("--quick", action="store_true",
                        help=f"the {QUICK_LAYERS} layers of each suite with the most MACs x count, first batch, "
                             "first dtype, end to end at that batch only")
    parser.add_argument("--no-models", action="store_true", help="skip the end-to-end runs")
    parser.add_argument("--no-layers", action="store_true", help="skip the per-layer runs (end to end only)")
    parser.add_argument("--model-impls", nargs="+", choices=MODEL_IMPLS,
                        help="the end-to-end variants to time (default: all of them)")
    parser.add_argument("--no-compile", action="store_true", help="end to end without the torch.compile variant")
    parser.add_argument("--inductor", action="store_true",
                        help="also time torch.compile(mode='max-autotune') of each conv (GPU; slow to compile)")
    parser.add_argument("--scale", nargs=2, type=int, metavar=("CHANNEL_DIV", "SPATIAL_DIV"), default=(16, 14),
                        help="interpreter runs: divide channels and pixels of each layer by these")
    parser.add_argument("--out", type=Path, help="output folder (default benchmarks/results/<device>)")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--no-launch-plan", action="store_true",
                        help="without a GPU, skip the H100 launch plan (benchmarks/launch_plan.py) of the suites")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of an earlier results.json in the output folder, each replaced by this "
                             "run's rows of the same layer and setting as they come (to split a long GPU run into "
                             "several commands)")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS",
                        help="start no step after this many seconds from the start of the run; the steps left "
                             "are listed in the results (settings.not_run), what ran is kept")
    parser.add_argument("--warm", action="store_true",
                        help="only run our implementations once per step, untimed, so that a later timed run "
                             "finds their Triton kernels compiled in the cache; writes no results")
    parser.add_argument("--shard", type=shard, default=(0, 1), metavar="I/N",
                        help="with --warm: take every N-th step from the I-th (N processes compile in parallel)")
    args = parser.parse_args(argv)
    args.batches_given = args.batches is not None
    args.suites = args.suites or [s for s in all_suites() if ON_GPU or s not in NOT_ON_INTERPRETER_BY_DEFAULT]
    if args.full:
        args.batches = args.batches or [1, 32, 256]
        args.dtypes = args.dtypes or [name for name, p in PRECISIONS.items() if not p.quantized]
        args.layouts = list(LAYOUTS)
        args.passes = list(PASSES)
    args.batches = args.batches or ([32] if ON_GPU else [1])
    args.dtypes = args.dtypes or (["float16", "bfloat16"] if ON_GPU else ["float32"])
    if args.quick:
        args.batches, args.dtypes, args.layouts = args.batches[:1], args.dtypes[:1], args.layouts[:1]
    return args


def suite_batches(suite: str, args) -> List[int]:
    """The batches ``suite`` runs at: ``--batches`` if given (or ``--full``'s); on a GPU otherwise
    the suite's own batch (``SUITE_BATCHES``) if it has one, else the run's default."""
    if ON_GPU and not args.batches_given and suite in SUITE_BATCHES:
        return [SUITE_BATCHES[suite]]
    return args.batches


def layer_table(suite: str) -> List[dict]:
    """The suite's unique layers at full size, per image, with each eligible algorithm's multiplies."""
    rows = []
    for case in suite_cases(suite, batch=1):
        flops = counts(case)
        rows.append(dict(
            suite=suite, layer=case.layer, count=case.count, op=case.op, c=case.c, d=case.d, h=case.h, w=case.w,
            k=case.k, t=case.t, r=case.r, s=case.s, stride=case.stride, padding=case.padding, dilation=case.dilation,
            groups=case.groups,
            bias=case.bias, macs=flops["auto"]["macs"], auto=flops["auto"]["algorithm"],
            multiplies={name: f["multiplies"] for name, f in flops.items() if name != "auto"},
        ))
    return rows


def select_cases(suite: str, batch: int, quick: bool) -> List[ConvCase]:
    cases = suite_cases(suite, batch=batch)
    if quick:
        keep = sorted(cases, key=lambda c: c.count * c.n * c.k * c.c * c.d * c.h * c.w * c.t * c.r * c.s / c.groups)
        keep = {c.layer for c in keep[-QUICK_LAYERS:]}
        cases = [c for c in cases if c.layer in keep]
    return cases


# What one step of a run is: a layer's forward or backward at one setting, or a network end to end.
CaseStep = Tuple[str, int, str, str, str, ConvCase]  # suite, batch, dtype, layout, pass, case
ModelStep = Tuple[str, int, str, str]  # suite, batch, dtype, layout


def plan_steps(args) -> Tuple[List[CaseStep], List[ModelStep]]:
    """The layer steps and the end-to-end steps the arguments ask for, in the order they run."""
    cases = [] if args.no_layers else [
        (suite, batch, dtype, layout, direction, case)
        for direction in args.passes for suite in args.suites for batch in suite_batches(suite, args)
        for dtype in args.dtypes for layout in args.layouts for case in select_cases(suite, batch, args.quick)]
    models = [] if args.no_models else [
        (suite, batch, dtype, layout) for suite in args.suites for batch in suite_batches(suite, args)
        for dtype in args.dtypes for layout in args.layouts if suite in SUITES and (ON_GPU or suite in CPU_MODELS)]
    if not ON_GPU:
        models = [p for p in models if p[1] == args.batches[0] and p[2] == args.dtypes[0] and p[3] == args.layouts[0]]
    return cases, models


def case_label(step: CaseStep) -> str:
    suite, batch, dtype, layout, direction, case = step
    return f"{suite} {case.layer} b{batch} {dtype} {layout} {direction}"


def model_label(step: ModelStep) -> str:
    suite, batch, dtype, layout = step
    return f"{suite} end to end b{batch} {dtype} {layout}"


class Results:
    """Everything the run has measured so far, written after every step (a crash keeps the rest;
    each write replaces the file atomically, so a run killed mid-write leaves the previous one)."""

    # The keys a run writes; an earlier file's other keys (a GPU session's ``session``) are kept.
    OWN_KEYS = ("peaks", "layers", "cases", "models")

    def __init__(self, out_dir: Path, meta: dict, peaks: dict, layers: List[dict]):
        self.out_dir, self.meta, self.peaks, self.layers = out_dir, meta, peaks, layers
        self.cases: List[dict] = []
        self.models: List[dict] = []
        self.kept: dict = {}
        out_dir.mkdir(parents=True, exist_ok=True)

    def merge_earlier(self, suites: List[str]) -> None:
        """Adopt an earlier run's rows (a step of this run replaces them when it runs:
        ``add_cases``, ``add_models``), its FLOP tables of other suites and its other keys."""
        path = self.out_dir / "results.json"
        earlier = jsonfile.read(path)
        if earlier is None:
            return
        if earlier.get("device") not in (None, self.meta["device"]):  # None: a session's file before any run
            raise SystemExit(f"--merge: {path} is from {earlier.get('device')!r}, not {self.meta['device']!r}")
        self.cases = earlier.get("cases", [])
        self.models = earlier.get("models", [])
        self.layers = [r for r in earlier.get("layers", []) if r["suite"] not in suites] + self.layers
        if earlier.get("device"):
            self.meta["merged_from"] = dict(commit=earlier.get("commit"), date=earlier.get("date"))
        for name, value in earlier.get("peaks", {}).get("tflops", {}).items():  # ceilings of merged precisions
            self.peaks.setdefault("tflops", {}).setdefault(name, value)
        self.kept = {key: value for key, value in earlier.items() if key not in self.meta and key not in self.OWN_KEYS}

    def add_cases(self, step: CaseStep, rows: List[dict]) -> None:
        """The rows of one layer step, in place of any earlier rows of that layer and setting."""
        suite, batch, dtype, layout, direction, case = step
        key = (suite, case.layer, batch, dtype, layout, direction)
        self.cases = [r for r in self.cases if (
            r["suite"], r["layer"], r["n"], r["precision"], r["layout"], r.get("pass", "forward")) != key] + rows
        self.save()

    def add_models(self, step: ModelStep, rows: List[dict]) -> None:
        """The rows of one end-to-end step, in place of earlier rows of the same variants and setting."""
        impls = {r["impl"] for r in rows}
        self.models = [r for r in self.models if not (
            (r["model"], r["batch"], r["precision"], r["layout"]) == step and r["impl"] in impls)] + rows
        self.save()

    def as_json(self) -> dict:
        # Which data path (TMA or cp.async) the GPU timed fastest per (family, problem): this run's
        # choices over an earlier run's (``kernels.core.launcher.run_fastest``).
        from kernels.core import launcher

        fastest = dict(self.kept.get("fastest_paths", {}))
        fastest.update({f"{family} {key}": path for (family, key), path in launcher.FASTEST_PATHS.items()})
        return dict(self.kept, **self.meta, peaks=self.peaks, layers=self.layers, cases=self.cases, models=self.models,
                    fastest_paths=fastest)

    def save(self) -> Path:
        return jsonfile.write(self.out_dir / "results.json", self.as_json())


def warm(args) -> None:
    """``--warm``: run the steps' implementations of ours once each, untimed and unchecked, so that
    their Triton kernels are compiled (and autotuned once) into Triton's on-disk cache for a timed
    run in another process; with ``--shard I/N`` this process takes every N-th step from the I-th,
    so that N processes compile on N cores. Writes nothing; a failure shows in the timed run."""
    from .backward import warm_backward_case
    from .layers import warm_case
    from .models import warm_model

    case_steps, model_steps = plan_steps(args)
    steps = [(case_label(s), s) for s in case_steps] + [(model_label(s), s) for s in model_steps]
    index, count = args.shard
    steps = steps[index::count]
    start = time.monotonic()
    progress = Progress(len(steps))
    for label, step in steps:
        if args.time_budget is not None and time.monotonic() - start >= args.time_budget:
            print(f"time budget of {args.time_budget:.0f} s spent: not compiled: {label}", flush=True)
            continue
        progress.step("compile " + label)
        if len(step) == 6:
            suite, batch, dtype, layout, direction, case = step
            run_shape = case if ON_GPU else scaled_down(case, *interpreter_scale(suite, args.scale))
            failures = (warm_case if direction == "forward" else warm_backward_case)(run_shape, PRECISIONS[dtype], layout)
        else:
            suite, batch, dtype, layout = step
            sample, builder_args = (input_size(suite), None) if ON_GPU else (cpu_model_input(suite), CPU_MODELS[suite])
            failures = warm_model(suite, batch, sample, PRECISIONS[dtype], layout, args.model_impls, builder_args)
        for name, failure in failures.items():
            print(f"  {label} {name}: {failure}", flush=True)
        if ON_GPU:
            torch.cuda.empty_cache()
    progress.close()


def run(args) -> Results:
    start = time.monotonic()
    meta = metadata()
    out_dir = args.out or RESULTS / device_slug(meta["device"])
    if ON_GPU:
        torch.backends.cudnn.benchmark = True
        print(f"{meta['device']}: measuring peaks ...", flush=True)
    else:
        print("No GPU: running scaled-down layers under the Triton interpreter. "
              "Times are interpreter times, NOT GPU timings; no speedup is claimed from them.", flush=True)
    peaks = measure_peaks(args.dtypes)
    results = Results(out_dir, meta, peaks, [row for suite in args.suites for row in layer_table(suite)])
    case_steps, model_steps = plan_steps(args)
    if args.merge:
        results.merge_earlier(args.suites)
    meta["settings"] = dict(suites=args.suites, batches={suite: suite_batches(suite, args) for suite in args.suites},
                            dtypes=args.dtypes, layouts=args.layouts,
                            passes=args.passes, quick=args.quick, scale=None if ON_GPU else list(args.scale),
                            layers=not args.no_layers, models=not args.no_models, model_impls=args.model_impls,
                            time_budget=args.time_budget, steps=len(case_steps) + len(model_steps), steps_done=0,
                            session_stage=os.environ.get(STAGE_VARIABLE))
    not_run: List[str] = []

    def out_of_time(label: str) -> bool:
        if args.time_budget is None or time.monotonic() - start < args.time_budget:
            return False
        not_run.append(label)
        meta["settings"]["not_run"] = not_run
        return True

    progress = Progress(len(case_steps) + len(model_steps))
    results.save()
    for step in case_steps:
        suite, batch, dtype, layout, direction, case = step
        if out_of_time(case_label(step)):
            continue
        progress.step(case_label(step))
        run_shape = case if ON_GPU else scaled_down(case, *interpreter_scale(suite, args.scale))
        if PRECISIONS[dtype].quantized:  # 8-bit: forward only (inference), benchmarks/scaled.py
            rows = run_scaled_case(run_shape, PRECISIONS[dtype], layout, full_case=case) if direction == "forward" else []
        elif direction == "forward":
            rows = run_case(run_shape, PRECISIONS[dtype], layout, peaks, full_case=case, inductor=args.inductor)
        else:
            rows = run_backward_case(run_shape, PRECISIONS[dtype], layout, peaks, full_case=case)
        meta["settings"]["steps_done"] += 1
        results.add_cases(step, rows)
        if ON_GPU:
            torch.cuda.empty_cache()
    if model_steps:
        from .models import run_model

        for step in model_steps:
            suite, batch, dtype, layout = step
            if out_of_time(model_label(step)):
                continue
            progress.step(model_label(step))
            if PRECISIONS[dtype].quantized:
                sample, builder_args = (input_size(suite), None) if ON_GPU else (cpu_model_input(suite), CPU_MODELS[suite])
                rows = run_quantized_model(suite, batch, sample, PRECISIONS[dtype], layout, builder_args)
            elif ON_GPU:
                rows = run_model(suite, batch, input_size(suite), PRECISIONS[dtype], layout,
                                 compile_model=not args.no_compile, impls=args.model_impls)
            else:
                rows = run_model(suite, batch, cpu_model_input(suite), PRECISIONS[dtype], layout, compile_model=False,
                                 builder_args=CPU_MODELS[suite], impls=args.model_impls)
            meta["settings"]["steps_done"] += 1
            results.add_models(step, rows)
            if ON_GPU:
                torch.cuda.empty_cache()
    progress.close()
    if not_run:
        print(f"time budget of {args.time_budget:.0f} s spent: {len(not_run)} steps not run", flush=True)
    results.save()
    return results


def write_report(results: Results, plots: bool = True) -> List[Path]:
    from .report import render

    out_dir = results.out_dir
    paths = [results.save()]
    report = out_dir / "report.md"
    report.write_text(render(dict(results.kept, **results.meta), results.peaks, results.layers, results.cases,
                             results.models, ON_GPU))
    paths.append(report)
    if plots:
        from .plots import write_all

        for old in out_dir.glob("*.png"):
            old.unlink()
        paths += write_all(out_dir, results.layers, results.cases, results.peaks, ON_GPU)
    return paths


def write_launch_plan(args) -> int:
    """What an H100 would launch for the suites' layers at batch 32, compiled for sm_90 in a
    subprocess: this process runs the interpreter, which compiles nothing."""
    out = (args.out or RESULTS) / "h100-launch-plan"
    env = dict(os.environ, TRITON_INTERPRET="0")
    command = [sys.executable, "-m", "benchmarks.launch_plan", "--suites", *args.suites, "--batch", "32",
               "--out", str(out)]
    print("Compiling what an H100 would launch (batch 32, fp16, channels_last, forward and backward) ...", flush=True)
    return subprocess.run(command, env=env, cwd=Path(__file__).resolve().parent.parent).returncode


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.warm:
        warm(args)
        return 0
    results = run(args)
    paths = write_report(results, plots=not args.no_plots)
    plan_failed = not ON_GPU and not args.no_launch_plan and write_launch_plan(args) != 0
    if plan_failed:
        print("WRONG: the H100 launch plan had failures (see its report)", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in paths))
    if not ON_GPU:
        print("(interpreter run: the times in this report are NOT GPU timings)")
    wrong = [r for r in results.cases + results.models if not r["ok"] or r["ms"] is None]  # incl. merged rows
    for r in wrong:
        where = r.get("layer") or f"end to end b{r['batch']}"
        problem = r["timing"] if r["ms"] is None else f"relative error {r['rel_err']:.2e}"
        print(f"WRONG: {r.get('suite', r.get('model'))} {where} {r['precision']} {r['layout']} {r['impl']}: {problem}",
              file=sys.stderr)
    return 1 if wrong or plan_failed else 0
