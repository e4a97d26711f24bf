"""Error study: how far ``algorithm="fft"`` is from float64, beside im2col, per tile size and dtype.

2-D: dense convolutions with square kernels 5..31 ('same' padding), Kaiming-normal weights,
post-ReLU inputs, run with each DFT tile the planner may pick for them (the planner's candidates
restricted to that one tile); 1-D: Hyena's causal depthwise long convolution (filter length = sequence
length, ``conv1d(u, k, padding=L-1, groups=D)[..., :L]``), lengths 256..16K, on the planner's tile,
beside F.conv1d accumulated in fp32 on the same rounded operands and rounded to the dtype (what a GEMM
with fp32 accumulation gives; under the interpreter im2col takes minutes for a long filter). That
baseline column is labelled im2col in the tables and JSON.
Per dtype: fp32 (IEEE), tf32 (fp32 with ``torch.backends.cudnn.allow_tf32``, im2col likewise), fp16,
bf16. Error: ||out - ref|| / ||ref|| against F.conv2d / F.conv1d in float64 on the same rounded operands.

    python -m benchmarks.fft_error          # GPU: as listed; CPU: the interpreter, small channel counts
    python -m benchmarks.fft_error --json X

Prints the Markdown tables of docs/fft.md; ``kernels/ops/fft/forward.py``'s MEASURED_ERROR_RATIO and
tests/test_fft.py's bounds come from them.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from typing import Dict, List, Optional

import torch

DTYPES = ("float32", "tf32", "float16", "bfloat16")
KERNELS_2D = (5, 7, 9, 13, 17, 31)
TILES_2D = (16, 32, 64)
LENGTHS_1D = (256, 1024, 4096, 16384)


@contextlib.contextmanager
def _dtype_mode(name: str):
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = name == "tf32"
    try:
        yield torch.float32 if name == "tf32" else getattr(torch, name)
    finally:
        torch.backends.cudnn.allow_tf32 = old


@contextlib.contextmanager
def _only_tile(tile: Optional[int]):
    """Restrict the planner's 2-D tile candidates to ``tile`` (None: as it is)."""
    from kernels.ops.fft import plan

    saved = plan.TILES_2D, plan.DEPTHWISE_TILES_2D
    if tile is not None:
        plan.TILES_2D = plan.DEPTHWISE_TILES_2D = (tile,)
    try:
        yield
    finally:
        plan.TILES_2D, plan.DEPTHWISE_TILES_2D = saved


def _relative(out, ref) -> float:
    return ((out.cpu().double() - ref).norm() / ref.norm()).item()


def error_2d(algorithm: str, kernel: int, dtype_name: str, channels: int, hw: int, device, seed: int,
             tile: Optional[int] = None) -> float:
    import torch.nn.functional as F

    import kernels

    gen = torch.Generator().manual_seed(seed)
    x = torch.relu(torch.randn(1, channels, hw, hw, generator=gen))
    w = torch.randn(channels, channels, kernel, kernel, generator=gen) * math.sqrt(2.0 / (kernel * kernel * channels))
    with _dtype_mode(dtype_name) as dtype, _only_tile(tile), torch.no_grad():
        x, w = x.to(device, dtype), w.to(device, dtype)
        out = kernels.conv2d(x, w, padding="same", algorithm=algorithm)
    return _relative(out, F.conv2d(x.cpu().double(), w.cpu().double(), padding="same"))


def error_1d(algorithm: str, length: int, dtype_name: str, channels: int, device, seed: int) -> float:
    import torch.nn.functional as F

    import kernels

    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(1, channels, length, generator=gen)
    k = torch.randn(channels, 1, length, generator=gen) * torch.exp(-torch.arange(length) / (length / 8)) / 4
    with _dtype_mode(dtype_name) as dtype, torch.no_grad():
        u, k = u.to(device, dtype), k.to(device, dtype)
        if algorithm == "torch":  # the baseline: fp32 accumulation of the rounded operands, rounded to dtype
            out = F.conv1d(u.float(), k.float(), padding=length - 1, groups=channels)[..., :length].to(dtype)
        else:
            out = kernels.conv1d(u, k, padding=length - 1, groups=channels, algorithm=algorithm)[..., :length]
    ref = F.conv1d(u.cpu().double(), k.cpu().double(), padding=length - 1, groups=channels)[..., :length]
    return _relative(out, ref)


def study(gpu: bool, device, lengths, kernels_2d=KERNELS_2D) -> Dict[str, List[Dict]]:
    channels, hw = (64, 56) if gpu else (4, 0)
    rows_2d, rows_1d = [], []
    for seed, kernel in enumerate(kernels_2d):
        size = hw or kernel + 9
        for tile in TILES_2D:
            if tile < kernel:
                continue
            row = {"kernel": kernel, "tile": tile, "shape": f"1x{channels}x{size}x{size} k{channels}"}
            for d in DTYPES:
                row[f"{d}/im2col"] = error_2d("im2col", kernel, d, channels, size, device, seed)
                row[f"{d}/fft"] = error_2d("fft", kernel, d, channels, size, device, seed, tile)
            rows_2d.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    for seed, length in enumerate(lengths):
        row = {"length": length, "shape": f"1x{2 if not gpu else 768}x{length}"}
        for d in DTYPES:
            for algorithm, name in (("torch", "im2col"), ("fft", "fft")):
                row[f"{d}/{name}"] = error_1d(algorithm, length, d, 2 if not gpu else 768, device, seed)
        rows_1d.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return {"2d": rows_2d, "1d": rows_1d}


def worst_ratio(rows: Dict[str, List[Dict]]) -> Dict[str, float]:
    """Per dtype: the largest ratio of fft's error to im2col's on the same problem."""
    every = rows["2d"] + rows["1d"]
    return {d: max(r[f"{d}/fft"] / r[f"{d}/im2col"] for r in every) for d in DTYPES} if every else {}


def markdown(rows: Dict[str, List[Dict]], note: str) -> str:
    head = ["kernel", "tile", "shape"] + [f"{d} {a}" for d in DTYPES for a in ("im2col", "fft")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows["2d"]:
        cells = [f"{r['kernel']}x{r['kernel']}", f"{r['tile']}x{r['tile']}", r["shape"]]
        cells += [f"{r[f'{d}/{a}']:.1e}" for d in DTYPES for a in ("im2col", "fft")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| length L | shape | " + " | ".join(f"{d} {a}" for d in DTYPES for a in ("im2col", "fft")) + " |",
              "|" + "---|" * (2 + 2 * len(DTYPES))]
    for r in rows["1d"]:
        cells = [str(r["length"]), r["shape"]] + [f"{r[f'{d}/{a}']:.1e}" for d in DTYPES for a in ("im2col", "fft")]
        lines.append("| " + " | ".join(cells) + " |")
    worst = worst_ratio(rows)
    lines += ["", "| worst ratio fft / im2col | " + " | ".join(DTYPES) + " |", "|---|" + "---|" * len(DTYPES),
              "| all problems above | " + " | ".join(f"{worst.get(d, 0):.1f}x" for d in DTYPES) + " |"]
    return note + "\n\n" + "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--max-length", type=int, default=max(LENGTHS_1D))
    parser.add_argument("--only-1d", action="store_true", help="skip the 2-D kernels")
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available()
    if not gpu:
        os.environ["TRITON_INTERPRET"] = "1"  # a script, like the tests: set before triton loads
    device = "cuda" if gpu else "cpu"
    lengths = [n for n in LENGTHS_1D if n <= args.max_length]
    rows = study(gpu, device, lengths, () if args.only_1d else KERNELS_2D)
    where = (f"{torch.cuda.get_device_name()}, 64 channels at 56x56, 1-D with 768 channels" if gpu else
             "CPU, Triton interpreter; 2-D: 4 -> 4 channels on (k + 9)^2 pixels, 1-D: 2 channels")
    note = (f"Relative error ||out - ref|| / ||ref|| against float64 ({where}); 2-D: Kaiming-normal weights, "
            "post-ReLU inputs, padding 'same'; 1-D: causal, filter length = L, exponentially decaying filter.")
    print(markdown(rows, note))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"where": where, "rows": rows, "worst_ratio_to_im2col": worst_ratio(rows)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
