"""Reading one kernel compiled for sm_90: resources off the cubin, instructions off the PTX, the
pipelined dot loops off the TTGIR.

* ``resources(cubin)``: registers per thread, spill (stack) bytes, static shared memory, read by
  ``cuobjdump --dump-resource-usage`` (shipped in triton's NVIDIA backend, like ``ptxas``);
* ``Binary.of(metadata)``: one compiled kernel (one Triton cache entry) with its tensor-core
  instruction (``wgmma`` = Hopper's warpgroup MMA, ``mma.sync`` = the Ampere one, or none), its
  async operand copies (``tma`` = ``cp.async.bulk.tensor``, ``cp.async``, or none) and their
  sizes, and every loop that holds a matrix product;
* ``Binary.dot_loops(ints)``: for one launch's integer arguments, how many times one CTA (program
  id 0) enters each such loop and its trip count. Each entry is one software-pipeline prologue
  and one full drain, so a loop entered per tap (9 times for a 3x3) drains 9 times per tile.

Counts in the PTX are static instruction sites, not executions.
"""
from __future__ import annotations

import functools
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple


def _nvidia_tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


@dataclass(frozen=True)
class Resources:
    registers: int
    spill_bytes: int  # the per-thread stack frame: where ptxas spills registers
    local_bytes: int
    static_smem: int


@functools.lru_cache(maxsize=None)
def resources(cubin: bytes) -> Resources:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([_nvidia_tool("cuobjdump"), "--dump-resource-usage", f.name],
                              check=True, capture_output=True, text=True).stdout

    def value(key: str) -> int:
        match = re.search(rf"\b{key}:(\d+)", text)
        return int(match.group(1)) if match else 0

    return Resources(value("REG"), value("STACK"), value("LOCAL"), value("SHARED"))


# PTX instruction sites (an optional predicate "@%p1 " may precede an instruction).
_PRED = r"^\s*(?:@!?%p\d+\s+)?"
_WGMMA = re.compile(_PRED + r"wgmma\.mma_async", re.M)
_MMA_SYNC = re.compile(_PRED + r"mma\.sync", re.M)
_TMA = re.compile(_PRED + r"cp\.async\.bulk\.tensor", re.M)
# cp.async.cg.shared.global [dst], [src], SIZE(, src-size): the size in bytes is the third operand.
_CP_ASYNC = re.compile(
    _PRED + r"cp\.async\.c[ag]\.shared\.global\S*\s+\[[^\]]*\],\s*\[[^\]]*\],\s*(0x[0-9a-fA-F]+|\d+)", re.M)


def mma_kind(ptx: str) -> str:
    if _WGMMA.search(ptx):
        return "wgmma"
    if _MMA_SYNC.search(ptx):
        return "mma.sync"
    return "none"


def async_copy_kind(ptx: str) -> str:
    if _TMA.search(ptx):
        return "tma"
    if _CP_ASYNC.search(ptx):
        return "cp.async"
    return "none"


def cp_async_sizes(ptx: str) -> List[int]:
    """The distinct byte sizes of the kernel's cp.async copies (16 = fully vectorised)."""
    return sorted({int(size, 0) for size in _CP_ASYNC.findall(ptx)})


# --- TTGIR: loops holding a dot, and the scalar arithmetic that bounds them -------------------

_FOR = re.compile(r"scf\.for\s+%[\w.#-]+\s*=\s*(%[\w.#-]+)\s+to\s+(%[\w.#-]+)\s+step\s+(%[\w.#-]+)")
_DOT = re.compile(r"=\s*(tt\.dot|ttng\.warp_group_dot)\s")
_SCALAR = re.compile(r"^\s*(%[\w.#-]+)\s*=\s*(arith\.\w+|tt\.get_program_id)\s+(.*?)\s*:\s*(i1|i32|i64)\b")


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


_BINARY = {
    "arith.addi": lambda a, b: a + b, "arith.subi": lambda a, b: a - b, "arith.muli": lambda a, b: a * b,
    "arith.divsi": _trunc_div, "arith.divui": lambda a, b: a // b,
    "arith.remsi": lambda a, b: a - b * _trunc_div(a, b), "arith.remui": lambda a, b: a % b,
    "arith.ceildivsi": lambda a, b: -(-a // b), "arith.floordivsi": lambda a, b: a // b,
    "arith.minsi": min, "arith.maxsi": max, "arith.minui": min, "arith.maxui": max,
    "arith.andi": lambda a, b: a & b, "arith.ori": lambda a, b: a | b, "arith.xori": lambda a, b: a ^ b,
    "arith.shli": lambda a, b: a << b, "arith.shrsi": lambda a, b: a >> b, "arith.shrui": lambda a, b: a >> b,
}
_COMPARE = {"eq": int.__eq__, "ne": int.__ne__, "slt": int.__lt__, "sle": int.__le__, "sgt": int.__gt__,
            "sge": int.__ge__, "ult": int.__lt__, "ule": int.__le__, "ugt": int.__gt__, "uge": int.__ge__}
_CASTS = ("arith.extsi", "arith.extui", "arith.trunci", "arith.index_cast")


class ScalarValues:
    """The value of a scalar SSA name of the TTGIR for CTA 0 of one launch: integer constants,
    the kernel's integer arguments (named ``%ARG`` in the TTGIR) and arithmetic on them.
    Loop-carried values are unknown (None)."""

    def __init__(self, defs: Dict[str, Tuple[str, List[str]]], ints: Dict[str, int]):
        self.defs, self.ints, self.memo = defs, ints, {}

    def __call__(self, name: str, depth: int = 0) -> Optional[int]:
        if name not in self.memo:
            self.memo[name] = self._evaluate(name, depth)
        return self.memo[name]

    def _evaluate(self, name: str, depth: int) -> Optional[int]:
        if name not in self.defs:
            return self.ints.get(name.lstrip("%"))
        op, operands = self.defs[name]
        if depth > 64:
            return None
        values = [self(o, depth + 1) if o.startswith("%") else o for o in operands]
        try:
            if op == "arith.constant":
                return int(operands[0])
            if op == "tt.get_program_id":
                return 0
            if op in _CASTS:
                return values[0]
            if op == "arith.cmpi":
                a, b = values[1], values[2]
                return None if a is None or b is None else int(_COMPARE[operands[0]](a, b))
            if op == "arith.select":
                return None if values[0] is None else values[1 if values[0] else 2]
            if op in _BINARY and len(values) == 2 and None not in values:
                return _BINARY[op](*values)
        except (ZeroDivisionError, KeyError, IndexError, ValueError):
            return None
        return None


def _scalar_defs(ttgir: str) -> Dict[str, Tuple[str, List[str]]]:
    defs = {}
    for line in ttgir.splitlines():
        match = _SCALAR.match(line)
        if not match:
            continue
        name, op, rest = match.group(1), match.group(2), match.group(3).strip()
        if op == "arith.constant":
            rest = {"true": "1", "false": "0"}.get(rest, rest)
            if re.fullmatch(r"-?\d+", rest):
                defs[name] = (op, [rest])
        else:
            defs[name] = (op, [part.strip() for part in rest.split(",")])
    return defs


@dataclass(frozen=True)
class DotLoop:
    """An ``scf.for`` whose body holds a matrix product, as the TTGIR has it after pipelining."""

    bounds: Tuple[str, str, str]  # lower bound, upper bound, step: SSA names
    enclosing: Tuple[Tuple[str, str, str], ...]  # the bounds of every loop around it, outermost first
    guarded: bool  # an scf.if around it may skip some entries
    wgmma: bool
    async_copies: int  # cp.async copies issued in the loop body (software pipelining)
    tma_copies: int


def _dot_loops(ttgir: str) -> List[DotLoop]:
    # Regions open on a line ending in "{" and close on a line starting with "}" ("} else {" both).
    stack: List[dict] = []
    loops: Dict[int, dict] = {}
    for number, raw in enumerate(ttgir.splitlines()):
        line = raw.strip()
        if line.startswith("}"):
            if stack:
                stack.pop()
            if line.endswith("{"):
                stack.append({"op": "if"})
            continue
        innermost = next((region for region in reversed(stack) if region["op"] == "for"), None)
        if innermost is not None:
            dot = _DOT.search(line)
            if dot:
                innermost["info"]["wgmma"] |= dot.group(1) == "ttng.warp_group_dot"
                innermost["info"]["dots"] += 1
            for region in stack:
                if region["op"] == "for":
                    region["info"]["cp_async"] += "ttg.async_copy_global_to_local" in line
                    region["info"]["tma"] += "async_tma_copy_global_to_local" in line
        if line.endswith("{"):
            match = _FOR.search(line)
            if match:
                info = dict(bounds=match.groups(), dots=0, wgmma=False, cp_async=0, tma=0,
                            enclosing=tuple(r["info"]["bounds"] for r in stack if r["op"] == "for"),
                            guarded=any(r["op"] == "if" for r in stack))
                loops[number] = info
                stack.append({"op": "for", "info": info})
            else:
                stack.append({"op": "if" if "scf.if" in line else "other"})
    # A loop counts if a dot sits directly in it (not only in a loop nested inside).
    return [DotLoop(i["bounds"], i["enclosing"], i["guarded"], i["wgmma"], i["cp_async"], i["tma"])
            for i in loops.values() if i["dots"]]


def _trips(bounds: Tuple[str, str, str], values: ScalarValues) -> Optional[int]:
    low, high, step = (values(b) for b in bounds)
    if None in (low, high, step) or step <= 0:
        return None
    return max(0, -(-(high - low) // step))


@dataclass
class Binary:
    """One compiled kernel: a Triton cache entry for one specialisation and config."""

    hash: str
    name: str
    num_warps: int
    num_stages: int
    dynamic_smem: int  # Triton's metadata.shared
    resources: Resources
    mma: str  # wgmma | mma.sync | none
    async_copy: str  # tma | cp.async | none
    cp_async_bytes: List[int]
    loops: List[DotLoop] = field(default_factory=list)
    defs: Dict[str, Tuple[str, List[str]]] = field(default_factory=dict, repr=False)

    @property
    def smem_bytes(self) -> int:
        return self.dynamic_smem + self.resources.static_smem

    @classmethod
    def of(cls, metadata) -> "Binary":
        """Read the kernel's cubin, PTX and TTGIR from Triton's cache (every compile writes them)."""
        return _binary(metadata.hash, metadata.name, metadata.num_warps, metadata.num_stages, metadata.shared)

    def dot_loops(self, ints: Dict[str, int]) -> List[dict]:
        """Each dot loop for a launch with these integer arguments: how often CTA 0 enters it
        (``restarts``; None when unknown) and its trip count per entry."""
        values = ScalarValues(self.defs, ints)
        out = []
        for loop in self.loops:
            outer = [_trips(bounds, values) for bounds in loop.enclosing]
            restarts = None if None in outer else functools.reduce(lambda a, b: a * b, outer, 1)
            out.append(dict(restarts=restarts, trips=_trips(loop.bounds, values), depth=len(loop.enclosing),
                            guarded=loop.guarded, kind="wgmma" if loop.wgmma else "dot",
                            async_copies=loop.async_copies, tma_copies=loop.tma_copies))
        return out


@functools.lru_cache(maxsize=None)
def _binary(hash_: str, name: str, num_warps: int, num_stages: int, dynamic_smem: int) -> Binary:
    from triton.runtime.cache import get_cache_manager

    group = get_cache_manager(hash_).get_group(f"{name[:150]}.json") or {}
    files = {Path(path).suffix[1:]: Path(path) for path in group.values()}
    if not {"cubin", "ptx", "ttgir"} <= files.keys():
        raise RuntimeError(f"kernels.sm90.binary: the Triton cache has no cubin/ptx/ttgir for {name} ({hash_})")
    ptx, ttgir = files["ptx"].read_text(), files["ttgir"].read_text()
    return Binary(hash_, name, num_warps, num_stages, dynamic_smem, resources(files["cubin"].read_bytes()),
                  mma_kind(ptx), async_copy_kind(ptx), cp_async_sizes(ptx), _dot_loops(ttgir), _scalar_defs(ttgir))
