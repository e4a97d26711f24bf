"""pytest-benchmark: each unique conv layer of the networks x each implementation, the same
cases as ``python -m benchmarks``. Compare commits with pytest-benchmark's own tools:
``pytest benchmarks --benchmark-only --benchmark-autosave``, then ``pytest-benchmark compare``.

The timed call synchronises the device, so each round is one complete convolution. Each
benchmark also checks its output against the reference (cuDNN fp32, or float64 on the CPU).
"""
import pytest
import torch

from benchmarks.environment import ON_GPU, PRECISIONS, precision_mode
from benchmarks.layers import TOLERANCE, eligible_algorithms, make_inputs, reference_output, relative_error
from benchmarks.networks import SUITE_BATCHES, interpreter_scale, scaled_down, suite_cases
from benchmarks.run import select_cases
from benchmarks.timing import Rotation, synchronize


def pytest_generate_tests(metafunc):
    if "conv_case" not in metafunc.fixturenames:
        return
    options = metafunc.config.option
    params = []
    for suite in options.bench_suites:
        batch = options.bench_batch or (SUITE_BATCHES.get(suite, 32) if ON_GPU else 1)
        cases = suite_cases(suite, batch) if options.bench_all_layers else select_cases(suite, batch, quick=True)
        for case in cases:
            run = case if ON_GPU else scaled_down(case, *interpreter_scale(suite, (16, 14)))
            for impl in (["cudnn"] if ON_GPU else []) + ["auto"] + eligible_algorithms(run):
                params.append(pytest.param(run, impl, id=f"{suite}-{case.layer}-b{case.n}-{impl}"))
    metafunc.parametrize("conv_case,impl", params)


def test_conv_layer(benchmark, conv_case, impl, bench_rounds, request):
    options = request.config.option
    precision = PRECISIONS[options.bench_dtype]
    args = conv_case.conv_args()
    with torch.no_grad(), precision_mode(precision):
        first = make_inputs(conv_case, precision, options.bench_layout)
        size = sum(t.numel() * t.element_size() for t in first if t is not None)
        rotation = Rotation([first] + [make_inputs(conv_case, precision, options.bench_layout)
                                       for _ in range(Rotation.count(size) - 1)])
        if impl == "cudnn":
            torch.backends.cudnn.benchmark = True
            conv = lambda: conv_case.functional(*rotation.next(), **args)  # noqa: E731
        else:
            conv = lambda: conv_case.ours(*rotation.next(), **args, algorithm=impl)  # noqa: E731
        error = relative_error(conv(), reference_output(*first, conv_case))

        def timed():
            out = conv()
            synchronize()
            return out

        rounds, warmup = bench_rounds
        benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=warmup)
    macs = conv_case.macs
    benchmark.extra_info.update(
        suite=conv_case.suite, layer=conv_case.layer, count=conv_case.count, shape=conv_case.describe(),
        n=conv_case.n, macs=macs, dtype=precision.name, layout=options.bench_layout, rel_err=error,
        interpreter=not ON_GPU,
    )
    if ON_GPU:
        benchmark.extra_info["tflops_median"] = 2 * macs / benchmark.stats.stats.median / 1e12
    assert error <= TOLERANCE[precision.name], f"{impl}: relative error {error:.2e} against the reference"
