#!/usr/bin/env bash
# One command per device call of a GPU window, each ending by itself within 8 minutes (the
# machine's start not counted): stages in priority order under one time budget, everything under
# $OUT (./gpu-out without it) as it goes. docs/gpu-session.md says what each stage measures.
#
#   bash benchmarks/gpu_session.sh first     # environment, CUDA smoke, ResNet-50 forward / end to end / backward, input > 2^31
#   bash benchmarks/gpu_session.sh layers    # VGG-16, MobileNetV2, decoders, EfficientNet-B0, DenseNet-121 per layer
#   bash benchmarks/gpu_session.sh quick | backward | nchw | bf16 | tests
#
# Here, before the call: `bash benchmarks/gpu_session.sh print first` writes the command line to
# give the device tool (KERNELS_COMMIT=<commit> ...: the machine's copy of the tree may not be a git
# checkout). `... plan first` lists the stages and their budgets. Afterwards:
# `bash benchmarks/gpu_session.sh merge <first's files> <layers' files>` joins the results under
# benchmarks/results/<device slug>/. The device machine has no network: nothing is installed.
set -u
export SESSION_START=$(date +%s.%N)  # the budget counts from here
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
case "${1:-first}" in
    print|plan|merge|fingerprint|environment) ;;
    *) unset TRITON_INTERPRET ;;  # the GPU commands: kernels compile for the GPU
esac
exec "${PYTHON:-python3}" -m benchmarks.gpu_session "${1:-first}" "${@:2}"
