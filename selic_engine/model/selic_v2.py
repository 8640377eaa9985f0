"""Decoder v2 (issue 31), registered as architecture "selic-v2" for development: no weights of it ship yet.

v1's encoder side (g_a, semantic fusion, quality gains) on a latent as wide as its config's M, the stronger entropy
model (entropy.elic: channel groups with checkerboard context, a larger hyperprior) and the light g_s
(model.light). Everything between the latent and the bits, tiling and the coding bands is v1's code path
(SelicModel's analyze / synthesize / compress / decompress / coding_layout), so v2 differs from v1 only in the
modules it builds, its module groups, its geometry and its decoder id (the registry's general one: architecture,
decoder config and decoder tensors). The config's Nz, slices and charm_hidden are v1's entropy model's, unused here:
v2's are its `v2.entropy` (config.ElicConfig).
"""

from __future__ import annotations

import torch
from compressai.models.utils import deconv
from torch import nn

from ..config import ElicConfig, ModelConfig
from ..entropy.elic import ElicCodec
from .fusion import SemanticFusion
from .gain import QualityGains
from .geometry import Geometry
from .light import light_synthesis
from .registry import Architecture, register_architecture
from .selic import SelicModel
from .transforms import analysis, hyper_analysis


def light_hyper_synthesis(Nz: int, N: int) -> nn.Sequential:
    """h_s for decoder v2: z_hat -> N features at the latent's size, which each channel group's parameter net projects
    itself (entropy.elic). v1's h_s ends in a 3x3 convolution to 2M channels at the latent's size, its costliest
    layer in float64; here that map is the groups' own 1x1 projections."""
    return nn.Sequential(
        deconv(Nz, N, kernel_size=5, stride=2),
        nn.LeakyReLU(inplace=True),
        deconv(N, N, kernel_size=5, stride=2),
        nn.LeakyReLU(inplace=True),
    )


def elic_latent_codec(M: int, cfg: ElicConfig) -> ElicCodec:
    """Decoder v2's latent codec for an M-channel latent, freshly initialised."""
    return ElicCodec(hyper_analysis(M, cfg.hyper_hidden, cfg.Nz), light_hyper_synthesis(cfg.Nz, cfg.hyper_hidden), M,
                     cfg.Nz, cfg.channel_groups(M), cfg.hyper_hidden, cfg.param_hidden, cfg.context_hidden)


@register_architecture("selic-v2")
class SelicV2(SelicModel):
    ENCODER_MODULES = ("g_a", "fusion", "latent_codec.h_a")
    DECODER_MODULES = ("latent_codec.h_s", "latent_codec.entropy_bottleneck", "latent_codec.context", "g_s", "gains")
    # v1's strides and coding bands (the same g_a and hyper strides); g_s sees less than v1's (fewer residual
    # blocks), so v1's 128 px of tile context covers it.
    geometry = Geometry(latent_stride=16, hyper_stride=64, coding_band_rows=64, tile_margin=128)
    decoder_id = classmethod(Architecture.decoder_id.__func__)  # type: ignore[attr-defined]

    def __init__(self, config: ModelConfig) -> None:
        if config.v2 is None:
            raise ValueError("a selic-v2 config needs its v2 fields (config.DecoderV2Config)")
        Architecture.__init__(self)  # not v1's: it would build v1's modules
        c, v2 = config, config.v2
        self.config = c
        self.g_a = analysis(c.N, c.M)
        self.fusion = SemanticFusion(c.text_dim, c.M, c.fusion)
        self.gains = QualityGains(len(c.lambdas), c.M)
        self.latent_codec = elic_latent_codec(c.M, v2.entropy)
        self.g_s = light_synthesis(c.M, v2.synthesis_widths)
        self.transform_autocast: torch.dtype | None = None
