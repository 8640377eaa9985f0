"""The band driver: codes any banded latent codec's latent in row bands, through the guard, under the symbol hash.

A latent codec that codes its latent band by band (side information first, then each band from its own
context) implements `BandedLatentCodec`'s five hooks; `compress` and `decompress` here are then the same for
every such codec: one rANS stream of bands top to bottom, every decoded symbol read through the guarded
decoder (entropy.guard), and the file's symbol hash over the int32 symbols, band by band, each in C order.
"""

from __future__ import annotations

import hashlib
import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from compressai.ans import BufferedRansEncoder
from compressai.latent_codecs import LatentCodec
from torch import Tensor

from .guard import GuardedDecoder, Tables


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


def symbol_digest() -> Digest:
    """The file's symbol hash: blake2b-64 over the int32 y symbols, band by band, each band in C order."""
    return hashlib.blake2b(digest_size=8)


def coding_bands(latent_height: int, rows: int) -> list[tuple[int, int]]:
    """[r0, r1) latent rows of each coding band, top to bottom."""
    return [(r, min(latent_height, r + rows)) for r in range(0, latent_height, rows)]


@dataclass
class Coded:
    """What compress produces for one latent: the streams and what is needed to decode them."""

    z_stream: bytes
    y_stream: bytes
    z_shape: tuple[int, int]
    symbol_hash: bytes  # of the y symbols (see symbol_digest): stored in the file to detect desynchronisation


class BandedLatentCodec(LatentCodec):
    """A latent codec whose y is coded in row bands after a side stream (z); subclasses give the hooks."""

    M: int  # latent channels
    #: Latent rows (and columns) per side-stream element.
    side_stride: int

    @abstractmethod
    def compress_side(self, y: Tensor) -> tuple[bytes, Tensor]:
        """(side stream, the decoded side information that the bands' contexts come from)."""

    @abstractmethod
    def decompress_side(self, stream: bytes, shape: tuple[int, int]) -> Tensor:
        """The decoded side information from its stream (read through the guard)."""

    @abstractmethod
    def band_context(self, side: Tensor, rows: tuple[int, int]) -> Any:
        """What coding the latent rows [r0, r1) needs from the side information."""

    @abstractmethod
    def compress_band(self, band: Tensor, context: Any, encoder: BufferedRansEncoder) -> Tensor:
        """Queue one band's symbols on encoder; returns them (int32, in stream order)."""

    @abstractmethod
    def decompress_band(self, decoder: GuardedDecoder, context: Any) -> tuple[Tensor, Tensor]:
        """(y_hat band, its int32 symbols) from the next symbols of a (possibly hostile) stream."""

    @abstractmethod
    def latent_tables(self) -> Tables:
        """The rANS tables of the banded stream."""

    @abstractmethod
    def prior_placement(self) -> tuple[torch.device, torch.dtype]:
        """Where the probability side runs (coding_layout: the CPU in float64)."""

    @torch.no_grad()
    def compress(self, y: Tensor, band_rows: int) -> Coded:
        """Both streams for y (1, M, h, w), h and w multiples of side_stride."""
        device, dtype = self.prior_placement()
        side_stream, side = self.compress_side(y)
        encoder, digest = BufferedRansEncoder(), symbol_digest()
        for rows in coding_bands(y.shape[-2], band_rows):
            band = y[..., rows[0] : rows[1], :].to(device=device, dtype=dtype)
            digest.update(self.compress_band(band, self.band_context(side, rows), encoder).numpy().tobytes())
        return Coded(side_stream, encoder.flush(), (side.shape[-2], side.shape[-1]), digest.digest())

    @torch.no_grad()
    def decompress(self, z_stream: bytes, y_stream: bytes, z_shape: tuple[int, int], band_rows: int,
                   dtype: torch.dtype = torch.float32, digest: Digest | None = None) -> tuple[Tensor, bytes]:
        """(y_hat on the CPU in `dtype`, symbol hash), band by band. A damaged or forged stream ends in a
        DesyncError from the guard, or in a hash that differs from the file's. `digest`: another hash of the
        same symbol bytes (the conformance streams record a sha256)."""
        s = self.side_stride
        shape = (1, self.M, s * z_shape[0], s * z_shape[1])
        # First, so that a y stream too short for its symbols even at the tables' floor is refused before anything
        # else is decoded; y_hat's pages are touched band by band, as bands are decoded.
        decoder = GuardedDecoder(y_stream, math.prod(shape), self.latent_tables())
        side = self.decompress_side(z_stream, z_shape)
        y_hat = torch.empty(shape, dtype=dtype)
        digest = digest or symbol_digest()
        for r0, r1 in coding_bands(y_hat.shape[-2], band_rows):
            band, symbols = self.decompress_band(decoder, self.band_context(side, (r0, r1)))
            digest.update(symbols.numpy().tobytes())
            y_hat[..., r0:r1, :] = band
        return y_hat, digest.digest()
