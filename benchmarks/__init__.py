"""Benchmarks: our algorithms against cuDNN on the conv layers of real networks (`python -m benchmarks`)."""
