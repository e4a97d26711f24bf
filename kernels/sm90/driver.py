"""An H100 (sm_90) without one: the occupancy rule and a compile-only Triton driver.

The device facts (SMs, registers, shared memory) are ``kernels.core.device``'s.

``CompileOnlyDriver`` is a Triton driver whose target is ``GPUTarget("cuda", 90, 32)`` and whose
device properties are an H100 SXM's. Made active (``triton.runtime.driver.driver.set_active``) in
a process without ``TRITON_INTERPRET``, it lets Triton's JIT do on a CPU-only machine exactly what
it does on an H100: bind the real arguments, specialise them (pointers and integers divisible by
16, integers equal to 1, constexprs), compile for sm_90 with the bundled ``ptxas``, refuse a
config whose shared memory does not fit. Only the last step differs: the launch is handed to the
``on_launch`` callback instead of running, and a benchmark (``triton.autotune`` timing a config)
is handed to ``on_benchmark``. ``kernels.sm90.launch_plan`` builds its recordings on it.
"""
from __future__ import annotations

import math
from typing import Callable, Tuple

import torch
from triton.backends.compiler import GPUTarget
from triton.backends.driver import DriverBase

from ..core.device import H100, DeviceSpec
from .binary import resources


def ctas_per_sm(num_warps: int, registers: int, dynamic_smem: int, static_smem: int = 0,
                device: DeviceSpec = H100) -> Tuple[int, str]:
    """(CTAs resident on one SM, the resources that bind), as the CUDA occupancy calculator counts.

    A CTA's shared memory is its dynamic part (Triton's ``metadata.shared``), its static part
    (cuobjdump) and the 1 KB the runtime reserves per CTA on sm_80+. For sm_90, ptxas already lists
    that KB as static shared memory of every kernel (SHARED:1024), so it is counted once:
    ``max(static, reservation)``.
    """
    if dynamic_smem > device.smem_per_block:
        return 0, "smem"
    limits = {"threads": device.threads_per_sm // (num_warps * device.warp_size), "blocks": device.blocks_per_sm}
    if registers:
        per_warp = math.ceil(registers * device.warp_size / device.reg_alloc_unit) * device.reg_alloc_unit
        limits["regs"] = (device.regs_per_sm // per_warp) // num_warps
    per_cta = dynamic_smem + max(static_smem, device.smem_reserved_per_block)
    per_cta = math.ceil(per_cta / device.smem_alloc_unit) * device.smem_alloc_unit
    limits["smem"] = device.smem_per_sm // per_cta
    fewest = min(limits.values())
    return fewest, "+".join(name for name in ("smem", "regs", "threads", "blocks") if limits.get(name) == fewest)


def waves(ctas: int, per_sm: int, device: DeviceSpec = H100) -> Tuple[int, float]:
    """(waves of ``ctas`` CTAs over the device at ``per_sm`` CTAs per SM, how full the last one is)."""
    if ctas <= 0 or per_sm <= 0:
        return 0, 0.0
    slots = device.sms * per_sm
    count = math.ceil(ctas / slots)
    return count, (ctas - (count - 1) * slots) / slots


def max_threads_per_block(registers: int, device: DeviceSpec = H100) -> int:
    """What the driver reports as a kernel's largest block for its register count."""
    per_warp = max(1, math.ceil(registers * device.warp_size / device.reg_alloc_unit)) * device.reg_alloc_unit
    return min(1024, (device.regs_per_sm // per_warp) * device.warp_size)


class _Utils:
    """``driver.utils``: device properties, and binary "loading" that only reads the cubin."""

    def __init__(self, device: DeviceSpec):
        self.device = device

    def get_device_properties(self, device_index):
        return self.device.properties()

    def load_binary(self, name, cubin, shared, device_index):
        usage = resources(bytes(cubin))
        return (None, name, usage.registers, usage.spill_bytes, max_threads_per_block(usage.registers, self.device))

    def unload_module(self, module):
        pass

    def set_printf_fifo_size(self, size):
        pass


def _active() -> "CompileOnlyDriver":
    """The compile-only driver now active. Compiled kernels keep the launcher (and the autotuner
    its timer) they were first given, across recordings: both look the driver up at call time."""
    from triton.runtime.driver import driver

    active = driver.active
    if not isinstance(active, CompileOnlyDriver):
        raise RuntimeError("kernels.sm90.driver: a kernel compiled by the compile-only driver was launched "
                           "while another driver is active")
    return active


class _Launcher:
    """``driver.launcher_cls(src, metadata)``: hands the launch to the active driver's ``on_launch``."""

    def __init__(self, src, metadata):
        self.src, self.metadata = src, metadata

    def __call__(self, grid_x, grid_y, grid_z, stream, function, *rest):
        # rest: packed metadata, launch metadata, enter hook, exit hook, then every argument.
        args = rest[len(rest) - len(self.src.fn.arg_names):]
        _active().on_launch(self.src, self.metadata, (grid_x, grid_y, grid_z), args)


def _benchmark(kernel_call, quantiles=None, **kwargs):
    """``driver.get_benchmarker()``: the active driver's ``on_benchmark`` gives the time in ms."""
    ms = _active().on_benchmark(kernel_call)
    return [ms] * len(quantiles) if quantiles else ms


class CompileOnlyDriver(DriverBase):
    """A Triton driver for an H100 that is not there: compiles for sm_90, runs nothing.

    ``on_launch(src, metadata, grid, args)`` receives every launch (``src``: the ASTSource with
    the JIT's specialisation, ``metadata``: the compiled kernel's, ``args``: every argument of the
    kernel, constexprs included). ``on_benchmark(kernel_call)`` is ``triton.autotune``'s timer:
    it must launch ``kernel_call()`` (which compiles the config) and return a time in ms.
    """

    launcher_cls = _Launcher

    def __init__(self, on_launch: Callable, on_benchmark: Callable, device: DeviceSpec = H100):
        super().__init__()
        self.device = device
        self.utils = _Utils(device)
        self.on_launch = on_launch
        self.on_benchmark = on_benchmark

    @classmethod
    def is_active(cls):
        return False  # never chosen by Triton's own driver discovery: only set_active() makes it so

    def get_current_target(self):
        return GPUTarget("cuda", self.device.arch, self.device.warp_size)

    def get_current_device(self):
        return 0

    def set_current_device(self, device_index):
        pass

    def get_current_stream(self, device_index=None):
        return 0

    def get_device_capability(self, device_index=0):
        return divmod(self.device.arch, 10)

    def get_active_torch_device(self):
        return torch.device("cpu")

    def map_python_to_cpp_type(self, ty: str) -> str:
        if ty.startswith("*"):
            return "CUdeviceptr"
        return {"i1": "int8_t", "i8": "int8_t", "i16": "int16_t", "i32": "int32_t", "i64": "int64_t",
                "u1": "uint8_t", "u8": "uint8_t", "u16": "uint16_t", "u32": "uint32_t", "u64": "uint64_t",
                "fp16": "double", "bf16": "double", "fp32": "double", "fp64": "double"}.get(ty, ty)

    def get_benchmarker(self):
        return _benchmark

    def get_empty_cache_for_benchmark(self):
        return None

    def clear_cache(self, cache):
        pass

    def get_device_interface(self):
        raise RuntimeError("kernels.sm90.driver: the compile-only driver has no device to talk to")
