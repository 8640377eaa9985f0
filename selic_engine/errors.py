"""Typed errors. All are ValueError subclasses except a missing model (LookupError + FileNotFoundError)."""

from __future__ import annotations

from PIL import Image

from .container.format import SelicFormatError, UnsupportedVersionError


class DesyncError(SelicFormatError):
    """The decoded latent symbols do not match the hash stored by the encoder."""


class UnknownModelError(SelicFormatError, LookupError):
    """The file was made with decoder weights that this installation does not have."""


class ImageTooLargeError(SelicFormatError, Image.DecompressionBombError):
    """The header claims more pixels than Pillow's decompression-bomb limit allows (Image.MAX_IMAGE_PIXELS)."""


class NewerSelicError(ValueError):
    """Weights or a config from a newer selic: an architecture or config field this release does not know."""


class WeightsNotFoundError(FileNotFoundError):
    """Shipped weights were requested but are not installed (or fail their recorded sha256)."""


__all__ = [
    "DesyncError",
    "ImageTooLargeError",
    "NewerSelicError",
    "SelicFormatError",
    "UnknownModelError",
    "UnsupportedVersionError",
    "WeightsNotFoundError",
]
