"""Guarding compressai's rANS decoder against forged streams (it reads words without bounds checks).

compressai's decoder reads 32-bit words without a bounds check, and its bypass mode (an escape
symbol followed by 4-bit length nibbles; a 0xF nibble extends the length) lets a forged stream
make one symbol read many words: 3 MB of 0xFF bytes crash it. Two things bound what it reads:

- the stream is padded (`guard_rans_stream`) for a fixed number of escapes;
- the decoder (`GuardedDecoder`) decodes in chunks of `CHUNK` symbols, adds up the information
  of the symbols it has decoded, and refuses the stream as soon as they, with the least the symbols
  still to come can cost (`Tables.floor` each), hold more bits than its bytes can (`Tables.bits`):
  the stream has run out or desynchronised. That also bounds the escapes to the number the padding
  was sized for (the budget plus one chunk).

The budget (`Tables.budget`) is the most escapes a stream of its length can legitimately hold:
every escape costs at least 4 + log2(1/p) bits of the stream (its length nibble and its symbol,
p <= the tables' largest escape probability), so a stream within its bits is within its budget.
No file an encoder writes is ever refused, and a forged header that claims more symbols than
the stream holds fails about when the real bytes run out, not after decoding the claimed size;
one that claims more symbols than its bytes could code at the floor is refused before any.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from compressai.ans import RansDecoder
from torch import Tensor

from ..errors import DesyncError

#: Symbols decoded between two escape checks.
CHUNK = 16384
#: The most bits by which coding one symbol (and writing out the word before it) can grow the rANS state less
#: than the symbol's information (see Tables.bits).
LOSS = -math.log2(1 - 2**-15)
_PAD_SEED = 0x5E11C


@dataclass(frozen=True)
class Tables:
    """One entropy model's rANS tables, in the forms compressai's coder and the escape count need."""

    cdf: list[list[int]]
    length_list: list[int]
    offset_list: list[int]
    lengths: np.ndarray
    offsets: np.ndarray
    cdf_array: np.ndarray  # cdf as one (tables, longest) int64 array, for vectorised frequencies
    rate: float  # the largest probability any table gives its escape (bypass) symbol, the last one
    #: The least information any symbol of any table carries (its likeliest symbol's log2(1/p)), a hair under:
    #: so that float rounding in the sums that use it can never refuse a legitimate stream.
    floor: float

    @classmethod
    def of(cls, cdf: Tensor, lengths: Tensor, offsets: Tensor) -> Tables:
        lengths, offsets = lengths.reshape(-1).int(), offsets.reshape(-1).int()
        last = cdf.gather(1, (lengths.reshape(-1, 1).long() - 2)).reshape(-1)
        cdf_array = cdf.numpy().astype(np.int64)
        symbols = np.arange(cdf_array.shape[1] - 1) < (lengths.numpy()[:, None] - 1)  # each table's, escape included
        likeliest = np.where(symbols, np.diff(cdf_array, axis=1), 0).max()
        return cls(cdf.tolist(), lengths.tolist(), offsets.tolist(), lengths.numpy(), offsets.numpy(), cdf_array,
                   float((65536 - last).max()) / 65536, float(16 - np.log2(likeliest)) * (1 - 1e-9))

    def information(self, values: np.ndarray, indexes: np.ndarray) -> float:
        """The fewest stream bits that can have coded these decoded values: log2(1/p) for each symbol,
        where values outside [0, length - 2) are the escape symbol plus at least one 4-bit nibble."""
        raw = values.astype(np.int64) - self.offsets[indexes]
        escape_symbol = self.lengths[indexes] - 2
        escape = (raw < 0) | (raw >= escape_symbol)
        symbol = np.where(escape, escape_symbol, raw)
        freq = self.cdf_array[indexes, symbol + 1] - self.cdf_array[indexes, symbol]
        return float(np.sum(16 - np.log2(freq))) + 4.0 * np.count_nonzero(escape)

    @staticmethod
    def bits(n_symbols: int, stream_bytes: int) -> float:
        """The most information a legitimate stream of n symbols in this many bytes can hold.

        rANS (compressai's Rans64, 16-bit frequencies) codes a symbol of frequency f into a state x of at
        least 2^15 f (2^31, or what writing a word out leaves: x >> 32 of x >= 2^47 f), as
        x' = floor(x / f) 2^16 + ..., which grows it by more than log2(1/p) + log2(1 - (f - 1) / x);
        writing the word out loses at most log2(1 - 2^32 / x) more; together, at most
        -log2(1 - 2^-15) = LOSS bits per symbol. A bypass nibble grows it by exactly 4 bits. The state,
        from 2^31 to below 2^63, is written out in 32-bit words plus a 64-bit flush. So 8 L + 64 + n LOSS
        bits pay for the information of every symbol (with 96 bits to spare for the words written out
        before bypass nibbles, each of which can lose under 2^-26 bits).
        """
        return 8 * stream_bytes + 64 + n_symbols * LOSS

    def budget(self, n_symbols: int, stream_bytes: int) -> int:
        """The most escapes a legitimate stream of this length can hold: each costs 4 + log2(1/rate) bits."""
        return min(n_symbols, math.floor(self.bits(n_symbols, stream_bytes) / (4 + math.log2(1 / self.rate))))


def _longest_run(mask: np.ndarray) -> int:
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.view(np.int8), [0]))))
    return int((edges[1::2] - edges[::2]).max()) if edges.size else 0


def guard_rans_stream(stream: bytes, n_symbols: int, escapes: int) -> bytes:
    """`stream` followed by enough padding that compressai's RansDecoder cannot read past its end
    while decoding n_symbols of which at most `escapes` are escapes.

    Padding words have bit 31 set, so every padded read lifts the state by at least 32 bits, and
    low nibble 0, so no run of 0xF nibbles continues into the padding. With the decoder's own
    arithmetic (an ordinary symbol consumes at most 16 state bits, a bypass nibble 4, the state
    holds 64), reads past the stream number at most
        3 + n/2 + (16 K + 15)/8 + 159 E / 8
    for n symbols, E escapes decoded inside the padding, and K = 9 + 8 R the longest run of 0xF
    nibbles one escape can meet in the stream (R: longest run of words with low nibble 0xF).
    A legitimate stream is never read past its end, so padding changes nothing for it.
    """
    words = -(-len(stream) // 4)
    body = np.zeros(words, "<u4")
    body.view(np.uint8)[: len(stream)] = np.frombuffer(stream, np.uint8)
    K = 9 + 8 * _longest_run((body & 0xF) == 0xF)
    pad = 8 + -(-n_symbols // 2) + -(-(16 * K + 15) // 8) + -(-159 * min(escapes, n_symbols) // 8)
    out = np.random.Generator(np.random.PCG64(_PAD_SEED)).integers(0, 1 << 32, words + pad, dtype=np.uint32)
    out &= 0xFFFF_FFF0
    out |= 0x8000_0000
    out[:words] = body
    return out.astype("<u4", copy=False).tobytes()


class GuardedDecoder:
    """compressai's RansDecoder over a padded stream of n_symbols, refusing it (DesyncError) once its
    symbols, with the floor of those still to come, hold more information than its bytes can: reads
    then provably stay inside the padded buffer, a stream that has run out is refused within a chunk
    of its end, and one too short for n_symbols even at the floor before its padding is built."""

    def __init__(self, stream: bytes, n_symbols: int, tables: Tables) -> None:
        self.tables = tables
        self.budget = tables.budget(n_symbols, len(stream))
        self.bits = tables.bits(n_symbols, len(stream))
        self._stream_bytes = len(stream)
        self._information = 0.0
        self._left = n_symbols  # symbols not decoded yet
        self._check()
        self._decoder = RansDecoder()
        self._decoder.set_stream(guard_rans_stream(stream, n_symbols, self.budget + CHUNK))

    def decode(self, indexes: Tensor) -> Tensor:
        """int32 symbols (offsets applied), shaped like indexes."""
        flat = indexes.reshape(-1).numpy().astype(np.int64)
        t = self.tables
        parts = []
        for start in range(0, flat.size, CHUNK):
            self._check()
            part = flat[start : start + CHUNK]
            values = np.asarray(self._decoder.decode_stream(part.tolist(), t.cdf, t.length_list, t.offset_list),
                                dtype=np.int32)
            self._information += t.information(values, part)
            self._left -= part.size
            parts.append(values)
        self._check()
        values = np.concatenate(parts) if parts else np.zeros(0, np.int32)
        return torch.from_numpy(values).reshape(indexes.shape)

    def _check(self) -> None:
        if self._information + self._left * self.tables.floor > self.bits:
            raise DesyncError(f"latent stream has run out or desynchronised: its symbols need more than its "
                              f"{self._stream_bytes} bytes can code (the file is damaged or forged)")

