"""Analysis/synthesis transforms (g_a, g_s) and hyper transforms (h_a, h_s), from compressai layers.

Decoder v1 builds its g_s and h_s from `synthesis` and `hyper_synthesis`: they are frozen with it (tests/conformance).
A new decoder defines its own transforms beside these.
"""

from __future__ import annotations

from compressai.layers import (
    ResidualBlock,
    ResidualBlockUpsample,
    ResidualBlockWithStride,
    conv1x1,
    conv3x3,
    subpel_conv3x3,
)
from compressai.models.utils import conv, deconv
from torch import nn


def analysis(N: int, M: int) -> nn.Sequential:
    """g_a: three residual stages with stride-2 steps, then a strided conv: H -> H/16, M channels."""
    return nn.Sequential(
        ResidualBlockWithStride(3, N, stride=2),
        ResidualBlock(N, N),
        ResidualBlockWithStride(N, N, stride=2),
        ResidualBlock(N, N),
        ResidualBlockWithStride(N, N, stride=2),
        ResidualBlock(N, N),
        conv3x3(N, M, stride=2),
    )


def synthesis(N: int, M: int) -> nn.Sequential:
    """g_s mirrors g_a with sub-pixel upsampling."""
    entry = ResidualBlock(M, N)
    if entry.skip is None:
        # compressai drops the 1x1 skip when M == N; keep it, so that widening N across M (N=96 -> 128 with
        # M=128) stays function-preserving and every width has the same graph.
        entry.skip = conv1x1(M, N)
    return nn.Sequential(
        entry,
        ResidualBlockUpsample(N, N, 2),
        ResidualBlock(N, N),
        ResidualBlockUpsample(N, N, 2),
        ResidualBlock(N, N),
        ResidualBlockUpsample(N, N, 2),
        ResidualBlock(N, N),
        subpel_conv3x3(N, 3, 2),
    )


def hyper_analysis(M: int, N: int, Nz: int) -> nn.Sequential:
    """h_a: latent -> hyper-latent z at 1/64 resolution."""
    return nn.Sequential(
        conv3x3(M, N),
        nn.LeakyReLU(inplace=True),
        conv(N, N, kernel_size=5, stride=2),
        nn.LeakyReLU(inplace=True),
        conv(N, Nz, kernel_size=5, stride=2),
    )


def hyper_synthesis(Nz: int, N: int, M: int) -> nn.Sequential:
    """h_s: z_hat -> per-element prior features (2M channels: means then scales)."""
    return nn.Sequential(
        deconv(Nz, N, kernel_size=5, stride=2),
        nn.LeakyReLU(inplace=True),
        deconv(N, N * 3 // 2, kernel_size=5, stride=2),
        nn.LeakyReLU(inplace=True),
        conv3x3(N * 3 // 2, 2 * M),
    )
