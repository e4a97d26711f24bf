"""Compile every kernel of the package, in every autotune config, for the H100 (sm_90).

Runs on a machine without a GPU: Triton lowers to PTX, ptxas assembles a cubin, and
cuobjdump (both shipped in triton's NVIDIA backend) reads registers, stack (spill) bytes and
shared memory off it. Must run without ``TRITON_INTERPRET`` (under the interpreter
``@triton.jit`` gives no compilable function), so tests call it in a subprocess:

    python -m kernels.compile_check [--json FILE]

Exit status 1 if any kernel fails to compile.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

_TARGET_ARCH = 90
_WARP_SIZE = 32


def _tool(name: str) -> str:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    return str(path)


def _signature(fn, constexprs: dict, dtype: str, pointer_dtypes: dict) -> dict:
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*" + pointer_dtypes.get(name, dtype)
        else:
            sig[name] = "i32"
    return sig


def _resource_usage(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run(
            [_tool("cuobjdump"), "--dump-resource-usage", f.name],
            check=True, capture_output=True, text=True,
        ).stdout
    usage = {}
    for key, pattern in (("registers", r"REG:(\d+)"), ("stack", r"STACK:(\d+)"), ("shared", r"SHARED:(\d+)")):
        match = re.search(pattern, text)
        usage[key] = int(match.group(1)) if match else None
    return usage


def compile_one(kernel, cfg, example) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    # ``ones``: integer arguments the JIT specialises to the constant 1 at run time (unit strides).
    ones = {name: 1 for name in example.get("ones", ())}
    constexprs = dict(example["constexprs"], **cfg.kwargs, **ones)
    signature = _signature(kernel.fn, constexprs, example["dtype"], example.get("pointer_dtypes", {}))
    index = kernel.fn.arg_names.index
    # torch allocations are 16-byte aligned, which the JIT also tells the compiler.
    aligned = [name for name in kernel.fn.arg_names if name.endswith("_ptr")]
    if example.get("aligned"):
        # Strides and per-group channel counts that are multiples of 16, as with real layers
        # (C = 64, 128, ...) in channels_last: the JIT specialises on that divisibility too.
        aligned += [name for name in kernel.fn.arg_names
                    if name not in constexprs and (re.fullmatch(r"s[a-z]_[a-z]", name) or name.endswith("_PER_GROUP"))]
    attrs = {(index(name),): [["tt.divisibility", 16]] for name in aligned}
    src = ASTSource(kernel.fn, signature, constexprs={(index(k),): v for k, v in constexprs.items()}, attrs=attrs)
    compiled = triton.compile(
        src,
        target=GPUTarget("cuda", _TARGET_ARCH, _WARP_SIZE),
        options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages},
    )
    row = {
        "kernel": kernel.name,
        "dtype": example["dtype"],
        "config": ", ".join(f"{k}={v}" for k, v in cfg.kwargs.items()),
        "warps": cfg.num_warps,
        "stages": cfg.num_stages,
        "variant": ",".join(f"{k}={v}" for k, v in example["constexprs"].items()),
        "unit_strides": ",".join(example.get("ones", ())) or "-",
    }
    row.update(_resource_usage(compiled.asm["cubin"]))
    row["shared"] = compiled.metadata.shared  # dynamic shared memory, which cuobjdump does not see
    row["tensor_core"] = bool(re.search(r"\b(wgmma|mma)\.", compiled.asm["ptx"]))
    row["async_copy"] = "cp.async." in compiled.asm["ptx"]
    return row


def _compile_task(task):
    kernel_index, example_index, config_index = task
    from kernels.tuning import ALL_KERNELS

    kernel = ALL_KERNELS[kernel_index]
    example, cfg = kernel.examples[example_index], kernel.configs[config_index]
    try:
        return compile_one(kernel, cfg, example), None
    except Exception as exc:  # report every failure, not just the first
        return None, f"{kernel.name} [{example['dtype']}] {cfg}: {type(exc).__name__}: {exc}"


def run_all(workers: int = 0):
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("compile_check: unset TRITON_INTERPRET (the interpreter cannot compile kernels)")
    import kernels  # noqa: F401  (imports every algorithm, which registers its kernels)
    from kernels.tuning import ALL_KERNELS

    tasks = [
        (ki, ei, ci)
        for ki, kernel in enumerate(ALL_KERNELS)
        for ei in range(len(kernel.examples))
        for ci in range(len(kernel.configs))
    ]
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_compile_task, tasks))
    rows = [row for row, _ in results if row is not None]
    failures = [failure for _, failure in results if failure is not None]
    return rows, failures


def format_table(rows) -> str:
    header = (f"{'kernel':<24} {'dtype':<5} {'unit strides':<16} {'config':<44} {'w':>2} {'st':>2} "
              f"{'regs':>4} {'spill':>5} {'smem':>7} mma cp.async")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['kernel']:<24} {r['dtype']:<5} {r['unit_strides']:<16} {r['config']:<44} {r['warps']:>2} "
            f"{r['stages']:>2} {r['registers']!s:>4} {r['stack']!s:>5} {r['shared']!s:>7} "
            f"{'yes' if r['tensor_core'] else 'no':<3} {'yes' if r['async_copy'] else 'no'}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    rows, failures = run_all()
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "failures": failures}, indent=1))
    for failure in failures:
        print("FAILED:", failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
