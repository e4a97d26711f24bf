"""One convolution whose input (and output) pass 2**31 elements, forward and dgrad through
``algorithm="im2col"`` in fp16 channels_last, checked against cuDNN: the kernels' 64-bit offset
path on a GPU (the tests force that path on small tensors; only a tensor this large overflows int32
offsets for real). Stage 5 of ``bash benchmarks/gpu_session.sh first``.

The default input is 130 x 64 x 512 x 512 (2,181,038,080 elements, 4.1 GiB in fp16), a 3x3
convolution with padding 1 to 64 channels, so the output is as large. Our output and input
gradient are compared, a chunk of images at a time, with cuDNN in fp32 with TF32 off on the same
inputs (``conv2d`` and ``conv2d_input``); cuDNN's own fp16 error is recorded beside ours. Each
check reports the relative error (L2) over the whole tensor, over the worst chunk and over the
chunks that lie past element 2**31, and the NaN count: the memory our output lands in was
filled with NaN just before (a freed block the caching allocator hands out again), so elements
left unwritten show. Without a GPU the same check runs on a small shape under the interpreter
(float64 reference): the plumbing only.

``python -m benchmarks.large_input --out DIR`` adds the result under ``session.large_input`` of
DIR/results.json.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F

from . import jsonfile
from .environment import DEVICE, ON_GPU, Precision, precision_mode
from .layers import TOLERANCE

INPUT_SHAPE = (130, 64, 512, 512)
OUT_CHANNELS = 64
CHUNK_IMAGES = 10
INT32_ELEMENTS = 2**31
# x, y, dy, dx in fp16 and a chunk's fp32 copies, with room to spare.
MEMORY_FACTOR = 6


def _poison_next_allocation(numel: int, dtype: torch.dtype) -> None:
    """Fill a block of ``numel`` elements with NaN and free it: the caching allocator gives the
    same block to the next allocation of that size (our kernel's output), so unwritten elements
    read NaN."""
    if ON_GPU:
        block = torch.full((numel,), float("nan"), dtype=dtype, device=DEVICE)
        del block


def _random(shape, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal values, allocated channels_last (no NCHW copy of 4 GiB on the way)."""
    return torch.empty(shape, device=DEVICE, dtype=dtype, memory_format=torch.channels_last).normal_()


def compare(ours: torch.Tensor, reference: Callable[[slice], torch.Tensor], fp16_reference: Optional[Callable],
            chunk: int) -> Dict[str, object]:
    """Relative errors of ``ours`` against ``reference(images)``, a chunk of images at a time."""
    per_image = math.prod(ours.shape[1:])
    total_diff = total_ref = past_diff = past_ref = cudnn_diff = 0.0
    worst, nan, max_abs = 0.0, 0, 0.0
    for start in range(0, ours.shape[0], chunk):
        images = slice(start, min(start + chunk, ours.shape[0]))
        ref = reference(images)
        mine = ours[images]
        nan += int(torch.isnan(mine).sum())
        diff = float(torch.linalg.vector_norm(mine.to(ref.dtype) - ref)) ** 2
        norm = float(torch.linalg.vector_norm(ref)) ** 2
        max_abs = max(max_abs, float((mine.to(ref.dtype) - ref).abs().max()))
        total_diff, total_ref = total_diff + diff, total_ref + norm
        worst = max(worst, math.sqrt(diff / norm) if norm else math.sqrt(diff))
        if images.stop * per_image > INT32_ELEMENTS:  # the chunk holds elements past 2**31
            past_diff, past_ref = past_diff + diff, past_ref + norm
        if fp16_reference is not None:
            cudnn_diff += float(torch.linalg.vector_norm(fp16_reference(images).to(ref.dtype) - ref)) ** 2
        del ref, mine
    rel = math.sqrt(total_diff / total_ref) if total_ref else math.sqrt(total_diff)
    return dict(rel_err=rel, worst_chunk_rel_err=worst, max_abs_err=max_abs,
                past_2_31_rel_err=math.sqrt(past_diff / past_ref) if past_ref else None, nan=nan,
                cudnn_fp16_rel_err=math.sqrt(cudnn_diff / total_ref) if fp16_reference is not None and total_ref else None)


def check(input_shape: Sequence[int] = INPUT_SHAPE, out_channels: int = OUT_CHANNELS, chunk: int = CHUNK_IMAGES,
          dtype: torch.dtype = torch.float16) -> Dict[str, object]:
    import kernels

    n, c, h, w = input_shape
    elements = n * c * h * w
    result: Dict[str, object] = dict(
        input_shape=list(input_shape), input_elements=elements, weight_shape=[out_channels, c, 3, 3], padding=1,
        dtype=str(dtype).replace("torch.", ""), layout="channels_last", algorithm="im2col",
        reference="cuDNN fp32 (TF32 off)" if ON_GPU else "PyTorch float64 (CPU)", tolerance=TOLERANCE["float16"])
    element_bytes = torch.finfo(dtype).bits // 8
    if ON_GPU:
        free, _ = torch.cuda.mem_get_info()
        needed = MEMORY_FACTOR * elements * element_bytes
        if free < needed:
            result["skipped"] = f"{free / 2**30:.0f} GiB free, {needed / 2**30:.0f} GiB needed"
            return result
    ref_dtype = torch.float32 if ON_GPU else torch.float64
    fp32 = Precision("float32", torch.float32)
    started = time.perf_counter()
    torch.manual_seed(0)
    x = _random((n, c, h, w), dtype)
    weight = (torch.randn(out_channels, c, 3, 3, device=DEVICE, dtype=dtype) / math.sqrt(9 * c)).contiguous(
        memory_format=torch.channels_last)
    w_ref = weight.to(ref_dtype)
    fp16_reference = None

    with torch.no_grad():
        try:
            _poison_next_allocation(n * out_channels * h * w, dtype)
            y = kernels.conv2d(x, weight, padding=1, algorithm="im2col")
            if ON_GPU:
                torch.cuda.synchronize()
                fp16_reference = lambda images: F.conv2d(x[images], weight, padding=1)  # noqa: E731
            with precision_mode(fp32):
                result["forward"] = compare(y, lambda images: F.conv2d(x[images].to(ref_dtype), w_ref, padding=1),
                                            fp16_reference, chunk)
            result["output_elements"] = y.numel()
            del y
        except Exception as error:  # noqa: BLE001 - recorded, the session goes on
            result["forward_failed"] = f"{type(error).__name__}: {error}"[:300]

    try:
        grad_out = _random((n, out_channels, h, w), dtype)
        leaf = x.detach().requires_grad_(True)
        out = kernels.conv2d(leaf, weight, padding=1, algorithm="im2col")
        _poison_next_allocation(elements, dtype)
        (grad_input,) = torch.autograd.grad(out, leaf, grad_out)
        del out
        with torch.no_grad():
            if ON_GPU:
                torch.cuda.synchronize()
                fp16_reference = lambda images: torch.nn.grad.conv2d_input(  # noqa: E731
                    x[images].shape, weight, grad_out[images], padding=1)
            with precision_mode(fp32):
                result["dgrad"] = compare(grad_input, lambda images: torch.nn.grad.conv2d_input(
                    x[images].shape, w_ref, grad_out[images].to(ref_dtype), padding=1), fp16_reference, chunk)
        del grad_input, grad_out, leaf
    except Exception as error:  # noqa: BLE001 - recorded, the session goes on
        result["dgrad_failed"] = f"{type(error).__name__}: {error}"[:300]

    for what in ("forward", "dgrad"):
        found = result.get(what)
        if found:
            found["ok"] = (found["nan"] == 0 and found["rel_err"] <= result["tolerance"]
                           and found["worst_chunk_rel_err"] <= result["tolerance"])
    result["ok"] = all(result.get(what, {}).get("ok", False) for what in ("forward", "dgrad"))
    result["seconds"] = round(time.perf_counter() - started, 1)
    del x, weight, w_ref
    if ON_GPU:
        torch.cuda.empty_cache()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.large_input", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder of the results.json to add the result to")
    parser.add_argument("--shape", nargs=4, type=int, default=INPUT_SHAPE, metavar=("N", "C", "H", "W"))
    parser.add_argument("--out-channels", type=int, default=OUT_CHANNELS)
    parser.add_argument("--chunk", type=int, default=CHUNK_IMAGES, help="images per reference chunk")
    args = parser.parse_args(argv)
    result = check(args.shape, args.out_channels, args.chunk)
    jsonfile.update(args.out / "results.json", lambda data: data.setdefault("session", {}).update(large_input=result))
    from .report import large_input_sentence

    print("input past 2^31 elements: " + large_input_sentence(result), flush=True)
    return 0 if result.get("ok") or result.get("skipped") else 1


if __name__ == "__main__":
    raise SystemExit(main())
