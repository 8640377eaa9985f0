"""Reading .selic bytes: the header (`probe`) and the pixels (`decode`).

Everything that can refuse a file (magic, version, CRC, structure, the decompression-bomb limit) runs
here before torch is imported: torch and the model cost about 1.5 s and 900 MB in a fresh process, which
a damaged or foreign file should not. Importing this module does not import torch; `decode` imports the
engine only for a file that has passed those checks.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from PIL import Image

from .config import Precision
from .container import HEADER_SIZE, Header, info, read_header, unpack
from .errors import ImageTooLargeError

if TYPE_CHECKING:
    import torch


def _read(source: bytes | str | os.PathLike, limit: int = -1) -> bytes:
    """The bytes given, or the first `limit` bytes (-1: all) of the file that a str or path names."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            return f.read(limit)
    return source


def decode(
    data: bytes | str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    precision: Precision | None = None,
    tile: int | None = None,
) -> Image.Image:
    """Decompress .selic bytes, or the .selic file a path names, to a PIL image in the original mode
    (RGB, L, RGBA or LA).

    Any damaged or hostile input raises a SelicFormatError (a ValueError): bad structure or CRC,
    a size over the decompression-bomb limit (ImageTooLargeError), or latent symbols that fail
    the file's hash (DesyncError).

    tile: g_s runs in overlapping square tiles of this side in pixels (a positive multiple of 64; default
    tiling.DEFAULT_TILE), which bounds the memory a large image needs; decoded pixels differ negligibly
    between tile sizes (float rounding).
    """
    f = unpack(_read(data))
    try:
        check_pixels(f.header)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc)) from exc
    from .engine import engine_for_id  # torch: only for a file that parsed

    engine = engine_for_id(f.header.model_id, device, f.decoder)
    image = engine.decode_file(f, precision, tile=tile)
    image.info.update(info(f.header, f.metadata, f.decoder or engine.decoder))
    return image


def check_pixels(header: Header) -> None:
    """Pillow's decompression-bomb rule, before anything is allocated."""
    Image._decompression_bomb_check(header.size)


def probe(data: bytes | str | os.PathLike) -> Header:
    """Read the header only, of .selic bytes or of the file a path names: size, mode, quality, model id.
    Needs no model, and reads only the header's bytes of a file."""
    return read_header(_read(data, HEADER_SIZE))
