"""Winograd F(2x2,3x3) / F(4x4,3x3): error bounds from the measured study, scope, counts, cache.

The generic sweeps (test_forward / test_backward) cover shapes, layouts and gradients on the
path the planner picks (the fused kernel for their small channel counts). Here both paths run
explicitly: each tile's error against float64 must stay within a fixed multiple of im2col's
error on the same data (the multiples are about 2x the worst ratios measured by
``benchmarks/winograd_error.py``, table in docs/winograd.md), so a transform or precision regression fails.
"""
import pytest
import torch
import torch.nn.functional as F

import kernels
from benchmarks.winograd_error import LAYERS, relative_error
from kernels.ops.epilogue import activation_code
from kernels.ops import common
from kernels.ops.winograd import forward as winograd
from kernels.ops.winograd.plan import FUSED, PATHS, THREE_STAGE, choose_path
from kernels.ops.winograd.transforms import FILTER_CACHE, TILES
from reference import Case, as_reference, assert_close, random_inputs

# Worst measured ratio to im2col over both paths (docs/winograd.md): F2 2.0 / 2.4 / 1.9, F4 13.0 / 14.9 /
# 8.0 for float32 / float16 / bfloat16. Bounds: about twice that.
RATIO_BOUND = {
    ("winograd_f2", "float32"): 4, ("winograd_f2", "float16"): 5, ("winograd_f2", "bfloat16"): 4,
    ("winograd_f4", "float32"): 24, ("winograd_f4", "float16"): 30, ("winograd_f4", "bfloat16"): 16,
}
# Two of the study's layers, scaled down as in the study: the deepest VGG-16 shape and a
# ResNet-50 one whose 7x7 output is not a whole number of 4x4 tiles.
STUDY_LAYERS = [LAYERS[7].scaled(), LAYERS[12].scaled()]


@pytest.mark.parametrize("layer", STUDY_LAYERS, ids=lambda layer: layer.name.replace(" ", "-"))
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("tile", ["winograd_f2", "winograd_f4"])
def test_error_within_measured_multiple_of_im2col(tile, dtype, layer, device):
    """Both paths, against one im2col baseline on the same data."""
    seed = int(torch.randint(0, 2**31 - 1, ()).item())  # fresh data per test id
    baseline = relative_error("im2col", layer, getattr(torch, dtype), device, seed)
    assert 0 < baseline < 0.05
    for path in PATHS:
        error = relative_error(tile, layer, getattr(torch, dtype), device, seed, path=path)
        assert error <= RATIO_BOUND[(tile, dtype)] * baseline, (
            f"{tile} {path} {dtype}: relative error {error:.2e} exceeds {RATIO_BOUND[(tile, dtype)]}x "
            f"im2col's {baseline:.2e}")


def _path_forward(tile, path, x, w, b, case, **epilogue):
    params = kernels.ConvParams.from_tensors(x, w, b, **case.conv_args())
    return winograd.winograd_forward(TILES[tile], x, w, b, params, path=path, **epilogue)


def _reference(x, w, b, case):
    return F.conv2d(as_reference(x), as_reference(w), as_reference(b), **case.conv_args())


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("padding", [(0, 2), 3, "same"])
@pytest.mark.parametrize("tile", ["winograd_f2", "winograd_f4"])
def test_float64_matches_reference(tile, padding, layout, path, device):
    """In float64 the transforms' rounding is negligible: equal to F.conv2d at fp64 tolerance."""
    case = Case(2, 5, 7, 9, 6, 3, 3, padding=padding)
    x, w, b = random_inputs(case, torch.float64, device, layout)
    y = _path_forward(tile, path, x, w, b, case)
    assert_close(y, _reference(x, w, b, case), torch.float64, case.reduction)


@pytest.mark.parametrize("tile, case", [("winograd_f2", Case(2, 70, 11, 13, 20, 3, 3, padding=1)),
                                        ("winograd_f4", Case(2, 70, 13, 21, 20, 3, 3, padding=1))])
def test_three_stage_spans_several_blocks_of_every_grid_axis(tile, case, device):
    """C = 70 pads to 128: two GEMM reduction steps and two input-transform channel blocks at
    the interpreter's 64; K = 20 and 84 / 48 tiles (edge tiles cut) span several K and tile
    blocks of the GEMM (32 x 16) and the output transform (16 x 16)."""
    x, w, b = random_inputs(case, torch.float64, device, "channels_last")
    y = _path_forward(tile, THREE_STAGE, x, w, b, case)
    assert_close(y, _reference(x, w, b, case), torch.float64, case.reduction)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("tile", ["winograd_f2", "winograd_f4"])
def test_int64_offset_path(tile, path, device, monkeypatch):
    """The 64-bit offset variant (tensors past 2**31 elements) computes the same numbers."""
    monkeypatch.setattr(common, "FORCE_INT64", True)
    case = Case(2, 5, 7, 9, 6, 3, 3, padding=1)
    x, w, b = random_inputs(case, torch.float64, device, "channels_last")
    y = _path_forward(tile, path, x, w, b, case)
    assert_close(y, _reference(x, w, b, case), torch.float64, case.reduction)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("tile", ["winograd_f2", "winograd_f4"])
def test_fused_epilogue(tile, path, device):
    """scale/shift (folded BN), residual and activation through the shared epilogue."""
    case = Case(1, 4, 6, 7, 5, 3, 3, padding=1)
    x, w, b = random_inputs(case, torch.float32, device, "channels_last")
    scale, shift = torch.rand(5, device=device) + 0.5, torch.randn(5, device=device)
    residual = torch.randn(1, 5, 6, 7, device=device)
    y = _path_forward(tile, path, x, w, b, case, scale=scale, shift=shift, residual=residual,
                      activation=activation_code("relu6"))
    ref = F.conv2d(as_reference(x), as_reference(w), as_reference(b), padding=1)
    ref = torch.clamp(ref * as_reference(scale)[:, None, None] + as_reference(shift)[:, None, None]
                      + as_reference(residual), 0, 6)
    assert_close(y, ref, torch.float32, case.reduction)


@pytest.mark.parametrize("algorithm", ["winograd_f2", "winograd_f4", "winograd"])
@pytest.mark.parametrize("shape, kwargs, condition", [
    ((4, 4, 5, 5), {}, "3x3 kernel, got 5x5"),
    ((4, 4, 3, 3), {"stride": 2}, "stride 1"),
    ((4, 4, 3, 3), {"dilation": 2}, "dilation 1"),
    ((4, 2, 3, 3), {"groups": 2}, "groups=1"),
])
def test_out_of_scope_raises_value_error(algorithm, shape, kwargs, condition, device):
    x = torch.randn(1, 4, 8, 8, device=device)
    with pytest.raises(ValueError, match=rf"winograd.*{condition}"):
        kernels.conv2d(x, torch.randn(shape, device=device), algorithm=algorithm, **kwargs)


def test_alias_picks_tile_by_dtype_and_size():
    def pick(dtype, hw=56):
        params = kernels.ConvParams.from_shapes((1, 64, hw, hw), (64, 64, 3, 3), padding=1, dtype=dtype)
        return winograd.choose_tile(params)

    assert pick(torch.float16) == pick(torch.bfloat16) == "winograd_f2"
    assert pick(torch.float32) == pick(torch.float64) == "winograd_f4"
    assert pick(torch.float32, hw=3) == "winograd_f2"
    assert "winograd" in kernels.ALGORITHMS and {"winograd_f2", "winograd_f4"} <= set(kernels.ALGORITHMS)


@pytest.mark.parametrize("tile, m, reduction", [("winograd_f2", 2, 2.25), ("winograd_f4", 4, 4.0)])
def test_counts(tile, m, reduction):
    counts = kernels.conv2d_flops((32, 64, 224, 224), (64, 64, 3, 3), padding=1, algorithm=tile)
    direct = kernels.conv2d_flops((32, 64, 224, 224), (64, 64, 3, 3), padding=1, algorithm="im2col")
    assert counts["macs"] == direct["macs"] == 32 * 64 * 224 * 224 * 64 * 9
    assert counts["multiplies"] == 32 * (224 // m) ** 2 * (m + 2) ** 2 * 64 * 64
    assert counts["macs"] / counts["multiplies"] == reduction
    for key in ("input_transform_flops", "output_transform_flops", "filter_transform_flops"):
        assert 0 < counts[key] < counts["multiplies"]
    assert counts["kernel_multiplies"] >= counts["multiplies"]
    # Edge tiles count whole: a 7x7 output is 4 tiles of 4x4.
    edge = kernels.conv2d_flops((1, 8, 7, 7), (8, 8, 3, 3), padding=1, algorithm="winograd_f4")
    assert edge["multiplies"] == 4 * 36 * 8 * 8


@pytest.mark.parametrize("tile, m", [("winograd_f2", 2), ("winograd_f4", 4)])
def test_counts_report_the_transformed_tensors_traffic_of_the_path_that_runs(tile, m):
    """VGG-16 conv4_x (fp16, batch 32) runs the three-stage path: V (fp16) and M (fp32) each
    written and read once, U read once; conv1_1 (C = 3) runs the fused kernel: only U, its
    channels padded to 64, and the fused kernel's padded slot count."""
    wide = kernels.ConvParams.from_shapes((32, 512, 28, 28), (512, 512, 3, 3), padding=1, dtype=torch.float16)
    counts = kernels.REGISTRY[tile].count(wide)
    tiles, positions = 32 * (28 // m) ** 2, (m + 2) ** 2
    assert counts["path"] == THREE_STAGE
    assert counts["transformed_input_bytes"] == 2 * positions * tiles * 512 * 2
    assert counts["transformed_output_bytes"] == 2 * positions * tiles * 512 * 4
    assert counts["transformed_filter_bytes"] == positions * 512 * 512 * 2
    assert counts["kernel_multiplies"] == counts["multiplies"] == positions * tiles * 512 * 512

    stem = kernels.ConvParams.from_shapes((32, 3, 224, 224), (64, 3, 3, 3), padding=1, dtype=torch.float16)
    counts = kernels.REGISTRY[tile].count(stem)
    tiles, slots = 32 * (224 // m) ** 2, {2: 16, 4: 48}[m]
    assert counts["path"] == FUSED
    assert counts["transformed_input_bytes"] == counts["transformed_output_bytes"] == 0
    assert counts["transformed_filter_bytes"] == positions * 64 * 64 * 2
    assert counts["kernel_multiplies"] == tiles * slots * 3 * 64


@pytest.mark.parametrize("tile", ["winograd_f2", "winograd_f4"])
def test_planner_keeps_the_fused_kernel_only_where_the_model_predicts_it_faster(tile):
    """The static model (kernels.ops.winograd.plan): wide layers on the three-stage GEMMs, few channels
    (the transformed tensors' traffic dominates) and tiny problems (three launches) fused."""
    def path(n, c, hw):
        return choose_path(TILES[tile], kernels.ConvParams.from_shapes((n, c, hw, hw), (c, c, 3, 3), padding=1,
                                                                        dtype=torch.float16))

    assert path(32, 512, 28) == path(32, 256, 56) == path(256, 512, 14) == THREE_STAGE
    assert path(32, 64, 224) == path(32, 64, 56) == path(1, 512, 7) == FUSED


def test_filter_cache_reuses_and_invalidates_on_in_place_update(device):
    case = Case(1, 4, 6, 6, 4, 3, 3, padding=1)
    x, w, b = random_inputs(case, torch.float32, device)
    FILTER_CACHE.clear()
    y1 = kernels.conv2d(x, w, b, padding=1, algorithm="winograd_f2")
    hits = FILTER_CACHE.hits
    y2 = kernels.conv2d(x, w, b, padding=1, algorithm="winograd_f2")
    assert FILTER_CACHE.hits == hits + 1 and torch.equal(y1, y2)
    with torch.no_grad():
        w.add_(0.25)
    y3 = kernels.conv2d(x, w, b, padding=1, algorithm="winograd_f2")
    assert_close(y3, F.conv2d(as_reference(x), as_reference(w), as_reference(b), padding=1),
                 torch.float32, case.reduction)
    assert len(FILTER_CACHE) == 1  # the stale version was dropped


def test_filter_cache_skips_weights_that_require_grad(device):
    """.data updates (gradcheck, old training code) are invisible to a version key: no caching."""
    case = Case(1, 4, 6, 6, 4, 3, 3, padding=1)
    x, w, b = random_inputs(case, torch.float32, device)
    w.requires_grad_(True)
    FILTER_CACHE.clear()
    kernels.conv2d(x, w, b, padding=1, algorithm="winograd_f4")
    w.data.add_(0.25)
    y = kernels.conv2d(x, w, b, padding=1, algorithm="winograd_f4")
    assert len(FILTER_CACHE) == 0
    assert_close(y, F.conv2d(as_reference(x), as_reference(w), as_reference(b), padding=1),
                 torch.float32, case.reduction)


def test_auto_does_not_route_to_winograd_without_a_gpu_measurement():
    """No committed measurement shows Winograd faster than im2col on any device yet (issue 13)."""
    from kernels.dispatch.auto import choose_auto

    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        for c in (16, 64, 512):
            params = kernels.ConvParams.from_shapes((32, c, 56, 56), (64, c, 3, 3), padding=1, dtype=dtype)
            assert not choose_auto(params).startswith("winograd")
