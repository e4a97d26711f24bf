"""Offline tooling: what an H100 (sm_90) would compile and launch, on a machine without one.

    driver.py         a compile-only Triton driver with H100 properties, and the occupancy rule
    binary.py         registers, spills and shared memory off the cubin; wgmma / TMA / cp.async in
                      the PTX; the dot loops and their restarts in the TTGIR
    launch_plan.py    recording every launch of the package's real API under that driver
    compile_check.py  ``python -m kernels.sm90.compile_check``: every kernel x config x variant the
                      JIT really specialises, compiled for sm_90 (``make compile-check``)

Never imported by the runtime.
"""
