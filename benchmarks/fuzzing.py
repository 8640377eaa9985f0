"""The .selic decoder fuzz harness: the file's layout, mutators that damage or forge files, and a runner.

Shared by the CI corpus (tests/test_fuzz.py) and the long runs (benchmarks/fuzz_long.py). Every
case must end in SyntaxError / OSError / ValueError (or Pillow's DecompressionBombError on the
Pillow paths) within the per-case time limit; anything else is a finding.
"""

from __future__ import annotations

import io
import random
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

import selic_engine as se
from selic_engine.container import MAGIC, VERSION

if TYPE_CHECKING:
    from selic_engine.engine import Engine

ALLOWED = (SyntaxError, OSError, ValueError)
CASE_SECONDS = 30.0  # per case, on a loaded 2-core CI machine; a tiny file decodes in about a second
MAX_PIXELS = 100_000  # decompression-bomb limit during fuzzing: claims above twice this fail before decoding

Decoder = Callable[[bytes], object]


# --- the file's layout, for mutators that forge a valid-looking file -------------------------------------------

def chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(kind, offset of the length field, payload length) for each well-formed chunk of a valid file."""
    out, pos, end = [], len(MAGIC) + 1, len(data) - 4
    while pos + 8 <= end:
        kind, length = struct.unpack_from("<4sI", data, pos)
        out.append((kind, pos + 4, length))
        pos += 8 + length
    return out


def reseal(body: bytes | bytearray) -> bytes:
    """A body (everything before the CRC) with a correct CRC-32 trailer, so the reader looks further."""
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def replace_chunk(data: bytes, kind: bytes, payload: bytes) -> bytes:
    """The file with one chunk's payload replaced (length updated, CRC recomputed)."""
    for k, at, length in chunks(data):
        if k == kind:
            start = at + 4
            return reseal(data[: at] + struct.pack("<I", len(payload)) + payload + data[start + length : -4])
    raise KeyError(kind)


def chunk_payload(data: bytes, kind: bytes) -> bytes:
    at, length = next((at, n) for k, at, n in chunks(data) if k == kind)
    return data[at + 4 : at + 4 + length]


def with_header(data: bytes, **fields: int) -> bytes:
    """The file with HEAD fields (width, height, mode, q1000) overwritten, CRC recomputed."""
    head = bytearray(chunk_payload(data, b"HEAD"))
    formats = {"width": (8, "<I"), "height": (12, "<I"), "mode": (16, "<B"), "q1000": (17, "<H")}
    for name, value in fields.items():
        offset, fmt = formats[name]
        struct.pack_into(fmt, head, offset, value)
    return replace_chunk(data, b"HEAD", bytes(head))


# --- mutators: each yields (label, bytes) --------------------------------------------------------------------------

def random_bytes(rng: random.Random, count: int) -> Iterator[tuple[str, bytes]]:
    prefix = MAGIC + bytes([VERSION])
    for i in range(count):
        body = rng.randbytes(rng.choice([0, 1, 7, 8, 9, 16, 40, 200, 1000]))
        kind = i % 3
        yield "random", body if kind == 0 else prefix + body if kind == 1 else reseal(prefix + body)


def truncations(data: bytes) -> Iterator[tuple[str, bytes]]:
    for n in range(len(data)):
        yield "truncated", data[:n]


def bit_flips(rng: random.Random, data: bytes, count: int) -> Iterator[tuple[str, bytes]]:
    for i in range(count):
        buf = bytearray(data)
        for _ in range(1 if i % 4 else rng.randint(2, 16)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        yield "bit flip", bytes(buf)


def length_edits(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Every chunk length set to boundary values, CRC recomputed: the parser must notice, not slice blindly."""
    end = len(data) - 4
    for _kind, at, length in chunks(data):
        remaining = end - at - 4
        for value in {0, 1, 3, max(length - 1, 0), length + 1, remaining, remaining + 1, 1 << 31, (1 << 32) - 1}:
            yield "chunk length", reseal(data[:at] + struct.pack("<I", value) + data[at + 4 : end])


def header_edits(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Sizes from nothing to enormous, unknown modes and qualities, with a valid CRC."""
    sizes = [0, 1, 17, 65, 1 << 20, (1 << 20) + 1, 1 << 31, (1 << 32) - 1]
    for w in sizes:
        for h in sizes:
            yield "header size", with_header(data, width=w, height=h)
    for mode in (1, 2, 3, 4, 255):
        yield "header mode", with_header(data, mode=mode)
    for q in (0, 999, 8001, 65535):
        yield "header quality", with_header(data, q1000=q)


def forged_streams(rng: random.Random, data: bytes, other: bytes) -> Iterator[tuple[str, bytes]]:
    """Valid headers over wrong payloads, CRC recomputed: the rANS decoder really sees these bytes."""
    y, z = chunk_payload(data, b"YSTR"), chunk_payload(data, b"ZSTR")
    payloads = [b"", b"\x00", b"\xff" * 3, bytes(8), b"\xff" * 4096, np.full(512, 0xF, "<u4").tobytes(),
                rng.randbytes(len(y)), rng.randbytes(7), y[: len(y) // 2], y[:-1], y + b"\x00", y[::-1],
                chunk_payload(other, b"YSTR")]
    for p in payloads:
        yield "forged y stream", replace_chunk(data, b"YSTR", p)
    for p in [b"", b"\xff" * 64, rng.randbytes(len(z)), z[:-1], chunk_payload(other, b"ZSTR")]:
        yield "forged z stream", replace_chunk(data, b"ZSTR", p)
    yield "swapped streams", replace_chunk(replace_chunk(data, b"YSTR", z), b"ZSTR", y)
    for _ in range(6):
        buf = bytearray(y)
        buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        yield "y byte flipped", replace_chunk(data, b"YSTR", bytes(buf))


def alpha_edits(data: bytes) -> Iterator[tuple[str, bytes]]:
    png = chunk_payload(data, b"ALPH")
    for p in [b"", b"\x89PNG\r\n\x1a\n", png[: len(png) // 2], png[:-1] + b"\x00"]:
        yield "forged alpha", replace_chunk(data, b"ALPH", p)


# --- running cases -------------------------------------------------------------------------------------------------

def decoders() -> dict[str, Decoder]:
    """selic_engine.decode, and the Pillow and imageio paths when pillow_selic is installed."""
    out: dict[str, Decoder] = {"selic_engine.decode": se.decode}
    try:
        import pillow_selic  # noqa: F401
    except ImportError:
        return out

    def pillow(data: bytes) -> object:
        with Image.open(io.BytesIO(data), formats=["SELIC"]) as im:
            im.load()
            return im.size

    out["PIL.Image.open().load()"] = pillow
    try:
        import imageio.v3 as iio
    except ImportError:
        return out
    # plugin="selic": with only extension=".selic", imageio falls back to every other plugin on non-selic bytes,
    # and its legacy Pillow wrapper hands Pillow's DIB _accept a 1-byte prefix (struct.error, not ours)
    out["imageio.v3.imread"] = lambda data: iio.imread(data, plugin="selic")
    return out


class Fuzzer:
    """Runs cases through decoders; tallies outcomes; fails on any other exception or a slow case."""

    def __init__(self, decoders: dict[str, Decoder], case_seconds: float = CASE_SECONDS) -> None:
        self.decoders = decoders
        self.case_seconds = case_seconds
        self.outcomes: Counter[str] = Counter()
        self.cases = 0
        self.slowest = 0.0

    def run(self, label: str, data: bytes, names: list[str] | None = None) -> None:
        for name in names or list(self.decoders):
            allowed = ALLOWED if name == "selic_engine.decode" else (*ALLOWED, Image.DecompressionBombError)
            start = time.perf_counter()
            try:
                self.decoders[name](data)
                outcome = "decoded"
            except allowed as exc:
                outcome = type(exc).__name__
            except Exception as exc:  # noqa: BLE001 - the point of the fuzzer
                raise AssertionError(f"{name} raised {type(exc).__name__} on a {label} case: {exc!r}") from exc
            elapsed = time.perf_counter() - start
            assert elapsed < self.case_seconds, f"{name} took {elapsed:.1f} s on a {label} case"
            self.slowest = max(self.slowest, elapsed)
            self.outcomes[outcome] += 1
            self.cases += 1

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in self.outcomes.most_common())
        return f"{self.cases} decoder calls ({kinds}); slowest {self.slowest:.2f} s"

def mutate(data: bytes, edits: list[tuple[float, int]], cut: tuple[float, float] | None, seal: bool) -> bytes:
    """Overwrite bytes at relative positions, optionally delete a slice, optionally recompute the CRC."""
    buf = bytearray(data)
    for where, value in edits:
        buf[min(int(where * len(buf)), len(buf) - 1)] = value
    if cut is not None:
        a, b = sorted(int(c * len(buf)) for c in cut)
        del buf[a:b]
    return reseal(buf[:-4]) if seal and len(buf) >= 4 else bytes(buf)



def samples(model_id: str) -> dict[str, bytes]:
    """Tiny valid files to mutate (one 64x64 padded latent each: a decode takes about a second): RGB with
    metadata, RGBA and grayscale, coded by the model `model_id` (tests use selic_engine.testing.build_tiny)."""
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, rng.integers(0, 256, (16, 24), dtype=np.uint8)])
    kw = dict(caption=False, model=model_id)
    return {"rgb": se.encode(rgb, 4, metadata={"exif": b"Exif\x00\x00MM", "xmp": b"<x/>"}, **kw),
            "rgba": se.encode(rgba, 6, **kw), "gray": se.encode(rgb[..., 0], 2, **kw)}


def forged_wide(engine: Engine, width: int, height: int, y_bytes: int, texture: bool = False, seed: int = 0) -> bytes:
    """Issue 32's forgery: a file claiming width x height whose z stream is valid for that size (the z of a flat
    gray strip, or with `texture` of a photo-like one, repeated across the width: what an encoder writes for
    such an image) and whose y stream is `y_bytes` bytes of garbage."""
    import torch

    from selic_engine.container import Header, SelicFile, pack
    from selic_engine.testing import photo_like

    model, codec = engine.model, engine.model.latent_codec
    strip = photo_like(64, 1024) if texture else np.full((64, 1024, 3), 128, np.uint8)
    coded = model.compress(torch.from_numpy(strip).permute(2, 0, 1)[None], 4.0)
    z = codec.decompress_side(coded.z_stream, coded.z_shape)[..., 2:14]  # away from the strip's edges
    rows, cols = model.geometry.z_shape((height, width))
    z = z.repeat(1, 1, rows, -(-cols // z.shape[-1]))[..., :cols].contiguous()
    rng = np.random.default_rng(seed)
    header = Header(engine.model_id, width, height, "RGB", 4.0, rng.bytes(8))
    return pack(SelicFile(header, codec.entropy_bottleneck.compress(z)[0], rng.bytes(y_bytes), decoder=engine.decoder))
