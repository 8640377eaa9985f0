"""The .selic file format: magic, version, typed chunks, CRC-32 trailer, and what the chunks hold
(header fields, quality steps, metadata keys, the decoder tag). See docs/format.md.

Everything a reader or writer must agree on about the bytes lives here; what the coded streams mean
(latent shapes, coding bands) belongs to the decoder the file names (model.registry, its geometry).
Parsing validates every length against the bytes actually present before slicing or allocating
anything, so a hostile header cannot make the reader allocate or loop.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import IO, Any

from ..config import QUALITY_MAX, QUALITY_MIN

MAGIC = b"\x89SELIC\r\n"
VERSION = 2  # 2: the latent is coded in bands of 64 latent rows (2026-12); 1: one whole-latent band
MAX_DIMENSION = 1 << 20  # per side; the pixel-count limit is Pillow's MAX_IMAGE_PIXELS, applied by callers

#: Qualities are stored in thousandths.
QUALITY_STEPS = 1000

MODES = ("RGB", "L", "RGBA", "LA")  # original image mode, by code
_HEAD = struct.Struct("<8sIIBH8s")  # model id, width, height, mode code, quality*1000, symbol hash
_CHUNK = struct.Struct("<4sI")
_CRC = struct.Struct("<I")
#: Image metadata a file keeps verbatim (Pillow's info keys), then the caption the encoder used.
IMAGE_METADATA = ("icc_profile", "exif", "xmp")
METADATA_CHUNKS = dict(zip((*IMAGE_METADATA, "caption"), (b"ICCP", b"EXIF", b"XMP ", b"CAPT"), strict=True))
_METADATA_KEYS = {kind: key for key, kind in METADATA_CHUNKS.items()}
REQUIRED = (b"HEAD", b"ZSTR", b"YSTR")
#: The decoder tag: the released decoder version the file needs, and the selic release that wrote it (13 bytes with
#: its chunk header). Ancillary (lower-case first letter), so readers from before it skip it; files from before it
#: have none.
DECODER_TAG = b"dver"
_TAG = struct.Struct("<HBBB")  # decoder version; release major, minor, patch
KNOWN = {*REQUIRED, b"ALPH", DECODER_TAG, *METADATA_CHUNKS.values()}


class SelicFormatError(ValueError):
    """The bytes are not a valid .selic file (bad magic, truncated, damaged, inconsistent)."""


class UnsupportedVersionError(SelicFormatError):
    """The file is a .selic file of a version this reader does not know."""


@dataclass(frozen=True)
class DecoderTag:
    """A released decoder version, and the selic release (major, minor, patch) that wrote the file."""

    version: int
    release: tuple[int, int, int]

    @property
    def writer(self) -> str:
        return "selic " + ".".join(map(str, self.release))


@dataclass
class Header:
    model_id: str  # 16 hex digits: the decoder id (the architecture's id of the decoder weights)
    width: int
    height: int
    mode: str
    quality: float
    symbol_hash: bytes  # 8 bytes: blake2b of the decoded y symbols

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass
class SelicFile:
    header: Header
    z_stream: bytes
    y_stream: bytes
    alpha: bytes | None = None  # the alpha plane as an 8-bit grayscale PNG (docs/format.md)
    metadata: dict[str, bytes] = field(default_factory=dict)  # keys of METADATA_CHUNKS
    decoder: DecoderTag | None = None  # None: written before tags existed, or by unreleased weights


#: Bytes that hold the magic, the version and the HEAD chunk: what read_header needs.
HEADER_SIZE = len(MAGIC) + 1 + _CHUNK.size + _HEAD.size


def quantize_quality(quality: float) -> float:
    """Qualities are stored in thousandths; the encoder uses the stored value so both sides agree."""
    return round(float(quality) * QUALITY_STEPS) / QUALITY_STEPS


def info(header: Header, metadata: dict[str, bytes], decoder: DecoderTag | None = None) -> dict[str, Any]:
    """A file's Pillow-style `info`: icc_profile, exif and xmp as bytes (Pillow's convention; Image.getxmp
    needs bytes), the caption as text, the header's quality and decoder id, and the decoder version when the
    file is tagged."""
    out: dict[str, Any] = {k: v.decode("utf-8", "replace") if k == "caption" else v for k, v in metadata.items()}
    out["quality"] = header.quality
    out["model"] = header.model_id
    if decoder is not None:
        out["decoder"] = f"v{decoder.version}"
    return out


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return _CHUNK.pack(kind, len(payload)) + payload


def pack(f: SelicFile) -> bytes:
    h = f.header
    if h.mode not in MODES:
        raise ValueError(f"mode {h.mode!r} cannot be stored; one of {MODES}")
    head = _HEAD.pack(bytes.fromhex(h.model_id), h.width, h.height, MODES.index(h.mode),
                      round(h.quality * QUALITY_STEPS), h.symbol_hash)
    parts = [MAGIC, bytes([VERSION]), _chunk(b"HEAD", head), _chunk(b"ZSTR", f.z_stream), _chunk(b"YSTR", f.y_stream)]
    if f.decoder is not None:
        parts.append(_chunk(DECODER_TAG, _TAG.pack(f.decoder.version, *f.decoder.release)))
    if f.alpha is not None:
        parts.append(_chunk(b"ALPH", f.alpha))
    for key, kind in METADATA_CHUNKS.items():
        if f.metadata.get(key):
            parts.append(_chunk(kind, f.metadata[key]))
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def accept(prefix: bytes) -> bool:
    """True when the first bytes are the .selic magic (Pillow's _accept)."""
    return prefix[: len(MAGIC)] == MAGIC


def _iter_chunks(data: bytes, start: int, end: int):
    pos = start
    while pos < end:
        if end - pos < _CHUNK.size:
            raise SelicFormatError(f"truncated chunk header at byte {pos}")
        kind, length = _CHUNK.unpack_from(data, pos)
        pos += _CHUNK.size
        if length > end - pos:
            raise SelicFormatError(f"chunk {kind!r} claims {length} bytes, only {end - pos} remain")
        yield kind, pos, length
        pos += length


def _header(data: bytes, pos: int, length: int) -> Header:
    if length != _HEAD.size:
        raise SelicFormatError(f"HEAD chunk has {length} bytes, expected {_HEAD.size}")
    mid, width, height, mode, q1000, symbol_hash = _HEAD.unpack_from(data, pos)
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise SelicFormatError(f"invalid image size {width}x{height}")
    if mode >= len(MODES):
        raise SelicFormatError(f"unknown mode code {mode}")
    if not QUALITY_MIN * QUALITY_STEPS <= q1000 <= QUALITY_MAX * QUALITY_STEPS:
        raise SelicFormatError(f"quality {q1000 / QUALITY_STEPS} out of range {QUALITY_MIN:g}..{QUALITY_MAX:g}")
    return Header(mid.hex(), width, height, MODES[mode], q1000 / QUALITY_STEPS, symbol_hash)


def _check_prefix(data: bytes) -> None:
    if not accept(data):
        raise SelicFormatError("not a .selic file (bad magic)")
    if len(data) < len(MAGIC) + 1:
        raise SelicFormatError("truncated .selic file")
    if data[len(MAGIC)] != VERSION:
        raise UnsupportedVersionError(
            f".selic format version {data[len(MAGIC)]} is not supported by this reader (it reads version {VERSION}); "
            "upgrade selic"
        )


def _decoder_tag(payload: bytes) -> DecoderTag:
    if len(payload) < _TAG.size:  # a longer tag (a later writer's) starts with the same fields
        raise SelicFormatError(f"decoder tag has {len(payload)} bytes, at least {_TAG.size} expected")
    version, *release = _TAG.unpack_from(payload)
    return DecoderTag(version, tuple(release))  # type: ignore[arg-type]


def read_header(data: bytes) -> Header:
    """Header only, from a prefix of the file: what Image.open and probe need, no CRC check."""
    _check_prefix(data)
    start = len(MAGIC) + 1
    if len(data) < start + _CHUNK.size + _HEAD.size:
        raise SelicFormatError("truncated .selic header")
    kind, length = _CHUNK.unpack_from(data, start)
    if kind != b"HEAD":
        raise SelicFormatError("first chunk is not HEAD")
    return _header(data, start + _CHUNK.size, length)


def scan_metadata(fp: IO[bytes]) -> dict[str, bytes]:
    """The metadata chunks of a file on disk, read by seeking over the coded streams (Image.open's needs).

    Stops quietly at the first inconsistency: a full read (unpack) verifies the CRC and reports it.
    Lengths are checked against the file size first, so a hostile header cannot force a big read.
    """
    fp.seek(0, os.SEEK_END)
    end = fp.tell()
    pos = len(MAGIC) + 1
    meta: dict[str, bytes] = {}
    while end - pos >= _CHUNK.size:
        fp.seek(pos)
        kind, length = _CHUNK.unpack(fp.read(_CHUNK.size))
        pos += _CHUNK.size
        if length > end - pos:
            break
        if kind in _METADATA_KEYS:
            meta[_METADATA_KEYS[kind]] = fp.read(length)
        pos += length
    return meta


def unpack(data: bytes) -> SelicFile:
    """Parse and verify a whole file (CRC first, then structure)."""
    data = bytes(data)
    _check_prefix(data)
    if len(data) < len(MAGIC) + 1 + _CRC.size:
        raise SelicFormatError("truncated .selic file")
    end = len(data) - _CRC.size
    (crc,) = _CRC.unpack_from(data, end)
    if zlib.crc32(memoryview(data)[:end]) != crc:
        raise SelicFormatError("CRC mismatch: the file is damaged or truncated")
    chunks: dict[bytes, bytes] = {}
    for kind, pos, length in _iter_chunks(data, len(MAGIC) + 1, end):
        if kind in chunks:
            raise SelicFormatError(f"duplicate chunk {kind!r}")
        if kind not in KNOWN:
            if kind[:1].isupper():
                raise SelicFormatError(f"unknown critical chunk {kind!r}")
            continue  # ancillary chunk from a newer writer
        if not chunks and kind != b"HEAD":
            raise SelicFormatError("first chunk is not HEAD")
        chunks[kind] = data[pos : pos + length]
    missing = [k.decode() for k in REQUIRED if k not in chunks]
    if missing:
        raise SelicFormatError(f"missing chunks: {', '.join(missing)}")
    header = _header(chunks[b"HEAD"], 0, len(chunks[b"HEAD"]))
    has_alpha = header.mode in ("RGBA", "LA")
    if has_alpha != (b"ALPH" in chunks):
        raise SelicFormatError(f"mode {header.mode} and the presence of an alpha chunk disagree")
    metadata = {key: chunks[kind] for key, kind in METADATA_CHUNKS.items() if kind in chunks}
    tag = _decoder_tag(chunks[DECODER_TAG]) if DECODER_TAG in chunks else None
    return SelicFile(header, chunks[b"ZSTR"], chunks[b"YSTR"], chunks.get(b"ALPH"), metadata, tag)
