"""The SELIC model: g_a + semantic fusion + gains -> hyperprior + ChARM -> g_s.

`forward` is the training pass. `compress` / `decompress` produce and consume the two rANS
streams (z, then y). Everything that chooses a probability table (the entropy bottleneck,
h_s and the ChARM nets) runs wherever `coding_layout` put it: CPU float64 in the engine,
so that tiny float differences between machines cannot flip a table index.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.models import CompressionModel
from torch import Tensor

from ..config import ModelConfig
from ..entropy import ChannelARM
from ..entropy.guard import GuardedDecoder, Tables
from .fusion import SemanticFusion
from .gain import QualityGains
from .tiling import analyze_tiled, synthesize_tiled
from .transforms import analysis, hyper_analysis, hyper_synthesis, synthesis


@dataclass
class Coded:
    """What compress produces for one image: the streams and the metadata needed to decode them."""

    z_stream: bytes
    y_stream: bytes
    z_shape: tuple[int, int]
    symbols: Tensor  # int32 y symbols, hashed into the file to detect desynchronisation


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

    # Module groups: the decoder needs these and only these (the model id hashes them).
    DECODER_MODULES = ("h_s", "entropy_bottleneck", "charm", "g_s", "gains")
    PRIOR_MODULES = ("h_s", "entropy_bottleneck", "charm")

    def _transform_precision(self, t: Tensor) -> contextlib.AbstractContextManager:
        if self.transform_autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(t.device.type, dtype=self.transform_autocast)

    def analyze(self, x: Tensor, quality: Tensor, embedding: Tensor | None, has_caption: Tensor | None) -> Tensor:
        """The encoder side: gained, fused, unquantized latent y."""
        with self._transform_precision(x):
            y = self.g_a(x)
        y = self.fusion(y.float(), embedding, has_caption)
        return y * self.gains.gain(quality.to(y.device))

    def synthesize(self, y_hat: Tensor, quality: Tensor) -> Tensor:
        y_hat = y_hat * self.gains.inv_gain(quality.to(y_hat.device))
        with self._transform_precision(y_hat):
            return self.g_s(y_hat).float()

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
        """Put the transforms on `device` (float32) and the probability machinery on the CPU in float64."""
        self.to(device=device, dtype=torch.float32)
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

    def _hyper_params(self, z_stream: bytes, z_shape: tuple[int, int]) -> tuple[Tensor, Tensor]:
        tables, indexes, medians = self._z_coding(z_shape)
        symbols = GuardedDecoder(z_stream, indexes.numel(), tables).decode(indexes)
        z_hat = self.entropy_bottleneck.dequantize(symbols, medians, medians.dtype)
        return self.h_s(z_hat).chunk(2, dim=1)

    @torch.no_grad()
    def compress(
        self,
        x: Tensor,
        quality: float,
        embedding: Tensor | None = None,
        tile: int | None = None,
    ) -> Coded:
        """x: (1, 3, H, W), float in [0, 1] or uint8; any H, W (padded here, cropped by the decoder).

        g_a runs in overlapping tiles above the tile size (see tiling); the latent is coded whole.
        """
        q = torch.tensor([float(quality)])
        y = analyze_tiled(lambda window: self.analyze(window, q, embedding, None), x, self.config.M, tile)
        device, dtype = self._prior()
        z = self.h_a(y).to(device=device, dtype=dtype)
        z_stream = self.entropy_bottleneck.compress(z)[0]
        z_shape = tuple(z.shape[-2:])
        means, scales = self._hyper_params(z_stream, z_shape)
        y_stream, _, symbols = self.charm.compress(y.to(device=device, dtype=dtype), means, scales)
        return Coded(z_stream=z_stream, y_stream=y_stream, z_shape=z_shape, symbols=symbols)

    @torch.no_grad()
    def decompress(
        self,
        z_stream: bytes,
        y_stream: bytes,
        z_shape: tuple[int, int],
        quality: float,
        size: tuple[int, int],
        tile: int | None = None,
        check_symbols: Callable[[Tensor], None] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Returns ((H, W, 3) uint8 pixels for size=(H, W), y symbols).

        check_symbols sees the decoded symbols before synthesis, so a damaged stream can be
        refused before the expensive part. g_s runs in overlapping tiles above the tile size.
        """
        means, scales = self._hyper_params(z_stream, z_shape)
        y_hat, symbols = self.charm.decompress(y_stream, means, scales)
        del means, scales
        if check_symbols is not None:
            check_symbols(symbols)
        g_param = next(self.g_s.parameters())
        y_hat = y_hat.to(device=g_param.device, dtype=g_param.dtype)
        q = torch.tensor([float(quality)])
        return synthesize_tiled(lambda window: self.synthesize(window, q), y_hat, size, tile), symbols
