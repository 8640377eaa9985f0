"""Decoder v1's entropy model behind one seam, in the shape of compressai's `latent_codecs`. Frozen: files of
decoder v1 decode through this class for ever (tests/conformance), so nothing here that reaches a symbol or a
probability may change; a better entropy model is a new class beside it.

`HyperpriorChARM` takes the latent y and owns everything between it and the bits: the hyper
analysis h_a, the factorized prior of z (compressai's EntropyBottleneck), the hyper synthesis h_s
and the ChARM over y. `forward` gives the training likelihoods; the band driver (entropy.bands) gives
`compress` (the two rANS streams) and `decompress` (the latent back) from its band hooks.

The ChARM nets see only their own band, so the decoder never holds whole-image float64 buffers or
symbols. Everything that chooses a probability table runs wherever `coding_layout` put it (the CPU in
float64 in the engine), so that tiny float differences between machines cannot flip a table index.
"""

from __future__ import annotations

from typing import Any

import torch
from compressai.ans import BufferedRansEncoder
from compressai.entropy_models import EntropyBottleneck
from torch import Tensor, nn

from .bands import BandedLatentCodec
from .charm import ChannelARM
from .guard import GuardedDecoder, Tables


class HyperpriorChARM(BandedLatentCodec):
    """z = h_a(y) under a factorized prior; h_s(z_hat) gives the ChARM's context over y (Minnen & Singh 2020)."""

    #: The probability side: what coding_layout moves to the CPU in float64 (h_a only feeds z; it stays with
    #: the transforms).
    PRIOR_MODULES = ("h_s", "entropy_bottleneck", "charm")
    #: Latent rows per hyper-latent row (h_a's stride: two stride-2 convolutions).
    side_stride = 4
    #: z rows of context h_s gets each side of a band (it reaches about 2 z rows).
    HYPER_MARGIN = 3

    def __init__(self, h_a: nn.Module, h_s: nn.Module, M: int, Nz: int, slices: int, charm_hidden: int) -> None:
        """h_a: y (M channels) -> z (Nz), stride side_stride; h_s: z_hat -> 2M channels (means, scales)."""
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

    def prior_placement(self) -> tuple[torch.device, torch.dtype]:
        p = next(self.h_s.parameters())
        return p.device, p.dtype

    def z_tables(self) -> Tables:
        """The hyper-latent's rANS tables: one per channel (compressai's factorized prior)."""
        eb = self.entropy_bottleneck
        return Tables.of(eb.quantized_cdf, eb.cdf_length, eb.offset)

    def latent_tables(self) -> Tables:
        return self.charm.tables()

    def compress_side(self, y: Tensor) -> tuple[bytes, Tensor]:
        device, dtype = self.prior_placement()
        z = self.h_a(y).to(device=device, dtype=dtype)
        z_stream = self.entropy_bottleneck.compress(z)[0]
        return z_stream, self.decompress_side(z_stream, (z.shape[-2], z.shape[-1]))

    def decompress_side(self, stream: bytes, shape: tuple[int, int]) -> Tensor:
        """z decoded through the guard, with compressai's factorized-prior layout (table c for channel c)."""
        eb = self.entropy_bottleneck
        indexes = torch.arange(self.Nz, dtype=torch.int32).reshape(1, -1, 1, 1).expand(1, -1, *shape)
        symbols = GuardedDecoder(stream, indexes.numel(), self.z_tables()).decode(indexes)
        medians = eb.quantiles.detach()[:, 0, 1].reshape(1, -1, 1, 1)
        return eb.dequantize(symbols, medians, medians.dtype)

    def band_context(self, side: Tensor, rows: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """h_s means and scales for latent rows [r0, r1), from the z rows around them: the values a
        whole-latent h_s would give, without its whole-latent float64 buffers (8 bytes per image pixel)."""
        r0, r1 = rows
        s, margin = self.side_stride, self.HYPER_MARGIN
        a0, a1 = max(0, r0 // s - margin), min(side.shape[-2], -(-r1 // s) + margin)
        features = self.h_s(side[..., a0:a1, :])
        top = r0 - a0 * s
        return features[..., top : top + r1 - r0, :].chunk(2, dim=1)

    def compress_band(self, band: Tensor, context: tuple[Tensor, Tensor], encoder: BufferedRansEncoder) -> Tensor:
        return self.charm.compress(band, *context, encoder)[1]

    def decompress_band(self, decoder: GuardedDecoder, context: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return self.charm.decompress(decoder, *context)
