"""The entropy model behind one seam, in the shape of compressai's `latent_codecs`.

`HyperpriorChARM` takes the latent y and owns everything between it and the bits: the hyper
analysis h_a, the factorized prior of z (compressai's EntropyBottleneck), the hyper synthesis h_s
and the ChARM over y. `forward` gives the training likelihoods, `compress` the two rANS streams
and `decompress` the latent back. A different entropy model is another class with these three
methods; the model around it (model.selic) does not change.

Coding follows the file format (container): the latent is coded in bands of rows, one after the
other in the one y stream, and the ChARM nets see only their own band, so the decoder never holds
whole-image float64 buffers or symbols, and the band layout follows from the image height alone.
Everything that chooses a probability table runs wherever `coding_layout` put it (the CPU in
float64 in the engine), so that tiny float differences between machines cannot flip a table index.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from compressai.ans import BufferedRansEncoder
from compressai.entropy_models import EntropyBottleneck
from compressai.latent_codecs import LatentCodec
from torch import Tensor, nn

from ..container import CODING_BAND_ROWS, coding_bands
from .charm import ChannelARM
from .guard import GuardedDecoder, Tables

#: Latent rows per hyper-latent row (h_a's stride: two stride-2 convolutions), and the z rows of context h_s
#: gets each side of a band (it reaches about 2 z rows).
Z_STRIDE = 4
HYPER_MARGIN = 3


def symbol_digest() -> hashlib.blake2b:
    """The file's symbol hash: blake2b-64 over the int32 y symbols, band by band, each band in C order."""
    return hashlib.blake2b(digest_size=8)


@dataclass
class Coded:
    """What compress produces for one latent: the streams and what is needed to decode them."""

    z_stream: bytes
    y_stream: bytes
    z_shape: tuple[int, int]
    symbol_hash: bytes  # of the y symbols (see symbol_digest): stored in the file to detect desynchronisation


class HyperpriorChARM(LatentCodec):
    """z = h_a(y) under a factorized prior; h_s(z_hat) gives the ChARM's context over y (Minnen & Singh 2020)."""

    #: The probability side: what coding_layout moves to the CPU in float64 (h_a only feeds z; it stays with
    #: the transforms).
    PRIOR_MODULES = ("h_s", "entropy_bottleneck", "charm")

    def __init__(self, h_a: nn.Module, h_s: nn.Module, M: int, Nz: int, slices: int, charm_hidden: int) -> None:
        """h_a: y (M channels) -> z (Nz), stride Z_STRIDE; h_s: z_hat -> 2M channels (means, scales) at y's size."""
        super().__init__()
        self.M, self.Nz = M, Nz
        self.h_a = h_a
        self.h_s = h_s
        self.entropy_bottleneck = EntropyBottleneck(Nz)
        self.charm = ChannelARM(M, slices, charm_hidden)

    def forward(self, y: Tensor) -> dict[str, Any]:
        """Training pass: noisy likelihoods of y and z for the rate, straight-through y_hat for the decoder."""
        z_hat, z_likelihoods = self.entropy_bottleneck(self.h_a(y))
        means, scales = self.h_s(z_hat).chunk(2, dim=1)
        y_hat, y_likelihoods = self.charm(y, means, scales)
        return {"y_hat": y_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def aux_parameters(self) -> list[nn.Parameter]:
        """What compressai's aux loss trains (the prior's quantiles): a separate optimiser, never the main one."""
        return [self.entropy_bottleneck.quantiles]

    def coding_layout(self) -> None:
        """The probability side to the CPU in float64: every machine then picks the same table indexes."""
        for name in self.PRIOR_MODULES:
            getattr(self, name).to(device="cpu", dtype=torch.float64)

    def _prior(self) -> tuple[torch.device, torch.dtype]:
        p = next(self.h_s.parameters())
        return p.device, p.dtype

    def z_tables(self) -> Tables:
        """The hyper-latent's rANS tables: one per channel (compressai's factorized prior)."""
        eb = self.entropy_bottleneck
        return Tables.of(eb.quantized_cdf, eb.cdf_length, eb.offset)

    def _z_hat(self, z_stream: bytes, z_shape: tuple[int, int]) -> Tensor:
        """z decoded through the guard, with compressai's factorized-prior layout (table c for channel c)."""
        eb = self.entropy_bottleneck
        indexes = torch.arange(self.Nz, dtype=torch.int32).reshape(1, -1, 1, 1).expand(1, -1, *z_shape)
        symbols = GuardedDecoder(z_stream, indexes.numel(), self.z_tables()).decode(indexes)
        medians = eb.quantiles.detach()[:, 0, 1].reshape(1, -1, 1, 1)
        return eb.dequantize(symbols, medians, medians.dtype)

    def _hyper_band(self, z_hat: Tensor, rows: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """h_s means and scales for latent rows [r0, r1), from the z rows around them: the values a
        whole-latent h_s would give, without its whole-latent float64 buffers (8 bytes per image pixel)."""
        r0, r1 = rows
        a0, a1 = max(0, r0 // Z_STRIDE - HYPER_MARGIN), min(z_hat.shape[-2], -(-r1 // Z_STRIDE) + HYPER_MARGIN)
        features = self.h_s(z_hat[..., a0:a1, :])
        top = r0 - a0 * Z_STRIDE
        return features[..., top : top + r1 - r0, :].chunk(2, dim=1)

    @torch.no_grad()
    def compress(self, y: Tensor, band_rows: int = CODING_BAND_ROWS) -> Coded:
        """Both streams for y (1, M, h, w), h and w multiples of Z_STRIDE (band_rows other than the format's:
        experiments; such streams are not .selic files)."""
        device, dtype = self._prior()
        z = self.h_a(y).to(device=device, dtype=dtype)
        z_stream = self.entropy_bottleneck.compress(z)[0]
        z_shape = (z.shape[-2], z.shape[-1])
        z_hat = self._z_hat(z_stream, z_shape)
        encoder, digest = BufferedRansEncoder(), symbol_digest()
        for rows in coding_bands(y.shape[-2], band_rows):
            band = y[..., rows[0] : rows[1], :].to(device=device, dtype=dtype)
            _, symbols = self.charm.compress(band, *self._hyper_band(z_hat, rows), encoder)
            digest.update(symbols.numpy().tobytes())
        return Coded(z_stream, encoder.flush(), z_shape, digest.digest())

    @torch.no_grad()
    def decompress(self, z_stream: bytes, y_stream: bytes, z_shape: tuple[int, int],
                   dtype: torch.dtype = torch.float32, band_rows: int = CODING_BAND_ROWS) -> tuple[Tensor, bytes]:
        """(y_hat on the CPU in `dtype`, symbol hash), band by band. A damaged or forged stream ends in a
        DesyncError from the guard, or in a hash that differs from the file's."""
        z_hat = self._z_hat(z_stream, z_shape)
        y_hat = torch.empty(1, self.M, Z_STRIDE * z_shape[0], Z_STRIDE * z_shape[1], dtype=dtype)
        decoder = GuardedDecoder(y_stream, y_hat.numel(), self.charm.tables())
        digest = symbol_digest()
        for r0, r1 in coding_bands(y_hat.shape[-2], band_rows):
            band, symbols = self.charm.decompress(decoder, *self._hyper_band(z_hat, (r0, r1)))
            digest.update(symbols.numpy().tobytes())
            y_hat[..., r0:r1, :] = band
        return y_hat, digest.digest()
