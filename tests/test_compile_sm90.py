"""Every kernel, in every autotune config, compiles for the H100 (sm_90) without a GPU.

Runs ``python -m kernels.compile_check`` in a subprocess without TRITON_INTERPRET (the
interpreter gives no compilable kernels) and prints its register / spill / shared-memory table.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("sm90") / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "kernels.compile_check", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )
    print(proc.stdout)
    assert proc.returncode == 0, f"sm_90 compile failed:\n{proc.stderr[-6000:]}"
    return json.loads(out.read_text())


def test_every_kernel_compiles_for_sm90(report):
    import kernels  # noqa: F401
    from kernels.tuning import ALL_KERNELS

    assert not report["failures"]
    expected = sum(len(k.examples) * len(k.configs) for k in ALL_KERNELS)
    assert len(report["rows"]) == expected
    assert {row["kernel"] for row in report["rows"]} == {k.name for k in ALL_KERNELS}
    for row in report["rows"]:
        assert row["registers"] and row["registers"] > 0
        assert row["shared"] <= 227 * 1024


def test_channels_last_fp16_gemms_use_tensor_cores_without_spills(report):
    """The layout the benchmarks target (fp16, channels_last, aligned channels) must not spill."""
    rows = [r for r in report["rows"] if r["unit_strides"] != "-" and r["dtype"] == "fp16"]
    assert rows
    for row in rows:
        where = f"{row['kernel']} {row['config']}"
        assert row["stack"] == 0, f"{where} spills {row['stack']} bytes"
        if "BLOCK_K" in row["config"]:  # the GEMM-shaped kernels
            assert row["tensor_core"], f"{where} does not use tensor cores"
            assert row["async_copy"], f"{where} is not software-pipelined (no cp.async)"
