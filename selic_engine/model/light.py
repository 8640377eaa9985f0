"""A lighter synthesis transform for decoder v2 (issue 31): g_s at under a quarter of decoder v1's
multiply-accumulates, built from the same compressai layers. v1's transforms (transforms.py) stay as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from compressai.layers import ResidualBlock, ResidualBlockUpsample, subpel_conv3x3
from torch import nn

from ..config import LIGHT_SYNTHESIS_WIDTHS


def light_synthesis(M: int, widths: Sequence[int] = LIGHT_SYNTHESIS_WIDTHS) -> nn.Sequential:
    """g_s from the M-channel latent (1/16) to RGB: a residual block at 1/16, then per scale a residual upsampling
    block (sub-pixel convolutions) and a residual block, none at 1/2, and a sub-pixel convolution to full size.

    Why this shape: a 3x3 convolution costs width² per pixel, and each scale has 4x the pixels of the one before,
    so halving the width as the resolution doubles spends about the same on every scale. v1 keeps 128 channels up
    to 1/2 resolution and spends three quarters of its 247 kMAC/pixel there; these default widths cost 44.5
    kMAC/pixel (18% of v1), with the widest layers (192 channels, wider than v1's 128) on the latent side, where a
    channel is cheapest, and no residual block at 1/2 resolution, where it would cost most per channel. The
    capacity v2 gives up here moves to the encoder, which v2 may make as heavy as it needs.
    """
    if len(widths) != 4:
        raise ValueError(f"widths are the channels at 1/16, 1/8, 1/4 and 1/2 of the image: four, not {len(widths)}")
    layers: list[nn.Module] = [ResidualBlock(M, widths[0])]
    for i in (1, 2, 3):
        layers.append(ResidualBlockUpsample(widths[i - 1], widths[i], 2))
        if i < 3:
            layers.append(ResidualBlock(widths[i], widths[i]))
    layers.append(subpel_conv3x3(widths[-1], 3, 2))
    return nn.Sequential(*layers)


def start_near_grey(g_s: nn.Sequential, scale: float = 0.1, grey: float = 0.5) -> None:
    """Scale down the output convolution's weights and set its bias to mid-grey: the untrained student's first
    images are flat grey rather than a random field of a few units, so the first steps fit image content instead
    of cancelling noise (a small last layer, as in residual nets' zero-initialised branches)."""
    out = g_s[-1][0]  # subpel_conv3x3: (conv, pixel shuffle)
    with torch.no_grad():
        out.weight.mul_(scale)
        out.bias.fill_(grey)
