"""The SELIC model: g_a + semantic fusion + gains -> hyperprior + ChARM -> g_s.

`forward` is the training pass. `compress` / `decompress` produce and consume the two rANS
streams (z, then y). Everything that chooses a probability table (the entropy bottleneck,
h_s and the ChARM nets) runs wherever `coding_layout` put it: CPU float64 in the engine,
so that tiny float differences between machines cannot flip a table index.

The latent is entropy-coded in the format's bands of latent rows (container.coding_bands, 1024
pixels), one after the other in the one y stream; the ChARM nets see only their own band. So the decoder never
holds whole-image float64 buffers or symbols (it keeps only y_hat, 2 bytes per pixel, for
g_s), and the band layout, like the tiling, follows from the image height alone. Images up to
1024 pixels tall are one band.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from compressai.ans import BufferedRansEncoder
from compressai.entropy_models import EntropyBottleneck
from compressai.models import CompressionModel
from torch import Tensor

from ..config import ModelConfig
from ..container import CODING_BAND_ROWS, coding_bands
from ..entropy import ChannelARM
from ..entropy.guard import GuardedDecoder, Tables
from .fusion import SemanticFusion
from .gain import QualityGains
from .tiling import ALIGN, LATENT_STRIDE, analyze_tiled, synthesize_tiled
from .transforms import analysis, hyper_analysis, hyper_synthesis, synthesis

#: Latent rows per hyper-latent row, and the z rows of context h_s gets each side of a band.
Z_STRIDE = ALIGN // LATENT_STRIDE
HYPER_MARGIN = 3


def symbol_digest() -> hashlib.blake2b:
    """The file's symbol hash: blake2b-64 over the int32 y symbols, band by band, each band in C order."""
    return hashlib.blake2b(digest_size=8)


@dataclass
class Coded:
    """What compress produces for one image: the streams and the metadata needed to decode them."""

    z_stream: bytes
    y_stream: bytes
    z_shape: tuple[int, int]
    symbol_hash: bytes  # of the y symbols (see symbol_digest): stored in the file to detect desynchronisation


def _coding_layout(t: Tensor) -> Tensor:
    """Channels-last for oneDNN on the CPU outside training (training keeps NCHW: channels-last was not
    faster there, and its backward crashed on AVX2-only CPUs with this torch build)."""
    if t.device.type != "cpu" or torch.is_grad_enabled():
        return t
    return t.contiguous(memory_format=torch.channels_last)


class SelicModel(CompressionModel):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.g_a = analysis(c.N, c.M)
        self.fusion = SemanticFusion(c.text_dim, c.M, c.fusion)
        self.gains = QualityGains(len(c.lambdas), c.M)
        self.h_a = hyper_analysis(c.M, c.N, c.Nz)
        self.h_s = hyper_synthesis(c.Nz, c.N, c.M)
        self.entropy_bottleneck = EntropyBottleneck(c.Nz)
        self.charm = ChannelARM(c.M, c.slices, c.charm_hidden)
        self.g_s = synthesis(c.N, c.M)
        # Training may run g_a / g_s under bfloat16 autocast (1.5x faster on AVX512-BF16 CPUs); the entropy
        # model always stays in float32, since likelihoods need the precision. Not saved: coding is float32.
        self.transform_autocast: torch.dtype | None = None

    # What picks a probability table: coding_layout runs these on the CPU in float64. (The encoder and decoder
    # groups, which the model id depends on, are in selic_engine.weights.)
    PRIOR_MODULES = ("h_s", "entropy_bottleneck", "charm")

    def _transform_precision(self, t: Tensor, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
        dtype = dtype or self.transform_autocast
        if dtype in (None, torch.float32):
            return contextlib.nullcontext()
        return torch.autocast(t.device.type, dtype=dtype)

    def analyze(self, x: Tensor, quality: Tensor, embedding: Tensor | None, has_caption: Tensor | None,
                dtype: torch.dtype | None = None) -> Tensor:
        """The encoder side: gained, fused, unquantized latent y (g_a in `dtype`, else transform_autocast)."""
        with self._transform_precision(x, dtype):
            y = self.g_a(_coding_layout(x))
        y = self.fusion(y.float(), embedding, has_caption)
        return y * self.gains.gain(quality.to(y.device))

    def synthesize(self, y_hat: Tensor, quality: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        y_hat = y_hat * self.gains.inv_gain(quality.to(y_hat.device))
        with self._transform_precision(y_hat, dtype):
            return self.g_s(_coding_layout(y_hat)).float()

    def forward(
        self,
        x: Tensor,
        quality: Tensor,
        embedding: Tensor | None = None,
        has_caption: Tensor | None = None,
    ) -> dict[str, object]:
        y = self.analyze(x, quality, embedding, has_caption)
        z_hat, z_likelihoods = self.entropy_bottleneck(self.h_a(y))
        means, scales = self.h_s(z_hat).chunk(2, dim=1)
        y_hat, y_likelihoods = self.charm(y, means, scales)
        return {"x_hat": self.synthesize(y_hat, quality), "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    # --- coding -------------------------------------------------------------------------------

    def coding_layout(self, device: torch.device | str) -> SelicModel:
        """Put the transforms on `device` (float32) and the probability machinery on the CPU in float64.

        On the CPU g_a and g_s take oneDNN's fastest layout, channels-last (1.3x faster than NCHW, measured).
        """
        self.to(device=device, dtype=torch.float32)
        if torch.device(device).type == "cpu":
            for name in ("g_a", "g_s"):
                getattr(self, name).to(memory_format=torch.channels_last)
        for name in self.PRIOR_MODULES:
            getattr(self, name).to(device="cpu", dtype=torch.float64)
        return self.eval()

    def _prior(self) -> tuple[torch.device, torch.dtype]:
        p = next(self.h_s.parameters())
        return p.device, p.dtype

    def _z_coding(self, z_shape: tuple[int, int]) -> tuple[Tables, Tensor, Tensor]:
        """The hyper-latent's rANS tables, per-element table indexes and medians (compressai's layout)."""
        eb = self.entropy_bottleneck
        indexes = eb._build_indexes((1, self.config.Nz, *z_shape))
        tables = Tables.of(eb._quantized_cdf, eb._cdf_length, eb._offset)
        return tables, indexes, eb._get_medians().detach().reshape(1, -1, 1, 1)

    def _z_hat(self, z_stream: bytes, z_shape: tuple[int, int]) -> Tensor:
        tables, indexes, medians = self._z_coding(z_shape)
        symbols = GuardedDecoder(z_stream, indexes.numel(), tables).decode(indexes)
        return self.entropy_bottleneck.dequantize(symbols, medians, medians.dtype)

    def _hyper_band(self, z_hat: Tensor, rows: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """h_s means and scales for latent rows [r0, r1), from the z rows around them.

        The margin covers h_s's reach (about 2 z rows), so each band gets the values a whole-latent
        h_s would give, without the whole-latent float64 buffers (8 bytes per image pixel).
        """
        r0, r1 = rows
        a0, a1 = max(0, r0 // Z_STRIDE - HYPER_MARGIN), min(z_hat.shape[-2], -(-r1 // Z_STRIDE) + HYPER_MARGIN)
        features = self.h_s(z_hat[..., a0:a1, :])
        top = r0 - a0 * Z_STRIDE
        return features[..., top : top + r1 - r0, :].chunk(2, dim=1)

    @torch.no_grad()
    def compress(
        self,
        x: Tensor,
        quality: float,
        embedding: Tensor | None = None,
        tile: int | None = None,
        dtype: torch.dtype = torch.float32,
        band_rows: int = CODING_BAND_ROWS,
    ) -> Coded:
        """x: (1, 3, H, W), float in [0, 1] or uint8; any H, W (padded here, cropped by the decoder).

        g_a runs in overlapping tiles above the tile size (see tiling); the latent is coded in the format's
        bands (band_rows: another height, for experiments; such streams are not .selic files).
        """
        q = torch.tensor([float(quality)])
        y = analyze_tiled(lambda window: self.analyze(window, q, embedding, None, dtype), x, self.config.M, tile)
        device, dtype = self._prior()
        z = self.h_a(y).to(device=device, dtype=dtype)
        z_stream = self.entropy_bottleneck.compress(z)[0]
        z_shape = tuple(z.shape[-2:])
        z_hat = self._z_hat(z_stream, z_shape)
        encoder, digest = BufferedRansEncoder(), symbol_digest()
        for rows in coding_bands(y.shape[-2], band_rows):
            band = y[..., rows[0] : rows[1], :].to(device=device, dtype=dtype)
            _, symbols = self.charm.compress(band, *self._hyper_band(z_hat, rows), encoder)
            digest.update(symbols.numpy().tobytes())
        return Coded(z_stream=z_stream, y_stream=encoder.flush(), z_shape=z_shape, symbol_hash=digest.digest())

    @torch.no_grad()
    def decompress(
        self,
        z_stream: bytes,
        y_stream: bytes,
        z_shape: tuple[int, int],
        quality: float,
        size: tuple[int, int],
        tile: int | None = None,
        check_symbols: Callable[[bytes], None] | None = None,
        dtype: torch.dtype = torch.float32,
        band_rows: int = CODING_BAND_ROWS,
    ) -> Tensor:
        """(H, W, 3) uint8 pixels for size=(H, W).

        check_symbols sees the hash of the decoded symbols before synthesis, so a damaged stream
        can be refused before the expensive part. g_s runs in overlapping tiles above the tile size.
        """
        g_param = next(self.g_s.parameters())
        y_hat, digest = self.decode_latent(z_stream, y_stream, z_shape, g_param.dtype, band_rows)
        if check_symbols is not None:
            check_symbols(digest)
        q = torch.tensor([float(quality)])
        return synthesize_tiled(lambda window: self.synthesize(window, q, dtype), y_hat.to(g_param.device), size,
                                tile)

    @torch.no_grad()
    def decode_latent(
        self, z_stream: bytes, y_stream: bytes, z_shape: tuple[int, int], dtype: torch.dtype = torch.float32,
        band_rows: int = CODING_BAND_ROWS,
    ) -> tuple[Tensor, bytes]:
        """(y_hat on the CPU in `dtype`, symbol hash): the entropy-decoding half of decompress, band by band."""
        z_hat = self._z_hat(z_stream, z_shape)
        y_hat = torch.empty(1, self.config.M, Z_STRIDE * z_shape[0], Z_STRIDE * z_shape[1], dtype=dtype)
        decoder = GuardedDecoder(y_stream, y_hat.numel(), self.charm.tables())
        digest = symbol_digest()
        for r0, r1 in coding_bands(y_hat.shape[-2], band_rows):
            band, symbols = self.charm.decompress(decoder, *self._hyper_band(z_hat, (r0, r1)))
            digest.update(symbols.numpy().tobytes())
            y_hat[..., r0:r1, :] = band
        return y_hat, digest.digest()
