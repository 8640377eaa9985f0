"""Typed errors. All are ValueError subclasses except a missing model (LookupError + FileNotFoundError)."""

from __future__ import annotations

from .container.format import SelicFormatError, UnsupportedVersionError


class DesyncError(SelicFormatError):
    """The decoded latent symbols do not match the hash stored by the encoder."""


class UnknownModelError(SelicFormatError, LookupError):
    """The file was made with decoder weights that this installation does not have."""


class WeightsNotFoundError(FileNotFoundError):
    """Shipped weights were requested but are not installed (or fail their recorded sha256)."""


__all__ = ["DesyncError", "SelicFormatError", "UnknownModelError", "UnsupportedVersionError", "WeightsNotFoundError"]
