"""Winograd F(m x m, 3 x 3) transform matrices and the cached filter transform.

For an (m+2) x (m+2) input tile d and a 3 x 3 filter g (Lavin & Gray, 2015):

    Y = A^T [ (G g G^T) (*) (B^T d B) ] A        (*) = elementwise product

The kernels work on flattened tiles, so each two-sided transform X^T z X becomes one matrix
product with kron(X^T, X^T). Triton's block shapes are powers of two, so positions are
padded (zero rows / columns: padding contributes nothing): the input patch to
``padded_positions``, the fused kernel's elementwise stage to ``slot_groups``.

The transformed filter U is laid out [position, K, C_pad]: output channels, then input
channels contiguous (the GEMM's B operand with its reduction dimension contiguous, as the
implicit-GEMM kernels read their (K, R, S, C) weights), with C zero-padded to a multiple of
``CHANNEL_QUANTUM`` so the three-stage GEMM's reduction loop needs no channel mask.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction as Fr
from typing import Dict, Tuple

import torch


# The transformed input's and filter's channel dimension is padded (with zeros) to a multiple
# of this: the largest BLOCK_K of the three-stage GEMM, so every BLOCK_K divides it.
CHANNEL_QUANTUM = 64


def _next_pow2(v: int) -> int:
    return 1 << (v - 1).bit_length()


def padded_channels(c: int) -> int:
    """C rounded up to a multiple of ``CHANNEL_QUANTUM`` (the channel extent of U and V)."""
    return -(-c // CHANNEL_QUANTUM) * CHANNEL_QUANTUM


@dataclass(frozen=True)
class WinogradTile:
    """One F(m x m, 3 x 3) variant: exact rational matrices and the padded kernel sizes."""

    name: str
    m: int  # output tile side
    BT: Tuple[Tuple[Fr, ...], ...]  # (m+2) x (m+2), input transform B^T
    G: Tuple[Tuple[Fr, ...], ...]  # (m+2) x 3, filter transform
    AT: Tuple[Tuple[Fr, ...], ...]  # m x (m+2), output transform A^T

    @property
    def alpha(self) -> int:
        """Input tile side m + 2 (the elementwise stage has alpha^2 positions)."""
        return self.m + 2

    @property
    def positions(self) -> int:
        return self.alpha * self.alpha

    @property
    def padded_positions(self) -> int:
        """alpha^2 rounded up to a power of two: the kernel's position axis."""
        return _next_pow2(self.positions)

    @property
    def slot_groups(self) -> Tuple[int, int]:
        """The elementwise stage's position slots: power-of-two groups covering alpha^2.

        F(2x2): (16, 0). F(4x4): (32, 16) rather than one group of 64: 48 slots for 36
        positions. A second group under 16 would need a tl.dot dimension under 16.
        """
        first = 1 << (self.positions.bit_length() - 1)
        rest = self.positions - first
        return (first, 0) if rest == 0 else (first, max(16, _next_pow2(rest)))

    @property
    def padded_outputs(self) -> int:
        """m^2 rounded up to a power of two and to 16 (a tl.dot dimension on the GPU)."""
        return max(16, _next_pow2(self.m * self.m))


def _fr(rows):
    return tuple(tuple(Fr(v) for v in row) for row in rows)


F2 = WinogradTile(
    "winograd_f2", 2,
    BT=_fr([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
    G=_fr([[1, 0, 0], [Fr(1, 2), Fr(1, 2), Fr(1, 2)], [Fr(1, 2), Fr(-1, 2), Fr(1, 2)], [0, 0, 1]]),
    AT=_fr([[1, 1, 1, 0], [0, 1, -1, -1]]),
)

F4 = WinogradTile(
    "winograd_f4", 4,
    BT=_fr([[4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1]]),
    G=_fr([[Fr(1, 4), 0, 0],
           [Fr(-1, 6), Fr(-1, 6), Fr(-1, 6)],
           [Fr(-1, 6), Fr(1, 6), Fr(-1, 6)],
           [Fr(1, 24), Fr(1, 12), Fr(1, 6)],
           [Fr(1, 24), Fr(-1, 12), Fr(1, 6)],
           [0, 0, 1]]),
    AT=_fr([[1, 1, 1, 1, 1, 0],
            [0, 1, -1, 2, -2, 0],
            [0, 1, 1, 4, 4, 0],
            [0, 1, -1, 8, -8, 1]]),
)

TILES: Dict[str, WinogradTile] = {F2.name: F2, F4.name: F4}


def _matrix(rows, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor([[float(v) for v in row] for row in rows], dtype=dtype)


def nonzeros(rows) -> int:
    return sum(1 for row in rows for v in row if v != 0)


_MATRIX_CACHE: Dict[tuple, Tuple[torch.Tensor, torch.Tensor]] = {}


def kernel_matrices(tile: WinogradTile, dtype: torch.dtype, device, slots: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(input transform [slots, PP], output transform [MP, slots]) for a kernel, zero-padded.

    ``slots``: the transformed positions' padded count, ``sum(tile.slot_groups)`` for the
    fused kernel, ``tile.padded_positions`` for the three-stage transforms. Row-major
    flattening: position (a, b) of a tile is a * alpha + b. Entries are small integers
    (products of 1, 2, 4, 5, 8), exact in fp16 and bf16. These are constants (the same for
    every weight), so caching them per device and dtype is always safe.
    """
    key = (tile.name, dtype, str(device), slots)
    if key not in _MATRIX_CACHE:
        bt, at = _matrix(tile.BT), _matrix(tile.AT)
        pp, mp = tile.padded_positions, tile.padded_outputs
        input_t = torch.zeros(slots, pp, dtype=torch.float64)
        input_t[: tile.positions, : tile.positions] = torch.kron(bt, bt)
        output_t = torch.zeros(mp, slots, dtype=torch.float64)
        output_t[: tile.m * tile.m, : tile.positions] = torch.kron(at, at)
        _MATRIX_CACHE[key] = (input_t.to(device, dtype).contiguous(), output_t.to(device, dtype).contiguous())
    return _MATRIX_CACHE[key]


def filter_transform(weight: torch.Tensor, tile: WinogradTile) -> torch.Tensor:
    """U = G g G^T for every (k, c), as a [alpha^2, K, C_pad] tensor in ``weight``'s dtype.

    Computed in fp32 (fp64 for fp64 weights) and rounded to the weight's dtype once: the
    elementwise stage then multiplies U and the transformed input on tensor cores. C is
    contiguous (a GEMM tile [BLOCK_K channels, BLOCK_N out-channels] of one position loads
    as 16-byte vectors along C) and zero-padded to ``padded_channels(C)``.
    """
    work = torch.float64 if weight.dtype == torch.float64 else torch.float32
    g = _matrix(tile.G, work).to(weight.device)
    w = weight.detach().to(work)
    k, c = w.shape[0], w.shape[1]
    u = torch.zeros(tile.positions, k, padded_channels(c), dtype=weight.dtype, device=weight.device)
    u[:, :, :c] = torch.einsum("ar,kcrs,bs->abkc", g, w, g).reshape(tile.positions, k, c)
    return u


class FilterTransformCache:
    """Transformed filters, reused while the weight provably has not changed.

    Key: the weight's identity (a weakref, so a freed tensor whose memory is reused cannot
    match), storage pointer, shape, strides, dtype, device and version counter, plus the tile.
    An in-place update through the tensor itself (``weight.add_``, ``weight.copy_``, an
    optimizer step) bumps the version counter and invalidates the entry.

    Limitation, and why the cache is bypassed for weights that require grad: an update made
    through ``weight.data`` (``torch.autograd.gradcheck``'s perturbations, older training
    code) bumps the version counter of a *different* tensor object and cannot be seen from
    here. Weights that require grad (every trainable parameter) therefore always get a fresh
    transform, which costs one read of the weight; the cache serves frozen weights
    (``requires_grad=False``, e.g. after ``model.requires_grad_(False)`` for inference).
    Writing a frozen weight through ``.data`` is not detected either: call ``clear()`` after
    doing that. Inference-mode tensors have no version counter and are never cached.
    """

    def __init__(self, capacity: int = 256):
        self.capacity = capacity
        self._entries: "OrderedDict[tuple, Tuple[weakref.ref, torch.Tensor]]" = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def cacheable(weight: torch.Tensor) -> bool:
        return not weight.requires_grad and not weight.is_inference()

    @staticmethod
    def _key(weight: torch.Tensor, tile: WinogradTile) -> tuple:
        return (id(weight), weight.untyped_storage().data_ptr(), weight.storage_offset(), tuple(weight.shape),
                weight.stride(), weight.dtype, str(weight.device), weight._version, tile.name)

    def get(self, weight: torch.Tensor, tile: WinogradTile) -> torch.Tensor:
        if not self.cacheable(weight):
            return filter_transform(weight, tile)
        key = self._key(weight, tile)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0]() is weight:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
        u = filter_transform(weight, tile)
        with self._lock:
            self.misses += 1
            # Drop stale versions of the same weight, then the least recently used.
            for old in [k for k in self._entries if k[0] == key[0] and k[-1] == key[-1]]:
                del self._entries[old]
            self._entries[key] = (weakref.ref(weight, self._forget(key)), u)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return u

    def _forget(self, key):
        cache = weakref.ref(self)

        def callback(_ref):
            owner = cache()
            if owner is not None:
                with owner._lock:
                    owner._entries.pop(key, None)

        return callback

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


FILTER_CACHE = FilterTransformCache()
