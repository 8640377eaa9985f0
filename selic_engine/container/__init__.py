"""The .selic file format (docs/format.md): everything a reader and a writer must agree on."""

from .format import (
    HEADER_SIZE,
    IMAGE_METADATA,
    MAGIC,
    VERSION,
    DecoderTag,
    Header,
    SelicFile,
    SelicFormatError,
    UnsupportedVersionError,
    accept,
    info,
    pack,
    quantize_quality,
    read_header,
    scan_metadata,
    unpack,
)

__all__ = [
    "HEADER_SIZE",
    "IMAGE_METADATA",
    "MAGIC",
    "VERSION",
    "DecoderTag",
    "Header",
    "SelicFile",
    "SelicFormatError",
    "UnsupportedVersionError",
    "accept",
    "info",
    "pack",
    "quantize_quality",
    "read_header",
    "scan_metadata",
    "unpack",
]
