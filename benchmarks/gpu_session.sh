#!/usr/bin/env bash
# A lent GPU's measurements, in stages that each fit one device command (10 minutes at most):
#
#   bash benchmarks/gpu_session.sh tests    # the suite on CUDA (interpreter off), the kernels' files first, cut at 6 min
#   bash benchmarks/gpu_session.sh quick    # python -m benchmarks --quick (4 heaviest layers per suite, end to end)
#   bash benchmarks/gpu_session.sh layers   # every layer of ResNet-50, VGG-16, MobileNetV2: fp16 channels_last b32
#   bash benchmarks/gpu_session.sh backward # the same layers' backward (cuDNN vs auto)
#   bash benchmarks/gpu_session.sh nchw     # the same layers' forward with NCHW inputs
#   bash benchmarks/gpu_session.sh bf16     # the same layers' forward in bf16
#   bash benchmarks/gpu_session.sh first    # tests + quick in one command (the first call of a session)
#
# Everything lands under $OUT (./gpu-out without it): env.txt (GPU, driver, versions, commit),
# pytest.txt + junit.xml, and results/ (results.json, report.md, plots) that the next stage merges
# into. Commit results/ under benchmarks/results/<device>/ afterwards. The device machine has no
# network: nothing is installed here, and pytest runs without xdist.
set -u
OUT=${OUT:-gpu-out}
RESULTS="$OUT/results"
mkdir -p "$RESULTS"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
PY=${PYTHON:-python3}
NETWORKS="resnet50 vgg16 mobilenet_v2"

environment() {
    {
        date -u
        nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv 2>&1
        $PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'cudnn', torch.backends.cudnn.version(), 'triton', triton.__version__, torch.cuda.get_device_name())"
        git rev-parse HEAD 2>/dev/null || echo "commit: unknown (not a git checkout)"
    } > "$OUT/env.txt" 2>&1
    cat "$OUT/env.txt"
}

tests() {
    # The kernels' own files first, so a cut run still says the most; no -x: one run lists every failure.
    local first="tests/test_forward.py tests/test_backward.py tests/test_splitk.py tests/test_dropin.py
                 tests/test_fused.py tests/test_pointwise.py tests/test_depthwise.py tests/test_direct.py
                 tests/test_winograd.py tests/test_transposed.py tests/test_conv1d.py tests/test_enable.py"
    local rest
    rest=$(ls tests/test_*.py | grep -v -F "$(echo "$first" | tr ' ' '\n' | grep .)" | grep -v test_compile_sm90)
    timeout "${TEST_SECONDS:-360}" $PY -m pytest -q -p no:cacheprovider --maxfail=50 -rfE --durations=15 \
        --junitxml="$OUT/junit.xml" $first $rest > "$OUT/pytest.txt" 2>&1
    echo "pytest exit status $? (124: cut by the time limit)"
    grep -E "^(FAILED|ERROR)" "$OUT/pytest.txt" | head -40
    tail -3 "$OUT/pytest.txt"
}

bench() {
    timeout "${BENCH_SECONDS:-540}" $PY -m benchmarks --out "$RESULTS" "$@" > "$OUT/bench-$(date +%H%M%S).txt" 2>&1
    echo "benchmarks $* -> exit status $?"
}

environment
case "${1:-first}" in
    tests) tests ;;
    quick) bench --quick --merge ;;
    layers) bench --suites $NETWORKS --batches 32 --dtypes float16 --layouts channels_last --no-models --merge ;;
    backward) bench --suites $NETWORKS --batches 32 --dtypes float16 --passes backward --no-models --merge ;;
    nchw) bench --suites $NETWORKS --batches 32 --dtypes float16 --layouts nchw --no-models --merge ;;
    bf16) bench --suites $NETWORKS --batches 32 --dtypes bfloat16 --no-models --merge ;;
    first)
        TEST_SECONDS=${TEST_SECONDS:-300} tests
        BENCH_SECONDS=${BENCH_SECONDS:-240} bench --quick --no-compile --merge ;;
    *) echo "usage: $0 [first|tests|quick|layers|backward|nchw|bf16]"; exit 2 ;;
esac
# The short table the device tool's reply shows: the headline of what is measured so far.
if [ -f "$RESULTS/report.md" ]; then
    sed -n '/^## Headline/,/^## [^H]/p' "$RESULTS/report.md" | head -40
fi
