"""The R3D-18 benchmark suite (its unique Conv3d layers on 16-frame 112x112 clips) and the 3-D paths
of the benchmark machinery: cases against the network, the end-to-end variants, a CPU run of a small
3-D network through ``python -m benchmarks`` (on our kernels)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import benchmarks.run as bench_run
import cnn
from benchmarks import networks
from benchmarks.environment import PRECISIONS
from benchmarks.layers import counts, eligible_algorithms, traffic_bytes
from benchmarks.models import build_variants
from benchmarks.networks import scaled_down, suite_cases
from cnn.fuse import FusedConv3dBN


def test_r3d_18_suite_is_the_networks_conv3d_layers():
    cases = suite_cases("r3d_18", batch=8)
    assert all(c.op == "conv3d" and c.n == 8 for c in cases)
    assert len(cases) == 11 and sum(c.count for c in cases) == 20  # stem, 16 block convs, 3 projections
    stem = cases[0]
    assert (stem.layer, stem.input_shape, stem.weight_shape) == ("stem.0", (8, 3, 16, 112, 112), (64, 3, 3, 7, 7))
    assert (stem.stride, stem.padding, stem.describe()) == ((1, 2, 2), (1, 3, 3), "3x16x112x112->64 3x7x7 s(1, 2, 2)")
    assert stem.output_shape == (8, 64, 16, 56, 56)
    assert stem.macs == 8 * 64 * 16 * 56 * 56 * (3 * 3 * 7 * 7)
    by_layer = {c.layer: c for c in cases}
    assert by_layer["layer1.0.conv1.0"].count == 4 and by_layer["layer4.0.conv2.0"].count == 3
    down = by_layer["layer2.0.downsample.0"]
    assert (down.t, down.r, down.s, down.stride, down.output_shape) == (1, 1, 1, 2, (8, 128, 8, 28, 28))
    assert counts(down)["auto"] == dict(macs=down.macs, multiplies=down.macs, flops=2 * down.macs,
                                        algorithm="pointwise")
    assert counts(stem)["auto"]["algorithm"] == "im2col" and eligible_algorithms(stem) == ["im2col"]
    assert traffic_bytes(stem, 2) == 2 * (math.prod(stem.input_shape) + math.prod(stem.weight_shape)
                                          + 8 * 64 * 16 * 56 * 56)


def test_scaled_down_3d_layers_keep_kernel_stride_padding_and_reach():
    for case in suite_cases("r3d_18", batch=1):
        small = scaled_down(case, 16, 14)
        assert (small.op, small.t, small.r, small.s, small.stride, small.padding) == \
            (case.op, case.t, case.r, case.s, case.stride, case.padding)
        assert small.d <= case.d and small.d >= min(case.d, max(case.t, 4)) and small.h <= 8
        assert small.c < case.c or case.c == 3
        x, w = torch.empty(small.input_shape, device="meta"), torch.empty(small.weight_shape, device="meta")
        assert F.conv3d(x, w, **small.conv_args()).shape == small.output_shape


def test_r3d_18_end_to_end_variants():
    """eager on PyTorch's Conv3d, ours on cnn.Conv3d, fused: every conv3d -> BN3d one FusedConv3dBN;
    the same weights and calibrated statistics."""
    variants = build_variants("r3d_18", PRECISIONS["float32"], "channels_last", False, (3, 2, 16, 16))
    eager, ours, fused = variants["eager"], variants["kernels"], variants["kernels_fused"]
    assert not any(isinstance(m, cnn.conv.KERNEL_CLASSES) for m in eager.modules())
    assert sum(isinstance(m, nn.Conv3d) for m in eager.modules()) == 20
    assert all(isinstance(m, cnn.Conv3d) for m in ours.modules() if isinstance(m, nn.Conv3d))
    assert sum(isinstance(m, FusedConv3dBN) for m in fused.modules()) == 20
    for key, value in eager.state_dict().items():
        assert torch.equal(value, ours.state_dict()[key]), key
    bn = eager.layer1[0].conv1[1]
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))  # calibrated, not the defaults
    x = torch.randn(1, 3, 2, 16, 16).contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        assert eager(x).shape == (1, 400)


def test_launch_plan_records_3d_layers(tmp_path):
    """The H100 launch plan of an r3d_18 layer (its 1x1x1 downsample, forward and backward): the
    implicit-GEMM kernels' DEPTH variants, compiled for sm_90."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=str(root))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.launch_plan", "--suites", "r3d_18", "--batch", "2",
                           "--only", "layer2.0.downsample.0", "--out", str(tmp_path)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    launches = json.loads((tmp_path / "launches-b2.json").read_text())["r3d_18"]["launches"]
    gemms = [l for l in launches if l["kernel"].strip("_") in ("im2col_forward_kernel", "dgrad_kernel", "wgrad_kernel")]
    assert {(l["kernel"].strip("_"), l["phase"]) for l in gemms} == {
        ("im2col_forward_kernel", "fwd"), ("dgrad_kernel", "dgrad"), ("wgrad_kernel", "wgrad")}
    assert all(l["mma"] == "wgmma" and l["spill_bytes"] == 0 and l["constexprs"]["DEPTH"] for l in gemms)


class Tiny3d(nn.Module):
    """A video stem, the same 3x3x3 unit twice, a 1x1x1 head: three unique Conv3d layers."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(cnn.Conv3d(3, 8, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2), bias=False),
                                  nn.BatchNorm3d(8), nn.ReLU())
        self.blocks = nn.Sequential(*[nn.Sequential(cnn.Conv3d(8, 8, 3, padding=1, bias=False), nn.BatchNorm3d(8),
                                                    nn.ReLU()) for _ in range(2)])
        self.head = cnn.Conv3d(8, 16, 1)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x))).mean(dim=(2, 3, 4))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the benchmarks' CPU mode; on a GPU they time (make bench)")
def test_cpu_run_of_a_3d_suite_writes_the_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(networks.SUITES, "tiny3d", lambda **kwargs: Tiny3d())
    monkeypatch.setitem(networks.INPUT_SIZES, "tiny3d", (3, 4, 32, 32))
    monkeypatch.setattr(bench_run, "CPU_MODELS", {"tiny3d": {}})
    monkeypatch.setattr(bench_run, "CPU_MODEL_INPUTS", {"tiny3d": (3, 4, 8, 8)})
    monkeypatch.setattr(bench_run, "write_launch_plan", lambda args: 0)
    assert bench_run.main(["--suites", "tiny3d", "--no-plots", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert [(r["layer"], r["count"], r["op"], r["d"], r["t"], r["auto"]) for r in data["layers"]] == [
        ("stem.0", 1, "conv3d", 4, 3, "im2col"), ("blocks.0.0", 2, "conv3d", 4, 3, "im2col"),
        ("head", 1, "conv3d", 4, 1, "pointwise")]
    assert {r["impl"] for r in data["cases"]} == {"auto", "im2col", "pointwise"}  # the 3-D algorithms
    for row in data["cases"]:
        assert row["ok"] and row["rel_err"] < 1e-5, row["timing"]
        assert row["full"]["h"] > row["h"] and row["macs"] < row["full"]["macs"]
    assert {(m["impl"], m["ok"]) for m in data["models"]} >= {("eager", True), ("kernels", True), ("kernels_fused", True)}
    assert all(m["input"] == [3, 4, 8, 8] for m in data["models"])
    report = (tmp_path / "report.md").read_text()
    assert "3x4x32x32→8 3x5x5 s(1, 2, 2)" in report and "| 4x8x8 |" in report
