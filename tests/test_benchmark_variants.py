"""The decoder and sequence benchmark suites (DCGAN's generator, U-Net's up-convolutions, Mamba's
depthwise conv1d, Hyena's long convolutions): their cases against the networks' own FLOP counts, and a CPU run of each."""
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.environment import PRECISIONS
from benchmarks.layers import counts, eligible_algorithms, run_case
from benchmarks.networks import interpreter_scale, scaled_down, suite_cases
from benchmarks.report import render
from benchmarks.variant_networks import VARIANT_SUITES


@pytest.mark.parametrize("suite", list(VARIANT_SUITES))
def test_cases_are_the_networks_layers(suite):
    cases = suite_cases(suite, batch=1)
    variant = VARIANT_SUITES[suite]
    macs = sum(case.count * counts(case)["auto"]["macs"] for case in cases)
    if suite == "unet":  # the four 2x2 stride-2 up-convolutions, 1024 -> 512 at 16x16 ... 128 -> 64 at 128x128
        assert [(c.c, c.k, c.h, c.r, c.stride) for c in cases] == [
            (1024 >> i, 512 >> i, 16 << i, 2, 2) for i in range(4)]
        assert macs == sum((1024 >> i) * (512 >> i) * 4 * (16 << i) ** 2 for i in range(4))
    else:  # every convolution of the network: FlopCounterMode's count of the whole model
        with torch.device("meta"):
            model = variant.build()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.empty((1, *variant.input_size), device="meta"))
        assert macs == counter.get_total_flops() // 2
    assert all(c.op == ("conv1d" if suite in ("mamba_conv1d", "longconv") else "conv_transpose2d") for c in cases)
    if suite == "longconv":  # filter length = sequence length, 768 depthwise channels, causal padding
        assert [(c.c, c.k, c.groups, c.s, c.w, c.padding) for c in cases] == [
            (768, 768, 768, n, n, n - 1) for n in (1024, 4096, 16384)]
    if suite == "mamba_conv1d":
        assert [(c.c, c.k, c.groups, c.s, c.w, c.padding) for c in cases] == [(4096, 4096, 4096, 4, 2048, 3)]
    for case in cases:  # scaled down for the interpreter, the same algorithms apply
        small = scaled_down(case, *interpreter_scale(suite, (16, 14)))
        assert eligible_algorithms(small) == eligible_algorithms(case), case.layer


def test_cpu_run_of_each_suite_is_correct():
    rows, layers = [], []
    for suite in VARIANT_SUITES:
        case = suite_cases(suite, batch=1)[0]
        small = scaled_down(case, *interpreter_scale(suite, (16, 14)))
        rows += run_case(small, PRECISIONS["float32"], "channels_last", {}, full_case=case)
        layers.append(dict(suite=suite, layer=case.layer, count=1, op=case.op, c=case.c, h=case.h, w=case.w,
                           k=case.k, r=case.r, s=case.s, stride=case.stride, groups=case.groups,
                           macs=counts(case)["auto"]["macs"], multiplies={}))
    assert {r["suite"] for r in rows} == set(VARIANT_SUITES)
    assert all(r["ok"] and r["rel_err"] < 1e-5 for r in rows), [(r["layer"], r["impl"], r["timing"]) for r in rows]
    assert {"auto", "depthwise"} <= {r["impl"] for r in rows if r["suite"] == "mamba_conv1d"}
    assert {"fft", "torch_fft"} <= {r["impl"] for r in rows if r["suite"] == "longconv"}
    meta = dict(device="cpu-interpreter", torch="x", triton="y", commit="c", date="d")
    text = render(meta, {}, layers, rows, [], on_gpu=False)
    assert "100x1x1→512 4x4 transposed" in text and "4096x2048→4096 k4 dw" in text
    assert math.isclose(rows[0]["full"]["macs"], 100 * 512 * 16)
