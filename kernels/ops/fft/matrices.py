"""The DFT matrices the FFT kernels multiply by, built once per (size, dtype, device).

A length-T DFT is the matrix product with F[i, f] = exp(-2 pi i i f / T) = C - iS (C = cos, S = sin of
2 pi i f / T). Complex data travel as real tensors with the real and imaginary parts side by side
([..., 2, T]), so every complex product is one real GEMM with a block matrix:

* ``forward_real``  [T, 2T]   = [C | -S]: a real row -> its spectrum (re | im);
* ``forward_complex`` [2T, 2T] = [[C, -S], [S, C]]: a complex row (re | im) -> its spectrum;
* ``inverse_complex`` [2T, 2T] = [[C, S], [-S, C]]: the unnormalised inverse (conjugate matrix);
* ``inverse_real``  [2T, T]   = [[C], [-S]]: a complex row -> the real part of its inverse.

The filter's spectrum is taken with the conjugate matrices (``conjugate=True``) because a
convolution layer computes a correlation: y = IDFT(DFT(x) * conj(DFT(w))). The entries are computed
in float64 from exact integer phases (i * f mod T) and rounded once to the kernels' dtype.
For T = 1 (an axis without a transform) every matrix is the identity of its shape.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import torch


class DFTMatrices(NamedTuple):
    forward_real: torch.Tensor
    forward_complex: torch.Tensor
    inverse_complex: torch.Tensor
    inverse_real: torch.Tensor


def _cos_sin(t: int):
    index = torch.arange(t, dtype=torch.int64)
    phase = (index[:, None] * index[None, :]) % t  # exact: no large arguments to cos/sin
    angle = phase.to(torch.float64) * (2 * math.pi / t)
    return torch.cos(angle), torch.sin(angle)


@lru_cache(maxsize=64)
def _matrices(t: int, conjugate: bool, dtype: torch.dtype, device: str) -> DFTMatrices:
    c, s = _cos_sin(t)
    if conjugate:
        s = -s
    mats = DFTMatrices(
        forward_real=torch.cat([c, -s], dim=1),
        forward_complex=torch.cat([torch.cat([c, -s], 1), torch.cat([s, c], 1)], 0),
        inverse_complex=torch.cat([torch.cat([c, s], 1), torch.cat([-s, c], 1)], 0),
        inverse_real=torch.cat([c, -s], dim=0),
    )
    return DFTMatrices(*(m.to(device=device, dtype=dtype).contiguous() for m in mats))


def dft_matrices(t: int, dtype: torch.dtype, device, conjugate: bool = False) -> DFTMatrices:
    """The four block matrices of a length-``t`` DFT (see the module docstring), in ``dtype``."""
    return _matrices(int(t), bool(conjugate), dtype, str(torch.device(device)))


@lru_cache(maxsize=64)
def _twiddles(n2: int, n1: int, conjugate: bool, dtype: torch.dtype, device: str):
    rows = torch.arange(n2, dtype=torch.int64)[:, None]
    cols = torch.arange(n1, dtype=torch.int64)[None, :]
    angle = ((rows * cols) % (n1 * n2)).to(torch.float64) * (2 * math.pi / (n1 * n2))
    sin = -torch.sin(angle) if conjugate else torch.sin(angle)
    return tuple(t.to(device=device, dtype=dtype).contiguous() for t in (torch.cos(angle), sin))


def twiddles(n2: int, n1: int, dtype: torch.dtype, device, conjugate: bool = False):
    """(cos, sin) [n2, n1] of the twiddles exp(-2 pi i n2 k1 / N), N = n1 * n2, between the two GEMMs of a
    decomposed N-point DFT (``dft.py``, LONG); ``conjugate``: exp(+2 pi i n2 k1 / N) (sin negated)."""
    return _twiddles(int(n2), int(n1), bool(conjugate), dtype, str(torch.device(device)))
