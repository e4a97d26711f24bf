"""A GPU window's commands: ``bash benchmarks/gpu_session.sh first`` (then ``layers``) on the lent
GPU, each ending by itself within ``TOTAL_SECONDS``; see docs/gpu-session.md.

Each command is a list of stages in priority order with their planned seconds (``COMMANDS``),
run by ``benchmarks/session.py`` under one budget. Output, under ``$OUT`` (``./gpu-out``
without it): results.json, report.md, session.log and one .jsonl per pytest stage, no more (the
device tool returns 8 files at most). The last lines printed are the session's stage table, the
smoke's failures and the headline table.

Here, without a GPU: ``print first`` writes the command line to give the device tool (with the
commit, which the machine's copy of the tree may not know); ``plan`` lists the stages and their
budgets; ``merge OUT...`` joins the results of several commands into
``benchmarks/results/<device slug>/`` (results.json, report.md and the plots).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Sequence

from . import jsonfile, provenance
from .session import REPO, Command, Session, Stage, StageContext

TOTAL_SECONDS = 480  # 8 minutes of a 15-minute window, the machine's start not counted
MARGIN_SECONDS = 30  # kept back for the kills, the last report and the printing
MAX_WORKERS = 12  # parallel processes of a compile or pytest stage (16 cores on the H200 machine)

BENCH_COMMON = ("--batches", "32", "--no-plots", "--no-launch-plan")
FP16_CL = ("--dtypes", "float16", "--layouts", "channels_last")
SUITE_TESTS_FIRST = ("test_forward.py", "test_backward.py", "test_splitk.py", "test_dropin.py", "test_fused.py",
                     "test_pointwise.py", "test_depthwise.py", "test_direct.py", "test_winograd.py",
                     "test_transposed.py", "test_conv1d.py", "test_enable.py")
NOT_IN_SUITE_RUN = ("test_compile_sm90.py", "test_gpu_smoke.py")  # compile-only; the smoke has its own stage


def environment_stage(context: StageContext) -> List[Command]:
    return [Command((context.python, "-m", "benchmarks.gpu_session", "environment", "--out", str(context.out)))]


def bench(*args: str) -> Callable[[StageContext], List[Command]]:
    """A timed benchmark run that merges its rows into the session's results.json."""
    def commands(context: StageContext) -> List[Command]:
        return [Command((context.python, "-m", "benchmarks", "--out", str(context.out), "--merge", *BENCH_COMMON,
                         "--time-budget", f"{context.soft_seconds:.0f}", *args))]
    return commands


def compile_ahead(*args: str) -> Callable[[StageContext], List[Command]]:
    """``--warm`` shards on every worker: the later timed stages find their kernels compiled."""
    def commands(context: StageContext) -> List[Command]:
        return [Command((context.python, "-m", "benchmarks", "--warm", "--shard", f"{i}/{context.workers}",
                         *BENCH_COMMON, "--time-budget", f"{context.soft_seconds:.0f}", *args))
                for i in range(context.workers)]
    return commands


def pytest_command(context: StageContext, files: Sequence[str], env=()) -> Command:
    return Command((context.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "benchmarks.pytest_stream",
                    "-o", "addopts=", "-rfE", *files), tuple(env))


def smoke_stage(context: StageContext) -> List[Command]:
    return [pytest_command(context, ["tests/test_gpu_smoke.py"], [("KERNELS_SMOKE_SHARD", f"{i}/{context.workers}")])
            for i in range(context.workers)]


def suite_stage(context: StageContext) -> List[Command]:
    """The whole test suite on CUDA, its files dealt round-robin to the workers, kernels' files first."""
    names = sorted(p.name for p in (REPO / "tests").glob("test_*.py") if p.name not in NOT_IN_SUITE_RUN)
    ordered = [n for n in SUITE_TESTS_FIRST if n in names] + [n for n in names if n not in SUITE_TESTS_FIRST]
    shards = [ordered[i::context.workers] for i in range(context.workers)]
    return [pytest_command(context, ["tests/" + name for name in shard]) for shard in shards if shard]


def large_input_stage(context: StageContext) -> List[Command]:
    return [Command((context.python, "-m", "benchmarks.large_input", "--out", str(context.out)))]


ENVIRONMENT = Stage("environment", 15, "GPU, driver, torch / triton / cuDNN versions, commit",
                    environment_stage, needs_gpu=False)
RESNET = ("--suites", "resnet50", *FP16_CL)
NETWORKS = ("resnet50", "vgg16", "mobilenet_v2")
LARGE_KERNEL_SUITES = ("convnext_tiny", "replknet31b", "longconv")
LOW_PRECISION = ("--dtypes", "float8_e4m3fn", "int8", "--layouts", "channels_last")
LAYER_STAGES = (("vgg16-forward", ("vgg16",), 60), ("mobilenet_v2-forward", ("mobilenet_v2",), 70),
                ("decoders-forward", ("dcgan", "unet", "mamba_conv1d"), 40),
                ("efficientnet_b0-forward", ("efficientnet_b0",), 80), ("densenet121-forward", ("densenet121",), 110))


def _per_network(label: str, what: str, seconds: Dict[str, float], *args: str) -> List[Stage]:
    return [Stage(f"{suite}-{label}", seconds[suite], f"{suite} per layer, b32 {what}",
                  bench("--suites", suite, "--no-models", *args)) for suite in NETWORKS]


COMMANDS: Dict[str, List[Stage]] = {
    "first": [
        ENVIRONMENT,
        Stage("smoke", 165, "CUDA smoke of every registered algorithm: forward + backward, fp16 / bf16 / fp32, "
              "channels_last + NCHW, 3 shapes each (tests/test_gpu_smoke.py)", smoke_stage, pytest=True),
        Stage("resnet50-compile", 60, "compiles the next three stages' kernels in parallel processes (nothing timed)",
              compile_ahead(*RESNET, "--passes", "forward", "backward", "--model-impls", "eager", "kernels_fused",
                            "--no-compile")),
        Stage("resnet50-forward", 100, "ResNet-50 per layer, b32 fp16 channels_last: cuDNN, auto and every eligible "
              "algorithm", bench(*RESNET, "--passes", "forward", "--no-models")),
        Stage("resnet50-end-to-end", 40, "ResNet-50 b32 fp16 channels_last end to end: eager (cuDNN) vs cnn.fuse",
              bench(*RESNET, "--no-layers", "--model-impls", "eager", "kernels_fused", "--no-compile")),
        Stage("resnet50-backward", 40, "ResNet-50 per layer backward (grad_input + grad_weight): cuDNN vs auto",
              bench(*RESNET, "--passes", "backward", "--no-models")),
        Stage("large-input", 30, "one conv with an input past 2^31 elements, forward + dgrad through im2col, fp16, "
              "against cuDNN", large_input_stage),
    ],
    "layers": [
        ENVIRONMENT,
        Stage("layers-compile", 75, "compiles the suites' kernels in parallel processes (nothing timed)",
              compile_ahead("--suites", *(suite for _, suites, _ in LAYER_STAGES for suite in suites), *FP16_CL,
                            "--no-models")),
    ] + [Stage(name, seconds, f"{' '.join(suites)} per layer, b32 fp16 channels_last: cuDNN, auto and every "
               "eligible algorithm", bench("--suites", *suites, *FP16_CL, "--no-models"))
         for name, suites, seconds in LAYER_STAGES],
    "quick": [
        ENVIRONMENT,
        Stage("quick-compile", 90, "compiles the quick run's kernels in parallel processes (nothing timed)",
              compile_ahead("--quick", "--model-impls", "kernels", "kernels_fused", "--no-compile")),
        Stage("quick", 345, "the 4 heaviest layers of every suite and the networks end to end (no torch.compile)",
              bench("--quick", "--no-compile")),
    ],
    "backward": [
        ENVIRONMENT,
        Stage("backward-compile", 90, "compiles the backward kernels in parallel processes (nothing timed)",
              compile_ahead("--suites", *NETWORKS, *FP16_CL, "--passes", "backward", "--no-models")),
    ] + _per_network("backward", "fp16 channels_last backward: cuDNN vs auto", dict(resnet50=100, vgg16=80, mobilenet_v2=165), *FP16_CL, "--passes", "backward"),
    "nchw": [
        ENVIRONMENT,
        Stage("nchw-compile", 90, "compiles the NCHW forward kernels in parallel processes (nothing timed)",
              compile_ahead("--suites", *NETWORKS, "--dtypes", "float16", "--layouts", "nchw", "--no-models")),
    ] + _per_network("nchw", "fp16 NCHW: cuDNN, auto and every eligible algorithm", dict(resnet50=120, vgg16=80, mobilenet_v2=145), "--dtypes", "float16", "--layouts", "nchw"),
    "bf16": [
        ENVIRONMENT,
        Stage("bf16-compile", 90, "compiles the bf16 forward kernels in parallel processes (nothing timed)",
              compile_ahead("--suites", *NETWORKS, "--dtypes", "bfloat16", "--layouts", "channels_last", "--no-models")),
    ] + _per_network("bf16", "bf16 channels_last: cuDNN, auto and every eligible algorithm", dict(resnet50=120, vgg16=80, mobilenet_v2=145), "--dtypes", "bfloat16",
                     "--layouts", "channels_last"),
    "largek": [
        ENVIRONMENT,
        Stage("largek-compile", 90, "compiles the large-kernel suites' kernels in parallel processes (nothing timed)",
              compile_ahead("--suites", *LARGE_KERNEL_SUITES, *FP16_CL, "--passes", "forward", "backward",
                            "--no-models")),
        Stage("largek-forward", 160, "ConvNeXt-T, RepLKNet-31B's 31x31 / 13x13 depthwise, long 1-D convs per layer, b32 "
              "fp16: cuDNN, auto, every eligible algorithm (fft, depthwise), the torch.fft reference",
              bench("--suites", *LARGE_KERNEL_SUITES, *FP16_CL, "--passes", "forward", "--no-models")),
        Stage("largek-backward", 150, "the same layers backward (grad_input + grad_weight): cuDNN vs auto",
              bench("--suites", *LARGE_KERNEL_SUITES, *FP16_CL, "--passes", "backward", "--no-models")),
    ],
    "lowp": [
        ENVIRONMENT,
        Stage("lowp-compile", 90, "compiles the fp8 / int8 kernels in parallel processes (nothing timed)",
              compile_ahead("--suites", "resnet50", *LOW_PRECISION, "--no-models")),
        Stage("lowp-layers", 200, "ResNet-50 per layer, b32 channels_last: conv2d_scaled fp8 / int8 against cuDNN fp16 "
              "and our fp16", bench("--suites", "resnet50", *LOW_PRECISION, "--no-models")),
        Stage("lowp-end-to-end", 120, "quantized ResNet-50 / MobileNetV2 end to end against fp16 cnn.fuse and eager",
              bench("--suites", "resnet50", "mobilenet_v2", *LOW_PRECISION, "--no-layers", "--no-compile")),
    ],
    "tests": [
        ENVIRONMENT,
        Stage("suite", 435, "the test suite on CUDA (interpreter off), files in parallel, kernels' files first",
              suite_stage, pytest=True),
    ],
}


COMMAND_HELP = {
    "first": "the first command of a window: environment, smoke, ResNet-50 forward / end to end / backward, large input",
    "layers": "the second: VGG-16, MobileNetV2, the decoders, EfficientNet-B0, DenseNet-121 per layer",
    "quick": "the 4 heaviest layers of every suite and the networks end to end",
    "backward": "ResNet-50, VGG-16, MobileNetV2 per layer backward",
    "nchw": "ResNet-50, VGG-16, MobileNetV2 per layer forward with NCHW inputs",
    "bf16": "ResNet-50, VGG-16, MobileNetV2 per layer forward in bf16",
    "largek": "ConvNeXt-T, RepLKNet-31B's large depthwise layers and long 1-D convs per layer, forward and backward",
    "lowp": "fp8 / int8 (conv2d_scaled, cnn.quantize): ResNet-50 per layer, ResNet-50 / MobileNetV2 end to end",
    "tests": "the whole test suite on CUDA",
}


def default_workers() -> int:
    return max(1, min(MAX_WORKERS, (os.cpu_count() or 1) - 2))


def write_environment(out: Path) -> dict:
    """Stage 1: the device, driver and versions (``environment.metadata``), nvidia-smi's view, the
    commit and source fingerprint, into results.json (keeping the rows already there)."""
    import torch

    from .environment import ON_GPU, command_output, device_slug, metadata

    meta = metadata()
    smi_fields = "name,driver_version,memory.total,clocks.max.sm,clocks.max.memory,power.limit"
    smi = command_output(["nvidia-smi", f"--query-gpu={smi_fields}", "--format=csv,noheader"])
    environment = dict(
        meta, cuda_available=torch.cuda.is_available(), device_slug=device_slug(meta["device"]),
        nvidia_smi=dict(zip(smi_fields.split(","), (v.strip() for v in smi.splitlines()[0].split(","))))
        if smi else None)

    def change(data: dict) -> None:
        for key in ("peaks", "layers", "cases", "models"):
            data.setdefault(key, {} if key == "peaks" else [])
        if not data.get("device"):
            data.update(meta)  # a valid benchmark results file from the start
        data.setdefault("session", {})["environment"] = environment

    jsonfile.update(out / "results.json", change)
    print(f"{meta['device']} ({'GPU' if ON_GPU else 'no GPU'}): driver {meta.get('driver')}, torch {meta['torch']}, "
          f"CUDA {meta['cuda']}, cuDNN {meta['cudnn']}, triton {meta['triton']}; commit {meta['commit']} "
          f"({meta['commit_source']}), source {meta['source_fingerprint']}", flush=True)
    return environment


def summary_lines(data: dict) -> List[str]:
    """What the device tool's reply ends with: the stages, the smoke's failures, the large-input
    check, then the headline table."""
    from .report import headline, session_section, with_pass

    lines = []
    session = data.get("session") or {}
    if session:
        lines += session_section(session, compact=True)
    cases = with_pass(data.get("cases", []))
    if cases or data.get("models"):
        lines += ["## Headline", ""] + headline(cases, data.get("models", []))
    else:
        lines += ["(no benchmark rows)"]
    return lines


def run_command(name: str, out: Path, total: float, margin: float, workers: int) -> int:
    import torch

    try:  # the shell's start (gpu_session.sh), so that Python's own start counts too
        start = float(os.environ.get("SESSION_START", "")) or None
    except ValueError:
        start = None
    session = Session(name, COMMANDS[name], out, total, margin, start=start, on_gpu=torch.cuda.is_available(),
                      workers=workers)
    data = session.run()
    print("\n".join(summary_lines(data)), flush=True)
    wrong = [s for s in data["session"]["stages"] if s["status"] != "done"]
    return 1 if wrong else 0


def merge(folders: Sequence[Path], into: Path = None) -> Path:
    """Join the results.json of several commands' output folders (one device) into ``into``
    (default ``benchmarks/results/<device slug>/``): rows of all, the sessions listed, the commit
    filled in from the source fingerprint where the machine did not know it; report and plots."""
    from .environment import device_slug
    from .report import render, sessions_of

    datas = [jsonfile.read(Path(folder) / "results.json") for folder in folders]
    devices = {d.get("device") for d in datas if d.get("device")}
    if len(devices) != 1:
        raise SystemExit(f"merge: the results are from {sorted(map(str, devices))}, not one device")
    device = devices.pop()
    into = Path(into) if into else REPO / "benchmarks" / "results" / device_slug(device)
    merged = {k: v for k, v in datas[0].items() if k not in ("session", "sessions")}
    merged.update(cases=[], models=[], layers=[], peaks=dict(datas[0].get("peaks", {})), sessions=[])
    suites_seen = set()
    for data in datas:
        merged["cases"] += data.get("cases", [])
        merged["models"] += data.get("models", [])
        merged["layers"] += [r for r in data.get("layers", []) if r["suite"] not in suites_seen]
        suites_seen |= {r["suite"] for r in data.get("layers", [])}
        for name, value in data.get("peaks", {}).get("tflops", {}).items():
            merged["peaks"].setdefault("tflops", {}).setdefault(name, value)
        merged["sessions"] += sessions_of(data)
    if merged.get("commit") in (None, "unknown") and merged.get("source_fingerprint"):
        found = provenance.find_commit(merged["source_fingerprint"])
        if found:
            merged.update(commit=found, commit_source="source fingerprint")
    jsonfile.write(into / "results.json", merged)
    on_gpu = not merged.get("interpreter", True)
    (into / "report.md").write_text(render(merged, merged["peaks"], merged["layers"], merged["cases"],
                                           merged["models"], on_gpu))
    from .plots import write_all

    write_all(into, merged["layers"], merged["cases"], merged["peaks"], on_gpu)
    return into


def device_command_line(name: str) -> str:
    commit, _ = provenance.commit(REPO)
    return f"KERNELS_COMMIT={commit} bash benchmarks/gpu_session.sh {name}"


def plan_lines(name: str) -> List[str]:
    stages = COMMANDS[name]
    lines = [f"{name}: {len(stages)} stages, {sum(s.seconds for s in stages):.0f} s planned of {TOTAL_SECONDS} s "
             f"({MARGIN_SECONDS} s margin)"]
    lines += [f"  {s.seconds:4.0f} s  {s.name}: {s.describes}" for s in stages]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_session", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    for name in COMMANDS:
        command = sub.add_parser(name, help=COMMAND_HELP[name])
        command.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-out"))
        command.add_argument("--budget", type=float, default=TOTAL_SECONDS, help="seconds for the whole command")
        command.add_argument("--margin", type=float, default=MARGIN_SECONDS)
        command.add_argument("--workers", type=int, default=default_workers())
    environment = sub.add_parser("environment", help="stage 1 on its own: write the environment into OUT/results.json")
    environment.add_argument("--out", type=Path, required=True)
    merging = sub.add_parser("merge", help="join several commands' output folders into benchmarks/results/<device>/")
    merging.add_argument("folders", type=Path, nargs="+")
    merging.add_argument("--into", type=Path)
    printing = sub.add_parser("print", help="the command line to give the device tool (commit included)")
    printing.add_argument("name", choices=list(COMMANDS))
    planning = sub.add_parser("plan", help="a command's stages and their budgets")
    planning.add_argument("name", choices=list(COMMANDS))
    fingerprint = sub.add_parser("fingerprint", help="the source fingerprint of the tree (or of --rev)")
    fingerprint.add_argument("--rev")
    args = parser.parse_args(argv)

    if args.verb in COMMANDS:
        return run_command(args.verb, args.out, args.budget, args.margin, args.workers)
    if args.verb == "environment":
        write_environment(args.out)
    elif args.verb == "merge":
        print(f"wrote {merge(args.folders, args.into)}")
    elif args.verb == "print":
        print(device_command_line(args.name))
    elif args.verb == "plan":
        print("\n".join(plan_lines(args.name)))
    elif args.verb == "fingerprint":
        print(provenance.commit_fingerprint(args.rev) if args.rev else provenance.tree_fingerprint())
    return 0


if __name__ == "__main__":
    sys.exit(main())
