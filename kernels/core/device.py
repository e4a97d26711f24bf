"""The one description of the GPUs the kernels are written for, and of the one in use.

Every device fact the package uses lives here: the planner (SMs for split-K and waves, shared
memory for pipeline stages), the launcher (the shared-memory limit its configs are pruned by), the
Winograd path model (HBM bandwidth, tensor-core rate) and the offline sm_90 tooling
(``kernels.sm90``: the occupancy rule and the compile-only driver's device properties).

The H100 and the H200 are the same sm_90 chip (132 SMs, 227 KB of shared memory per block, the
same tensor-core rates: about 990 TFLOP/s dense fp16/bf16, 1,980 fp8/int8); they differ in memory:
80 GB of HBM3 at 3.35 TB/s against 141 GB of HBM3e at 4.8 TB/s, so the roofline ridge (dense fp16
FLOP per HBM byte) is about 295 on an H100 and about 206 on an H200. The rates below are datasheet
figures, leads for static models only; the benchmarks measure the peaks at the start of each run.

TMA (tensor descriptors, ``kernels.ops.gemm.tma``): what an sm_90 copy engine accepts is stated
once in ``DeviceSpec`` (16-byte aligned bases and strides, boxes of at most 256 per dimension, rank
<= 5).

``target()`` is the device launches are planned for: on a GPU, its spec with the SM count and
shared-memory limit read from the driver at run time; under Triton's interpreter (and for the
compile-only driver), the H100.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Optional

from .interpreter import interpreting


@dataclass(frozen=True)
class DeviceSpec:
    """What the planner, the occupancy rule and Triton's JIT need to know about a GPU."""

    name: str
    arch: int  # compute capability, 90 = sm_90
    sms: int
    regs_per_sm: int
    reg_alloc_unit: int  # registers are allocated per warp in units of this many
    smem_per_sm: int
    smem_per_block: int  # the opt-in maximum of one CTA (what Triton checks a kernel against)
    smem_reserved_per_block: int  # the CUDA runtime's own shared memory in every CTA (sm_80+)
    smem_alloc_unit: int
    threads_per_sm: int
    blocks_per_sm: int
    hbm_bytes: int
    hbm_bytes_per_s: float  # datasheet peak
    dense_fp16_flops_per_s: float  # datasheet dense fp16/bf16 tensor-core peak (fp8/int8: twice)
    warp_size: int = 32
    # The Tensor Memory Accelerator (sm_90+): a descriptor's global base address and every stride but
    # the last (which must be 1) are multiples of ``tma_alignment`` bytes; each box dimension is at most
    # ``tma_max_box`` elements, its innermost one at least ``tma_alignment`` bytes; rank <= ``tma_max_rank``.
    tma_alignment: int = 16
    tma_max_box: int = 256
    tma_max_rank: int = 5

    @property
    def has_tma(self) -> bool:
        """Tensor descriptors run on the copy engine (sm_90 and later)."""
        return self.arch >= 90

    @property
    def ridge_flops_per_byte(self) -> float:
        """Dense fp16 FLOP per HBM byte below which a kernel is memory-bound (datasheet rates)."""
        return self.dense_fp16_flops_per_s / self.hbm_bytes_per_s

    def properties(self) -> dict:
        """What Triton's ``driver.utils.get_device_properties`` returns on the real device."""
        return {"max_shared_mem": self.smem_per_block, "max_num_regs": self.regs_per_sm,
                "multiprocessor_count": self.sms, "warpSize": self.warp_size,
                "sm_clock_rate": 1980000, "mem_clock_rate": 2619000, "mem_bus_width": 5120}


_SM90 = dict(arch=90, sms=132, regs_per_sm=65536, reg_alloc_unit=256, smem_per_sm=228 * 1024,
             smem_per_block=227 * 1024, smem_reserved_per_block=1024, smem_alloc_unit=128,
             threads_per_sm=2048, blocks_per_sm=32, dense_fp16_flops_per_s=989e12)

H100 = DeviceSpec(name="H100 SXM (sm_90)", hbm_bytes=80 * 10**9, hbm_bytes_per_s=3.35e12, **_SM90)
H200 = DeviceSpec(name="H200 SXM (sm_90)", hbm_bytes=141 * 10**9, hbm_bytes_per_s=4.8e12, **_SM90)

# ``torch.cuda.get_device_name()`` prefixes of the devices described above.
KNOWN: Dict[str, DeviceSpec] = {"NVIDIA H100": H100, "NVIDIA H200": H200}


def spec_for(device_name: str) -> Optional[DeviceSpec]:
    """The description of a GPU by the name the driver reports (``NVIDIA H200``, ``NVIDIA H100 80GB
    HBM3`` ...), or None for a GPU not described here."""
    for prefix, spec in KNOWN.items():
        if device_name.startswith(prefix):
            return spec
    return None


@lru_cache(maxsize=None)
def _gpu(device_index: int) -> DeviceSpec:
    import torch
    from triton.runtime import driver

    props = driver.active.utils.get_device_properties(device_index)
    name = torch.cuda.get_device_name(device_index) if torch.cuda.is_available() else H100.name
    base = spec_for(name) or H100
    return dataclasses.replace(base, name=name, sms=int(props["multiprocessor_count"]),
                               smem_per_block=int(props["max_shared_mem"]))


def target() -> DeviceSpec:
    """The device launches are planned for (see the module docstring)."""
    if interpreting():
        return H100
    from triton.runtime import driver

    return _gpu(driver.active.get_current_device())


def current_name() -> Optional[str]:
    """``torch.cuda.get_device_name()`` of the GPU in use; None under the interpreter or without one."""
    import torch

    if interpreting() or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name()
