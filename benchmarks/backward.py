"""The conv-layer backward benchmark: grad_input, grad_weight (and grad_bias) of one case, as a
layer inside a network needs them, timed for ``cudnn`` (PyTorch's autograd of the layer's own
function, ``cudnn.benchmark = True``; GPU only) and ``auto`` (our kernels' backward: the dgrad,
wgrad and bias-grad kernels the autograd Functions launch).

The timed call is one ``torch.autograd.grad`` over a forward graph built beforehand (one graph per
rotated input set), so the forward is not in the time. Every gradient is compared with a
reference from the same inputs and output gradient (cuDNN in fp32 with TF32 off on a GPU, PyTorch
in float64 on the CPU); a row's ``rel_err`` is the worst of its gradients. The row's MACs are the
backward's: twice the forward's (dgrad and wgrad each as many as the forward).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch

from .environment import ON_GPU, Precision, precision_mode
from .layers import case_fields, make_inputs, relative_error, result_row, traffic_bytes
from .networks import ConvCase
from .timing import Rotation, Timing, run_once, synchronize, time_calls

IMPLEMENTATIONS = ("cudnn", "auto")


def _leaves(x, w, b):
    return tuple(t.detach().requires_grad_(True) if t is not None else None for t in (x, w, b))


def _gradients(fn: Callable, x, w, b, grad_out, args) -> tuple:
    x, w, b = _leaves(x, w, b)
    inputs = tuple(t for t in (x, w, b) if t is not None)
    return torch.autograd.grad(fn(x, w, b, **args), inputs, grad_out)


def reference_gradients(x, w, b, grad_out, case: ConvCase) -> tuple:
    """cuDNN in fp32 with TF32 off on a GPU; float64 on the CPU (the tests' oracle)."""
    dtype = torch.float32 if ON_GPU else torch.float64
    cast = (lambda t: None if t is None else t.to(dtype))
    with torch.enable_grad(), precision_mode(Precision("float32", torch.float32)):
        return _gradients(case.functional, cast(x), cast(w), cast(b), cast(grad_out), case.conv_args())


class _Backward:
    """The rotated backward calls of one implementation: a forward graph per input set, built
    once; each call runs the next set's ``autograd.grad`` (graphs retained for the next round)."""

    def __init__(self, fn: Callable, sets: List[tuple], args: dict):
        self.graphs = []
        with torch.enable_grad():
            for x, w, b, grad_out in sets:
                leaves = _leaves(x, w, b)
                inputs = tuple(t for t in leaves if t is not None)
                self.graphs.append((fn(*leaves, **args), inputs, grad_out))
        self.index = 0

    def __call__(self):
        out, inputs, grad_out = self.graphs[self.index]
        self.index = (self.index + 1) % len(self.graphs)
        return torch.autograd.grad(out, inputs, grad_out, retain_graph=True)


def warm_backward_case(case: ConvCase, precision: Precision, layout: str) -> Dict[str, str]:
    """Run ``auto``'s backward of ``case`` once, untimed and unchecked, so that its kernels are
    compiled into Triton's cache (``python -m benchmarks --warm``); name -> failure if it raised."""
    with precision_mode(precision):
        try:
            x, w, b = make_inputs(case, precision, layout)
            with torch.no_grad():
                grad_out = torch.randn_like(case.functional(x, w, b, **case.conv_args()))
            _gradients(lambda *t, **kw: case.ours(*t, **kw, algorithm="auto"), x, w, b, grad_out, case.conv_args())
            synchronize()
        except Exception as error:  # noqa: BLE001 - the timed run reports it
            return {"auto": f"failed: {type(error).__name__}: {error}"[:300]}
    return {}


def run_backward_case(case: ConvCase, precision: Precision, layout: str, peaks: dict,
                      full_case: Optional[ConvCase] = None) -> List[dict]:
    """One row per implementation (``pass`` = "backward"), in the forward rows' format."""
    element_size = torch.finfo(precision.dtype).bits // 8
    args = case.conv_args()
    with precision_mode(precision):
        def input_set():
            x, w, b = make_inputs(case, precision, layout)
            with torch.no_grad():
                grad_out = torch.randn_like(case.functional(x, w, b, **args))
            return x, w, b, grad_out

        first = input_set()
        ref = reference_gradients(*first, case)
        bytes_per_set = sum(t.numel() * element_size for t in first if t is not None)
        sets = [first] + [input_set() for _ in range(Rotation.count(bytes_per_set) - 1)]
        functions = {"cudnn": case.functional} if ON_GPU else {}
        functions["auto"] = lambda x, w, b, **kw: case.ours(x, w, b, **kw, algorithm="auto")
        calls: Dict[str, _Backward] = {}
        errors: Dict[str, float] = {}
        failures: Dict[str, str] = {}
        once: Dict[str, Timing] = {}
        for name, fn in functions.items():
            try:
                calls[name] = _Backward(fn, sets, args)
                grads, once[name] = run_once(calls[name])  # the first set: the reference's inputs
                errors[name] = max(relative_error(g, r) for g, r in zip(grads, ref))
            except Exception as error:  # noqa: BLE001 - reported as a failed row, the run goes on
                calls.pop(name, None)
                failures[name] = f"failed: {type(error).__name__}: {error}"[:300]
        timings = time_calls(calls) if ON_GPU else once
        del calls, sets, ref, first

    macs = 2 * case.macs
    traffic = 2 * traffic_bytes(case, element_size)  # read x, w, dy; write dx, dw (about twice the forward's)
    rows = []
    for name in list(timings) + list(failures):
        row = result_row(case, precision, layout, name, timings, failures, errors, macs, traffic, peaks)
        row.update(algorithm=None, multiplies=macs, **{"pass": "backward"})
        if full_case is not None and full_case is not case:
            row["full"] = dict(case_fields(full_case), macs=2 * full_case.macs)
        rows.append(row)
    return rows
