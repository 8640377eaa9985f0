"""Guarding compressai's rANS decoder against forged streams (it reads words without bounds checks).

compressai's decoder reads 32-bit words without a bounds check, and its bypass mode (an escape
symbol followed by 4-bit length nibbles; a 0xF nibble extends the length) lets a forged stream
make one symbol read many words: 3 MB of 0xFF bytes crash it. Two things bound what it reads:

- the stream is padded (`guard_rans_stream`) for a fixed number of escapes;
- the decoder (`GuardedDecoder`) decodes in chunks of `CHUNK` symbols, counts the escapes it has
  decoded, and refuses the stream before a chunk could take it past the number the padding was
  sized for (the budget plus one chunk).

The budget (`Tables.budget`) is the most escapes a stream of its length can legitimately hold,
so no file an encoder writes is ever refused: every escape costs at least 4 + log2(1/p) bits of
the stream (its length nibble and its symbol, p <= the tables' largest escape probability).
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
_PAD_SEED = 0x5E11C


@dataclass(frozen=True)
class Tables:
    """One entropy model's rANS tables, in the forms compressai's coder and the escape count need."""

    cdf: list[list[int]]
    length_list: list[int]
    offset_list: list[int]
    lengths: np.ndarray
    offsets: np.ndarray
    rate: float  # the largest probability any table gives its escape (bypass) symbol, the last one

    @classmethod
    def of(cls, cdf: Tensor, lengths: Tensor, offsets: Tensor) -> Tables:
        lengths, offsets = lengths.reshape(-1).int(), offsets.reshape(-1).int()
        last = cdf.gather(1, (lengths.reshape(-1, 1).long() - 2)).reshape(-1)
        return cls(cdf.tolist(), lengths.tolist(), offsets.tolist(), lengths.numpy(), offsets.numpy(),
                   float((65536 - last).max()) / 65536)

    def escapes(self, values: np.ndarray, indexes: np.ndarray) -> int:
        """How many of these decoded values went through the bypass: those outside [0, length - 2)."""
        raw = values.astype(np.int64) - self.offsets[indexes]
        return int(np.count_nonzero((raw < 0) | (raw >= self.lengths[indexes] - 2)))

    def budget(self, n_symbols: int, stream_bytes: int) -> int:
        """The most escapes a legitimate stream of this length can hold.

        rANS (compressai's Rans64) grows its state by at least log2(1/p) - 2^-14 bits per symbol
        of probability p (the state stays above 2^31 and frequencies below 2^16) and by exactly 4
        bits per bypass nibble; it writes the state out in 32-bit words plus a 64-bit flush. So
        8 L + 64 + n 2^-14 bits pay for every escape's 4 + log2(1/rate) bits.
        """
        bits = 8 * stream_bytes + 64 + n_symbols / 16384
        return min(n_symbols, math.floor(bits / (4 + math.log2(1 / self.rate))))


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
    escapes pass the tables' budget: reads then provably stay inside the padded buffer."""

    def __init__(self, stream: bytes, n_symbols: int, tables: Tables) -> None:
        self.tables = tables
        self.budget = tables.budget(n_symbols, len(stream))
        self._decoder = RansDecoder()
        self._decoder.set_stream(guard_rans_stream(stream, n_symbols, self.budget + CHUNK))
        self._escapes = 0

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
            self._escapes += t.escapes(values, part)
            parts.append(values)
        self._check()
        values = np.concatenate(parts) if parts else np.zeros(0, np.int32)
        return torch.from_numpy(values).reshape(indexes.shape)

    def _check(self) -> None:
        if self._escapes > self.budget:
            raise DesyncError(f"latent stream decodes to more than the {self.budget} escape symbols its length can "
                              "hold: the file is damaged or forged")

