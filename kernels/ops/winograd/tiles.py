"""Jit helpers both Winograd paths share: where a tile's pixels are, and its finished store.

A Winograd tile t (of N * TILES_H * TILES_W) covers output pixels [th*m, th*m + m) x
[tw*m, tw*m + m) of image n and reads the (m+2) x (m+2) input patch starting at
(th*m - pad_h, tw*m - pad_w). Position (a, b) of a patch is flattened to a*(m+2) + b, output
pixel (i, j) of a tile to i*m + j.
"""
import triton
import triton.language as tl

from ..epilogue import store_conv_tile


@triton.jit
def tile_coordinates(offs_t, TILES_H, TILES_W):
    """(image n, tile row th, tile column tw) of tile indices ``offs_t``."""
    n = offs_t // (TILES_H * TILES_W)
    th = (offs_t // TILES_W) % TILES_H
    tw = offs_t % TILES_W
    return n, th, tw


@triton.jit
def load_input_patches(x_ptr, pos, n, th, tw, t_ok, c, c_ok, H, W, sx_n, sx_c, sx_h, sx_w, pad_h, pad_w,
                       M_OUT: tl.constexpr):
    """[len(pos), BLOCK_T, BLOCK_C] input patch positions ``pos`` of tiles (n, th, tw) at channels c.

    Positions past (M_OUT+2)^2, padding pixels and masked tiles / channels read 0.
    """
    ALPHA: tl.constexpr = M_OUT + 2
    h = th[None, :] * M_OUT - pad_h + (pos // ALPHA)[:, None]
    w = tw[None, :] * M_OUT - pad_w + (pos % ALPHA)[:, None]
    in_ok = (pos < ALPHA * ALPHA)[:, None] & t_ok[None, :] & (h >= 0) & (h < H) & (w >= 0) & (w < W)
    x_rows = n[None, :] * sx_n + h * sx_h + w * sx_w
    return tl.load(x_ptr + x_rows[:, :, None] + c[None, None, :] * sx_c,
                   mask=in_ok[:, :, None] & c_ok[None, None, :], other=0.0)


@triton.jit
def store_output_tiles(
    y, n, th, tw, t_ok, k, k_ok, P, Q, output, epilogue,
    M_OUT: tl.constexpr, OUTPUTS_PAD: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Store Y = A^T M A of BLOCK_T tiles x BLOCK_N channels through the shared epilogue
    (``output`` and ``epilogue``: ``store_conv_tile``'s groups).

    y: [OUTPUTS_PAD, BLOCK_T * BLOCK_N] with rows = output pixel o of a tile (rows past
    M_OUT^2 are padding) and columns = (tile, channel), channel fastest. Pixels past P x Q
    (the edge tiles' overhang) are not stored.
    """
    y = tl.reshape(y, (OUTPUTS_PAD * BLOCK_T, BLOCK_N))
    outs = tl.arange(0, OUTPUTS_PAD)
    p = th[None, :] * M_OUT + (outs // M_OUT)[:, None]
    q = tw[None, :] * M_OUT + (outs % M_OUT)[:, None]
    out_ok = (outs < M_OUT * M_OUT)[:, None] & t_ok[None, :] & (p < P) & (q < Q)
    rows_n = tl.reshape(n[None, :] + 0 * p, (OUTPUTS_PAD * BLOCK_T,))
    store_conv_tile(
        y, rows_n, tl.reshape(p, (OUTPUTS_PAD * BLOCK_T,)), tl.reshape(q, (OUTPUTS_PAD * BLOCK_T,)), k,
        tl.reshape(out_ok, (OUTPUTS_PAD * BLOCK_T,)), k_ok, output, epilogue,
    )
