"""The .selic file container (docs/format.md)."""

from .format import (
    MAGIC,
    VERSION,
    Header,
    SelicFile,
    SelicFormatError,
    UnsupportedVersionError,
    accept,
    pack,
    quantize_quality,
    read_header,
    unpack,
)

__all__ = [
    "MAGIC",
    "VERSION",
    "Header",
    "SelicFile",
    "SelicFormatError",
    "UnsupportedVersionError",
    "accept",
    "pack",
    "quantize_quality",
    "read_header",
    "unpack",
]
