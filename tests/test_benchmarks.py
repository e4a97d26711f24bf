"""The benchmark machinery (``python -m benchmarks``) in its CPU mode, plus its GPU report path
on synthetic timings (no GPU here: the figures fed in below are made up for the test and
never written to benchmarks/results)."""
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import benchmarks.run as bench_run
import cnn
from benchmarks.layers import eligible_algorithms
from benchmarks.networks import SUITES, conv_layers, scaled_down, suite_cases
from benchmarks.report import geomean, render, speedup_summary, winners
from benchmarks.timing import bound_and_fraction

CASE_KEYS = {"suite", "layer", "count", "n", "c", "h", "w", "k", "r", "s", "stride", "padding", "dilation",
             "groups", "dtype", "layout", "impl", "ms", "tflops", "rel_err"}
MODEL_KEYS = {"model", "batch", "dtype", "layout", "impl", "ms"}


class Tiny(nn.Module):
    """A stem, the same depthwise block twice, a 1x1 head: three unique convs, one used twice."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(cnn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(*[
            nn.Sequential(cnn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
            for _ in range(2)])
        self.head = cnn.Conv2d(8, 16, 1)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def test_conv_layers_finds_each_unique_layer_with_its_count():
    with torch.device("meta"):
        model = Tiny()
    cases = conv_layers(model, (1, 3, 224, 224), "tiny")
    assert [(c.layer, c.count, c.c, c.h, c.k, c.r, c.stride, c.groups, c.bias) for c in cases] == [
        ("stem.0", 1, 3, 224, 8, 3, 2, 1, False),
        ("blocks.0.0", 2, 8, 112, 8, 3, 1, 8, False),
        ("head", 1, 8, 112, 16, 1, 1, 1, True),
    ]
    # The model is left as it was: its convolutions still run on our kernels.
    assert all(type(m) is cnn.Conv2d and "forward" not in m.__dict__ for m in model.modules() if isinstance(m, nn.Conv2d))


# Published GMACs (conv + linear) at 224x224 (R3D-18: one 16x112x112 clip) and the networks'
# conv-layer counts; the linear layers' MACs are subtracted to compare the convolutions alone.
NETWORKS = {
    "resnet50": (4.089e9 - 2048 * 1000, 53),
    "vgg16": (15.47e9 - (25088 * 4096 + 4096 * 4096 + 4096 * 1000), 13),
    "mobilenet_v2": (0.301e9 - 1280 * 1000, 52),
    "efficientnet_b0": (0.386e9 - 1280 * 1000, 81),
    "densenet121": (2.834e9 - 1024 * 1000, 120),
    "r3d_18": (40.697e9 - 512 * 400, 20),
    # ConvNeXt-Tiny: torchvision's 4.456 G less the blocks' MLPs (8 c^2 per pixel) and the head.
    "convnext_tiny": (4.456e9 - 768 * 1000 - sum(n * 8 * c * c * (56 >> i) ** 2 for i, (c, n) in
                                                 enumerate(zip((96, 192, 384, 768), (3, 3, 9, 3)))), 22),
    # RepLKNet-31B's large-kernel layers: its paper's channels, blocks, kernels and stage sizes.
    "replknet31b": (sum(n * c * k * k * (56 >> i) ** 2 for i, (c, n, k) in
                        enumerate(zip((128, 256, 512, 1024), (2, 2, 18, 2), (31, 29, 27, 13)))), 24),
}


def _layer_macs(c) -> int:
    """MACs of one "same"-padded layer: outputs (input size / stride per axis) x reduction."""
    sizes, kernel = ((c.d, c.h, c.w), c.t * c.r * c.s) if c.op == "conv3d" else ((c.h, c.w), c.r * c.s)
    strides = (c.stride,) * len(sizes) if isinstance(c.stride, int) else c.stride
    return c.k * c.c // c.groups * kernel * math.prod(math.ceil(n / s) for n, s in zip(sizes, strides))


@pytest.mark.parametrize("suite", list(SUITES))
def test_suite_cases_match_the_published_network(suite):
    cases = suite_cases(suite, batch=1)
    macs = sum(c.count * _layer_macs(c) for c in cases)
    published_macs, convs = NETWORKS[suite]
    assert sum(c.count for c in cases) == convs
    assert abs(macs - published_macs) / published_macs < 0.005
    # Scaling a layer down for the interpreter keeps the algorithms that apply to it.
    for case in cases:
        assert eligible_algorithms(scaled_down(case, 16, 14)) == eligible_algorithms(case), case.layer


@pytest.mark.skipif(torch.cuda.is_available(), reason="the benchmarks' CPU mode; on a GPU they time (make bench)")
def test_cpu_run_writes_the_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(SUITES, "tiny", lambda **kwargs: Tiny())
    monkeypatch.setattr(bench_run, "CPU_MODELS", {"tiny": {}})
    monkeypatch.setattr(bench_run, "CPU_MODEL_IMAGE", 16)
    plans = []  # the H100 launch plan runs in a subprocess of its own (see the test below)
    monkeypatch.setattr(bench_run, "write_launch_plan", lambda args: plans.append(args.suites) or 0)
    assert bench_run.main(["--suites", "tiny", "--out", str(tmp_path)]) == 0
    assert "NOT GPU timings" in capsys.readouterr().out
    assert plans == [["tiny"]]

    data = json.loads((tmp_path / "results.json").read_text())
    assert {"device", "torch", "triton", "cudnn", "commit", "peaks", "cases", "models"} <= set(data)
    assert data["interpreter"] and data["peaks"] == {}
    impls = {row["impl"] for row in data["cases"]}
    assert {"auto", "im2col"} <= impls and "cudnn" not in impls
    for row in data["cases"]:
        assert CASE_KEYS <= set(row)
        assert row["ok"] and row["rel_err"] < 1e-5 and row["ms"] > 0
        assert row["tflops"] is None and row["speedup"] is None  # no speed figures from the interpreter
        assert row["full"]["h"] > row["h"]  # run scaled down, real shape recorded
    assert {row["layer"] for row in data["cases"]} == {"stem.0", "blocks.0.0", "head"}
    assert {(m["impl"], m["ok"]) for m in data["models"]} >= {("eager", True), ("kernels", True)}
    assert all(MODEL_KEYS <= set(m) for m in data["models"])
    report = (tmp_path / "report.md").read_text()
    assert "NOT GPU timings" in report and "## Headline" not in report
    assert "× cuDNN" not in report and "× eager" not in report and "TFLOP/s" not in report
    png = (tmp_path / "multiplies_tiny.png").read_bytes()
    assert png.startswith(b"\x89PNG")

    # A second run with --merge adds a precision and keeps the first run's rows.
    assert bench_run.main(["--suites", "tiny", "--dtypes", "float16", "--no-models", "--merge",
                           "--out", str(tmp_path)]) == 0
    merged = json.loads((tmp_path / "results.json").read_text())
    assert {r["precision"] for r in merged["cases"]} == {"float32", "float16"}
    assert len(merged["cases"]) > len(data["cases"]) and merged["models"] == data["models"]
    assert all(r["ok"] for r in merged["cases"])

    # --passes backward: every layer's gradients on our kernels against float64, forward rows kept.
    assert bench_run.main(["--suites", "tiny", "--passes", "backward", "--no-models", "--merge",
                           "--out", str(tmp_path)]) == 0
    both = json.loads((tmp_path / "results.json").read_text())
    backward = [r for r in both["cases"] if r["pass"] == "backward"]
    assert len(both["cases"]) == len(merged["cases"]) + len(backward)
    assert {(r["layer"], r["impl"]) for r in backward} == {(layer, "auto") for layer in ("stem.0", "blocks.0.0", "head")}
    forward = {r["layer"]: r for r in both["cases"] if r["pass"] == "forward" and r["precision"] == "float32"}
    for r in backward:
        assert r["ok"] and 0 < r["rel_err"] < 1e-5, r  # gradients of float32 against float64
        assert r["macs"] == 2 * forward[r["layer"]]["macs"] and r["full"]["macs"] == 2 * forward[r["layer"]]["full"]["macs"]
    assert "float32, channels_last, batch 1, backward" in (tmp_path / "report.md").read_text()


def test_launch_plan_records_what_an_h100_would_launch(tmp_path):
    """``python -m benchmarks.launch_plan`` (compile-only, no GPU) on one layer: fwd and bwd launches,
    each with the fields ../shared/tools/launch_report/judge.py reads."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=str(root))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.launch_plan", "--suites", "resnet50",
                           "--only", "layer1.0.conv1", "--out", str(tmp_path)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads((tmp_path / "launches-b32.json").read_text())
    rec = data["resnet50"]
    assert rec["args"]["batch"] == 32 and not rec["errors"]
    phases = {launch["phase"]: launch for launch in rec["launches"]}
    assert set(phases) == {"fwd", "dgrad", "wgrad"}  # a 1x1 layer without bias
    import kernels
    from kernels.dispatch import resolve
    from kernels.core.launcher import ALL_KERNELS

    x = torch.empty(32, 64, 56, 56, dtype=torch.float16, device="meta")
    auto = resolve("auto", kernels.ConvParams.from_tensors(x, torch.empty(64, 64, 1, 1, dtype=x.dtype, device="meta"),
                                                           None, 1, 0, 1, 1)).name
    fwd = phases["fwd"]
    assert fwd["labels"] == dict(net="resnet50", layer="layer1.0.conv1", count=1, shape="64x56x56->64 1x1",
                                 layout="channels_last", algorithm=auto, phase="fwd")
    assert fwd["kernel"] in {k.name for k in ALL_KERNELS} and fwd["dtype"] == "fp16"
    # The (32*56*56 pixels x 64 channels) GEMM runs on the persistent TMA kernel: one CTA per SM
    # (an H100's 132), each walking several of its output tiles.
    tiles = -(-32 * 56 * 56 // fwd["meta"]["BLOCK_M"]) * -(-64 // fwd["meta"]["BLOCK_N"])
    assert fwd["kernel"] == "_pointwise_tma_kernel"
    assert fwd["ctas"] == fwd["grid"][0] * fwd["grid"][1] * fwd["grid"][2] == min(132, tiles)
    for launch in rec["launches"]:
        assert {"mma", "stack", "ctas", "dot_loops", "candidates", "registers", "spill_bytes", "waves"} <= set(launch)
        assert launch["registers"] > 0
        assert launch["dot_loops"] or launch["kernel"] == "_split_reduce_kernel"  # the GEMMs run on tl.dot
    report = (tmp_path / "report-b32.md").read_text()
    assert "layer1.0.conv1" in report and "Nothing ran on a GPU" in report


def _row(layer, count, impl, ms, **extra):
    row = dict(suite="net", layer=layer, count=count, n=32, c=64, h=56, w=56, k=64, r=3, s=3, stride=1, padding=1,
               dilation=1, groups=1, bias=False, dtype="float16", tf32=False, precision="float16",
               layout="channels_last", impl=impl, algorithm=None if impl == "cudnn" else "im2col", ms=ms,
               timing="do_bench", tflops=2 * 3.7e9 / (ms * 1e-3) / 1e12, pct_peak=50.0, bound="compute",
               intensity=100.0, speedup=None, rel_err=1e-4, ok=True, macs=3.7e9, multiplies=3.7e9)
    row.update(extra)
    return row


def test_gpu_summary_statistics_on_synthetic_timings(tmp_path):
    # cuDNN takes 1 ms on layer a (count 3) and 2 ms on layer b (count 1); ours is 2x faster on a, 2x slower on b.
    rows = [_row("a", 3, "cudnn", 1.0), _row("a", 3, "im2col", 0.5, speedup=2.0),
            _row("b", 1, "cudnn", 2.0), _row("b", 1, "im2col", 4.0, speedup=0.5)]
    summary = speedup_summary(rows)["im2col"]
    assert summary["unweighted"] == pytest.approx(1.0)
    assert summary["weighted"] == pytest.approx(2 ** 0.5)  # exp((3 ln 2 - ln 2) / 4)
    assert summary["time_ratio"] == pytest.approx((3 * 1 + 2) / (3 * 0.5 + 4))
    assert winners(rows) == {"im2col": 1, "cudnn": 1}
    assert geomean([1, 4]) == pytest.approx(2.0)

    meta = dict(device="Synthetic GPU", torch="x", triton="y", cudnn=1, commit="c", date="d")
    peaks = dict(tflops={"float16": 100.0}, bandwidth_gbs=1000.0, matmul_size=8192, copy_bytes=2**30)
    layers = [dict(suite="net", layer=name, count=count, c=64, h=56, w=56, k=64, r=3, s=3, stride=1, padding=1,
                   dilation=1, groups=1, bias=False, macs=1e8, auto="im2col", multiplies={"im2col": 1e8})
              for name, count in (("a", 3), ("b", 1))]
    models = [dict(model="net", batch=32, image=224, dtype="float16", tf32=False, precision="float16",
                   layout="channels_last", impl=impl, ms=ms, timing="do_bench", speedup_vs_eager=speedup,
                   rel_err=1e-3 if impl != "eager" else 0.0, ok=True)
              for impl, ms, speedup in (("eager", 10.0, None), ("kernels", 8.0, 1.25))]
    # The backward pass of layer a: ours 4x slower; its section and headline line stay apart.
    rows += [_row("a", 3, "cudnn", 2.0, **{"pass": "backward"}),
             _row("a", 3, "auto", 8.0, speedup=0.25, **{"pass": "backward"})]
    text = render(meta, peaks, layers, rows, models, on_gpu=True)
    assert "## Headline" in text and "1.41×" in text and "1.25×" in text and "NOT GPU" not in text
    assert "| net | float16 | channels_last | 32 | backward | 0.25× |" in text
    assert "### float16, channels_last, batch 32, backward" in text

    from benchmarks.plots import write_all

    paths = write_all(tmp_path, layers, rows, peaks, on_gpu=True)
    assert sorted(p.name for p in paths) == [
        "multiplies_net.png", "roofline_float16_channels_last_b32.png", "roofline_float16_channels_last_b32_backward.png",
        "speedup_net_float16_channels_last_b32.png", "speedup_net_float16_channels_last_b32_backward.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)


def test_roofline_bound_follows_the_ridge_point():
    peaks = dict(tflops={"float16": 100.0}, bandwidth_gbs=1000.0)  # ridge at 100 FLOP/byte
    assert bound_and_fraction(2e12, 1e10, 40.0, peaks, "float16") == ("compute", pytest.approx(0.5))
    assert bound_and_fraction(1e9, 1e9, 2.0, peaks, "float16") == ("memory", pytest.approx(0.5))


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_prints_one_tqdm_line_per_step_in_a_log():
    from benchmarks.progress import Progress

    log = io.StringIO()
    progress = Progress(3, stream=log)
    for label in ("resnet50 conv1", "resnet50 layer1.0.conv1", "resnet50 end to end"):
        progress.step(label)
    progress.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in log.getvalue()
    # tqdm's meter: percentage, bar, count, then the step's label as the postfix.
    assert [line.split("|")[0].strip() for line in lines] == ["0%", "33%", "67%", "100%"]
    assert [line.split("|")[2].split()[0] for line in lines] == ["0/3", "1/3", "2/3", "3/3"]
    assert lines[1].endswith("resnet50 layer1.0.conv1]") and lines[3].endswith("done]")


def test_progress_is_a_live_tqdm_bar_on_a_terminal():
    from benchmarks.progress import Progress

    terminal = _Terminal()
    progress = Progress(2, stream=terminal)
    progress.step("first")
    progress.step("second")
    progress.close()
    text = terminal.getvalue()
    assert "\r" in text and "second" in text and "2/2" in text
    assert text.count("\n") == 1  # redrawn in place, one line left at the end


def test_default_suites_leave_replknet_to_the_gpu(monkeypatch):
    """The CPU run's default suites skip RepLKNet-31B's 31x31 layers (minutes per algorithm under the
    interpreter); named, they run; on a GPU they are in the default."""
    monkeypatch.setattr(bench_run, "ON_GPU", False)
    assert "replknet31b" not in bench_run.parse_args([]).suites and "convnext_tiny" in bench_run.parse_args([]).suites
    assert bench_run.parse_args(["--suites", "replknet31b"]).suites == ["replknet31b"]
    monkeypatch.setattr(bench_run, "ON_GPU", True)
    assert {"replknet31b", "convnext_tiny"} <= set(bench_run.parse_args([]).suites)
