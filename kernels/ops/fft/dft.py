"""``@triton.jit`` helpers every FFT kernel shares: the patch gather, the 2-D DFT and its inverse as
tensor-core GEMMs with the block matrices of ``matrices.py``, and the cropped store of output tiles
through the shared epilogue.

Spectra of B patches are held as [B, TW, 2, TH]: frequency (v along the width, u along the
height) at index f = v * TH + u, the real and imaginary parts on the middle axis. With TH = 1 the
height has no transform (a 1-D DFT along the width).

LONG (a full-length 1-D DFT of N = TW * TH points, decomposed as Cooley-Tukey / Monarch: N1 = TW,
N2 = TH): sample j = n1 * N2 + n2 of a sequence sits at row n2, column n1 of its "patch"
(``load_sequences``), so the width GEMM is the N1-point DFT over the stride-N2 samples; the twiddles
exp(-2 pi i n2 k1 / N) multiply between the two GEMMs, and the height GEMM is the N2-point DFT. The
inverse runs the same steps backwards with conjugate matrices and twiddles, and ``store_sequences``
reads sample n1 * N2 + n2 back from row n2, column n1.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..epilogue import store_conv_tile


@triton.jit
def tile_origin(tile, TILES_H, TILES_W, MH, MW, pad_h, pad_w):
    """(n, first output row, first output column, first patch row, first patch column) of tiles
    ``tile`` (row-major over (n, tile row, tile column))."""
    n = tile // (TILES_H * TILES_W)
    th = (tile // TILES_W) % TILES_H
    tw = tile % TILES_W
    return n, th * MH, tw * MW, th * MH - pad_h, tw * MW - pad_w


@triton.jit
def load_patches(src_ptr, n, h0, w0, tile_ok, c, c_ok, H, W, s_n, s_c, s_h, s_w, dil_h, dil_w, EXTENT_H, EXTENT_W,
                 TH: tl.constexpr, TW: tl.constexpr):
    """[BT, BC, TH, TW] patches: element (a, b) of tile t and channel c is
    src[n_t, c, h0_t + a / dil_h, w0_t + b / dil_w] where a and b are multiples of the dilation,
    a < EXTENT_H and b < EXTENT_W (the patch's rows and columns taken: TH and TW, or an output tile's
    MH x MW zero-padded to TH x TW) and the row and column inside the source, else 0 (zero padding;
    the dilated filter's holes)."""
    a = tl.arange(0, TH)
    b = tl.arange(0, TW)
    hh = h0[:, None, None, None] + (a // dil_h)[None, None, :, None]
    ww = w0[:, None, None, None] + (b // dil_w)[None, None, None, :]
    ok = (tile_ok[:, None, None, None] & c_ok[None, :, None, None]
          & (((a % dil_h) == 0) & (a < EXTENT_H))[None, None, :, None]
          & (((b % dil_w) == 0) & (b < EXTENT_W))[None, None, None, :]
          & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W))
    ptrs = (src_ptr + n[:, None, None, None] * s_n + c[None, :, None, None] * s_c + hh * s_h + ww * s_w)
    return tl.load(ptrs, mask=ok, other=0.0)


@triton.jit
def load_sequences(src_ptr, n, w0, tile_ok, c, c_ok, W, s_n, s_c, s_w, dil_w, EXTENT, TH: tl.constexpr,
                   TW: tl.constexpr):
    """LONG: [BT, BC, TH, TW] sequences: element (a, b) of tile t and channel c is src[n_t, c, 0, w0_t + j /
    dil_w] with j = b * TH + a (a multiple of dil_w, j < EXTENT, inside the source), else 0."""
    a = tl.arange(0, TH)
    b = tl.arange(0, TW)
    j = b[None, :] * TH + a[:, None]
    ww = w0[:, None, None, None] + (j // dil_w)[None, None, :, :]
    ok = (tile_ok[:, None, None, None] & c_ok[None, :, None, None] & (((j % dil_w) == 0) & (j < EXTENT))[None, None, :, :]
          & (ww >= 0) & (ww < W))
    return tl.load(src_ptr + n[:, None, None, None] * s_n + c[None, :, None, None] * s_c + ww * s_w, mask=ok,
                   other=0.0)


@triton.jit
def _twiddle(z, tc_ptr, ts_ptr, ROWS: tl.constexpr, COLS: tl.constexpr, TRANSPOSED: tl.constexpr):
    """z [B, ROWS, 2, COLS] times the twiddles (c - i s) of the [TH, TW] tables (read as [COLS, ROWS]
    when TRANSPOSED): re' = re c + im s, im' = im c - re s."""
    rows = tl.arange(0, ROWS)
    cols = tl.arange(0, COLS)
    if TRANSPOSED:
        offs = cols[None, :] * ROWS + rows[:, None]
    else:
        offs = rows[:, None] * COLS + cols[None, :]
    tc = tl.load(tc_ptr + offs)[None, :, :]
    ts = tl.load(ts_ptr + offs)[None, :, :]
    re, im = tl.split(tl.permute(z, (0, 1, 3, 2)))
    return tl.permute(tl.join(re * tc + im * ts, im * tc - re * ts), (0, 1, 3, 2))


@triton.jit
def _square(ptr, ROWS: tl.constexpr, COLS: tl.constexpr):
    rows = tl.arange(0, ROWS)
    cols = tl.arange(0, COLS)
    return tl.load(ptr + rows[:, None] * COLS + cols[None, :])


@triton.jit
def forward_dft(d, fr_w_ptr, fc_h_ptr, tc_ptr, ts_ptr, B: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
                ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr, LONG: tl.constexpr):
    """Spectra [B, TW, 2, TH] of real patches d [B, TH, TW]: along the width one GEMM
    [B*TH, TW] x [TW, 2TW] with ``forward_real``, then (TH > 1) along the height one GEMM
    [B*TW, 2TH] x [2TH, 2TH] with ``forward_complex`` (LONG: the twiddles between the two)."""
    fr = _square(fr_w_ptr, TW, 2 * TW)
    z = tl.dot(tl.reshape(d, (B * TH, TW)).to(fr.dtype), fr, input_precision=PRECISION, out_dtype=ACC_DTYPE)
    if TH == 1:
        return tl.reshape(tl.permute(tl.reshape(z, (B, 2, TW)), (0, 2, 1)), (B, TW, 2, 1))
    else:
        z = tl.reshape(z, (B, TH, 2, TW))
        if LONG:
            z = _twiddle(z, tc_ptr, ts_ptr, TH, TW, False)
        z = tl.permute(z, (0, 3, 2, 1))
        fc = _square(fc_h_ptr, 2 * TH, 2 * TH)
        x = tl.dot(tl.reshape(z, (B * TW, 2 * TH)).to(fc.dtype), fc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        return tl.reshape(x, (B, TW, 2, TH))


@triton.jit
def inverse_dft(y, ic_h_ptr, ir_w_ptr, tc_ptr, ts_ptr, B: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
                ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr, LONG: tl.constexpr):
    """Real patches [B, TH, TW] (unnormalised: the filter spectrum carries 1 / (TH*TW)) of
    spectra y [B, TW, 2, TH]: (TH > 1) along the height [B*TW, 2TH] x [2TH, 2TH] with
    ``inverse_complex``, then along the width [B*TH, 2TW] x [2TW, TW] with ``inverse_real`` (LONG: the
    conjugate twiddles ``tc``, ``ts`` between the two)."""
    if TH == 1:
        z = tl.permute(tl.reshape(y, (B, TW, 2)), (0, 2, 1))
    else:
        ic = _square(ic_h_ptr, 2 * TH, 2 * TH)
        z = tl.dot(tl.reshape(y, (B * TW, 2 * TH)).to(ic.dtype), ic, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        z = tl.reshape(z, (B, TW, 2, TH))
        if LONG:
            z = _twiddle(z, tc_ptr, ts_ptr, TW, TH, True)
        z = tl.permute(z, (0, 3, 2, 1))
    ir = _square(ir_w_ptr, 2 * TW, TW)
    out = tl.dot(tl.reshape(z, (B * TH, 2 * TW)).to(ir.dtype), ir, input_precision=PRECISION, out_dtype=ACC_DTYPE)
    return tl.reshape(out, (B, TH, TW))


@triton.jit
def store_tiles(v, n, p0, q0, tile_ok, k, k_ok, P, Q, MH, MW, output, epilogue,
                BT: tl.constexpr, BN: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr):
    """Crop the real patches v [BT, BN, TH, TW] (tiles x output channels) to their first MH x MW
    pixels inside the P x Q output and finish them with ``store_conv_tile`` (rows: pixels)."""
    acc = tl.reshape(tl.permute(v, (0, 2, 3, 1)), (BT * TH * TW, BN))
    a = tl.arange(0, TH)
    b = tl.arange(0, TW)
    p = p0[:, None, None] + a[None, :, None]
    q = q0[:, None, None] + b[None, None, :]
    ok = tile_ok[:, None, None] & (a < MH)[None, :, None] & (b < MW)[None, None, :] & (p < P) & (q < Q)
    shape: tl.constexpr = (BT, TH, TW)
    rows: tl.constexpr = BT * TH * TW
    n3 = tl.reshape(tl.broadcast_to(n[:, None, None], shape), (rows,))
    p3 = tl.reshape(tl.broadcast_to(p, shape), (rows,))
    q3 = tl.reshape(tl.broadcast_to(q, shape), (rows,))
    store_conv_tile(acc, n3, p3, q3, k, tl.reshape(ok, (rows,)), k_ok, output, epilogue)


@triton.jit
def store_sequences(v, n, q0, tile_ok, k, k_ok, Q, MW, output, epilogue,
                    BT: tl.constexpr, BN: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr):
    """LONG: store sample j = b * TH + a (row a, column b of v [BT, BN, TH, TW]) of each tile at output
    column q0 + j, for j < MW inside the output, through ``store_conv_tile`` (row 0)."""
    acc = tl.reshape(tl.permute(v, (0, 2, 3, 1)), (BT * TH * TW, BN))
    a = tl.arange(0, TH)
    b = tl.arange(0, TW)
    j = b[None, :] * TH + a[:, None]
    q = q0[:, None, None] + j[None, :, :]
    ok = tile_ok[:, None, None] & (j < MW)[None, :, :] & (q < Q)
    shape: tl.constexpr = (BT, TH, TW)
    rows: tl.constexpr = BT * TH * TW
    n3 = tl.reshape(tl.broadcast_to(n[:, None, None], shape), (rows,))
    q3 = tl.reshape(q, (rows,))
    store_conv_tile(acc, n3, n3 * 0, q3, k, tl.reshape(ok, (rows,)), k_ok, output, epilogue)


@triton.jit
def store_output(v, n, p0, q0, tile_ok, k, k_ok, P, Q, MH, MW, output, epilogue,
                 BT: tl.constexpr, BN: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr, LONG: tl.constexpr):
    """``store_sequences`` (LONG) or ``store_tiles`` of the real patches v [BT, BN, TH, TW]."""
    if LONG:
        store_sequences(v, n, q0, tile_ok, k, k_ok, Q, MW, output, epilogue, BT, BN, TH, TW)
    else:
        store_tiles(v, n, p0, q0, tile_ok, k, k_ok, P, Q, MH, MW, output, epilogue, BT, BN, TH, TW)
