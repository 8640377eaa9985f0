"""Guarding compressai's rANS decoder against forged streams (it reads words without bounds checks)."""

from __future__ import annotations

import math

import numpy as np
import torch

#: Bypass (escape) symbols a padded rANS stream is sized for beyond the tables' own escape rate (see below).
ESCAPE_FLOOR = 65536
ESCAPE_MARGIN = 8
_PAD_SEED = 0x5E11C


def escape_rate(cdf: torch.Tensor, lengths: torch.Tensor) -> float:
    """The largest probability any of these rANS tables gives its bypass (escape) symbol, the last one."""
    last = cdf.gather(1, (lengths.reshape(-1, 1).long() - 2)).reshape(-1)
    return float((65536 - last).max()) / 65536


def _longest_run(mask: np.ndarray) -> int:
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.view(np.int8), [0]))))
    return int((edges[1::2] - edges[::2]).max()) if edges.size else 0


def guard_rans_stream(stream: bytes, n_symbols: int, rate: float) -> bytes:
    """`stream` followed by enough padding that compressai's RansDecoder cannot read past its end.

    compressai's decoder reads 32-bit words without a bounds check, and its bypass mode (an
    escape symbol followed by 4-bit length nibbles; a 0xF nibble extends the length) lets a
    forged stream make one symbol read many words: 3 MB of 0xFF bytes crash it. Padding words
    have bit 31 set, so every padded read lifts the state by at least 32 bits, and low nibble 0,
    so no run of 0xF nibbles continues into the padding. With the decoder's own arithmetic
    (an ordinary symbol consumes at most 16 state bits, a bypass nibble 4, the state holds 64),
    reads past the stream number at most
        3 + n/2 + (16 K + 15)/8 + 159 E / 8
    for n symbols, E of them escapes decoded once inside the padding, and K = 9 + 8 R the
    longest run of 0xF nibbles one escape can meet in the stream (R: longest run of words with
    low nibble 0xF). The padding is sized for E = n up to 65536 symbols (a strict guarantee for
    small images) and for 65536 + 8x the tables' largest escape probability beyond. The padding
    is pseudo-random, so decoding it behaves like decoding random data; overrunning the budget
    would need escapes at eight times the rate the tables give them, sustained over the whole
    padded region. A legitimate stream is never read past its end, so padding changes nothing
    for it; a forged one decodes garbage, which the symbol hash then refuses.
    """
    words = -(-len(stream) // 4)
    body = np.zeros(words, "<u4")
    body.view(np.uint8)[: len(stream)] = np.frombuffer(stream, np.uint8)
    K = 9 + 8 * _longest_run((body & 0xF) == 0xF)
    escapes = min(n_symbols, ESCAPE_FLOOR + math.ceil(ESCAPE_MARGIN * rate * n_symbols))
    pad = 8 + -(-n_symbols // 2) + -(-(16 * K + 15) // 8) + -(-159 * escapes // 8)
    out = np.random.Generator(np.random.PCG64(_PAD_SEED)).integers(0, 1 << 32, words + pad, dtype=np.uint32)
    out &= 0xFFFF_FFF0
    out |= 0x8000_0000
    out[:words] = body
    return out.astype("<u4", copy=False).tobytes()
