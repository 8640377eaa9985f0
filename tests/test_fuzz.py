"""Hostile input: every damaged or forged file ends in SyntaxError / OSError / ValueError, quickly, in bounded memory.

The CI corpus (`test_fuzz_corpus`) is a few thousand deterministic cases, most of which fail
at the CRC in microseconds; the ones that reach the rANS decoder are forged with a recomputed
CRC. `benchmarks/fuzz_long.py` runs the same mutators much longer (and hypothesis with many more
examples runs under the `slow` marker). The rANS guard is checked against a reference model of
compressai's decoder written from its C++ source.
"""

from __future__ import annotations

import io
import random
import resource
import struct
import time
import warnings
import zlib
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from PIL import Image

import selic_engine as se
from selic_engine.container import MAGIC, VERSION, unpack
from selic_engine.entropy import guard
from selic_engine.entropy.guard import CHUNK, GuardedDecoder, Tables, guard_rans_stream

ALLOWED = (SyntaxError, OSError, ValueError)
CASE_SECONDS = 30.0  # per case, on a loaded 2-core CI machine; a tiny file decodes in about a second
MAX_PIXELS = 100_000  # decompression-bomb limit during fuzzing: claims above twice this fail before decoding
GROWTH_MIB = 512  # peak-memory growth allowed over a whole fuzz run

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


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


@pytest.fixture(scope="module")
def samples(tiny_engine) -> dict[str, bytes]:
    """Tiny valid files (one 64x64 padded latent: each decode is about a second): RGB with metadata, and RGBA."""
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, rng.integers(0, 256, (16, 24), dtype=np.uint8)])
    kw = dict(caption=False, model=tiny_engine.model_id)
    return {"rgb": se.encode(rgb, 4, metadata={"exif": b"Exif\x00\x00MM", "xmp": b"<x/>"}, **kw),
            "rgba": se.encode(rgba, 6, **kw)}


@pytest.fixture
def quiet_bomb_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", MAX_PIXELS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def corpus(samples: dict[str, bytes], seed: int = 0) -> Iterator[tuple[str, bytes, bool]]:
    """(label, bytes, reaches the latent decoder): the deterministic CI corpus."""
    rng = random.Random(seed)
    rgb, rgba = samples["rgb"], samples["rgba"]
    for label, data in [*random_bytes(rng, 600), *truncations(rgb), *truncations(rgba), *bit_flips(rng, rgb, 600),
                        *bit_flips(rng, rgba, 200), *length_edits(rgb), *length_edits(rgba)]:
        yield label, data, False
    for label, data in [*header_edits(rgb), *forged_streams(rng, rgb, rgba), *alpha_edits(rgba)]:
        yield label, data, True


def test_fuzz_corpus(samples, quiet_bomb_limit):
    """Thousands of hostile inputs through every decoder path; each fails cleanly and fast."""
    fuzzer = Fuzzer(decoders())
    engine_only = ["selic_engine.decode"]
    peak = peak_rss_mib()
    forged = 0
    for label, data, slow in corpus(samples):
        # a forged case runs the whole latent decoder: always through the engine, every third through the plugins
        forged += slow
        fuzzer.run(label, data, engine_only if slow and forged % 3 else None)
    print(f"\nfuzz corpus: {fuzzer.summary()}")
    assert fuzzer.cases > 3000
    assert peak_rss_mib() - peak < GROWTH_MIB
    assert {"SelicFormatError", "DesyncError"} <= set(fuzzer.outcomes)


def mutate(data: bytes, edits: list[tuple[float, int]], cut: tuple[float, float] | None, seal: bool) -> bytes:
    """Overwrite bytes at relative positions, optionally delete a slice, optionally recompute the CRC."""
    buf = bytearray(data)
    for where, value in edits:
        buf[min(int(where * len(buf)), len(buf) - 1)] = value
    if cut is not None:
        a, b = sorted(int(c * len(buf)) for c in cut)
        del buf[a:b]
    return reseal(buf[:-4]) if seal and len(buf) >= 4 else bytes(buf)


@pytest.mark.slow
def test_fuzz_hypothesis(samples, quiet_bomb_limit):
    """Hypothesis-driven mutations (many of them CRC-resealed, so they reach the latent decoder)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    fuzzer = Fuzzer(decoders())
    edits = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8)
    cuts = st.none() | st.tuples(st.floats(0, 1), st.floats(0, 1))

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(sorted(samples)), edits, cuts, st.booleans())
    def check(key: str, edit_list: list[tuple[float, int]], cut: tuple[float, float] | None, seal: bool) -> None:
        fuzzer.run("hypothesis", mutate(samples[key], edit_list, cut, seal))

    check()
    print(f"\nhypothesis fuzz: {fuzzer.summary()}")


def test_valid_samples_decode(samples):
    for data in samples.values():
        assert se.decode(data).size == (24, 16)


def test_crc_catches_every_single_bit_flip(samples):
    """CRC-32 detects every 1-bit error: each flip of the small file is refused before any decoding."""
    data = samples["rgb"]
    for i in range(len(data) * 8):
        buf = bytearray(data)
        buf[i // 8] ^= 1 << (i % 8)
        with pytest.raises(se.SelicFormatError):
            unpack(bytes(buf))


@pytest.mark.parametrize("stream", [b"YSTR", b"ZSTR"])
def test_forged_latent_is_a_desync(samples, stream):
    """A symbol-stream byte changed and the CRC recomputed: the symbol hash turns it into DesyncError."""
    data = samples["rgb"]
    payload = bytearray(chunk_payload(data, stream))
    rng = random.Random(3)
    for _ in range(4):
        buf = bytearray(payload)
        buf[rng.randrange(len(buf))] ^= 0x10
        with pytest.raises(se.DesyncError):
            se.decode(replace_chunk(data, stream, bytes(buf)))


def test_garbage_under_a_large_claimed_size_fails_before_synthesis(samples, monkeypatch):
    """A tiny file claiming 1024x1024: the latent is decoded, the hash refuses it, g_s never runs."""
    from selic_engine.model import SelicModel

    calls: list[int] = []
    real = SelicModel.synthesize
    monkeypatch.setattr(SelicModel, "synthesize", lambda self, *a: calls.append(1) or real(self, *a))
    forged = with_header(samples["rgb"], width=1024, height=1024)
    start = time.perf_counter()
    with pytest.raises(se.DesyncError):
        se.decode(forged)
    assert not calls and time.perf_counter() - start < 120


def test_forged_size_is_refused_as_soon_as_the_stream_runs_out(samples, monkeypatch):
    """A tiny file claiming 2048x2048 (two coding bands) is refused within the first band, when its
    symbols outgrow its bytes, not after decoding every band the header claims (issue 17)."""
    from selic_engine.entropy import ChannelARM

    bands: list[int] = []
    real = ChannelARM.decompress
    monkeypatch.setattr(ChannelARM, "decompress", lambda self, *a: bands.append(1) or real(self, *a))
    with pytest.raises(se.DesyncError, match="run out"):
        se.decode(with_header(samples["rgb"], width=2048, height=2048))
    assert len(bands) <= 1


@pytest.mark.data
def test_a_real_photo_claiming_81_megapixels_is_refused_in_seconds():
    """Issue 17's case: a Kodak file (768x512, shipped model) re-headed to 9000x9000. It ran 250 s
    and 2.2 GB before the decoder noticed its stream had run out; the target is a few seconds."""
    from .conftest import kodak_or_skip

    data = se.encode(Image.open(kodak_or_skip() / "kodim01.png"), 5, caption=False)
    start = time.perf_counter()
    with pytest.raises(se.DesyncError, match="run out"):
        se.decode(with_header(data, width=9000, height=9000))
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("which", ["charm", "entropy_bottleneck"])
def test_guarded_decoder_refuses_a_stream_that_has_run_out(tiny_engine, which):
    """A real stream asked for more symbols than it holds: refused within a chunk or two of its end,
    while the same stream asked for its own symbols decodes exactly (the bound is never too tight)."""
    from compressai.ans import RansEncoder

    t = _tables(tiny_engine.model, which)
    rng = np.random.default_rng(2)
    n, more = 4 * CHUNK, 40 * CHUNK
    indexes = rng.integers(0, len(t.length_list), n + more)
    values = [int(t.offsets[i]) + int(rng.integers(0, t.lengths[i] - 2)) for i in indexes[:n]]
    stream = RansEncoder().encode_with_indexes(values, indexes[:n].tolist(), t.cdf, t.length_list, t.offset_list)
    assert GuardedDecoder(stream, n, t).decode(torch.from_numpy(indexes[:n])).tolist() == values
    decoder = GuardedDecoder(stream, n + more, t)
    decoded: list[int] = []
    with pytest.raises(se.DesyncError, match="run out"):
        for start in range(0, n + more, CHUNK):
            decoder.decode(torch.from_numpy(indexes[start : start + CHUNK]))
            decoded.append(start)
    assert len(decoded) <= n // CHUNK + 2


def test_enormous_claims_are_refused_as_value_errors(samples):
    from selic_engine.errors import ImageTooLargeError

    for w, h in [(1 << 20, 1 << 20), (100_000, 100_000), (1 << 20, 200)]:
        with pytest.raises(ImageTooLargeError) as info:
            se.decode(with_header(samples["rgb"], width=w, height=h))
        assert isinstance(info.value, ValueError) and isinstance(info.value, Image.DecompressionBombError)


# --- the rANS guard against a reference model of compressai's decoder -------------------------------------------

_M64, _L = (1 << 64) - 1, 1 << 31


def _i32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def reference_decode(stream: bytes, indexes: list[int], cdfs: list[list[int]], lengths: list[int],
                     offsets: list[int]) -> tuple[list[int], int]:
    """compressai's rANSDecoderInterface::decode_stream (rans_interface.cpp, rans64.h) in Python.

    Returns (symbols, number of 32-bit words read), counting reads past the end instead of making them.
    """
    words = np.frombuffer(stream[: len(stream) // 4 * 4], "<u4").tolist()
    pos = 0

    def read() -> int:
        nonlocal pos
        pos += 1
        return words[pos - 1] if pos <= len(words) else 0

    x = read() | read() << 32

    def get_bits() -> int:  # Rans64DecGetBits with 4 bits
        nonlocal x
        val = x & 15
        x >>= 4
        if x < _L:
            x = (x << 32 | read()) & _M64
        return val

    out = []
    for idx in indexes:
        cdf, n, max_value = cdfs[idx], lengths[idx], lengths[idx] - 2
        s = bisect_right(cdf, x & 0xFFFF, 0, n) - 1
        x = (cdf[s + 1] - cdf[s]) * (x >> 16) + (x & 0xFFFF) - cdf[s]  # Rans64DecAdvance
        if x < _L:
            x = (x << 32 | read()) & _M64
        value = s
        if value == max_value:  # bypass mode
            val = get_bits()
            n_bypass = val
            while val == 15:
                val = get_bits()
                n_bypass = _i32(n_bypass + val)
            raw = 0
            for j in range(max(n_bypass, 0)):
                raw = _i32(raw | _i32(get_bits() << (j * 4 & 31)))  # x86 masks the shift count
            value = _i32(-(raw >> 1) - 1) if raw & 1 else _i32((raw >> 1) + max_value)
        out.append(_i32(value + offsets[idx]))
    return out, pos


def _hostile_streams(rng: np.random.Generator) -> dict[str, bytes]:
    return {
        "empty": b"", "3 bytes": b"\xff\xff\xff", "zeros": bytes(400), "0xff run": b"\xff" * 4000,
        "low-F words": np.full(1000, 0xF, "<u4").tobytes(), "random": rng.bytes(3000),
        "0xff tail": rng.bytes(2000) + b"\xff" * 300, "all-F words then low-F": np.concatenate(
            [np.full(500, 0xFFFFFFFF, "<u4"), np.full(20, 0xF, "<u4")]).tobytes(),
    }


def _tables(model, which: str) -> Tables:
    if which == "charm":
        return model.charm.tables()
    eb = model.entropy_bottleneck
    return Tables.of(eb._quantized_cdf, eb._cdf_length, eb._offset)


def _likeliest_escape(t: Tables) -> int:
    return max(range(len(t.length_list)), key=lambda i: 65536 - t.cdf[i][t.length_list[i] - 2])


@pytest.mark.parametrize("which", ["charm", "entropy_bottleneck"])
def test_rans_guard_keeps_reads_inside_the_buffer(tiny_engine, which):
    """On forged streams, compressai's decoder (modelled exactly) never reads past the guarded buffer.

    The reference model's symbols equal compressai's on every stream, which validates the model;
    the index sequences include the adversarial one (every symbol from the table whose escape
    symbol is likeliest).
    """
    from compressai.ans import RansDecoder

    t = _tables(tiny_engine.model, which)
    rng = np.random.default_rng(0)
    worst = _likeliest_escape(t)
    index_sets = {f"{n} likeliest escapes": [worst] * n for n in (16, 2048)}  # 16: the stream-run term dominates
    index_sets["2048 random tables"] = rng.integers(0, len(t.length_list), 2048).tolist()
    for stream_name, stream in _hostile_streams(rng).items():
        for index_name, indexes in index_sets.items():
            guarded = guard_rans_stream(stream, len(indexes), t.budget(len(indexes), len(stream)) + CHUNK)
            expected, words_read = reference_decode(guarded, indexes, t.cdf, t.length_list, t.offset_list)
            decoder = RansDecoder()
            decoder.set_stream(guarded)
            assert decoder.decode_stream(indexes, t.cdf, t.length_list, t.offset_list) == expected, (
                stream_name, index_name)
            assert words_read <= len(guarded) // 4, (stream_name, index_name, words_read)


@pytest.mark.parametrize("which", ["charm", "entropy_bottleneck"])
def test_guarded_decoder_refuses_escape_floods_of_any_length(tiny_engine, which, monkeypatch):
    """Past the budget, the chunked decoder refuses the stream before it can read past the padding.

    The flood is a real rANS stream of escapes cut to 16 bytes, so that decoding runs on into the
    padding, whose pseudo-random words decode to escapes at the tables' rate until they outnumber
    what 16 bytes can pay for; hostile byte patterns ride along. The chunk is
    shrunk so that the stream stays cheap to model: every prefix the decoder actually decodes is
    replayed on the reference decoder, which counts the words it reads.
    """
    from compressai.ans import RansEncoder

    monkeypatch.setattr(guard, "CHUNK", 64)
    t = _tables(tiny_engine.model, which)
    n = 20000
    worst = _likeliest_escape(t)
    indexes = [worst] * n
    far = [int(t.offsets[worst]) - 1 - k % 5000 for k in range(n)]  # every one below the table: an escape
    flood = RansEncoder().encode_with_indexes(far, indexes, t.cdf, t.length_list, t.offset_list)[:16]
    refused = 0
    for stream in (flood, b"\xff" * 4000, np.full(1000, 0xF, "<u4").tobytes(), np.random.default_rng(1).bytes(3000)):
        decoder = GuardedDecoder(stream, n, t)
        padded = guard_rans_stream(stream, n, decoder.budget + 64)  # what the decoder was given
        symbols, _ = reference_decode(padded, indexes, t.cdf, t.length_list, t.offset_list)
        raw = np.array(symbols) - t.offsets[worst]
        over = np.flatnonzero(np.cumsum((raw < 0) | (raw >= t.lengths[worst] - 2)) > decoder.budget)
        # the chunk that crosses the escape budget is the last one decoded (the decoder may stop sooner: a
        # stream that has run out is refused as soon as its symbols outgrow its bytes)
        decoded = min(n, (over[0] // 64 + 1) * 64) if over.size else n
        _, words_read = reference_decode(padded, indexes[:decoded], t.cdf, t.length_list, t.offset_list)
        assert words_read <= len(padded) // 4
        if over.size:
            with pytest.raises(se.DesyncError, match="run out"):
                decoder.decode(torch.tensor(indexes))
            refused += 1
    assert refused >= 1  # the flood


def test_escape_budget_holds_every_legitimate_stream(tiny_engine):
    """The budget bounds real streams: escapes as dense as they can be still fit it (and a budget that
    large only in the tightest case)."""
    from compressai.ans import RansEncoder

    t = tiny_engine.model.charm.tables()
    easiest = min(range(len(t.length_list)), key=lambda i: 65536 - t.cdf[i][t.length_list[i] - 2])
    for table in (_likeliest_escape(t), easiest):
        for value in (t.offsets[table] - 1, t.offsets[table] + t.lengths[table] - 2):  # cheapest escapes
            n = 3000
            stream = RansEncoder().encode_with_indexes([int(value)] * n, [table] * n, t.cdf, t.length_list,
                                                       t.offset_list)
            decoder = GuardedDecoder(stream, n, t)
            assert decoder.budget >= n * 0.1  # not vacuous
            assert decoder.decode(torch.tensor([table] * n)).tolist() == [int(value)] * n


def test_rans_guard_leaves_valid_streams_alone(tiny_engine):
    """A legitimate stream is read exactly to its end, so the padding never changes what it decodes to."""
    eb = tiny_engine.model.entropy_bottleneck
    z = torch.randn(1, eb._quantized_cdf.shape[0], 6, 5, dtype=torch.float64) * 3
    stream = eb.compress(z)[0]
    indexes = eb._build_indexes(z.size())[0].reshape(-1).tolist()
    cdfs, lens, offs = eb._quantized_cdf.tolist(), eb._cdf_length.tolist(), eb._offset.tolist()
    guarded = guard_rans_stream(stream, len(indexes), len(indexes))
    assert guarded.startswith(stream) and len(guarded) % 4 == 0
    plain, words_read = reference_decode(stream, indexes, cdfs, lens, offs)
    assert words_read == len(stream) // 4
    assert reference_decode(guarded, indexes, cdfs, lens, offs)[0] == plain
    assert guard_rans_stream(stream, 10, 0) == guard_rans_stream(stream, 10, 0)  # deterministic padding
