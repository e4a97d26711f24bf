"""pytest-benchmark: the networks end to end (``eager``, ``compile``, ``kernels``,
``kernels_fused``), the same variants as ``python -m benchmarks``. On the CPU only the reduced
network of the CPU report runs (a full-width one takes minutes per forward in the interpreter).
"""
import pytest
import torch

from benchmarks.environment import DEVICE, ON_GPU, PRECISIONS, precision_mode
from benchmarks.models import MODEL_IMPLS, build_variants, memory_format
from benchmarks.networks import SUITE_BATCHES, input_size
from benchmarks.run import CPU_MODELS, cpu_model_input
from benchmarks.timing import synchronize


def pytest_generate_tests(metafunc):
    if "model_name" not in metafunc.fixturenames:
        return
    suites = metafunc.config.option.bench_suites if ON_GPU else [s for s in CPU_MODELS
                                                                 if s in metafunc.config.option.bench_suites]
    impls = MODEL_IMPLS if ON_GPU else [i for i in MODEL_IMPLS if i != "compile"]
    metafunc.parametrize("model_name,impl", [(s, i) for s in suites for i in impls])


def test_model(benchmark, model_name, impl, bench_rounds, request):
    options = request.config.option
    precision = PRECISIONS[options.bench_dtype]
    sample = input_size(model_name) if ON_GPU else cpu_model_input(model_name)
    fmt = memory_format(options.bench_layout, sample)
    builder_args = {} if ON_GPU else CPU_MODELS[model_name]
    batch = options.bench_batch or (SUITE_BATCHES.get(model_name, 32) if ON_GPU else 1)
    with torch.no_grad(), precision_mode(precision):
        variants = build_variants(model_name, precision, options.bench_layout, compile_model=impl == "compile",
                                  sample=sample, builder_args=builder_args)
        if impl not in variants:
            pytest.skip(f"{impl} is not available yet (cnn.fuse missing?)")
        model = variants[impl]
        x = torch.randn(batch, *sample, device=DEVICE, dtype=precision.dtype)
        x = x.to(memory_format=fmt)

        def timed():
            out = model(x)
            synchronize()
            return out

        rounds, warmup = bench_rounds  # compiling and autotuning happen in the warm-up rounds (GPU)
        out = benchmark.pedantic(timed, rounds=max(rounds // 5, 1), iterations=1, warmup_rounds=warmup)
    assert torch.isfinite(out).all()
    benchmark.extra_info.update(model=model_name, batch=batch, input=list(sample), dtype=precision.name,
                                layout=options.bench_layout, builder_args=builder_args, interpreter=not ON_GPU)
