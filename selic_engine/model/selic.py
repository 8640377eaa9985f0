"""The SELIC model: g_a + semantic fusion + gains -> entropy model -> g_s, in the shape of compressai's
`models/google.py`. Registered as architecture "selic-v1": decoder v1, frozen. Its decoder side (h_s, the
entropy bottleneck, the ChARM, g_s, the gains), its state-dict key names, its geometry and its decoder id
function decide every v1 file, so they never change (tests/conformance decodes v1 files on every commit);
a new decoder is a new registered class.

`forward` is the training pass; `compress` / `decompress` produce and consume the two rANS streams.
Everything between the latent and the bits (hyperprior, ChARM, rANS, the file's coding bands) is the
entropy model behind one seam, `self.latent_codec` (entropy.latent_codec): forward / compress /
decompress over the latent. The pixel-domain transforms run in tiles above 1024 px (tiling).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor

from ..config import ModelConfig
from ..entropy.bands import Coded
from ..entropy.latent_codec import HyperpriorChARM
from .fusion import SemanticFusion
from .gain import QualityGains
from .geometry import Geometry
from .registry import Architecture, digest_tensors, register_architecture
from .tiling import analyze_tiled, synthesize_tiled
from .transforms import analysis, hyper_analysis, hyper_synthesis, synthesis


def _coding_layout(t: Tensor) -> Tensor:
    """Channels-last for oneDNN on the CPU outside training (training keeps NCHW: channels-last was not
    faster there, and its backward crashed on AVX2-only CPUs with this torch build)."""
    if t.device.type != "cpu" or torch.is_grad_enabled():
        return t
    return t.contiguous(memory_format=torch.channels_last)


@register_architecture("selic-v1")
class SelicModel(Architecture):
    ENCODER_MODULES = ("g_a", "fusion", "h_a")  # h_a feeds z, whose entropy tables belong to the decoder
    DECODER_MODULES = ("h_s", "entropy_bottleneck", "charm", "g_s", "gains")
    # Latent at 1/16 (g_a), hyper-latent at 1/64 (h_a: two more stride-2 convolutions), coding bands of 64 latent
    # rows (1024 px), 128 px of tile context (g_a + fusion see 89 px, g_s 7 latents = 112 px, measured).
    geometry = Geometry(latent_stride=16, hyper_stride=64, coding_band_rows=64, tile_margin=128)

    @classmethod
    def decoder_id(cls, state: dict[str, torch.Tensor], config: ModelConfig) -> str:
        """v1's id, frozen as every v1 file records it: the decoder tensors only (not the config)."""
        return digest_tensors(state, cls, "decoder")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.g_a = analysis(c.N, c.M)
        self.fusion = SemanticFusion(c.text_dim, c.M, c.fusion)
        self.gains = QualityGains(len(c.lambdas), c.M)
        codec = HyperpriorChARM(hyper_analysis(c.M, c.N, c.Nz), hyper_synthesis(c.Nz, c.N, c.M), c.M, c.Nz,
                                c.slices, c.charm_hidden)
        # v1's frozen key layout: the codec's modules are registered here, at the top level and in this order,
        # under the names that v1 weights files, decoder ids and checkpoints (optimiser state follows parameter
        # order) use; the codec object itself is held unregistered, so that nothing is stored twice. (A new
        # architecture registers its latent codec as a child like any other module.)
        for name, module in codec.named_children():
            self.add_module(name, module)
        object.__setattr__(self, "latent_codec", codec)
        self.g_s = synthesis(c.N, c.M)
        # Training may run g_a / g_s under bfloat16 autocast (1.5x faster on AVX512-BF16 CPUs); the entropy
        # model always stays in float32, since likelihoods need the precision. Not saved: coding is float32.
        self.transform_autocast: torch.dtype | None = None

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
        """The training pass: x_hat from the rounded latent, the likelihoods for the rate, and y, the unquantized
        latent (validation measures the transforms' ceiling on it)."""
        y = self.analyze(x, quality, embedding, has_caption)
        out = self.latent_codec(y)
        return {"x_hat": self.synthesize(out["y_hat"], quality), "likelihoods": out["likelihoods"], "y": y}

    # --- coding -------------------------------------------------------------------------------

    def coding_layout(self, device: torch.device | str) -> SelicModel:
        """Put the transforms on `device` (float32) and the probability machinery on the CPU in float64.

        On the CPU g_a and g_s take oneDNN's fastest layout, channels-last (1.3x faster than NCHW, measured).
        """
        self.to(device=device, dtype=torch.float32)
        if torch.device(device).type == "cpu":
            for name in ("g_a", "g_s"):
                getattr(self, name).to(memory_format=torch.channels_last)
        self.latent_codec.coding_layout()
        return self.eval()

    @torch.no_grad()
    def compress(
        self,
        x: Tensor,
        quality: float,
        embedding: Tensor | None = None,
        tile: int | None = None,
        dtype: torch.dtype = torch.float32,
        band_rows: int | None = None,
    ) -> Coded:
        """x: (1, 3, H, W), float in [0, 1] or uint8; any H, W (padded here, cropped by the decoder).

        g_a runs in overlapping tiles above the tile size (see tiling); the latent is coded in the geometry's
        bands (band_rows: another height, for experiments; such streams are not .selic files).
        """
        q = torch.tensor([float(quality)])
        y = analyze_tiled(lambda window: self.analyze(window, q, embedding, None, dtype), x, self.config.M,
                          self.geometry, tile)
        return self.latent_codec.compress(y, band_rows or self.geometry.coding_band_rows)

    @torch.no_grad()
    def decompress(
        self,
        z_stream: bytes,
        y_stream: bytes,
        quality: float,
        size: tuple[int, int],
        tile: int | None = None,
        check_symbols: Callable[[bytes], None] | None = None,
        dtype: torch.dtype = torch.float32,
        band_rows: int | None = None,
    ) -> Tensor:
        """(H, W, 3) uint8 pixels for size=(H, W).

        check_symbols sees the hash of the decoded symbols before synthesis, so a damaged stream
        can be refused before the expensive part. g_s runs in overlapping tiles above the tile size.
        """
        g_param = next(self.g_s.parameters())
        y_hat, digest = self.latent_codec.decompress(z_stream, y_stream, self.geometry.z_shape(size),
                                                     band_rows or self.geometry.coding_band_rows, g_param.dtype)
        if check_symbols is not None:
            check_symbols(digest)
        q = torch.tensor([float(quality)])
        return synthesize_tiled(lambda window: self.synthesize(window, q, dtype), y_hat.to(g_param.device), size,
                                self.geometry, tile)
