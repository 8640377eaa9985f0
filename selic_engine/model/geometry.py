"""The pixel geometry of one architecture: strides, padding, coding bands and tile margins.

A file's latent shapes, its band layout and the tiles that g_a / g_s run in all follow from the image size
and these numbers, so they belong to the architecture that fixed them (a decoder version freezes them with its
weights), not to the container or the tiler.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The tiler (model.tiling) pads images and cuts tiles on multiples of this many pixels, for every architecture.
ALIGN = 64


@dataclass(frozen=True)
class Geometry:
    latent_stride: int  # pixels per latent element (g_a's total stride)
    hyper_stride: int  # pixels per hyper-latent element: images are padded to it, and tile edges align to it
    coding_band_rows: int  # latent rows per entropy-coding band (the y stream codes the bands top to bottom)
    tile_margin: int  # pixels of context around each g_a / g_s tile: more than either receptive field

    def __post_init__(self) -> None:
        if self.hyper_stride != ALIGN or self.tile_margin % ALIGN or ALIGN % self.latent_stride:
            raise ValueError(f"the tiler pads images and cuts tiles on multiples of {ALIGN} px: hyper_stride must be "
                             f"{ALIGN}, the tile margin a multiple of it and latent_stride a divisor")

    def z_shape(self, size: tuple[int, int]) -> tuple[int, int]:
        """(rows, columns) of the hyper-latent for an image of size (H, W): whole hyper_stride blocks."""
        return -(-size[0] // self.hyper_stride), -(-size[1] // self.hyper_stride)
