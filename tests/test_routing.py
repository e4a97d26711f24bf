"""algorithm="auto" routes as documented, ineligible algorithms name their failed condition,
and the optional timing autotune caches its choice per problem."""
import json

import pytest
import torch

import kernels
from kernels.dispatch import autotune_cache
from kernels.dispatch.auto import ROUTES, choose_auto, heuristic_choice
from kernels.core.params import ConvParams


def _params(input_shape, weight_shape, **kw):
    return ConvParams.from_shapes(input_shape, weight_shape, **kw)


# (input, weight, conv args, expected algorithm), one per rule of the table and the fallback.
ROUTING = [
    ((32, 3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3), "stem"),  # ResNet stem
    ((32, 3, 224, 224), (32, 3, 3, 3), dict(stride=2, padding=1), "stem"),  # MobileNetV2 / VGG stem
    ((32, 64, 56, 56), (256, 64, 1, 1), {}, "pointwise"),  # bottleneck expansion
    ((32, 512, 28, 28), (1024, 512, 1, 1), dict(stride=2), "pointwise"),  # strided 1x1 downsample
    ((32, 144, 56, 56), (144, 1, 3, 3), dict(stride=2, padding=1, groups=144), "depthwise"),  # MobileNetV2
    ((8, 32, 28, 28), (64, 1, 5, 5), dict(padding=2, groups=32), "depthwise"),  # multiplier 2
    ((8, 32, 28, 28), (32, 1, 1, 1), dict(groups=32), "depthwise"),  # 1x1 depthwise: no reduction
    ((32, 128, 56, 56), (128, 4, 3, 3), dict(padding=1, groups=32), "im2col"),  # ResNeXt 32x4d: narrow groups
    ((32, 3, 32, 32), (16, 3, 1, 1), {}, "stem"),  # 1x1 on 3 channels
    ((32, 3, 32, 32), (16, 3, 3, 3), dict(dilation=(1, 2)), "im2col"),  # the stem's runs need dilation_w 1
    ((32, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), "im2col"),
    ((32, 256, 14, 14), (256, 64, 3, 3), dict(padding=1, groups=4), "im2col"),
]


@pytest.mark.parametrize("input_shape, weight_shape, args, expected", ROUTING,
                         ids=[f"{r[3]}-{r[1]}" for r in ROUTING])
def test_auto_routes_as_documented(input_shape, weight_shape, args, expected):
    params = _params(input_shape, weight_shape, **args)
    name = choose_auto(params)
    assert name == expected
    assert kernels.REGISTRY[name].eligible(params)
    assert kernels.conv2d_flops(input_shape, weight_shape, **args, algorithm="auto")["algorithm"] == name


def test_every_route_has_a_reason_and_is_registered():
    for name, applies, why in ROUTES:
        assert name in kernels.REGISTRY and callable(applies) and len(why) > 10


def test_auto_result_matches_pytorch_on_each_route(device):
    """auto runs the routed kernel end to end (a small shape per rule)."""
    from reference import Case, assert_close, random_inputs, reference_conv

    for case in (Case(1, 3, 6, 6, 4, 3, 3, padding=1), Case(1, 16, 4, 5, 8, 1, 1),
                 Case(1, 4, 6, 6, 4, 3, 3, padding=1, groups=4)):
        x, w, b = random_inputs(case, torch.float32, device, "channels_last")
        assert_close(kernels.conv2d(x, w, b, **case.conv_args()), reference_conv(x, w, b, case),
                     torch.float32, case.reduction)


# (algorithm, input, weight, conv args, words the ValueError must contain)
INELIGIBLE = [
    ("pointwise", (1, 4, 6, 6), (4, 4, 3, 3), {}, ["pointwise", "1x1 kernel, got 3x3"]),
    ("pointwise", (1, 4, 6, 6), (4, 4, 1, 3), {}, ["pointwise", "got 1x3"]),
    ("depthwise", (1, 4, 6, 6), (4, 2, 3, 3), dict(groups=2), ["depthwise", "groups == in_channels", "groups=2",
                                                                "4 input channels"]),
    ("depthwise", (1, 4, 6, 6), (4, 4, 3, 3), {}, ["depthwise", "groups=1"]),
]


@pytest.mark.parametrize("algorithm, input_shape, weight_shape, args, words", INELIGIBLE,
                         ids=[f"{r[0]}-{r[2]}" for r in INELIGIBLE])
def test_ineligible_algorithm_raises_value_error(algorithm, input_shape, weight_shape, args, words, device):
    x = torch.randn(input_shape, device=device)
    w = torch.randn(weight_shape, device=device)
    snapshot = (x.clone(), w.clone())
    with pytest.raises(ValueError) as error:
        kernels.conv2d(x, w, **args, algorithm=algorithm)
    for word in words:
        assert word in str(error.value), f"{word!r} not in {error.value}"
    assert torch.equal(snapshot[0], x) and torch.equal(snapshot[1], w)


def test_direct_serves_every_shape():
    params = _params((2, 6, 9, 9), (4, 3, 2, 5), stride=(2, 3), padding="valid", dilation=(2, 1), groups=2)
    assert kernels.REGISTRY["direct"].eligible(params)


# The timing autotune: its caching logic, with a stand-in timer (timing itself needs a GPU).


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(autotune_cache, "_memory", {})
    return tmp_path


def test_autotune_is_off_by_default(monkeypatch):
    monkeypatch.delenv("KERNELS_AUTOTUNE", raising=False)
    monkeypatch.setattr(autotune_cache, "_switch", None)
    assert not autotune_cache.enabled()
    monkeypatch.setenv("KERNELS_AUTOTUNE", "1")
    assert autotune_cache.enabled()
    autotune_cache.enable(False)
    assert not autotune_cache.enabled()


def test_autotune_times_once_and_caches_on_disk(cache_dir, monkeypatch):
    params = _params((4, 32, 14, 14), (64, 32, 1, 1))
    times = {"im2col": 2.0, "direct": 5.0, "pointwise": 1.0}
    calls = []

    def timer(name):
        calls.append(name)
        return times[name]

    assert autotune_cache.choose(params, list(times), timer, device_name="H100") == "pointwise"
    assert sorted(calls) == sorted(times)
    # Same problem again: served from memory, then (new process) from disk, without timing.
    assert autotune_cache.choose(params, list(times), timer, device_name="H100") == "pointwise"
    monkeypatch.setattr(autotune_cache, "_memory", {})
    assert autotune_cache.choose(params, list(times), timer, device_name="H100") == "pointwise"
    assert len(calls) == len(times)
    stored = json.loads((cache_dir / "autotune.json").read_text())
    assert list(stored.values()) == ["pointwise"] and "H100" in next(iter(stored))
    # Another dtype, layout or device is another problem, timed afresh.
    half = ConvParams.from_shapes((4, 32, 14, 14), (64, 32, 1, 1), dtype=torch.float16)
    times["im2col"] = 0.5
    assert autotune_cache.choose(half, list(times), timer, device_name="H100") == "im2col"
    assert autotune_cache.choose(params, list(times), timer, device_name="A100") == "im2col"
    assert len(calls) == 3 * len(times)


def test_autotune_without_gpu_falls_back_to_the_table(cache_dir, monkeypatch):
    monkeypatch.setattr(autotune_cache, "_switch", True)
    params = _params((4, 32, 14, 14), (64, 32, 1, 1))
    if torch.cuda.is_available():
        pytest.skip("times on the GPU")
    assert choose_auto(params) == heuristic_choice(params) == "pointwise"
    assert not (cache_dir / "autotune.json").exists()


def test_static_rules_never_route_to_winograd_or_direct():
    """No GPU measurement is committed: auto stays on the implicit GEMM for Winograd-eligible layers."""
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        params = ConvParams.from_shapes((32, 256, 56, 56), (256, 256, 3, 3), padding=1, dtype=dtype)
        assert heuristic_choice(params) == "im2col"
    assert not any(name in ("winograd_f2", "winograd_f4", "direct") for name, _, _ in ROUTES)


def test_committed_routing_table_overrides_the_static_rules(tmp_path, monkeypatch):
    from kernels.dispatch import auto as dispatch

    table = {"device": "Fake GPU", "measured": "a test", "rules": [
        {"when": {"kernel": [3, 3], "stride": [1, 1], "groups": "1", "dtype": ["float16"], "min_channels": 64},
         "algorithm": "winograd_f2", "why": "test"},
        {"when": {"kernel": [5, 5]}, "algorithm": "winograd_f2", "why": "ineligible: skipped"},
    ]}
    (tmp_path / "Fake GPU.json").write_text(json.dumps(table))
    monkeypatch.setattr(dispatch, "ROUTING_TABLES", tmp_path)
    dispatch.routing_table.cache_clear()
    try:
        vgg = ConvParams.from_shapes((32, 256, 56, 56), (256, 256, 3, 3), padding=1, dtype=torch.float16)
        assert dispatch.table_choice(vgg, "Fake GPU") == "winograd_f2"
        assert dispatch.table_choice(vgg, "Other GPU") is None
        fp32 = ConvParams.from_shapes((32, 256, 56, 56), (256, 256, 3, 3), padding=1)
        assert dispatch.table_choice(fp32, "Fake GPU") is None  # dtype does not match
        five = ConvParams.from_shapes((1, 64, 20, 20), (64, 64, 5, 5), padding=2, dtype=torch.float16)
        assert dispatch.table_choice(five, "Fake GPU") is None  # Winograd does not apply to 5x5
        monkeypatch.setattr(dispatch.device, "current_name", lambda: "Fake GPU")
        assert choose_auto(vgg) == "winograd_f2" and choose_auto(five) == "im2col"
    finally:
        dispatch.routing_table.cache_clear()


def test_routing_table_is_found_by_the_reported_device_name(tmp_path, monkeypatch):
    """An H200 reports ``NVIDIA H200``: its committed table ``NVIDIA H200.json`` is the one read."""
    from kernels.dispatch import auto as dispatch

    rule = {"when": {"kernel": [1, 1]}, "algorithm": "im2col", "why": "test: a rule the static routes would not pick"}
    (tmp_path / "NVIDIA H200.json").write_text(json.dumps({"device": "NVIDIA H200", "rules": [rule]}))
    (tmp_path / "NVIDIA H100 80GB HBM3.json").write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3", "rules": []}))
    monkeypatch.setattr(dispatch, "ROUTING_TABLES", tmp_path)
    dispatch.routing_table.cache_clear()
    try:
        pointwise = ConvParams.from_shapes((32, 256, 56, 56), (64, 256, 1, 1), dtype=torch.float16)
        assert heuristic_choice(pointwise) == "pointwise"
        monkeypatch.setattr(dispatch.device, "current_name", lambda: "NVIDIA H200")
        assert choose_auto(pointwise) == "im2col"
        monkeypatch.setattr(dispatch.device, "current_name", lambda: "NVIDIA H100 80GB HBM3")
        assert choose_auto(pointwise) == "pointwise"
    finally:
        dispatch.routing_table.cache_clear()


def test_device_descriptions_differ_only_in_memory():
    from kernels.core import device

    assert device.spec_for("NVIDIA H200") is device.H200
    assert device.spec_for("NVIDIA H100 80GB HBM3") is device.H100
    assert device.spec_for("NVIDIA A100-SXM4-80GB") is None
    h100, h200 = device.H100, device.H200
    assert (h100.sms, h100.smem_per_block, h100.dense_fp16_flops_per_s) == (h200.sms, h200.smem_per_block,
                                                                            h200.dense_fp16_flops_per_s)
    assert round(h100.ridge_flops_per_byte) == 295 and round(h200.ridge_flops_per_byte) == 206
