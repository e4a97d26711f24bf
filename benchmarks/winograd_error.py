"""Error study: how far Winograd F(2x2,3x3) and F(4x4,3x3) are from float64, beside im2col.

For every stride-1 3x3 layer of VGG-16 and ResNet-50 (224x224 input), per dtype, it measures
the relative error ||out - ref|| / ||ref|| of each algorithm, where ref is F.conv2d in float64
on the same (dtype-rounded) operands. Weights are Kaiming-normal (std sqrt(2 / (9 C))), inputs
post-ReLU-like (relu of a standard normal), no bias: the data a trained CNN's 3x3 layers see.
Each Winograd tile runs on both of its paths (``kernels/ops/winograd/plan.py``): the table
shows the three-stage GEMM path, the summary rows the worst ratio of each path.

    python -m benchmarks.winograd_error            # GPU: full-size layers, batch 1
    python -m benchmarks.winograd_error --small    # scaled down (the default without a GPU,
                                                   # where kernels run under Triton's interpreter)

Prints a Markdown table (the one in docs/winograd.md) and, with ``--json``, the rows.
``tests/test_winograd.py`` asserts bounds derived from this table with ``relative_error``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, replace
from typing import Dict, List

import torch

ALGORITHMS = ("im2col", "winograd_f2", "winograd_f4")
DTYPES = ("float32", "float16", "bfloat16")
PATHS = ("three_stage", "fused")  # kernels.ops.winograd.plan.PATHS (not imported: triton loads late)


@dataclass(frozen=True)
class Layer:
    name: str
    c: int
    k: int
    hw: int
    n: int = 1

    def scaled(self, channel_div: int = 8, max_hw: int = 12) -> "Layer":
        """Channels / 8 (at least 3) and at most 12x12 pixels: the interpreter's size."""
        return replace(self, c=max(min(self.c, 3), self.c // channel_div), k=max(3, self.k // channel_div),
                       hw=min(self.hw, max_hw))


# The stride-1 3x3 convolutions of torchvision's VGG-16 and ResNet-50 at 224x224 (each shape
# once; ResNet-50's stride-2 3x3 layers are not Winograd's).
LAYERS = [
    Layer("vgg16 conv1_1", 3, 64, 224), Layer("vgg16 conv1_2", 64, 64, 224),
    Layer("vgg16 conv2_1", 64, 128, 112), Layer("vgg16 conv2_2", 128, 128, 112),
    Layer("vgg16 conv3_1", 128, 256, 56), Layer("vgg16 conv3_x", 256, 256, 56),
    Layer("vgg16 conv4_1", 256, 512, 28), Layer("vgg16 conv4_x", 512, 512, 28),
    Layer("vgg16 conv5_x", 512, 512, 14),
    Layer("resnet50 layer1", 64, 64, 56), Layer("resnet50 layer2", 128, 128, 28),
    Layer("resnet50 layer3", 256, 256, 14), Layer("resnet50 layer4", 512, 512, 7),
]


def layer_inputs(layer: Layer, dtype: torch.dtype, device, seed: int = 0):
    """Post-ReLU-like input and Kaiming-normal weight, generated in fp32 and rounded to dtype."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.relu(torch.randn(layer.n, layer.c, layer.hw, layer.hw, generator=gen))
    w = torch.randn(layer.k, layer.c, 3, 3, generator=gen) * math.sqrt(2.0 / (9 * layer.c))
    fmt = torch.channels_last
    return (x.to(device, dtype).contiguous(memory_format=fmt), w.to(device, dtype).contiguous(memory_format=fmt))


def relative_error(algorithm: str, layer: Layer, dtype: torch.dtype, device, seed: int = 0, path=None) -> float:
    """||out - ref|| / ||ref|| against F.conv2d in float64 on the same rounded operands.

    ``path``: for a Winograd tile, run that path instead of the one the planner picks.
    """
    import torch.nn.functional as F

    import kernels

    x, w = layer_inputs(layer, dtype, device, seed)
    with torch.no_grad():
        if path is None:
            out = kernels.conv2d(x, w, padding=1, algorithm=algorithm)
        else:
            from kernels.ops.winograd.forward import winograd_forward
            from kernels.ops.winograd.transforms import TILES

            params = kernels.ConvParams.from_tensors(x, w, None, padding=1)
            out = winograd_forward(TILES[algorithm], x, w, None, params, path=path)
    ref = F.conv2d(x.cpu().double(), w.cpu().double(), padding=1)
    return ((out.cpu().double() - ref).norm() / ref.norm()).item()


def study(layers: List[Layer], device) -> List[Dict]:
    rows = []
    for seed, layer in enumerate(layers):
        row = {"layer": layer.name, "shape": f"{layer.n}x{layer.c}x{layer.hw}x{layer.hw} k{layer.k}"}
        for dtype in DTYPES:
            row[f"{dtype}/im2col"] = relative_error("im2col", layer, getattr(torch, dtype), device, seed)
            for algorithm in ALGORITHMS[1:]:
                for path in PATHS:
                    row[_key(dtype, algorithm, path)] = relative_error(algorithm, layer, getattr(torch, dtype), device,
                                                                       seed, path)
        rows.append(row)
        print(f"  {row['layer']}: done", file=sys.stderr, flush=True)
    return rows


def _key(dtype: str, algorithm: str, path: str = PATHS[0]) -> str:
    """Row key: the three-stage path is the plain "dtype/algorithm" column of the table."""
    return f"{dtype}/{algorithm}" if algorithm == "im2col" or path == PATHS[0] else f"{dtype}/{algorithm}/{path}"


def summary(rows: List[Dict]) -> Dict[str, float]:
    """Per dtype, tile and path: the largest ratio of its error to im2col's on the same layer."""
    out = {}
    for dtype in DTYPES:
        for algorithm in ALGORITHMS[1:]:
            for path in PATHS:
                key = _key(dtype, algorithm, path)
                out[key] = max(r[key] / r[f"{dtype}/im2col"] for r in rows)
    return out


def markdown(rows: List[Dict], note: str) -> str:
    short = {"im2col": "im2col", "winograd_f2": "F(2,3)", "winograd_f4": "F(4,3)"}
    head = ["layer", "shape"] + [f"{d} {short[a]}" for d in DTYPES for a in ALGORITHMS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["layer"], r["shape"]] + [f"{r[f'{d}/{a}']:.1e}" for d in DTYPES for a in ALGORITHMS]
        lines.append("| " + " | ".join(cells) + " |")
    worst = summary(rows)
    for path, label in zip(PATHS, ("**worst ratio to im2col**", "**worst ratio, fused kernel**")):
        cells = [label, ""]
        for d in DTYPES:
            cells += ["1"] + [f"{worst[_key(d, a, path)]:.1f}x" for a in ALGORITHMS[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return note + "\n\n" + "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="scaled-down layers (forced without a GPU)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available()
    if not gpu:
        os.environ["TRITON_INTERPRET"] = "1"  # a script, like the tests: set before triton loads
    small = args.small or not gpu
    layers = [layer.scaled() for layer in LAYERS] if small else LAYERS
    device = "cuda" if gpu else "cpu"
    if gpu:
        where = f"{torch.cuda.get_device_name()}, full-size layers, batch 1"
    else:
        where = "CPU, Triton interpreter"
    if small:
        where += ", layers scaled down to channels / 8 and at most 12x12 pixels, batch 1"
    rows = study(layers, device)
    note = (f"Relative error ||out - ref|| / ||ref|| against float64 ({where}); Kaiming-normal weights, "
            "post-ReLU inputs, channels_last, seed = row index. F(2,3) / F(4,3): the three-stage GEMM path; "
            "the last row: the fused kernel.")
    print(markdown(rows, note))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"where": where, "rows": rows, "worst_ratio_to_im2col": summary(rows)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
