"""Decoder v1's entropy model behind one seam, in the shape of compressai's `latent_codecs`. Frozen: files of
decoder v1 decode through this class for ever (tests/conformance), so nothing here that reaches a symbol or a
probability may change; a better entropy model is a new class beside it.

`HyperpriorChARM` takes the latent y and owns everything between it and the bits: the hyper
analysis h_a, the factorized prior of z (compressai's EntropyBottleneck), the hyper synthesis h_s
and the ChARM over y. `forward` gives the training likelihoods; the band driver (entropy.bands) gives
`compress` (the two rANS streams) and `decompress` (the latent back) from its band hooks.

The ChARM nets see only their own band, so the decoder never holds whole-image float64 buffers or
symbols; h_s and the ChARM nets run in column windows that give exactly the whole band's values
(entropy.columns), so their float64 working buffers are a window's, however wide the band. Everything
that chooses a probability table runs wherever `coding_layout` put it (the CPU in float64 in the
engine), so that tiny float differences between machines cannot flip a table index.
"""

from __future__ import annotations

from typing import Any

import torch
from compressai.ans import BufferedRansEncoder
from compressai.entropy_models import EntropyBottleneck
from torch import Tensor, nn

from .bands import BandedLatentCodec
from .charm import ChannelARM
from .columns import ALIGN, column_windows
from .guard import GuardedDecoder, Tables


class HyperBand:
    """h_s's means and scales over one coding band, computed in column windows of z as the ChARM first asks for
    them (so a decoder that refuses the stream early has computed only the windows it read symbols under).

    The z rows are the band's rows with HYPER_MARGIN rows of context (as v1 always computed them); each window
    of z columns keeps what it sees whole: `margin` z columns each side (entropy.columns, for exactness).
    """

    def __init__(self, h_s: nn.Module, side: Tensor, rows: tuple[int, int], stride: int, margin: int,
                 window: int) -> None:
        r0, r1 = rows
        a0, a1 = max(0, r0 // stride - margin), min(side.shape[-2], -(-r1 // stride) + margin)
        self._h_s, self._z, self._stride = h_s, side[..., a0:a1, :], stride
        self._rows = slice(r0 - a0 * stride, r1 - a0 * stride)
        self._windows = iter(column_windows(side.shape[-1], window, margin))
        self._features: Tensor | None = None
        self._done = 0  # columns computed so far (latent columns)
        self.width = stride * side.shape[-1]

    def window(self, b0: int, b1: int) -> tuple[Tensor, Tensor]:
        means, scales = self.features(b0, b1).chunk(2, dim=1)
        return means, scales

    def features(self, b0: int, b1: int) -> Tensor:
        """h_s's output over the band's latent columns [b0, b1), computing the windows it needs first."""
        s = self._stride
        while self._done < b1:
            c0, c1, a0, a1 = next(self._windows)
            part = self._h_s(self._z[..., a0:a1])[..., self._rows, s * (c0 - a0) : s * (c1 - a0)]
            if self._features is None:  # filled window by window: its pages are touched as the ChARM reads on
                self._features = part.new_empty(*part.shape[:-1], self.width)
            self._features[..., s * c0 : s * c1] = part
            self._done = s * c1
        assert self._features is not None
        return self._features[..., b0:b1]


class Hyperprior(BandedLatentCodec):
    """The side half of a hyperprior latent codec (Ballé et al. 2018): z = h_a(y) under a factorized prior, z_hat
    decoded through the guard, and h_s(z_hat) band by band (HyperBand) as the bands' context. Subclasses give the
    model of y given that context; PRIOR_MODULES names what coding_layout moves to the CPU in float64."""

    PRIOR_MODULES: tuple[str, ...]
    #: Latent rows per hyper-latent row (h_a's stride: two stride-2 convolutions).
    side_stride = 4
    #: z rows (and columns) of context h_s gets each side of a band (window): it reaches about 2.
    HYPER_MARGIN = 3
    #: Width in z columns of h_s's interior column windows (entropy.columns): 384 latent columns (6144 px, as the
    #: ChARM's), of which 360 are kept; bounds its float64 buffers (14 KB per latent element) to 384 columns by at
    #: most 88 rows (a band and its margins).
    HYPER_WINDOW_COLUMNS = 2 * ALIGN

    def __init__(self, h_a: nn.Module, h_s: nn.Module, M: int, Nz: int) -> None:
        """h_a: y (M channels) -> z (Nz), stride side_stride; h_s: z_hat -> the bands' context features."""
        super().__init__()
        self.M, self.Nz = M, Nz
        self.h_a = h_a
        self.h_s = h_s
        self.entropy_bottleneck = EntropyBottleneck(Nz)

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

    def band_context(self, side: Tensor, rows: tuple[int, int]) -> HyperBand:
        """h_s's features for latent rows [r0, r1), from the z rows around them, as the band's model asks for them
        window by window: the values a whole-latent h_s would give, without its whole-latent float64 buffers."""
        return HyperBand(self.h_s, side, rows, self.side_stride, self.HYPER_MARGIN, self.HYPER_WINDOW_COLUMNS)


class HyperpriorChARM(Hyperprior):
    """Decoder v1's: h_s(z_hat) gives the means and scales that are the ChARM's context over y (Minnen & Singh
    2020)."""

    #: The probability side: what coding_layout moves to the CPU in float64 (h_a only feeds z; it stays with
    #: the transforms).
    PRIOR_MODULES = ("h_s", "entropy_bottleneck", "charm")

    def __init__(self, h_a: nn.Module, h_s: nn.Module, M: int, Nz: int, slices: int, charm_hidden: int) -> None:
        """h_a: y (M channels) -> z (Nz), stride side_stride; h_s: z_hat -> 2M channels (means, scales)."""
        super().__init__(h_a, h_s, M, Nz)
        self.charm = ChannelARM(M, slices, charm_hidden)

    def forward(self, y: Tensor) -> dict[str, Any]:
        """Training pass: noisy likelihoods of y and z for the rate, straight-through y_hat for the decoder."""
        z_hat, z_likelihoods = self.entropy_bottleneck(self.h_a(y))
        means, scales = self.h_s(z_hat).chunk(2, dim=1)
        y_hat, y_likelihoods = self.charm(y, means, scales)
        return {"y_hat": y_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def latent_tables(self) -> Tables:
        return self.charm.tables()

    def compress_band(self, band: Tensor, context: HyperBand, encoder: BufferedRansEncoder) -> Tensor:
        return self.charm.compress(band, context, encoder)[1]

    def decompress_band(self, decoder: GuardedDecoder, context: HyperBand) -> tuple[Tensor, Tensor]:
        return self.charm.decompress(decoder, context)
