"""Decoder v2's latent codec (issue 31, stage 2): ELIC's spatial and channel context (He et al. 2022) on selic's band
driver, beside v1's frozen HyperpriorChARM.

y is split into uneven channel groups (config.ElicConfig), coded one after the other; inside each group a
checkerboard: first the anchors ((row + column) even, counted from the band's first row), from the hyperprior and
the groups before (channel context), then the other half from the same and the group's decoded anchors (spatial
context). Why: v1's four equal ChARM slices see no neighbour of the element they code, and its first slice, a
quarter of the channels, sees only the hyperprior; here the first group is 16 channels, and every non-anchor sees
its four decoded neighbours.

The probability side is v1's: h_s and every context net run in float64 on the CPU (coding_layout), in column
windows and row bands (charm.windowed) so that encoder and decoder compute the same values however wide the image,
and symbols go through the same guard and symbol hash (entropy.bands). A band's nets see only that band (and the
hyperprior around it), as v1's do. Stream order inside a band: group by group, the anchors then the others, each
in C order over (channel, row, column) of the positions coded.

The parameter net of a group is ELIC's 1x1 aggregation of hyperprior, channel and spatial context, with its first
layer split per input (the same linear map): the hyperprior's and the channel context's share is computed once for
both halves of the checkerboard, and the anchors' zero spatial context costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from compressai.ans import BufferedRansEncoder
from compressai.entropy_models import GaussianConditional
from compressai.layers import conv1x1, conv3x3
from compressai.models import CompressionModel
from compressai.ops import quantize_ste
from torch import Tensor, nn

from .charm import Inputs, gaussian_tables, scale_indexes, windowed
from .columns import ALIGN
from .guard import GuardedDecoder, Tables
from .latent_codec import HyperBand, Hyperprior

# step(group, positions, mu, scale) -> the group's quantized values, right at `positions` (an (h, w) bool mask)
GroupStep = Callable[[int, Tensor, Tensor, Tensor], Tensor]


def anchors(like: Tensor) -> Tensor:
    """The checkerboard's anchor positions over like's last two dimensions: (row + column) even."""
    h, w = like.shape[-2:]
    rows, cols = torch.arange(h, device=like.device), torch.arange(w, device=like.device)
    return (rows[:, None] + cols[None, :]) % 2 == 0


def columns_of(t: Tensor) -> Inputs:
    """A net's inputs from one tensor over the whole band: its columns [b0, b1)."""
    return lambda b0, b1: [t[..., b0:b1]]


class CheckerboardGroups(nn.Module):
    """The model of y given the hyperprior's features: channel groups, each a checkerboard (anchors, then the rest).

    One loop (`_run`) drives training, encoding and decoding, so that the three cannot drift apart.
    """

    #: Latent rows per row band when the context nets run outside training (charm.banded).
    NET_BAND_ROWS = 32
    #: Rows (and columns) of context each side of a band (window): the context nets' 3x3 convolutions see 1 away.
    NET_BAND_MARGIN = 1
    #: Width of the context nets' interior column windows outside training (entropy.columns), as v1's ChARM.
    NET_WINDOW_COLUMNS = 8 * ALIGN

    def __init__(self, groups: Sequence[int], hyper_channels: int, param_hidden: int, context_hidden: int) -> None:
        super().__init__()
        self.groups = tuple(groups)
        self.hyper_proj = nn.ModuleList(conv1x1(hyper_channels, param_hidden) for _ in self.groups)
        self.channel_context = nn.ModuleList(
            nn.Sequential(conv3x3(sum(self.groups[:k]), context_hidden), nn.LeakyReLU(inplace=True),
                          conv1x1(context_hidden, param_hidden))
            for k in range(1, len(self.groups)))
        self.spatial_context = nn.ModuleList(conv3x3(g, param_hidden) for g in self.groups)
        # the first activation is not in place: its input is reused for the second half of the checkerboard
        self.param_nets = nn.ModuleList(
            nn.Sequential(nn.LeakyReLU(), conv1x1(param_hidden, param_hidden), nn.LeakyReLU(inplace=True),
                          conv1x1(param_hidden, 2 * g))
            for g in self.groups)
        self.gaussian_conditional = GaussianConditional(None)

    def _net(self, net: nn.Module, inputs: Inputs, width: int) -> Tensor:
        return windowed(net, inputs, width, self.NET_WINDOW_COLUMNS, self.NET_BAND_ROWS, self.NET_BAND_MARGIN)

    def _run(self, hyper: Inputs, width: int, step: GroupStep) -> Tensor:
        done: list[Tensor] = []
        for k in range(len(self.groups)):
            base = self._net(self.hyper_proj[k], hyper, width)
            if k:
                base = base + self._net(self.channel_context[k - 1], columns_of(torch.cat(done, dim=1)), width)
            anchor = anchors(base)
            mu, scale = self.param_nets[k](base).chunk(2, dim=1)
            first = torch.where(anchor, step(k, anchor, mu, scale), 0.0)
            spatial = self._net(self.spatial_context[k], columns_of(first), width)
            mu, scale = self.param_nets[k](base + spatial).chunk(2, dim=1)
            done.append(torch.where(anchor, first, step(k, ~anchor, mu, scale)))
        return torch.cat(done, dim=1)

    def forward(self, y: Tensor, hyper: Tensor) -> tuple[Tensor, Tensor]:
        """Training pass: noisy likelihoods for the rate, straight-through rounding for the contexts."""
        y_groups = y.split(self.groups, dim=1)
        likelihoods: list[Tensor] = []

        def step(k: int, positions: Tensor, mu: Tensor, scale: Tensor) -> Tensor:
            _, lik = self.gaussian_conditional(y_groups[k], scale, mu)
            if len(likelihoods) == k:
                likelihoods.append(lik)
            else:
                likelihoods[k] = torch.where(positions, lik, likelihoods[k])
            return quantize_ste(y_groups[k] - mu) + mu

        y_hat = self._run(columns_of(hyper), hyper.shape[-1], step)
        return y_hat, torch.cat(likelihoods, dim=1)

    def indexes(self, scales: Tensor) -> Tensor:
        return scale_indexes(self.gaussian_conditional, scales)

    def tables(self) -> Tables:
        return gaussian_tables(self.gaussian_conditional)

    def compress(self, y: Tensor, hyper: Inputs, width: int, encoder: BufferedRansEncoder) -> Tensor:
        """Queue one band's symbols on `encoder`; returns them (int32, in stream order)."""
        t = self.tables()
        y_groups = y.split(self.groups, dim=1)
        symbols: list[Tensor] = []

        def step(k: int, positions: Tensor, mu: Tensor, scale: Tensor) -> Tensor:
            q = torch.round(y_groups[k] - mu).to(torch.int32)
            coded = q[..., positions].reshape(-1)
            encoder.encode_with_indexes(coded.tolist(), self.indexes(scale[..., positions]).reshape(-1).tolist(),
                                        t.cdf, t.length_list, t.offset_list)
            symbols.append(coded)
            return q.to(mu.dtype) + mu

        self._run(hyper, width, step)
        return torch.cat(symbols)

    def decompress(self, decoder: GuardedDecoder, hyper: Inputs, width: int) -> tuple[Tensor, Tensor]:
        """The inverse of compress: (y_hat, symbols) from the next symbols of a (possibly hostile) stream."""
        symbols: list[Tensor] = []

        def step(k: int, positions: Tensor, mu: Tensor, scale: Tensor) -> Tensor:
            coded = decoder.decode(self.indexes(scale[..., positions]))
            q = torch.zeros(scale.shape, dtype=torch.int32)
            q[..., positions] = coded
            symbols.append(coded.reshape(-1))
            return q.to(mu.dtype) + mu

        y_hat = self._run(hyper, width, step)
        return y_hat, torch.cat(symbols)


class ElicCodec(Hyperprior):
    """A hyperprior (h_s gives features, not means and scales) under CheckerboardGroups: decoder v2's entropy
    model."""

    PRIOR_MODULES = ("h_s", "entropy_bottleneck", "context")

    def __init__(self, h_a: nn.Module, h_s: nn.Module, M: int, Nz: int, groups: Sequence[int], hyper_channels: int,
                 param_hidden: int, context_hidden: int) -> None:
        """h_a: y (M channels) -> z (Nz), stride side_stride; h_s: z_hat -> hyper_channels features at y's size."""
        super().__init__(h_a, h_s, M, Nz)
        self.context = CheckerboardGroups(groups, hyper_channels, param_hidden, context_hidden)

    def forward(self, y: Tensor) -> dict[str, Any]:
        """Training pass: noisy likelihoods of y and z for the rate, straight-through y_hat."""
        z_hat, z_likelihoods = self.entropy_bottleneck(self.h_a(y))
        y_hat, y_likelihoods = self.context(y, self.h_s(z_hat))
        return {"y_hat": y_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def update(self, force: bool = False) -> bool:
        """Build the rANS tables from the weights (compressai's CompressionModel.update, for a codec on its own)."""
        return CompressionModel.update(self, force=force)

    def latent_tables(self) -> Tables:
        return self.context.tables()

    def compress_band(self, band: Tensor, context: HyperBand, encoder: BufferedRansEncoder) -> Tensor:
        return self.context.compress(band, lambda b0, b1: [context.features(b0, b1)], context.width, encoder)

    def decompress_band(self, decoder: GuardedDecoder, context: HyperBand) -> tuple[Tensor, Tensor]:
        return self.context.decompress(decoder, lambda b0, b1: [context.features(b0, b1)], context.width)
