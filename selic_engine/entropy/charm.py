"""Channel-wise autoregressive entropy model (ChARM, Minnen & Singh 2020) with latent residual prediction.

Decoder v1's, frozen (tests/conformance): its nets, the 0.5*tanh residual prediction and its banding decide
the probability tables of every v1 file.

One loop (`_run`) drives training, encoding and decoding, so the three cannot drift apart.
compress / decompress work on one band of latent rows against a shared rANS coder (see
model.selic: the latent is coded in independent bands, all in one stream).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from compressai.ans import BufferedRansEncoder
from compressai.entropy_models import GaussianConditional
from compressai.layers import conv3x3
from compressai.ops import quantize_ste
from torch import Tensor, nn

from .guard import GuardedDecoder, Tables

# step(i, mu, scale) -> quantized slice, before latent residual prediction
SliceStep = Callable[[int, Tensor, Tensor], Tensor]


def param_net(in_ch: int, hidden: int, out_ch: int) -> nn.Sequential:
    """A ChARM parameter net (Minnen & Singh 2020): three 3x3 convs at latent resolution."""
    return nn.Sequential(
        conv3x3(in_ch, hidden),
        nn.LeakyReLU(inplace=True),
        conv3x3(hidden, hidden // 2 + 16),
        nn.LeakyReLU(inplace=True),
        conv3x3(hidden // 2 + 16, out_ch),
    )


def banded(net: nn.Module, x: Tensor, rows: int, margin: int) -> Tensor:
    """net(x) computed in horizontal bands of `rows` with `margin` rows of context when not training.

    The float64 reference convolution unfolds its whole input (about 63 bytes per pixel of the
    image for the small preset, 1.5 GB at 24 MP); bands bound that. The margin covers the nets'
    receptive field, so each kept row sees the inputs the whole-latent pass would. Encoder and
    decoder band identically (the band layout depends only on the latent height), so the
    probability tables they derive agree bit for bit.
    """
    height = x.shape[-2]
    if net.training or height <= rows + 2 * margin:
        return net(x)
    parts = []
    for top in range(0, height, rows):
        lo, hi = max(0, top - margin), min(height, top + rows + margin)
        parts.append(net(x[..., lo:hi, :])[..., top - lo : top - lo + min(rows, height - top), :])
    return torch.cat(parts, dim=-2)


class ChannelARM(nn.Module):
    #: Latent rows per band when the parameter nets run outside training (see `banded`).
    NET_BAND_ROWS = 32
    #: Rows of context each side of a band: the three 3x3 convs of a parameter net see 3 rows away.
    NET_BAND_MARGIN = 3

    def __init__(self, M: int, slices: int, hidden: int) -> None:
        super().__init__()
        self.slices = slices
        S = M // slices
        self.mean_nets = nn.ModuleList(param_net(M + i * S, hidden, S) for i in range(slices))
        self.scale_nets = nn.ModuleList(param_net(M + i * S, hidden, S) for i in range(slices))
        self.lrp_nets = nn.ModuleList(param_net(M + (i + 1) * S, hidden, S) for i in range(slices))
        self.gaussian_conditional = GaussianConditional(None)

    def _net(self, net: nn.Module, x: Tensor) -> Tensor:
        return banded(net, x, self.NET_BAND_ROWS, self.NET_BAND_MARGIN)

    def _run(self, hyper_means: Tensor, hyper_scales: Tensor, step: SliceStep) -> Tensor:
        done: list[Tensor] = []
        for i in range(self.slices):
            mu = self._net(self.mean_nets[i], torch.cat([hyper_means, *done], dim=1))
            scale = self._net(self.scale_nets[i], torch.cat([hyper_scales, *done], dim=1))
            y_hat = step(i, mu, scale)
            lrp = self._net(self.lrp_nets[i], torch.cat([hyper_means, *done, y_hat], dim=1))
            done.append(y_hat + 0.5 * torch.tanh(lrp))
        return torch.cat(done, dim=1)

    def forward(self, y: Tensor, hyper_means: Tensor, hyper_scales: Tensor) -> tuple[Tensor, Tensor]:
        """Training pass: noisy likelihoods for the rate, straight-through rounding for the decoder."""
        y_slices = y.chunk(self.slices, dim=1)
        likelihoods: list[Tensor] = []

        def step(i: int, mu: Tensor, scale: Tensor) -> Tensor:
            _, lik = self.gaussian_conditional(y_slices[i], scale, mu)
            likelihoods.append(lik)
            return quantize_ste(y_slices[i] - mu) + mu

        y_hat = self._run(hyper_means, hyper_scales, step)
        return y_hat, torch.cat(likelihoods, dim=1)

    def indexes(self, scales: Tensor) -> Tensor:
        """compressai's build_indexes in one torch.bucketize (it makes one pass per table entry): the same
        int32 indexes, 2x faster idle and 12x under load (measured)."""
        gc = self.gaussian_conditional
        return torch.bucketize(gc.lower_bound_scale(scales), gc.scale_table[:-1], out_int32=True)

    def tables(self) -> Tables:
        gc = self.gaussian_conditional
        return Tables.of(gc.quantized_cdf, gc.cdf_length, gc.offset)

    def compress(self, y: Tensor, hyper_means: Tensor, hyper_scales: Tensor,
                 encoder: BufferedRansEncoder) -> tuple[Tensor, Tensor]:
        """Queue y's symbols on `encoder` (slice by slice); returns (y_hat, int32 symbols in stream order)."""
        t = self.tables()
        y_slices = y.chunk(self.slices, dim=1)
        symbols: list[Tensor] = []

        def step(i: int, mu: Tensor, scale: Tensor) -> Tensor:
            indexes = self.indexes(scale)
            q = torch.round(y_slices[i] - mu).to(torch.int32)
            encoder.encode_with_indexes(q.reshape(-1).tolist(), indexes.reshape(-1).tolist(), t.cdf, t.length_list,
                                        t.offset_list)
            symbols.append(q)
            return q.to(mu.dtype) + mu

        y_hat = self._run(hyper_means, hyper_scales, step)
        return y_hat, torch.cat(symbols, dim=1)

    def decompress(self, decoder: GuardedDecoder, hyper_means: Tensor, hyper_scales: Tensor) -> tuple[Tensor, Tensor]:
        """The inverse of compress: (y_hat, symbols) from the next symbols of a (possibly hostile) stream."""
        symbols: list[Tensor] = []

        def step(i: int, mu: Tensor, scale: Tensor) -> Tensor:
            q = decoder.decode(self.indexes(scale))
            symbols.append(q)
            return q.to(mu.dtype) + mu

        y_hat = self._run(hyper_means, hyper_scales, step)
        return y_hat, torch.cat(symbols, dim=1)
