"""The Markdown report and the summary statistics behind it (geomean speedups, winners)."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence

INTERPRETER_WARNING = (
    "**No GPU: this is a Triton-interpreter run on the CPU.** Layer shapes are scaled down from the "
    "real ones (the FLOP tables are for the real shapes); the times are interpreter times, NOT GPU "
    "timings, and no speed claim is made from them. What this run does establish: which algorithms "
    "apply to each layer, what each multiplies, and that each one's output matches PyTorch's."
)

VARIANT_CASES = (
    "The `dcgan`, `unet` and `mamba_conv1d` suites are the ConvTranspose2d layers of DCGAN's generator "
    "(latent to 64×64) and of U-Net's decoder (256×256), and Mamba-1.4B's depthwise causal Conv1d "
    "(4096 channels, kernel 4, length 2048), from `benchmarks/variant_networks.py`; a transposed layer's "
    "MACs are counted as `torch.utils.flop_counter` counts them. The `r3d_18` suite is the Conv3d layers of "
    "R3D-18 on 16-frame 112×112 clips (batch 8 on a GPU unless `--batches` says otherwise), against "
    "`F.conv3d`; its rows are `cudnn`, `auto` and the algorithms with 3-D kernels (`im2col`, `pointwise`).")


def geomean(values: Sequence[float], weights: Optional[Sequence[float]] = None) -> Optional[float]:
    values = list(values)
    if not values:
        return None
    weights = list(weights) if weights is not None else [1.0] * len(values)
    total = sum(weights)
    return math.exp(sum(w * math.log(v) for v, w in zip(values, weights)) / total) if total else None


def _fmt(value, spec=".3f", missing="-"):
    return missing if value is None else format(value, spec)


def _shape(row) -> str:
    op = row.get("op", "conv2d")
    if op.endswith("1d"):
        text = f"{row['c']}x{row['w']}→{row['k']} k{row['s']}"
    elif op.endswith("3d"):
        text = f"{row['c']}x{row['d']}x{row['h']}x{row['w']}→{row['k']} {row['t']}x{row['r']}x{row['s']}"
    else:
        text = f"{row['c']}x{row['h']}x{row['w']}→{row['k']} {row['r']}x{row['s']}"
    if row["stride"] != 1:
        text += f" s{row['stride'] if isinstance(row['stride'], int) else tuple(row['stride'])}"
    if row["groups"] != 1:
        text += " dw" if row["groups"] == row["c"] == row["k"] else f" g{row['groups']}"
    return text + (" transposed" if op.startswith("conv_transpose") else "")


def _table(header: Sequence[str], rows: Iterable[Sequence]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def with_pass(cases) -> List[dict]:
    """The case rows, each with its ``pass`` (rows written before backward runs existed are forward)."""
    return [dict(c, **{"pass": c.get("pass", "forward")}) for c in cases]


def group_by(rows, *keys) -> Dict[tuple, list]:
    groups: Dict[tuple, list] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    return groups


def impl_order(rows) -> List[str]:
    """cudnn, auto, the registry's algorithms in order of appearance, then the rest."""
    seen = []
    for row in rows:
        if row["impl"] not in seen:
            seen.append(row["impl"])
    head = [name for name in ("cudnn", "auto") if name in seen]
    return head + [name for name in seen if name not in head]


def speedup_summary(rows) -> Dict[str, dict]:
    """Per implementation (other than cuDNN): geomean speedup over cuDNN across the layers it
    ran on, weighted by each layer's count in the network and unweighted, plus the network's
    conv time (sum of count x ms) relative to cuDNN's on the same layers."""
    by_layer = group_by(rows, "layer")
    summary = {}
    for impl in impl_order(rows):
        if impl == "cudnn":
            continue
        speedups, weights, ours_total, cudnn_total = [], [], 0.0, 0.0
        for layer_rows in by_layer.values():
            mine = next((r for r in layer_rows if r["impl"] == impl and r["speedup"]), None)
            cudnn = next((r for r in layer_rows if r["impl"] == "cudnn" and r["ms"]), None)
            if mine is None or cudnn is None:
                continue
            speedups.append(mine["speedup"])
            weights.append(mine["count"])
            ours_total += mine["count"] * mine["ms"]
            cudnn_total += mine["count"] * cudnn["ms"]
        if speedups:
            summary[impl] = dict(
                layers=len(speedups), weighted=geomean(speedups, weights), unweighted=geomean(speedups),
                time_ratio=cudnn_total / ours_total if ours_total else None,
            )
    return summary


def winners(rows) -> Dict[str, int]:
    """How many layers each implementation is fastest on (``auto`` excluded: it is one of the others)."""
    wins: Dict[str, int] = defaultdict(int)
    for layer_rows in group_by(rows, "layer").values():
        timed = [r for r in layer_rows if r["ms"] and r["impl"] != "auto"]
        if timed:
            wins[min(timed, key=lambda r: r["ms"])["impl"]] += 1
    return dict(wins)


def flop_section(layers: List[dict], algorithms: Sequence[str]) -> List[str]:
    lines = ["Per image (batch 1) at the real layer shapes; batch N multiplies every count by N. The "
             "algorithm columns give the multiplies the algorithm performs as a fraction of the direct "
             "definition's MACs (Winograd's transforms excluded; see `kernels.conv2d_flops`); `-` where "
             "the algorithm does not apply.", ""]
    header = ["layer", "count", "shape", "MMACs", "MMACs × count", *algorithms]
    body = []
    for layer in layers:
        cells = [layer["layer"], layer["count"], _shape(layer), f"{layer['macs'] / 1e6:.1f}",
                 f"{layer['count'] * layer['macs'] / 1e6:.1f}"]
        for name in algorithms:
            mult = layer["multiplies"].get(name)
            cells.append("-" if mult is None else f"{mult / layer['macs']:.2f}")
        body.append(cells)
    total = sum(layer["count"] * layer["macs"] for layer in layers)
    totals = ["**total**", sum(layer["count"] for layer in layers), "", "", f"**{total / 1e6:.1f}**"]
    for name in algorithms:
        covered = [layer for layer in layers if name in layer["multiplies"]]
        if covered:
            mult = sum(layer["count"] * layer["multiplies"][name] for layer in covered)
            macs = sum(layer["count"] * layer["macs"] for layer in covered)
            totals.append(f"{mult / macs:.2f} ({len(covered)} layers)")
        else:
            totals.append("-")
    return lines + _table(header, body + [totals])


def gpu_layer_table(rows) -> List[str]:
    impls = impl_order(rows)
    header = ["layer", "count", "shape", "GFLOP"] + [
        f"{name} ms" + ("" if name == "cudnn" else " (× cuDNN)") for name in impls
    ] + ["fastest", "cuDNN TFLOP/s (% peak, bound)", "max rel. err (impl)"]
    body = []
    for layer_rows in group_by(rows, "layer").values():
        first = layer_rows[0]
        by_impl = {r["impl"]: r for r in layer_rows}
        cells = [first["layer"], first["count"], _shape(first), f"{2 * first['macs'] / 1e9:.2f}"]
        for name in impls:
            r = by_impl.get(name)
            if r is None:
                cells.append("")
            elif r["ms"] is None:
                cells.append("failed")
            else:
                mark = "" if r["ok"] else " ✗"
                cells.append(f"{r['ms']:.3f}" + (f" ({r['speedup']:.2f}×)" if r["speedup"] else "") + mark)
        timed = [r for r in layer_rows if r["ms"] and r["impl"] != "auto"]
        cells.append(min(timed, key=lambda r: r["ms"])["impl"] if timed else "-")
        c = by_impl.get("cudnn")
        cells.append(f"{c['tflops']:.1f} ({c['pct_peak']:.0f}%, {c['bound']})" if c and c.get("pct_peak") is not None
                     else (f"{c['tflops']:.1f}" if c and c["tflops"] else "-"))
        ours = [r for r in layer_rows if r["rel_err"] is not None and r["impl"] != "cudnn"]
        worst = max(ours, key=lambda r: r["rel_err"], default=None)
        cells.append(f"{worst['rel_err']:.1e} ({worst['impl']})" if worst else "-")
        body.append(cells)
    return _table(header, body)


def cpu_layer_table(rows) -> List[str]:
    impls = impl_order(rows)
    header = ["layer", "count", "real shape", "run shape (scaled)"] + [f"{name}: rel. err" for name in impls] + [
        "interpreter s (all impls)"]
    body = []
    for layer_rows in group_by(rows, "layer").values():
        first = layer_rows[0]
        by_impl = {r["impl"]: r for r in layer_rows}
        real = first.get("full", first)
        cells = [first["layer"], first["count"], _shape(real), f"{first['n']}x{_shape(first)}"]
        for name in impls:
            r = by_impl.get(name)
            if r is None:
                cells.append("")
            elif r["rel_err"] is None:
                cells.append("failed")
            else:
                cells.append(f"{r['rel_err']:.1e}" + (" ✓" if r["ok"] else " ✗"))
        cells.append(f"{sum(r['ms'] or 0 for r in layer_rows) / 1e3:.2f}")
        body.append(cells)
    return _table(header, body)


def summary_table(rows) -> List[str]:
    summary = speedup_summary(rows)
    wins = winners(rows)
    header = ["impl", "layers", "geomean × cuDNN (count-weighted)", "geomean × cuDNN (unweighted)",
              "speedup on the network's total conv time", "fastest on (layers)"]
    body = [[name, s["layers"], f"{s['weighted']:.2f}×", f"{s['unweighted']:.2f}×",
             _fmt(s["time_ratio"], ".2f") + "×", wins.get(name, 0)] for name, s in summary.items()]
    body.append(["cudnn", "", "1.00×", "1.00×", "1.00×", wins.get("cudnn", 0)])
    return _table(header, body)


def _model_name(m) -> str:
    args = ", ".join(f"{k}={v}" for k, v in (m.get("builder_args") or {}).items())
    return f"{m['model']} ({args})" if args else m["model"]


def model_table(models, on_gpu: bool) -> List[str]:
    impls = [name for name in ("eager", "compile", "kernels", "kernels_fused") if any(m["impl"] == name for m in models)]
    if on_gpu:
        columns = [f"{name} ms" + ("" if name == "eager" else " (× eager)") for name in impls]
    else:
        columns = [f"{name}: correct (interpreter s)" if name != "eager" else "eager (PyTorch CPU)" for name in impls]
    header = ["model", "batch", "image", "precision", "layout"] + columns + [
        "rel. err vs fp32 eager: eager itself", "ours (worst)"]
    body = []
    for key, group in group_by(models, "model", "batch", "image", "precision", "layout").items():
        by_impl = {m["impl"]: m for m in group}
        sample = group[0].get("input")  # one sample's size; clips show frames x height x width
        clip = sample is not None and len(sample) == 4
        cells = [_model_name(group[0]), key[1], "x".join(map(str, sample[1:])) if clip else key[2]] + list(key[3:])
        for name in impls:
            m = by_impl.get(name)
            if m is None:
                cells.append("")
            elif m["ms"] is None:
                cells.append("failed")
            elif on_gpu:
                cells.append(f"{m['ms']:.2f}" + (f" ({m['speedup_vs_eager']:.2f}×)" if m["speedup_vs_eager"] else "")
                             + ("" if m["ok"] else " ✗"))
            elif name == "eager":
                cells.append("reference")
            else:
                cells.append(("✓" if m["ok"] else "✗") + f" ({m['ms'] / 1e3:.1f} s)")
        eager = by_impl.get("eager")
        cells.append(_fmt(eager and eager["rel_err"], ".1e"))
        errs = [(m["rel_err"], m["impl"]) for m in group if m["rel_err"] is not None and m["impl"] not in ("eager", "compile")]
        cells.append(f"{max(errs)[0]:.1e} ({max(errs)[1]})" if errs else "-")
        body.append(cells)
    return _table(header, body)


def headline(cases, models) -> List[str]:
    """The numbers for the README: per suite and setting, auto and the best of ours vs cuDNN."""
    header = ["suite", "precision", "layout", "batch", "pass", "auto: speedup over cuDNN (geomean, count-weighted)",
              "auto: speedup on the network's total conv time", "best of our algorithms per layer (geomean, weighted)"]
    body = []
    for key, rows in group_by(cases, "suite", "precision", "layout", "n", "pass").items():
        auto = speedup_summary(rows).get("auto")
        if not auto:
            continue
        best = []
        for layer_rows in group_by(rows, "layer").values():
            cudnn = next((r for r in layer_rows if r["impl"] == "cudnn" and r["ms"]), None)
            ours = [r for r in layer_rows if r["impl"] not in ("cudnn", "auto", "inductor") and r["ms"] and r["ok"]]
            if cudnn and ours:
                best.append((cudnn["ms"] / min(r["ms"] for r in ours), layer_rows[0]["count"]))
        body.append([*key, f"{auto['weighted']:.2f}×", _fmt(auto["time_ratio"], ".2f") + "×",
                     (f"{geomean([b for b, _ in best], [c for _, c in best]):.2f}×" if best else "-")])
    lines = _table(header, body) if body else []
    if models:
        lines += model_table(models, True)
    return lines


def ridge_points(peaks) -> Dict[str, float]:
    """precision -> the roofline's ridge point in FLOP per byte (measured peak / measured bandwidth):
    below it a layer is memory-bound. The device's own: about 295 on an H100 (3.35 TB/s HBM3) and
    206 on an H200 (4.8 TB/s HBM3e) by the datasheets, at the same tensor-core rate."""
    bandwidth = peaks.get("bandwidth_gbs")
    if not bandwidth:
        return {}
    return {name: value * 1e12 / (bandwidth * 1e9) for name, value in peaks.get("tflops", {}).items()}


def ridge_sentence(peaks) -> str:
    ridges = ridge_points(peaks)
    if not ridges:
        return ""
    return (" Ridge points (measured peak / measured bandwidth), below which a layer is memory-bound: "
            + ", ".join(f"{name} {value:.0f} FLOP/byte" for name, value in ridges.items()) + ".")


def method_section(meta, peaks, on_gpu: bool) -> List[str]:
    lines = ["## How it was measured", ""]
    if on_gpu:
        tf = peaks.get("tflops", {})
        lines += [
            "* Cases: every unique `nn.Conv2d` of each network at 224×224, found by running the `cnn` model once "
            "with forward hooks (shapes on the meta device); *count* is how often the network runs that layer. "
            + VARIANT_CASES,
            "* Implementations: `cudnn` = `torch.nn.functional.conv2d` (`conv_transpose2d`, `conv1d` for those "
            "layers) with `torch.backends.cudnn.benchmark = True` "
            f"(cuDNN {meta.get('cudnn')}); `auto` and every registered algorithm that applies to the layer "
            "(`kernels.conv2d(..., algorithm=...)`, `kernels.conv_transpose2d`, `kernels.conv1d`). `auto` "
            + ("picked by measured time (`KERNELS_AUTOTUNE` on)." if meta.get("auto_timing_autotune")
               else "follows the routing table (`KERNELS_AUTOTUNE` off)."),
            "* Timing: warm-up calls first (Triton autotuning, cuDNN's algorithm search), then "
            "`triton.testing.do_bench` (device events, L2 flushed before each run, median). Cases whose fastest "
            "call is under 0.1 ms are re-timed for every implementation as a CUDA graph of many unrolled calls "
            "(`do_bench_cudagraph`, median), so launch overhead does not dominate; the `timing` field of each "
            "JSON row says which. Inputs rotate through independent copies (several times the L2 size) so "
            "that back-to-back calls do not hit L2.",
            "* TFLOP/s = 2 × the direct definition's MACs / time, for every algorithm (Winograd does fewer "
            "multiplies but is credited with the same work). % of peak: the roofline's ridge point "
            "(measured compute peak / measured bandwidth) decides whether a layer is compute- or "
            "memory-bound by its minimum traffic (input + weight + output once); the percentage is of that roof.",
            f"* Peaks, measured at start: dense {peaks.get('matmul_size')}³ matmul through cuBLAS: "
            + ", ".join(f"{name} {value:.0f} TFLOP/s" for name, value in tf.items())
            + f"; device-to-device copy of {peaks.get('copy_bytes', 0) / 2**30:.0f} GiB: "
            f"{peaks.get('bandwidth_gbs', 0):.0f} GB/s (read + write)." + ridge_sentence(peaks),
            "* fp32 runs twice: `float32` = IEEE (TF32 off for cuDNN, cuBLAS and our kernels), `tf32` = TF32 on.",
            "* Correctness: each timed implementation's output on the first input set is compared with cuDNN "
            "in fp32 with TF32 off on the same inputs: relative error = ‖out − ref‖₂ / ‖ref‖₂; ✗ marks "
            "an error above the precision's tolerance (fp16 1e-2, bf16 5e-2, fp32 1e-4, TF32 1e-2).",
        ]
    else:
        lines += [
            "* Cases: every unique `nn.Conv2d` of each network at 224×224, found by running the `cnn` model once "
            "with forward hooks; each is run scaled down (channels ÷16, pixels ÷14, kernel size, stride, padding, "
            "dilation and group structure kept, so the same algorithms apply) under `TRITON_INTERPRET=1`. "
            + VARIANT_CASES + " (Mamba's scaled by ÷256 channels, ÷64 length.)",
            "* Correctness: relative error ‖out − ref‖₂ / ‖ref‖₂ against PyTorch in float64 on the same inputs.",
            "* The times are wall-clock times of Triton's CPU interpreter (numpy), which say nothing about GPU speed.",
            "* No cuDNN column: there is no GPU.",
        ]
    return lines + [""]


def sessions_of(meta) -> List[dict]:
    """The GPU sessions (``benchmarks/gpu_session.py``) a results file holds: one, or several merged."""
    return list(meta.get("sessions") or ([meta["session"]] if meta.get("session") else []))


SMOKE_FAILURES_SHOWN = 40
SMOKE_FAILURES_PRINTED = 15  # in the summary a device command's output ends with


def session_section(session: dict, compact: bool = False) -> List[str]:
    """What one GPU session ran: each stage's budget, time and outcome, the smoke's failures, the
    large-input check (``compact``: without the column that says what each stage measures)."""
    lines = [f"## GPU session `{session.get('command')}`", "",
             f"Started {session.get('started', '?')}; {session.get('elapsed_s', 0):.0f} s of a "
             f"{session.get('budget_s', 0):.0f} s budget ({session.get('margin_s', 0):.0f} s of it kept as margin); "
             f"commit `{session.get('commit', '?')}` ({session.get('commit_source', '?')}), source fingerprint "
             f"`{session.get('source_fingerprint', '?')}`.", ""]
    environment = session.get("environment")
    if environment:
        lines += [environment_sentence(environment), ""]
    header = ["stage"] + ([] if compact else ["what it measures"]) + ["budget s", "given s", "took s", "steps",
                                                                      "status"]
    lines += _table(header, [
        [st["name"]] + ([] if compact else [st.get("describes", "")]) + [
            _fmt(st.get("budget_s"), ".0f"), _fmt(st.get("timeout_s"), ".0f"), _fmt(st.get("elapsed_s"), ".0f"),
            f"{st['steps_done']}/{st['steps']}" if st.get("steps") is not None else "", st["status"]]
        for st in session.get("stages", [])])
    for name, smoke in session.get("pytest", {}).items():
        lines += [f"**{name}**: " + smoke_sentence(smoke), ""]
        failures = smoke.get("failed", [])
        shown, chars = (SMOKE_FAILURES_PRINTED, 150) if compact else (SMOKE_FAILURES_SHOWN, 300)
        lines += [f"* `{f['nodeid']}` ({f['when']}): {f['message'][:chars]}" for f in failures[:shown]]
        if len(failures) > shown:
            lines.append(f"* ... and {len(failures) - shown} more (see report.md / results.json)")
        lines += [""] if failures else []
    large = session.get("large_input")
    if large:
        lines += ["**Input past 2³¹ elements**: " + large_input_sentence(large), ""]
    return lines


def environment_sentence(env: dict) -> str:
    device = f"{env.get('device')}" + (f" ({env['sm_count']} SMs, {env.get('memory_gib')} GiB, sm_{str(env.get('capability', '')).replace('.', '')})"
                                       if env.get("sm_count") else "")
    versions = ", ".join(f"{label} {env[key]}" for key, label in (
        ("driver", "driver"), ("torch", "torch"), ("cuda", "CUDA"), ("cudnn", "cuDNN"), ("triton", "triton"),
        ("python", "Python")) if env.get(key))
    return f"Environment: {device}; {versions}."


def smoke_sentence(smoke: dict) -> str:
    text = (f"{smoke.get('passed', 0)} passed, {len(smoke.get('failed', []))} failed, {smoke.get('skipped', 0)} "
            f"skipped, {smoke.get('not_run', 0)} not run of {smoke.get('collected', 0)} collected")
    if smoke.get("stopped"):
        text += " (cut by its time budget)"
    return text + "."


def large_input_sentence(large: dict) -> str:
    if large.get("skipped"):
        return f"not run: {large['skipped']}."
    parts = []
    for what in ("forward", "dgrad"):
        check = large.get(what)
        if check:
            parts.append(f"{what} {'ok' if check['ok'] else 'WRONG'} (relative error {check['rel_err']:.1e}, "
                         f"worst chunk {check['worst_chunk_rel_err']:.1e}, past 2³¹ {_fmt(check['past_2_31_rel_err'], '.1e')}, "
                         f"NaN {check['nan']})")
        elif large.get(f"{what}_failed"):
            parts.append(f"{what} FAILED: {large[f'{what}_failed']}")
    shape = "x".join(str(d) for d in large.get("input_shape", []))
    return (f"input {shape} ({large.get('input_elements', 0):,} elements, {large.get('dtype')}, {large.get('layout')}), "
            f"algorithm `{large.get('algorithm')}` against {large.get('reference')}: " + "; ".join(parts) + ".")


def render(meta, peaks, layers, cases, models, on_gpu: bool) -> str:
    cases = with_pass(cases)
    lines = [f"# Convolution benchmarks: {meta.get('device') or 'no device recorded'}", ""]
    if not on_gpu:
        lines += [INTERPRETER_WARNING, ""]
    versions = [f"{label} {meta[key]}" for key, label in (
        ("torch", "torch"), ("triton", "triton"), ("cuda", "CUDA"), ("cudnn", "cuDNN"), ("driver", "driver"))
        if meta.get(key)]
    lines += [f"{meta.get('date', '?')}; {', '.join(versions)}; commit `{meta.get('commit', 'unknown')}`.", ""]
    if on_gpu and (cases or models):
        lines += ["## Headline", ""] + headline(cases, models)
    for session in sessions_of(meta):
        lines += session_section(session)
    for suite, suite_layers in group_by(layers, "suite").items():
        suite = suite[0]
        algorithms = list(dict.fromkeys(a for layer in suite_layers for a in layer["multiplies"]))
        lines += [f"## {suite}", "", "### FLOPs", ""] + flop_section(suite_layers, algorithms)
        for (precision, layout, n, direction), rows in group_by([c for c in cases if c["suite"] == suite],
                                                                "precision", "layout", "n", "pass").items():
            lines += [f"### {precision}, {layout}, batch {n}" + (", backward" if direction == "backward" else ""), ""]
            if on_gpu:
                lines += gpu_layer_table(rows) + ["Summary over the layers:", ""] + summary_table(rows)
            else:
                lines += cpu_layer_table(rows)
    if models:
        lines += ["## End to end", ""]
        if not on_gpu:
            lines += ["Interpreter run at a reduced input size: correctness of each variant against eager "
                      "PyTorch only; times are not GPU timings.", ""]
        lines += model_table(models, on_gpu)
    lines += method_section(meta, peaks, on_gpu)
    return "\n".join(lines) + "\n"
