"""Variable rate in one model: learned per-quality gain vectors on the latent (Cui et al. 2021). Part of decoder
v1, frozen with it (tests/conformance): the inverse gains and their interpolation decide its pixels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..config import QUALITY_MAX, QUALITY_MIN


class QualityGains(nn.Module):
    """Gain and inverse-gain vectors per integer quality; fractional qualities interpolate geometrically."""

    def __init__(self, levels: int, M: int) -> None:
        super().__init__()
        init = torch.linspace(math.log(0.5), math.log(2.0), levels)[:, None].repeat(1, M)
        self.log_gain = nn.Parameter(init.clone())
        self.log_inv_gain = nn.Parameter(-init.clone())

    @staticmethod
    def _interp(table: Tensor, quality: Tensor) -> Tensor:
        q = (quality.to(table.dtype) - QUALITY_MIN).clamp(0, QUALITY_MAX - QUALITY_MIN)
        lo = q.floor().long().clamp(max=table.shape[0] - 2)
        t = (q - lo.to(q.dtype))[:, None]
        return torch.exp(table[lo] * (1 - t) + table[lo + 1] * t)[:, :, None, None]

    def gain(self, quality: Tensor) -> Tensor:
        """(B,) qualities -> (B, M, 1, 1) gains applied before quantization."""
        return self._interp(self.log_gain, quality)

    def inv_gain(self, quality: Tensor) -> Tensor:
        """(B,) qualities -> (B, M, 1, 1) gains applied to the decoded latent before g_s."""
        return self._interp(self.log_inv_gain, quality)


def lambda_for(quality: Tensor, lambdas: tuple[float, ...]) -> Tensor:
    """Log-linear interpolation of the lambda table at (possibly fractional) qualities."""
    table = torch.tensor(lambdas, dtype=torch.float64).log()
    q = (quality.double() - QUALITY_MIN).clamp(0, QUALITY_MAX - QUALITY_MIN)
    lo = q.floor().long().clamp(max=len(lambdas) - 2)
    t = q - lo.double()
    return torch.exp(table[lo] * (1 - t) + table[lo + 1] * t).float()
