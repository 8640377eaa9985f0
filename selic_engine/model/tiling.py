"""Tiled analysis and synthesis: large images in bounded memory, without seams, in the unchanged file format.

Only the pixel-domain transforms are tiled. g_a runs on overlapping windows of the (virtually)
padded image and each window keeps the latents of its own tile; g_s runs on overlapping latent
windows and each keeps the pixels of its own tile. The margin (128 px = 8 latents) is wider
than either receptive field (g_a + fusion: 89 px; g_s: 7 latents = 112 px, measured), so every
kept value is computed from exactly the inputs the whole-image transform would use: tiled and
untiled results agree up to float rounding. Between the two, the latent is entropy-coded in
row bands (entropy.bands), and the decoder derives tiles and bands from width and height alone. The
strides and the margin are the architecture's (model.geometry); tiles are cut on multiples of 64 px.

Images that fit in one tile take the single-window path, which is the untiled computation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .geometry import ALIGN, Geometry

#: Tile side in pixels (both directions) unless the caller passes one (`tile` of selic_engine.encode / decode).
DEFAULT_TILE = 1024


def round_up(n: int, multiple: int = ALIGN) -> int:
    return -(-n // multiple) * multiple


def tile_size(tile: int | None = None) -> int:
    """The tile side in pixels: the argument, else DEFAULT_TILE; checked to be a positive multiple of 64."""
    value = DEFAULT_TILE if tile is None else tile
    if value < ALIGN or value % ALIGN:
        raise ValueError(f"tile size must be a positive multiple of {ALIGN} pixels, got {value}")
    return value


def spans(length: int, tile: int) -> list[tuple[int, int]]:
    """Cut [0, length) (a multiple of 64) into near-equal spans of at most `tile`, edges on multiples of 64."""
    count = -(-length // tile)
    units = length // ALIGN
    edges = [ALIGN * (units * i // count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _window(start: int, stop: int, length: int, margin: int) -> tuple[int, int]:
    return max(0, start - margin), min(length, stop + margin)


def _crop_indices(start: int, stop: int, size: int, device: torch.device) -> Tensor:
    """Indices of rows (or columns) start..stop of the replicate-padded image: past the edge repeats the last."""
    return torch.arange(start, stop, device=device).clamp_(max=size - 1)


def analyze_tiled(
    analyze: Callable[[Tensor], Tensor],
    x: Tensor,
    channels: int,
    geometry: Geometry,
    tile: int | None = None,
) -> Tensor:
    """The latent y of x (1, 3, H, W; float in [0, 1] or uint8) padded to a multiple of 64 by edge replication.

    `analyze` maps an image window to its latent. Windows are cut from x directly, so the padded
    whole image is never materialised, and x may be any strided view (imaging.split gives a
    channel-first view of channel-last memory): each window is copied out NCHW-contiguous, since
    channels-last inputs crash conv kernels in this torch build (seen here).
    """
    t = tile_size(tile)
    H, W = x.shape[-2:]
    Hp, Wp = round_up(H), round_up(W)
    s, margin = geometry.latent_stride, geometry.tile_margin
    y: Tensor | None = None
    for r0, r1 in spans(Hp, t):
        a0, a1 = _window(r0, r1, Hp, margin)
        rows = x.index_select(-2, _crop_indices(a0, a1, H, x.device))
        for c0, c1 in spans(Wp, t):
            b0, b1 = _window(c0, c1, Wp, margin)
            window = rows.index_select(-1, _crop_indices(b0, b1, W, x.device)).contiguous()
            if window.dtype == torch.uint8:
                window = window.float().div_(255)
            part = analyze(window)
            if y is None:
                y = part.new_empty(1, channels, Hp // s, Wp // s)
            y[..., r0 // s : r1 // s, c0 // s : c1 // s] = part[
                ..., (r0 - a0) // s : (r1 - a0) // s, (c0 - b0) // s : (c1 - b0) // s
            ]
        del rows
    assert y is not None
    return y


def to_pixels(x: Tensor) -> Tensor:
    """(1, 3, h, w) float, nominally in [0, 1] -> (h, w, 3) uint8, rounded to nearest."""
    return x[0].clamp(0, 1).mul_(255).round_().to(torch.uint8).permute(1, 2, 0)


def synthesize_tiled(
    synthesize: Callable[[Tensor], Tensor],
    y_hat: Tensor,
    size: tuple[int, int],
    geometry: Geometry,
    tile: int | None = None,
) -> Tensor:
    """(H, W, 3) uint8 pixels from the whole latent y_hat, synthesised in overlapping tiles.

    `synthesize` maps a latent window to pixels; each tile is converted to 8 bits as soon as it is
    made, so the only whole-image buffer is the 3-byte-per-pixel output.
    """
    s = geometry.latent_stride
    t = tile_size(tile) // s
    m = geometry.tile_margin // s
    H, W = size
    h, w = y_hat.shape[-2:]
    out = torch.empty(H, W, 3, dtype=torch.uint8)
    for r0, r1 in spans(h * s, t * s):
        r0, r1 = r0 // s, r1 // s
        a0, a1 = _window(r0, r1, h, m)
        for c0, c1 in spans(w * s, t * s):
            c0, c1 = c0 // s, c1 // s
            b0, b1 = _window(c0, c1, w, m)
            part = synthesize(y_hat[..., a0:a1, b0:b1])
            rows, cols = min(r1 * s, H) - r0 * s, min(c1 * s, W) - c0 * s
            out[r0 * s : r0 * s + rows, c0 * s : c0 * s + cols] = to_pixels(
                part[..., (r0 - a0) * s : (r0 - a0) * s + rows, (c0 - b0) * s : (c0 - b0) * s + cols]).cpu()
            del part
    return out
