"""What the JIT compiles for the H100 (sm_90) from real calls, without a GPU (kernels/sm90/compile_check.py).

Runs ``python -m kernels.sm90.compile_check --json`` once, in a subprocess without TRITON_INTERPRET
(the interpreter compiles nothing): real layers at batch 32 in channels_last fp16 and bf16,
forward and backward, through the package's own API; every autotune config of every kernel.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The hot paths of the networks, checked in fp16 and bf16 channels_last on every config the
# autotuner may pick for every call of kernels.sm90.compile_check.CALLS: (path, kernel). One line per path.
HOT_PATHS = [
    ("pointwise by TMA: forward, dgrad, wgrad", "_pointwise_tma_kernel"),
    ("R x S by TMA: forward, dgrad", "_conv_tma_kernel"),
    ("R x S wgrad by TMA", "_conv_tma_wgrad_kernel"),
    ("im2col forward and pointwise", "_im2col_forward_kernel"),
    ("dgrad", "_dgrad_kernel"),
    ("wgrad", "_wgrad_kernel"),
    ("stem forward", "_stem_forward_kernel"),
    ("stem wgrad", "_stem_wgrad_kernel"),
    ("winograd GEMM stage", "_winograd_gemm_kernel"),
]
# (path, dtype) -> what fails on today's kernels: xfail(strict=True), so the test fails once it
# passes and the line is deleted.
KNOWN_FAILURES = {}


def _hot_cases():
    for path, kernel in HOT_PATHS:
        for dtype in ("fp16", "bf16"):
            reason = KNOWN_FAILURES.get((path, dtype))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(path, kernel, dtype, marks=marks, id=f"{path}-{dtype}")


ROW_FIELDS = {"kernel", "config", "dtype", "variant", "registers", "spill_bytes", "smem_bytes", "mma",
              "async_copy", "ctas_per_sm", "grid", "waves"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("sm90") / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "kernels.sm90.compile_check", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )
    print(proc.stdout)
    assert proc.returncode == 0, f"sm_90 compile check failed:\n{proc.stderr[-6000:]}"
    return json.loads(out.read_text())


def test_every_kernel_and_config_compiles_for_sm90(report):
    import kernels  # noqa: F401
    from kernels.sm90.launch_plan import config_name
    from kernels.core.launcher import ALL_KERNELS

    assert not report["failures"]
    for index, kernel in enumerate(ALL_KERNELS):
        compiled = {row["config"] for row in report["rows"] if row["kernel_id"] == index}
        for cfg in kernel.configs:
            assert config_name(dict(cfg.kwargs), cfg.num_warps, cfg.num_stages) in compiled, (kernel.name, cfg)
    for row in report["rows"]:
        assert ROW_FIELDS <= set(row)
        assert row["registers"] > 0 and row["smem_bytes"] <= 228 * 1024
        assert row["mma"] in ("wgmma", "mma.sync", "none") and row["async_copy"] in ("tma", "cp.async", "none")
        assert row["ctas_per_sm"] >= 1 and row["waves"] >= 1


def test_the_jit_specialisation_of_channels_last_calls_is_compiled(report):
    """Unit strides are specialised to 1; pointers (torch allocations) known 16-byte aligned."""
    rows = [r for r in report["rows"] if r["layout"] == "channels_last"]
    assert rows
    import kernels  # noqa: F401
    from kernels.core.launcher import ALL_KERNELS

    # A stride argument that is 1 in channels_last (the output's channel stride so_k, and the like).
    channel_strides = {k.name: {a for a in k.fn.arg_names if a in ("so_k", "sx_c", "sd_k", "sa_c", "sb_n")}
                       for k in ALL_KERNELS}
    for row in rows:
        assert channel_strides[row["kernel"]] <= set(row["ones"]), f"{row['kernel']} {row['variant']}: {row['ones']}"
        assert not [a for a in row["not_div16"] if a.endswith("_ptr")], row
    assert any(row["ones"] for row in rows)


@pytest.mark.parametrize("path, kernel, dtype", list(_hot_cases()))
def test_hot_path_uses_wgmma_and_async_copies_without_spills(report, path, kernel, dtype):
    rows = [r for r in report["rows"]
            if r["kernel"] == kernel and r["dtype"] == dtype and r["layout"] == "channels_last"]
    assert rows, f"no {dtype} channels_last call compiles {kernel}: add one to kernels.sm90.compile_check.CALLS"
    bad = [f"{r['config']} [{r['variant']}]: mma={r['mma']} async_copy={r['async_copy']} spill={r['spill_bytes']} B"
           for r in rows if r["mma"] != "wgmma" or r["async_copy"] == "none" or r["spill_bytes"]]
    assert not bad, f"{path} ({kernel}, {dtype}):\n" + "\n".join(bad)


@pytest.mark.parametrize("kernel", ["_pointwise_tma_kernel", "_conv_tma_kernel", "_conv_tma_wgrad_kernel"])
def test_tma_kernels_load_by_tma(report, kernel):
    """Every compile of a TMA kernel copies its operands with cp.async.bulk.tensor, in one dot loop."""
    rows = [r for r in report["rows"] if r["kernel"] == kernel]
    assert rows and all(r["async_copy"] == "tma" and r["mma"] == "wgmma" for r in rows
                        if r["dtype"] in ("fp16", "bf16")), kernel
    assert all(len(r["dot_loops"]) == 1 and r["dot_loops"][0]["tma_copies"] >= 2 for r in rows), kernel


def test_occupancy_rule():
    from kernels.sm90.driver import ctas_per_sm, waves

    # 128 regs x 8 warps: 4096 regs a warp, 16 warps an SM -> 2 CTAs; 64 KB + 1 KB smem fits 3.
    assert ctas_per_sm(8, 128, 64 * 1024, 1024) == (2, "regs")
    # 255 regs round up to 256 a thread (8192 a warp): 8 warps an SM -> 2 CTAs of 4 warps.
    assert ctas_per_sm(4, 255, 0, 0) == (2, "regs")
    # 100 KB of dynamic smem + the 1 KB runtime reservation: 2 CTAs in 228 KB.
    assert ctas_per_sm(4, 32, 100 * 1024, 0) == (2, "smem")
    assert ctas_per_sm(4, 32, 228 * 1024, 0) == (0, "smem")  # over the 227 KB a CTA may have
    assert ctas_per_sm(1, 16, 0, 0) == (32, "blocks")
    assert waves(264, 1) == (2, 1.0) and waves(133, 1) == (2, 1 / 132) and waves(0, 2) == (0, 0.0)


TTGIR = """
  tt.func public @k(%x_ptr: !tt.ptr<f16>, %C: i32 {tt.divisibility = 16 : i32}, %N: i32) {
    %c0_i32 = arith.constant 0 : i32
    %c1_i32 = arith.constant 1 : i32
    %c3_i32 = arith.constant 3 : i32
    %c32_i32 = arith.constant 32 : i32
    %0 = tt.get_program_id x : i32
    %1 = arith.muli %0, %N : i32
    %2 = arith.addi %1, %N : i32
    %acc = scf.for %r = %c0_i32 to %c3_i32 step %c1_i32 iter_args(%a0 = %cst) -> (tensor<64x64xf32>)  : i32 {
      %acc_1 = scf.for %c = %c0_i32 to %C step %c32_i32 iter_args(%a1 = %a0) -> (tensor<64x64xf32>)  : i32 {
        %t = ttg.async_copy_global_to_local %p, %q mask %m : tensor<64x32x!tt.ptr<f16>> -> <64x32xf16>
        %d = ttng.warp_group_dot %u, %v, %a1 {isAsync = true} : !ttg.memdesc<64x32xf16> -> tensor<64x64xf32>
        scf.yield %d : tensor<64x64xf32>
      }
      scf.yield %acc_1 : tensor<64x64xf32>
    }
    %s = scf.for %j = %1 to %2 step %c32_i32 iter_args(%b = %cst) -> (tensor<64x64xf32>)  : i32 {
      %e = tt.dot %u, %v, %b : tensor<64x32xf16> * tensor<32x64xf16> -> tensor<64x64xf32>
      scf.yield %e : tensor<64x64xf32>
    }
    tt.return
  }
"""


def test_dot_loops_are_read_off_the_ttgir():
    from kernels.sm90.binary import Binary, Resources, _dot_loops, _scalar_defs

    binary = Binary("h", "k", 4, 3, 0, Resources(64, 0, 0, 0), "wgmma", "cp.async", [16],
                    _dot_loops(TTGIR), _scalar_defs(TTGIR))
    tap, flat = binary.dot_loops({"C": 256, "N": 100})
    # The channel loop holds the wgmma and is entered once per tap (3 times), 8 trips each.
    assert (tap["restarts"], tap["trips"], tap["kind"], tap["async_copies"]) == (3, 8, "wgmma", 1)
    # Bounds from program id 0 and an argument: 0 to 100 step 32 = 4 trips, entered once, no copies.
    assert (flat["restarts"], flat["trips"], flat["kind"], flat["async_copies"]) == (1, 4, "dot", 0)
