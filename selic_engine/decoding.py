"""Reading .selic bytes: the header (`probe`) and the pixels (`decode`).

Everything that can refuse a file (magic, version, CRC, structure, the decompression-bomb limit) runs
here before torch is imported: torch and the model cost about 1.5 s and 900 MB in a fresh process, which
a damaged or foreign file should not. Importing this module does not import torch; `decode` imports the
engine only for a file that has passed those checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image

from .config import Precision
from .container import Header, info, read_header, unpack
from .errors import ImageTooLargeError

if TYPE_CHECKING:
    import torch


def decode(
    data: bytes,
    *,
    device: str | torch.device | None = None,
    precision: Precision | None = None,
    tile: int | None = None,
) -> Image.Image:
    """Decompress .selic bytes to a PIL image in the original mode (RGB, L, RGBA or LA).

    Any damaged or hostile input raises a SelicFormatError (a ValueError): bad structure or CRC,
    a size over the decompression-bomb limit (ImageTooLargeError), or latent symbols that fail
    the file's hash (DesyncError).

    tile: g_s runs in overlapping square tiles of this side in pixels (a positive multiple of 64; default
    tiling.DEFAULT_TILE), which bounds the memory a large image needs; decoded pixels differ negligibly
    between tile sizes (float rounding).
    """
    f = unpack(data)
    try:
        check_pixels(f.header)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc)) from exc
    from .engine import engine_for_id  # torch: only for a file that parsed

    image = engine_for_id(f.header.model_id, device).decode_file(f, precision, tile=tile)
    image.info.update(info(f.header, f.metadata))
    return image


def check_pixels(header: Header) -> None:
    """Pillow's decompression-bomb rule, before anything is allocated."""
    Image._decompression_bomb_check(header.size)


def probe(data: bytes) -> Header:
    """Read the header only: size, mode, quality, model id. Needs no model."""
    return read_header(data)
