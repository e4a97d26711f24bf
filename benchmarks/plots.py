"""PNG plots (matplotlib, Agg backend): a roofline and per-layer speedup bars from GPU runs,
and the per-algorithm multiply counts of each network (any run)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .report import group_by, impl_order, with_pass  # noqa: E402

MARKERS = "osD^vP*Xhp<>"


def _style(impls: List[str]) -> Dict[str, dict]:
    colors = plt.get_cmap("tab10").colors
    return {name: dict(marker=MARKERS[i % len(MARKERS)], color="black" if name == "cudnn" else colors[i % len(colors)])
            for i, name in enumerate(impls)}


def roofline(rows, peaks: dict, precision: str, title: str, path: Path) -> Path:
    """Arithmetic intensity (FLOP per byte of minimum traffic) vs achieved TFLOP/s, one marker
    per implementation, under the measured compute and bandwidth ceilings."""
    rows = [r for r in rows if r["tflops"]]
    impls = impl_order(rows)
    style = _style(impls)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    intensities = [r["intensity"] for r in rows]
    lo, hi = min(intensities) / 2, max(intensities) * 2
    peak = peaks.get("tflops", {}).get(precision)
    bandwidth = peaks.get("bandwidth_gbs")
    if peak and bandwidth:
        ridge = peak * 1e3 / bandwidth
        xs = sorted({lo, min(max(ridge, lo), hi), hi})
        ax.plot(xs, [min(peak, x * bandwidth / 1e3) for x in xs], color="grey", lw=2,
                label=f"measured roof: {peak:.0f} TFLOP/s, {bandwidth:.0f} GB/s")
    for name in impls:
        mine = [r for r in rows if r["impl"] == name]
        ax.scatter([r["intensity"] for r in mine], [r["tflops"] for r in mine], label=name, s=28, alpha=0.8,
                   facecolors="none" if name == "cudnn" else style[name]["color"],
                   edgecolors=style[name]["color"], marker=style[name]["marker"])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte of minimum traffic)")
    ax.set_ylabel("TFLOP/s (2 × direct MACs / time)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def speedup_bars(rows, title: str, path: Path) -> Path:
    """Per layer: each implementation's speedup over cuDNN (1 = as fast as cuDNN)."""
    layers = list(group_by(rows, "layer"))
    impls = [name for name in impl_order(rows) if name != "cudnn"]
    style = _style(["cudnn"] + impls)
    width = 0.8 / max(len(impls), 1)
    fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(layers) * max(1, len(impls) / 2)), 5))
    for i, name in enumerate(impls):
        values = []
        for (layer,) in layers:
            row = next((r for r in rows if r["layer"] == layer and r["impl"] == name), None)
            values.append(row["speedup"] if row and row["speedup"] else 0.0)
        ax.bar([j + (i - (len(impls) - 1) / 2) * width for j in range(len(layers))], values, width,
               label=name, color=style[name]["color"])
    ax.axhline(1.0, color="black", lw=1)
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([layer for (layer,) in layers], rotation=75, ha="right", fontsize=7)
    ax.set_ylabel("speedup over cuDNN (×)")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=min(len(impls), 4))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def multiplies(layers, suite: str, path: Path) -> Path:
    """Per layer (real shape, per image, times its count): the multiplies each algorithm
    performs, against the direct definition's MACs."""
    algorithms = list(dict.fromkeys(a for layer in layers for a in layer["multiplies"]))
    style = _style(["direct MACs"] + algorithms)
    width = 0.8 / (len(algorithms) + 1)
    fig, ax = plt.subplots(figsize=(max(8, 0.4 * len(layers) * (len(algorithms) + 1) / 2), 5))
    series = [("direct MACs", [layer["count"] * layer["macs"] / 1e6 for layer in layers])]
    for name in algorithms:
        series.append((name, [layer["count"] * layer["multiplies"].get(name, 0) / 1e6 for layer in layers]))
    for i, (name, values) in enumerate(series):
        ax.bar([j + (i - len(algorithms) / 2) * width for j in range(len(layers))], values, width, label=name,
               color="lightgrey" if i == 0 else style[name]["color"])
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([layer["layer"] for layer in layers], rotation=75, ha="right", fontsize=7)
    ax.set_ylabel("millions of multiplies per image (× count)")
    ax.set_title(f"{suite}: multiplies per algorithm (real shapes, 224², missing bar = not applicable)")
    ax.legend(fontsize=8, ncol=min(len(series), 4))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


_SUFFIX = {"forward": "", "backward": "_backward"}


def write_all(out_dir: Path, layers, cases, peaks, on_gpu: bool) -> List[Path]:
    paths = []
    for (suite,), suite_layers in group_by(layers, "suite").items():
        paths.append(multiplies(suite_layers, suite, out_dir / f"multiplies_{suite}.png"))
    if not on_gpu:
        return paths
    cases = with_pass(cases)
    for (precision, layout, n, direction), rows in group_by(cases, "precision", "layout", "n", "pass").items():
        if any(r["tflops"] for r in rows):
            paths.append(roofline(rows, peaks, precision, f"{precision}, {layout}, batch {n}, {direction}: all suites",
                                  out_dir / f"roofline_{precision}_{layout}_b{n}{_SUFFIX[direction]}.png"))
    for (suite, precision, layout, n, direction), rows in group_by(
            cases, "suite", "precision", "layout", "n", "pass").items():
        if any(r["speedup"] for r in rows):
            paths.append(speedup_bars(rows, f"{suite}, {precision}, {layout}, batch {n}, {direction}: speedup over cuDNN",
                                      out_dir / f"speedup_{suite}_{precision}_{layout}_b{n}{_SUFFIX[direction]}.png"))
    return paths
