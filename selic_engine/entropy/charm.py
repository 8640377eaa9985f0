"""Channel-wise autoregressive entropy model (ChARM, Minnen & Singh 2020) with latent residual prediction.

Decoder v1's, frozen (tests/conformance): its nets, the 0.5*tanh residual prediction and its banding decide
the probability tables of every v1 file.

One loop (`_run`) drives training, encoding and decoding, so the three cannot drift apart.
compress / decompress work on one band of latent rows against a shared rANS coder (see
model.selic: the latent is coded in independent bands, all in one stream). Outside training the
parameter nets run in column windows (entropy.columns) and row bands (`banded`), which give bit for bit
the whole band's values, so that their float64 buffers are a window's whatever the band's width; and each
slice's scale net runs first, so that the decoder reads the slice's symbols as their scales arrive (`Ready`):
a stream that runs out in a slice's first row is refused within a window of it, later in the slice before the
slice's means are computed, never after its band's whole prior.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import torch
from compressai.ans import BufferedRansEncoder
from compressai.entropy_models import GaussianConditional
from compressai.layers import conv3x3
from compressai.ops import quantize_ste
from torch import Tensor, nn

from .columns import ALIGN, column_windows
from .guard import GuardedDecoder, Tables

# step(i, mu, scale) -> quantized slice, before latent residual prediction
SliceStep = Callable[[int, Tensor, Tensor], Tensor]
# ready(i, scale, count): the first `count` symbols of slice i in stream order (C order over the slice) have their
# final scales in `scale`, whose other elements may not be computed yet (count is scale.numel() once all are)
Ready = Callable[[int, Tensor, int], None]
# inputs(b0, b1) -> the tensors a parameter net concatenates, over the band's columns [b0, b1)
Inputs = Callable[[int, int], list[Tensor]]


class HyperContext(Protocol):
    """The ChARM's context over one band: the hyper means and scales, by column window."""

    @property
    def width(self) -> int: ...

    def window(self, b0: int, b1: int) -> tuple[Tensor, Tensor]:
        """(means, scales) over the band's columns [b0, b1)."""
        ...


@dataclass
class WholeContext:
    """A HyperContext over means and scales already computed for the whole band (training, tests)."""

    means: Tensor
    scales: Tensor

    @property
    def width(self) -> int:
        return self.means.shape[-1]

    def window(self, b0: int, b1: int) -> tuple[Tensor, Tensor]:
        return self.means[..., b0:b1], self.scales[..., b0:b1]


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
    image for the small preset, 1.5 GB at 24 MP); bands bound its height (and ChannelARM's column
    windows its width). The margin covers the nets'
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


def windowed(net: nn.Module, inputs: Inputs, width: int, window: int, rows: int, margin: int,
             ready: Callable[[Tensor, int], None] | None = None) -> Tensor:
    """net over a band's concatenated inputs: whole in training, else window by window (see entropy.columns)
    and in row bands (`banded`), so that its float64 buffers are a window's however wide the band; `ready(out,
    count)` after each window, once out's first `count` elements in C order hold their values (the first row of
    its first channel, up to the window; all, after the last)."""
    if net.training:
        return net(torch.cat(inputs(0, width), dim=1))
    out: Tensor | None = None
    for c0, c1, b0, b1 in column_windows(width, window, margin):
        part = banded(net, torch.cat(inputs(b0, b1), dim=1), rows, margin)
        if out is None:  # its pages are touched window by window, as a decoder reads on
            out = part.new_empty(*part.shape[:-1], width)
        out[..., c0:c1] = part[..., c0 - b0 : c1 - b0]
        if ready is not None:
            ready(out, c1 if c1 < width else out.numel())
    assert out is not None
    return out


def scale_indexes(gc: GaussianConditional, scales: Tensor) -> Tensor:
    """compressai's build_indexes in one torch.bucketize (it makes one pass per table entry): the same
    int32 indexes, 2x faster idle and 12x under load (measured)."""
    return torch.bucketize(gc.lower_bound_scale(scales), gc.scale_table[:-1], out_int32=True)


def gaussian_tables(gc: GaussianConditional) -> Tables:
    """The rANS tables of a Gaussian conditional (one per scale of its table)."""
    return Tables.of(gc.quantized_cdf, gc.cdf_length, gc.offset)


class ChannelARM(nn.Module):
    #: Latent rows per band when the parameter nets run outside training (see `banded`).
    NET_BAND_ROWS = 32
    #: Rows (and columns) of context each side of a band (window): the three 3x3 convs of a parameter net see 3 away.
    NET_BAND_MARGIN = 3
    #: Width of the parameter nets' interior column windows outside training (entropy.columns): 384 latent columns
    #: (6144 px; bands up to that are computed whole, as ever), which bounds their float64 buffers (16 KB per latent
    #: element) to 384 columns by 38 rows (230 MB) for 1.6% of extra columns.
    NET_WINDOW_COLUMNS = 8 * ALIGN

    def __init__(self, M: int, slices: int, hidden: int) -> None:
        super().__init__()
        self.slices = slices
        S = M // slices
        self.mean_nets = nn.ModuleList(param_net(M + i * S, hidden, S) for i in range(slices))
        self.scale_nets = nn.ModuleList(param_net(M + i * S, hidden, S) for i in range(slices))
        self.lrp_nets = nn.ModuleList(param_net(M + (i + 1) * S, hidden, S) for i in range(slices))
        self.gaussian_conditional = GaussianConditional(None)

    def _net(self, net: nn.Module, inputs: Inputs, width: int,
             ready: Callable[[Tensor, int], None] | None = None) -> Tensor:
        return windowed(net, inputs, width, self.NET_WINDOW_COLUMNS, self.NET_BAND_ROWS, self.NET_BAND_MARGIN, ready)

    def _run(self, hyper: HyperContext, step: SliceStep, ready: Ready | None = None) -> Tensor:
        done: list[Tensor] = []

        def inputs(features: int, *more: Tensor) -> Inputs:
            """A net's inputs: the hyper means (0) or scales (1), the slices done so far, then `more`."""
            return lambda b0, b1: [hyper.window(b0, b1)[features], *(t[..., b0:b1] for t in (*done, *more))]

        for i in range(self.slices):
            # Scales first: as their windows arrive, a decoder reads the slice's symbols (the first row of its first
            # channel, window by window, then the rest), before the means, which only y_hat needs, are computed.
            scale = self._net(self.scale_nets[i], inputs(1), hyper.width, partial(ready, i) if ready else None)
            mu = self._net(self.mean_nets[i], inputs(0), hyper.width)
            y_hat = step(i, mu, scale)
            lrp = self._net(self.lrp_nets[i], inputs(0, y_hat), hyper.width)
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

        y_hat = self._run(WholeContext(hyper_means, hyper_scales), step)
        return y_hat, torch.cat(likelihoods, dim=1)

    def indexes(self, scales: Tensor) -> Tensor:
        return scale_indexes(self.gaussian_conditional, scales)

    def tables(self) -> Tables:
        return gaussian_tables(self.gaussian_conditional)

    def compress(self, y: Tensor, hyper: HyperContext, encoder: BufferedRansEncoder) -> tuple[Tensor, Tensor]:
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

        y_hat = self._run(hyper, step)
        return y_hat, torch.cat(symbols, dim=1)

    def decompress(self, decoder: GuardedDecoder, hyper: HyperContext) -> tuple[Tensor, Tensor]:
        """The inverse of compress: (y_hat, symbols) from the next symbols of a (possibly hostile) stream, read
        as soon as their scales are known, so that the guard checks them before the next window is computed."""
        symbols: list[Tensor] = []
        read = 0  # symbols of the current slice read so far

        def ready(i: int, scale: Tensor, count: int) -> None:
            nonlocal read
            if len(symbols) == i:  # the slice's first window: its symbols, filled as they are read
                symbols.append(torch.empty(scale.shape, dtype=torch.int32))
                read = 0
            flat = symbols[i].view(-1)
            flat[read:count] = decoder.decode(self.indexes(scale.reshape(-1)[read:count]))
            read = count

        def step(i: int, mu: Tensor, scale: Tensor) -> Tensor:  # its symbols are all read (by `ready`)
            return symbols[i].to(mu.dtype) + mu

        y_hat = self._run(hyper, step, ready)
        return y_hat, torch.cat(symbols, dim=1)
