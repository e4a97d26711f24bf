"""`python -m benchmarks`: every eligible algorithm on the conv layers of ResNet-50, checked
against PyTorch, with MACs per layer; timed against cuDNN on a GPU.

Without a GPU it runs the same layers scaled down under Triton's interpreter: the FLOP
table (at full size) and the correctness column are real, the timings are not GPU timings
and no speedup is claimed from them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ON_GPU = torch.cuda.is_available()
if not ON_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import torch.nn.functional as F  # noqa: E402

import kernels  # noqa: E402
from benchmarks.networks import resnet50_layers  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _scaled(layer, batch: int, channel_div: int, spatial_div: int):
    """The layer's shapes, scaled down (divisors 1 on a GPU)."""
    c = max(layer.c // channel_div, min(layer.c, 3))
    k = max(layer.k // channel_div, 4)
    h = max(layer.h // spatial_div, layer.r)
    return (batch, c, h, h), (k, c // layer.groups, layer.r, layer.s)


def _time_ms(fn) -> float:
    if ON_GPU:
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100)
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def run(batch: int, dtype: torch.dtype, channels_last: bool, channel_div: int, spatial_div: int):
    device = "cuda" if ON_GPU else "cpu"
    torch.backends.cudnn.benchmark = True
    rows = []
    for layer, count in resnet50_layers():
        full = kernels.conv2d_flops((batch, layer.c, layer.h, layer.w), layer.weight_shape, layer.stride,
                                    layer.padding, groups=layer.groups)
        x_shape, w_shape = _scaled(layer, batch, channel_div, spatial_div)
        x = torch.randn(x_shape, device=device, dtype=dtype)
        w = torch.randn(w_shape, device=device, dtype=dtype) / (w_shape[1] * layer.r * layer.s) ** 0.5
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            w = w.contiguous(memory_format=torch.channels_last)
        conv_args = dict(stride=layer.stride, padding=layer.padding, groups=layer.groups)
        ref = F.conv2d(x.double().cpu(), w.double().cpu(), **conv_args)
        impls = {"cudnn": lambda: F.conv2d(x, w, **conv_args)} if ON_GPU else {}
        params = kernels.ConvParams.from_shapes(x_shape, w_shape, **conv_args)
        for name in ("auto", *kernels.REGISTRY):
            if name == "auto" or kernels.REGISTRY[name].eligible(params):
                impls[name] = lambda name=name: kernels.conv2d(x, w, **conv_args, algorithm=name)
        for impl, fn in impls.items():
            out = fn()
            rel_err = ((out.double().cpu() - ref).norm() / ref.norm().clamp_min(1e-30)).item()
            ms = _time_ms(fn)
            rows.append(dict(
                suite="resnet50", layer=layer.name, count=count, n=x_shape[0], c=x_shape[1], h=x_shape[2],
                w=x_shape[3], k=w_shape[0], r=layer.r, s=layer.s, stride=layer.stride, padding=layer.padding,
                dilation=1, groups=layer.groups, dtype=str(dtype).replace("torch.", ""),
                layout="channels_last" if channels_last else "nchw", impl=impl, ms=ms,
                full_size_macs=full["macs"], macs=kernels.conv2d_flops(x_shape, w_shape, **conv_args)["macs"],
                tflops=(2 * kernels.conv2d_flops(x_shape, w_shape, **conv_args)["macs"] / (ms * 1e-3) / 1e12)
                if ON_GPU else None,
                rel_err=rel_err,
            ))
            print(f"  {layer.name:<24} {impl:<8} rel_err {rel_err:.1e}  {ms:9.3f} ms", flush=True)
    return rows


def report(rows, meta) -> str:
    lines = [f"# Benchmark: ResNet-50 conv layers ({meta['device']})", ""]
    if not ON_GPU:
        lines += ["**CPU interpreter run: shapes scaled down; timings are Triton-interpreter timings, "
                  "not GPU timings, and support no speed claim.** MACs are for the full-size layer.", ""]
    lines += [f"torch {meta['torch']}, triton {meta['triton']}, cuDNN {meta['cudnn']}, commit {meta['commit']}", "",
              "| layer | count | full-size GMACs | run shape (N,C,H,W)->K | impl | ms | TFLOP/s | rel. error |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tflops = f"{r['tflops']:.1f}" if r["tflops"] is not None else "-"
        lines.append(f"| {r['layer']} | {r['count']} | {r['full_size_macs'] / 1e9:.3f} | "
                     f"({r['n']},{r['c']},{r['h']},{r['w']})->{r['k']} | {r['impl']} | {r['ms']:.3f} | "
                     f"{tflops} | {r['rel_err']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32 if ON_GPU else 1)
    parser.add_argument("--dtype", default="float16" if ON_GPU else "float32")
    parser.add_argument("--layout", choices=["channels_last", "nchw"], default="channels_last")
    args = parser.parse_args(argv)
    if not ON_GPU:
        print("No GPU: running scaled-down layers under the Triton interpreter. "
              "Timings below are NOT GPU timings.", flush=True)
    channel_div, spatial_div = (1, 1) if ON_GPU else (16, 14)
    rows = run(args.batch, getattr(torch, args.dtype), args.layout == "channels_last", channel_div, spatial_div)
    import triton

    meta = dict(
        device=torch.cuda.get_device_name() if ON_GPU else f"cpu-interpreter ({platform.processor() or 'cpu'})",
        torch=torch.__version__, triton=triton.__version__,
        cudnn=torch.backends.cudnn.version() if ON_GPU else None, commit=_commit(),
        interpreter=not ON_GPU,
    )
    slug = (meta["device"].split(" (")[0]).lower().replace(" ", "-")
    out_dir = RESULTS / slug
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(dict(meta, cases=rows), indent=1))
    (out_dir / "report.md").write_text(report(rows, meta))
    print(f"\nwrote {out_dir / 'results.json'} and {out_dir / 'report.md'}")
    bad = [r for r in rows if not r["rel_err"] < (1e-2 if args.dtype != "float32" else 1e-4)]
    if bad:
        print(f"{len(bad)} results disagree with PyTorch", file=sys.stderr)
        return 1
    return 0
