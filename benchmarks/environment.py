"""Where the benchmark runs: device, versions, commit, and the precision settings of a run."""
from __future__ import annotations

import datetime
import platform
import re
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from . import provenance

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Precision:
    """A dtype of the benchmark: float32 runs twice, with TF32 off (IEEE) and on."""

    name: str  # "float16", "bfloat16", "float32", "tf32"
    dtype: torch.dtype
    tf32: bool = False

    @property
    def label(self) -> str:
        return {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32 (IEEE)", "tf32": "fp32 (TF32)",
                "float8_e4m3fn": "fp8 e4m3 (scaled)", "int8": "int8 (scaled)"}[self.name]

    @property
    def quantized(self) -> bool:
        """An 8-bit precision: layers run on ``kernels.conv2d_scaled``, networks on ``cnn.quantize``
        (``benchmarks/scaled.py``), against cuDNN fp16 and our fp16."""
        return self.dtype in (torch.float8_e4m3fn, torch.int8)


PRECISIONS = {
    "float16": Precision("float16", torch.float16),
    "bfloat16": Precision("bfloat16", torch.bfloat16),
    "float32": Precision("float32", torch.float32),
    "tf32": Precision("tf32", torch.float32, tf32=True),
    "float8_e4m3fn": Precision("float8_e4m3fn", torch.float8_e4m3fn),
    "int8": Precision("int8", torch.int8),
}


@contextmanager
def precision_mode(precision: Precision):
    """TF32 on or off for cuDNN, cuBLAS and our kernels (which follow ``cudnn.allow_tf32``)."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = precision.tf32
    torch.backends.cuda.matmul.allow_tf32 = precision.tf32
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def device_name() -> str:
    if ON_GPU:
        return torch.cuda.get_device_name()
    return "cpu-interpreter"


def device_slug(name: str) -> str:
    """The results folder's name for a device, from the name ``torch.cuda.get_device_name()``
    reports: ``NVIDIA H200`` -> ``nvidia-h200``, ``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def command_output(cmd) -> str:
    """The command's standard output, stripped; empty if it fails or is missing."""
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _auto_autotune():
    """Whether ``algorithm="auto"`` picks by measured time (kernels.dispatch.autotune_cache) or by its table."""
    try:
        from kernels.dispatch import autotune_cache
    except ImportError:
        return None
    return autotune_cache.enabled()


def metadata() -> dict:
    """Versions and device facts recorded at the top of every report."""
    import triton

    commit, commit_source = provenance.commit(REPO)
    meta = dict(
        device=device_name(),
        interpreter=not ON_GPU,
        torch=torch.__version__,
        triton=triton.__version__,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if ON_GPU else None,
        driver=None,
        commit=commit,
        commit_source=commit_source,
        source_fingerprint=provenance.tree_fingerprint(REPO),
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        host_cpu=platform.processor() or platform.machine(),
        python=platform.python_version(),
        auto_timing_autotune=_auto_autotune(),
    )
    if ON_GPU:
        props = torch.cuda.get_device_properties(0)
        meta.update(
            driver=command_output(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]).splitlines()[0:1] or None,
            sm_count=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
            l2_bytes=getattr(props, "L2_cache_size", None),
            capability=f"{props.major}.{props.minor}",
        )
        if isinstance(meta["driver"], list):
            meta["driver"] = meta["driver"][0]
    return meta
