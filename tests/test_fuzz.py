"""Hostile input: every damaged or forged file ends in SyntaxError / OSError / ValueError, quickly, in bounded memory.

The CI corpus (`test_fuzz_corpus`) is a few thousand deterministic cases, most of which fail
at the CRC in microseconds; the ones that reach the rANS decoder are forged with a recomputed
CRC. The mutators live in `benchmarks/fuzzing.py`; `benchmarks/fuzz_long.py` runs them much longer
(and hypothesis with many more examples runs under the `slow` marker). The rANS guard is checked
against a reference model of compressai's decoder written from its C++ source.
"""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
import time
import warnings
from bisect import bisect_right
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import selic_engine as se
from benchmarks.common import peak_rss_mib
from benchmarks.fuzzing import (
    MAX_PIXELS,
    Fuzzer,
    alpha_edits,
    bit_flips,
    chunk_payload,
    decoders,
    forged_streams,
    forged_wide,
    header_edits,
    length_edits,
    mutate,
    random_bytes,
    replace_chunk,
    truncations,
    with_header,
)
from benchmarks.fuzzing import samples as sample_files
from selic_engine.container import unpack
from selic_engine.entropy import guard
from selic_engine.entropy.guard import CHUNK, LOSS, GuardedDecoder, Tables, guard_rans_stream

GROWTH_MIB = 512  # peak-memory growth allowed over a whole fuzz run


@pytest.fixture(scope="module")
def samples(tiny_engine) -> dict[str, bytes]:
    return sample_files(tiny_engine.model_id)


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


@pytest.mark.parametrize("height", [1, 85])
def test_a_wide_forgery_too_short_for_its_size_is_refused_before_any_work(monkeypatch, height):
    """Issue 32's files: 2^20 px wide (one row, or 85: just under Pillow's pixel limit), a z stream valid for that
    size and 64 garbage y bytes. The whole first band's prior ran before a symbol was read: 35-98 s, 5.5-9.9 GB.
    Even at the least a symbol can cost (Tables.floor) their y symbols need more than 64 bytes, so the file is
    refused before z is decoded or h_s runs."""
    from selic_engine.entropy import HyperpriorChARM

    engine = se.get_engine("small")
    data = forged_wide(engine, 1 << 20, height, 64)

    def never(*_: object) -> None:
        raise AssertionError("decoding went on")

    monkeypatch.setattr(HyperpriorChARM, "decompress_side", never)
    hook = engine.model.h_s.register_forward_pre_hook(never)
    try:
        with pytest.raises(se.DesyncError, match="run out"):
            se.decode(data)
    finally:
        hook.remove()


WIDE_FORGERY = """
import json, sys
sys.path.insert(0, {root!r})
import selic_engine as se
from benchmarks.common import peak_rss_mib
from benchmarks.fuzzing import forged_wide
data = forged_wide(se.get_engine("small"), {width}, 1, 64, texture=True)
before = peak_rss_mib()
try:
    se.decode(data)
except se.DesyncError:
    print(json.dumps({{"grown_mib": peak_rss_mib() - before}}))
"""


def test_a_wide_forgery_is_refused_in_memory_that_follows_its_bytes_not_its_width():
    """Issue 32: a 2^18 x 1 file, its z stream valid (a photo-like strip's), 64 garbage y bytes (enough for its
    symbols at the floor). The prior ran over its whole band (4 x 16384 latents) before reading a symbol: 1.1 GB.
    Now it runs in column windows, and the first symbols are read as each window's scales arrive, so the stream
    is refused a few windows in: measured, 66 MB at 2^17 and 118 MB at 2^18, the difference mostly the padding of
    the stream for its claimed symbols (entropy.guard)."""
    root = str(Path(__file__).resolve().parents[1])
    res = subprocess.run([sys.executable, "-c", WIDE_FORGERY.format(root=root, width=1 << 18)], capture_output=True,
                         text=True, check=True, timeout=300)
    grown = json.loads(res.stdout.strip().splitlines()[-1])["grown_mib"]
    assert grown < 256, grown


def test_a_stream_too_short_for_its_symbols_at_the_floor_is_refused_before_its_padding(tiny_engine):
    """n symbols cost at least n (floor - LOSS) bits of stream (Tables.bits): fewer bytes than that are refused
    as the decoder is made, before it pads the stream for n symbols (2 bytes each: 200 MB here)."""
    t = tiny_engine.model.charm.tables()
    n = 10**8
    assert n * t.floor > Tables.bits(n, 64) and t.floor > LOSS
    with pytest.raises(se.DesyncError, match="run out"):
        GuardedDecoder(bytes(64), n, t)


@pytest.mark.parametrize("which", ["charm", "entropy_bottleneck"])
def test_guarded_decoder_refuses_a_stream_that_has_run_out(tiny_engine, which):
    """A real stream asked for more symbols than it holds: refused within a chunk or two of its end (or at once,
    where even its tables' floor says it is too short: z's tables cost at least 0.64 bits a symbol), while the
    same stream asked for its own symbols decodes exactly (the bound is never too tight)."""
    from compressai.ans import RansEncoder

    t = _tables(tiny_engine.model, which)
    rng = np.random.default_rng(2)
    n, more = 4 * CHUNK, 40 * CHUNK
    indexes = rng.integers(0, len(t.length_list), n + more)
    values = [int(t.offsets[i]) + int(rng.integers(0, t.lengths[i] - 2)) for i in indexes[:n]]
    stream = RansEncoder().encode_with_indexes(values, indexes[:n].tolist(), t.cdf, t.length_list, t.offset_list)
    assert GuardedDecoder(stream, n, t).decode(torch.from_numpy(indexes[:n])).tolist() == values
    decoded: list[int] = []
    with pytest.raises(se.DesyncError, match="run out"):
        decoder = GuardedDecoder(stream, n + more, t)
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
    return model.charm.tables() if which == "charm" else model.latent_codec.z_tables()


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
    replayed on the reference decoder, which counts the words it reads. The tables' floor is set to 0, which
    only lets a decoder go on longer: 16 bytes are too few for 20000 z symbols even at its real one.
    """
    from compressai.ans import RansEncoder

    monkeypatch.setattr(guard, "CHUNK", 64)
    t = dataclasses.replace(_tables(tiny_engine.model, which), floor=0.0)
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
    z = torch.randn(1, eb.channels, 6, 5, dtype=torch.float64) * 3
    stream = eb.compress(z)[0]
    indexes = torch.arange(eb.channels).repeat_interleave(6 * 5).tolist()  # table c for channel c, in C order
    t = tiny_engine.model.latent_codec.z_tables()
    cdfs, lens, offs = t.cdf, t.length_list, t.offset_list
    guarded = guard_rans_stream(stream, len(indexes), len(indexes))
    assert guarded.startswith(stream) and len(guarded) % 4 == 0
    plain, words_read = reference_decode(stream, indexes, cdfs, lens, offs)
    assert words_read == len(stream) // 4
    assert reference_decode(guarded, indexes, cdfs, lens, offs)[0] == plain
    assert guard_rans_stream(stream, 10, 0) == guard_rans_stream(stream, 10, 0)  # deterministic padding
