"""How a kernel is launched (``TunedKernel``): sm_90 autotune configs on a GPU, one fixed config
under the interpreter.

Every kernel of the package is wrapped in a ``TunedKernel``. The wrapper

* on a GPU, autotunes over ``configs`` (meant for an H100: power-of-two blocks, every
  ``tl.dot`` dimension >= 16), pruning configs whose pipelined tiles would not fit in shared
  memory for the element size at hand;
* under ``TRITON_INTERPRET=1``, runs ``interpreter_config`` only (timing configs there is
  meaningless and slow);
* for kernels whose launch is planned per problem (tile, split-K: ``TunedKernel.launch``), the
  planner's candidates replace the static list: on a GPU they are what the autotuner times,
  under the interpreter the first one runs, and the launch returns the config that ran;
* ``run_fastest`` chooses between whole launch paths of one problem (the implicit GEMM's TMA and
  cp.async kernels): on a GPU it times each once per problem and keeps the faster;
* records itself in ``ALL_KERNELS``, and reports every launch to ``LAUNCH_OBSERVER`` when one
  is set: ``kernels.sm90.launch_plan`` records there what an H100 would run (the sm_90 compile
  check, ``kernels/sm90/compile_check.py``, and the benchmarks' launch plan are built on it).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, Hashable, List, Mapping, Optional, Sequence

import torch
import triton

from . import device
from .interpreter import interpreting

ALL_KERNELS: List["TunedKernel"] = []

# Kernel launches so far, by kernel name (every launch goes through ``TunedKernel.__getitem__``);
# tests read it to count launches per forward.
LAUNCHES: Counter = Counter()

# ``observer(kernel, grid, launcher) -> launcher``, called on every launch when set (only by
# ``kernels.sm90.launch_plan.recording``): it sees the TunedKernel, its grid and the launch.
LAUNCH_OBSERVER: Optional[Callable] = None

# (family, problem key) -> the launch path ``run_fastest`` timed fastest on this GPU, for the process's life.
FASTEST_PATHS: Dict[tuple, str] = {}


def _can_time() -> bool:
    """True where a timing means something: a real GPU, not the interpreter, not the compile-only
    recorder (``LAUNCH_OBSERVER``), not inside a CUDA-graph capture."""
    return (not interpreting() and LAUNCH_OBSERVER is None and torch.cuda.is_available()
            and not torch.cuda.is_current_stream_capturing())


def run_fastest(family: str, key: Hashable, paths: Mapping[str, Callable[[], object]]):
    """Run one of ``paths`` (name -> a thunk that does the whole launch and returns its result; listed
    best predicted first) and return its result.

    The first call of a (family, key) on a GPU times every path (``triton.testing.do_bench``, median;
    each thunk autotunes its own kernel's configs on its first run) and remembers the fastest in
    ``FASTEST_PATHS``; ties keep the predicted order. Where nothing can be timed (interpreter,
    compile-only recording, graph capture) the first path runs and nothing is remembered. Every thunk
    must write its whole result on each run (they are run repeatedly while timed)."""
    names = list(paths)
    chosen = FASTEST_PATHS.get((family, key))
    if chosen is None:
        if len(names) == 1 or not _can_time():
            return paths[names[0]]()
        times = {name: triton.testing.do_bench(paths[name], return_mode="median") for name in names}
        chosen = FASTEST_PATHS[(family, key)] = min(names, key=times.__getitem__)
    return paths[chosen]()


def config(num_warps=4, num_stages=3, **meta) -> triton.Config:
    """A ``triton.Config`` from its meta-parameters as keywords."""
    return triton.Config(meta, num_warps=num_warps, num_stages=num_stages)


@dataclass
class TunedKernel:
    """A ``@triton.jit`` kernel, its GPU autotune configs and its interpreter config.

    ``tile_operands``: pairs of meta-parameter names whose product is one pipelined operand
    tile (e.g. ``("BLOCK_M", "BLOCK_K")``), for the shared-memory estimate; ``tile_copies``: how
    many of each tile one stage holds (the fused Winograd kernel: one per transform slot).
    """

    fn: Callable
    configs: Sequence[triton.Config]
    key: Sequence[str]
    interpreter_config: triton.Config
    tile_operands: Sequence[Sequence[str]] = ()
    tile_copies: int = 1
    _autotuned: Optional[Callable] = None
    _plan: Optional[List[triton.Config]] = None

    def __post_init__(self):
        ALL_KERNELS.append(self)

    @property
    def name(self) -> str:
        return self.fn.__name__ if hasattr(self.fn, "__name__") else self.fn.fn.__name__

    def shared_memory_estimate(self, cfg: triton.Config, element_bytes: int) -> int:
        tiles = sum(cfg.kwargs[a] * cfg.kwargs[b] for a, b in self.tile_operands)
        return self.tile_copies * tiles * element_bytes * max(cfg.num_stages, 1)

    def _prune(self, configs, named_args, **kwargs):
        if self._plan is not None:
            return list(self._plan)
        element_bytes = max(
            (arg.element_size() for arg in named_args.values() if hasattr(arg, "element_size")),
            default=4,
        )
        limit = device.target().smem_per_block
        fitting = [c for c in configs if self.shared_memory_estimate(c, element_bytes) <= limit]
        return fitting or list(configs)[-1:]

    def launch(self, grid, plan: Sequence[triton.Config], *args, **kwargs) -> triton.Config:
        """Launch with the planner's candidates ``plan`` (for one problem: the autotune key must
        determine the plan) and return the config that ran. ``grid(meta)`` sees its meta-parameters."""
        plan = list(plan)
        self._plan = plan
        try:
            self[grid](*args, **kwargs)
        finally:
            self._plan = None
        if interpreting() or len(plan) == 1 or self._autotuned is None:
            return plan[0]
        return self._autotuned.best_config

    def __getitem__(self, grid):
        LAUNCHES[self.name] += 1
        launcher = self._launcher(grid)
        return launcher if LAUNCH_OBSERVER is None else LAUNCH_OBSERVER(self, grid, launcher)

    def _launcher(self, grid):
        if interpreting():
            cfg = self.interpreter_config if self._plan is None else self._plan[0]
            return lambda *args, **kw: self.fn[grid](
                *args, **kw, **cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages
            )
        if self._autotuned is None:
            self._autotuned = triton.autotune(
                configs=list(self.configs),
                key=list(self.key),
                prune_configs_by={"early_config_prune": self._prune},
            )(self.fn)
        return self._autotuned[grid]
