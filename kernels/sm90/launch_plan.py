"""What the package would launch on an H100, recorded on a machine without one.

Inside ``recording()`` the compile-only driver of ``kernels.sm90.driver`` is active and every launch of
a ``TunedKernel`` (``kernels.core.launcher.LAUNCH_OBSERVER``) is recorded: the package's real API called
on CPU tensors of real sizes goes through its own dispatch, planners and autotuner; Triton's JIT
specialises the real arguments and compiles for sm_90; nothing runs, so outputs are garbage.

    with launch_plan.recording() as plan:              # a process without TRITON_INTERPRET
        with plan.labels(layer="conv1"):
            kernels.conv2d(x, w, stride=2, padding=3)  # x, w: CPU tensors, torch.empty
    for launch in plan.launches: ...

Each ``Launch`` holds the kernel, its grid, the JIT's specialisation (constexprs, integers
specialised to 1, arguments known divisible by 16) and, for the launched config and for every
autotune candidate (``triton.autotune`` times each pruned config through the driver's
benchmarker, which compiles it here and reports the same time for all), a ``Compiled`` with
registers, spills, shared memory, tensor-core instruction, async copies, CTAs per SM, waves on
132 SMs and the dot loops' restarts. **The launched config is the first candidate that compiles
and fits**: on an H100 the autotuner picks the fastest by timing, one of the candidates.

``kernels.core.checks.check_device`` (the package's single device check) accepts CPU tensors
while recording; nothing else of the package is patched.
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import triton

from ..core import launcher
from ..core.device import H100
from ..core.interpreter import interpreting
from .binary import Binary
from .driver import CompileOnlyDriver, ctas_per_sm, waves

# The custom ops of kernels.autograd: a launch inside one of them belongs to that pass.
_PHASE_OF_OP = {"conv2d_op": "fwd", "conv2d_fused_op": "fwd", "conv2d_grad_input_op": "dgrad",
                "conv2d_grad_weight_op": "wgrad", "conv2d_grad_bias_op": "bgrad"}


def config_name(meta: Dict[str, Any], num_warps: int, num_stages: int) -> str:
    """``{"BLOCK_M": 128, "GROUP_M": 8}``, 8 warps, 4 stages -> ``"M128 G8 w8 s4"``."""
    def short(name: str) -> str:
        if name.startswith("BLOCK_"):
            return name[len("BLOCK_"):]
        return {"GROUP_M": "G"}.get(name, name + "=")

    return " ".join([f"{short(k)}{v}" for k, v in meta.items()] + [f"w{num_warps}", f"s{num_stages}"])


@dataclass
class Compiled:
    """One kernel compiled for one launch's arguments in one config (launched, or a candidate)."""

    config: str
    meta: Dict[str, Any]  # the config's meta-parameters
    grid: Tuple[int, int, int]
    ints: Dict[str, int]  # the launch's runtime integer arguments (for the dot loops' trip counts)
    binary: Optional[Binary] = None
    error: Optional[str] = None  # the config did not compile or does not fit

    @property
    def ctas(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def occupancy(self) -> Tuple[int, str]:
        b = self.binary
        return ctas_per_sm(b.num_warps, b.resources.registers, b.dynamic_smem, b.resources.static_smem)

    @property
    def waves(self) -> Tuple[int, float]:
        return waves(self.ctas, self.occupancy[0])

    def dot_loops(self) -> List[dict]:
        return self.binary.dot_loops(self.ints)

    BRIEF = ("config", "grid", "ctas", "registers", "spill_bytes", "stack", "smem_bytes", "ctas_per_sm", "limiter",
             "waves", "mma", "async_copy", "error")

    def to_json(self, brief: bool = False) -> dict:
        """Every field; ``brief``: only those of ``BRIEF`` (for long lists of candidates)."""
        if brief:
            return {k: v for k, v in self.to_json().items() if k in self.BRIEF}
        if self.binary is None:
            return dict(config=self.config, meta=self.meta, error=self.error)
        b, (per_sm, limiter), (n_waves, last) = self.binary, self.occupancy, self.waves
        return dict(
            config=self.config, meta=self.meta, num_warps=b.num_warps, num_stages=b.num_stages,
            grid=list(self.grid), ctas=self.ctas, registers=b.resources.registers,
            spill_bytes=b.resources.spill_bytes, stack=b.resources.spill_bytes,  # cuobjdump's name (judge.py)
            local_bytes=b.resources.local_bytes, smem_bytes=b.smem_bytes, smem_dynamic=b.dynamic_smem,
            ctas_per_sm=per_sm, limiter=limiter, waves=n_waves, last_wave=round(last, 3),
            mma=b.mma, async_copy=b.async_copy, cp_async_bytes=b.cp_async_bytes,
            dot_loops=self.dot_loops(), hash=b.hash,
        )


@dataclass
class Launch:
    """One launch the package made, with the JIT's specialisation and every config compiled for it."""

    index: int
    kernel: str  # the TunedKernel's (or plain @triton.jit's) function name
    kernel_id: Optional[int]  # its index in kernels.core.launcher.ALL_KERNELS (two may share a function)
    labels: Dict[str, Any]
    dtype: str  # element type of the first pointer argument: fp16, bf16, fp32
    constexprs: Dict[str, Any]  # the variant: constexprs that are not config meta-parameters
    ones: List[str]  # integer arguments the JIT specialised to the constant 1 (unit strides)
    div16: List[str]  # pointer and integer arguments the JIT marked divisible by 16
    not_div16: List[str]  # the other pointer and integer arguments
    launched: Compiled
    candidates: List[Compiled]  # every config the autotuner compiled for this launch (incl. the launched)
    tuning: str

    @property
    def phase(self) -> str:
        return self.labels.get("phase", "-")

    def to_json(self, brief_candidates: bool = False) -> dict:
        data = dict(index=self.index, kernel=self.kernel, kernel_id=self.kernel_id, labels=self.labels,
                    phase=self.phase, dtype=self.dtype, constexprs=self.constexprs, ones=self.ones,
                    div16=self.div16, not_div16=self.not_div16, ints=self.launched.ints, tuning=self.tuning)
        data.update(self.launched.to_json())
        data["candidates"] = [c.to_json(brief=brief_candidates) for c in self.candidates]
        return data


@dataclass
class _Call:
    """A TunedKernel launch in progress: the driver's launches inside it belong to it."""

    kernel: Any  # the TunedKernel, or None for a plain @triton.jit launch
    labels: Dict[str, Any]
    launched: Optional[Compiled] = None
    src: Any = None
    args: Tuple = ()
    candidates: List[Compiled] = field(default_factory=list)


class Recording:
    """The launches recorded while ``recording()`` is active."""

    def __init__(self):
        self.launches: List[Launch] = []
        self.errors: List[dict] = []  # calls that raised, for the caller to fill (see ``attempt``)
        self._labels: Dict[str, Any] = {}
        self._call: Optional[_Call] = None
        self._benchmarking = False
        self._tuned: Dict[Tuple, int] = {}  # (kernel, autotune key) -> the launch that tuned it
        self.extra_configs: Dict[int, List[triton.Config]] = {}  # kernel_id -> configs to compile too

    @contextlib.contextmanager
    def labels(self, **labels) -> Iterator["Recording"]:
        """Attach ``labels`` (layer=..., algorithm=...) to the launches recorded inside."""
        saved = dict(self._labels)
        self._labels.update(labels)
        try:
            yield self
        finally:
            self._labels = saved

    def attempt(self, fn, *args, **kwargs) -> bool:
        """Call ``fn``; if it raises, keep the error (with the current labels) and return False."""
        try:
            fn(*args, **kwargs)
            return True
        except Exception as error:  # noqa: BLE001 - reported, the caller goes on with its other calls
            self.errors.append(dict(self._labels, error=_error_text(error)))
            return False

    def to_json(self, brief_candidates: bool = False) -> dict:
        return dict(device=H100.name, triton=triton.__version__, errors=self.errors,
                    launches=[launch.to_json(brief_candidates) for launch in self.launches])

    # -- the TunedKernel hook and the driver's callbacks ----------------------------------------
    def _observe(self, kernel, grid, launcher):
        def launch(*args, **kwargs):
            outer, self._call = self._call, _Call(kernel, dict(self._labels, phase=_phase(self._labels)))
            call = self._call
            try:
                result = launcher(*args, **kwargs)
                for cfg in self.extra_configs.pop(_kernel_id(kernel), []):
                    try:
                        self._benchmark(lambda: _run_config(kernel, grid, cfg, args, kwargs), cfg)
                    except Exception:  # noqa: BLE001 - kept as the candidate's error
                        pass
            finally:
                self._call = outer
            self._finish(call)
            return result

        return launch

    def _benchmark(self, kernel_call, config: Optional[triton.Config] = None) -> float:
        """Compile (and record as a candidate) one config; every config takes the same time, so
        ``triton.autotune`` keeps the first that compiled and fits."""
        self._benchmarking = True
        try:
            kernel_call()
        except Exception as error:
            config = config or _closure_value(kernel_call, "config")  # the autotuner's config being timed
            if self._call is not None and config is not None:
                self._call.candidates.append(Compiled(config_name(config.kwargs, config.num_warps, config.num_stages),
                                                      dict(config.kwargs), (0, 0, 0), {}, error=_error_text(error)))
            raise
        finally:
            self._benchmarking = False
        return 1.0

    def _on_launch(self, src, metadata, grid, args):
        call = self._call
        if call is None:  # a plain @triton.jit launch, outside any TunedKernel
            call = _Call(None, dict(self._labels, phase=_phase(self._labels)))
        names = src.fn.arg_names
        named = dict(zip(names, args))
        meta = {name: named[name] for name in _meta_names(call.kernel, src) if name in named}
        ints = {name: int(value) for name, value in zip(names, args)
                if isinstance(value, int) and not isinstance(value, bool) and name not in _declared(src)}
        compiled = Compiled(config_name(meta, metadata.num_warps, metadata.num_stages), meta,
                            tuple(int(g) for g in grid), ints, Binary.of(metadata))
        if self._benchmarking:
            call.candidates.append(compiled)
            return
        call.launched, call.src, call.args = compiled, src, args
        if self._call is None:
            self._finish(call)

    def _finish(self, call: _Call) -> None:
        if call.launched is None:  # the launch raised before reaching the driver
            return
        src = call.src
        constexprs, ones, div16, not_div16 = _specialisation(src, _meta_names(call.kernel, src))
        pointers = [kind[1:] for kind in src.signature.values() if kind.startswith("*")]
        launch = Launch(
            index=len(self.launches), kernel=src.fn.__name__, kernel_id=_kernel_id(call.kernel), labels=call.labels,
            dtype=pointers[0] if pointers else "-", constexprs=constexprs, ones=ones, div16=div16,
            not_div16=not_div16, launched=call.launched, candidates=call.candidates, tuning="",
        )
        launch.tuning = self._tuning_text(call, launch)
        self.launches.append(launch)

    def _tuning_text(self, call: _Call, launch: Launch) -> str:
        if call.kernel is None:
            return "plain @triton.jit (one config)"
        tuner = call.kernel._autotuned
        key = (launch.kernel_id, _autotune_key(tuner, call.src, call.args))
        if call.candidates:
            self._tuned[key] = launch.index
            position = next((i for i, c in enumerate(call.candidates) if c.binary is not None
                             and c.binary.hash == call.launched.binary.hash), None)
            return (f"first fitting of {len(call.candidates)} candidates (an H100 times them all)"
                    if position is not None else f"{len(call.candidates)} candidates")
        if key in self._tuned:
            return f"autotune cache: tuned at launch #{self._tuned[key]}"
        return "one config (nothing to time)"


_INTEGERS = ("i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64")


def _run_config(kernel, grid, cfg: triton.Config, args, kwargs) -> None:
    """Launch ``kernel`` in config ``cfg`` as ``triton.autotune`` would: its ``pre_hook`` first (a TMA
    kernel's sets its descriptors' boxes to the config's tile, ``kernels.ops.gemm.tma``)."""
    if cfg.pre_hook is not None:
        cfg.pre_hook({**dict(zip(kernel.fn.arg_names, args)), **kwargs, **cfg.all_kwargs()})
    kernel.fn[grid](*args, **kwargs, **cfg.all_kwargs())


def _kernel_id(kernel) -> Optional[int]:
    """The TunedKernel's index in ALL_KERNELS, by identity (two may share one @triton.jit function)."""
    return next((i for i, k in enumerate(launcher.ALL_KERNELS) if k is kernel), None)


def describe_conv(c: int, h: int, w: int, k: int, r: int, s: int, stride=1, groups: int = 1) -> str:
    """``"64x56x56->64 3x3 s2"`` (`` dw`` depthwise, `` gG`` grouped): the layer as reports name it."""
    stride = stride if isinstance(stride, int) else (stride[0] if len(set(stride)) == 1 else "x".join(map(str, stride)))
    text = f"{c}x{h}x{w}->{k} {r}x{s}" + (f" s{stride}" if stride != 1 else "")
    if groups != 1:
        text += " dw" if groups == c == k else f" g{groups}"
    return text


def record_conv2d(plan: Recording, input_shape, weight_shape, *, stride=1, padding=0, dilation=1, groups=1,
                  bias=False, dtype=torch.float16, channels_last=True, algorithm="auto", backward=True,
                  input_grad=True, weight_grad=True, **labels) -> bool:
    """``kernels.conv2d`` (``kernels.conv3d`` for 5-D shapes; and, with ``backward``,
    ``out.backward(dy)``) on CPU tensors of these sizes, recorded with ``labels`` plus the algorithm
    ``auto`` resolves to and the layer's shape. ``input_grad=False`` for a network's first layer (the
    image needs no gradient), ``weight_grad`` likewise. Returns False if the call raised (the error
    is in ``plan.errors``)."""
    import kernels
    from ..core.params import ConvParams
    from ..dispatch import resolve

    three_d = len(weight_shape) == 5
    fmt = (torch.channels_last_3d if three_d else torch.channels_last) if channels_last else torch.contiguous_format
    x = torch.empty(input_shape, dtype=dtype, memory_format=fmt)
    w = torch.empty(weight_shape, dtype=dtype, memory_format=fmt)
    b = torch.empty(weight_shape[0], dtype=dtype) if bias else None
    n, c, *sizes = input_shape
    k, _, *kernel = weight_shape
    if three_d:
        shape = f"{c}x{'x'.join(map(str, sizes))}->{k} {'x'.join(map(str, kernel))}" + (f" s{stride}" if stride != 1 else "")
        labels.setdefault("shape", shape + (f" g{groups}" if groups > 1 else ""))
    else:
        labels.setdefault("shape", describe_conv(c, *sizes, k, *kernel, stride, groups))
    labels.setdefault("layout", "channels_last" if channels_last else "nchw")
    conv_op = kernels.conv3d if three_d else kernels.conv2d
    eight_bit = dtype in (torch.float8_e4m3fn, torch.int8)
    if eight_bit:
        # 8-bit: kernels.conv2d_scaled, forward only (inference), bf16 output, per-channel weight scales.
        b = torch.empty(weight_shape[0], dtype=torch.float32) if bias else None
        scales = (torch.ones(1), torch.ones(weight_shape[0]))
        labels.setdefault("algorithm", "pointwise" if tuple(kernel) == (1, 1) else "im2col")

        def scaled(x, w, b, stride, padding, dilation, groups, algorithm):
            return kernels.conv2d_scaled(x, w, *scales, b, stride, padding, dilation, groups, algorithm=algorithm)

        conv_op, backward = scaled, False
    try:
        if not eight_bit:
            params = ConvParams.from_tensors(x, w, b, stride, padding, dilation, groups,
                                             op="conv3d" if three_d else "conv2d")
            labels.setdefault("algorithm", resolve(algorithm, params).name)
    except Exception as error:  # noqa: BLE001 - the call below raises it again, recorded
        labels.setdefault("algorithm", f"{algorithm} ({type(error).__name__})")

    def conv():
        if not backward:
            with torch.no_grad():
                conv_op(x, w, b, stride, padding, dilation, groups, algorithm=algorithm)
            return
        x.requires_grad_(input_grad)
        w.requires_grad_(weight_grad)
        if b is not None:
            b.requires_grad_(True)
        out = conv_op(x, w, b, stride, padding, dilation, groups, algorithm=algorithm)
        out.backward(torch.empty_like(out))

    with plan.labels(**labels):
        return plan.attempt(conv)


def _declared(src) -> set:
    return {p.name for p in src.fn.params if p.is_constexpr}


def _specialisation(src, meta_names: Sequence[str]):
    """What the JIT made of a launch's arguments (``src``: its ASTSource): (the constexprs that
    are not config meta-parameters, integers specialised to the constant 1, pointers and integers
    marked divisible by 16, the pointers and integers not so marked)."""
    names = src.fn.arg_names
    declared = _declared(src)
    constants = {names[path[0]]: value for path, value in src.constants.items() if len(path) == 1}
    div16 = {names[path[0]] for path, attrs in src.attrs.items()
             if len(path) == 1 and any(a[0] == "tt.divisibility" and a[1] % 16 == 0 for a in attrs)}
    runtime = [n for n in names if n not in declared]
    ones = [n for n in runtime if constants.get(n) == 1 and not isinstance(constants[n], bool)]
    specialisable = [n for n in runtime if n not in constants
                     and (src.signature[n].startswith("*") or src.signature[n] in _INTEGERS)]
    constexprs = {n: _plain(constants[n]) for n in names if n in declared and n not in meta_names}
    return (constexprs, ones, [n for n in runtime if n in div16], [n for n in specialisable if n not in div16])


def _error_text(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"


def _meta_names(kernel, src) -> List[str]:
    """The config meta-parameters, in config order: a TunedKernel's config keys; for a plain
    kernel its BLOCK_* / GROUP_* constexprs."""
    if kernel is not None:
        configs = list(kernel.configs) + [kernel.interpreter_config]
        return list(dict.fromkeys(name for cfg in configs for name in cfg.kwargs))
    return [n for n in src.fn.arg_names if n in _declared(src) and n.startswith(("BLOCK_", "GROUP_"))]


def _autotune_key(tuner, src, args) -> tuple:
    """What ``triton.autotune`` keys its cache on: the key arguments and the tensors' dtypes."""
    if tuner is None:
        return ()
    named = dict(zip(src.fn.arg_names, args))
    return tuple(str(named.get(k)) for k in tuner.keys) + tuple(
        str(v.dtype) for v in named.values() if hasattr(v, "dtype"))


def _plain(value):
    return value if isinstance(value, (bool, int, float, str)) or value is None else str(value)


def _closure_value(fn, name: str):
    """A free variable of ``fn`` (the config of ``triton.autotune``'s benchmark call), if any."""
    code = getattr(fn, "__code__", None)
    if code is None or not fn.__closure__ or name not in code.co_freevars:
        return None
    return fn.__closure__[code.co_freevars.index(name)].cell_contents


def _phase(labels: Dict[str, Any]) -> str:
    """fwd / dgrad / wgrad / bgrad: the kernels.autograd.ops custom op this launch runs in."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name in _PHASE_OF_OP and frame.f_globals.get("__name__") == "kernels.autograd.ops":
            return _PHASE_OF_OP[frame.f_code.co_name]
        frame = frame.f_back
    return labels.get("phase", "-")


def _accept_cpu_tensors() -> List[Tuple[Any, Any]]:
    """Replace ``kernels.core.checks.check_device`` wherever it was imported by name with one that
    also accepts CPU tensors; returns (module, original) pairs to restore."""
    from ..core import checks

    original = checks.check_device

    def check_device(*tensors):
        original(*(t for t in tensors if t is not None and t.device.type != "cpu"))

    modules = [module for name, module in list(sys.modules.items())
               if (name == "kernels" or name.startswith("kernels."))
               and getattr(module, "check_device", None) is original]
    for module in modules:
        module.check_device = check_device
    return [(module, original) for module in modules]


@contextlib.contextmanager
def recording() -> Iterator[Recording]:
    """Make the compile-only driver active and record every launch into the yielded Recording."""
    from triton.runtime.driver import driver

    import kernels  # noqa: F401  (every algorithm registered, every kernel in ALL_KERNELS)

    if interpreting():
        raise RuntimeError("kernels.sm90.launch_plan: unset TRITON_INTERPRET (the interpreter compiles nothing)")
    if launcher.LAUNCH_OBSERVER is not None:
        raise RuntimeError("kernels.sm90.launch_plan: recordings do not nest")
    plan = Recording()
    saved_driver = driver._active  # DriverConfig has no getter that would not create the default driver
    knobs = triton.knobs.autotuning
    saved_disk_cache = knobs.cache
    for kernel in launcher.ALL_KERNELS:  # every recording tunes afresh, so candidates are recorded
        if kernel._autotuned is not None:
            kernel._autotuned.cache.clear()
    driver.set_active(CompileOnlyDriver(plan._on_launch, plan._benchmark))
    knobs.cache = False  # the equal "timings" must never reach Triton's on-disk autotune cache
    launcher.LAUNCH_OBSERVER = plan._observe
    restore = _accept_cpu_tensors()
    try:
        yield plan
    finally:
        for module, original in restore:
            module.check_device = original
        launcher.LAUNCH_OBSERVER = None
        knobs.cache = saved_disk_cache
        driver._active = saved_driver
