"""The rate-distortion objective, shared by the training step and validation."""

from __future__ import annotations

import torch


def bits_per_pixel(likelihoods: dict[str, torch.Tensor], pixels: int) -> torch.Tensor:
    """Per-sample estimated bits per pixel: -log2 of every likelihood tensor, over the image's pixels."""
    return sum(-torch.log2(v).flatten(1).sum(1) for v in likelihoods.values()) / pixels  # type: ignore[return-value]


def rd_loss(out: dict, x: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample bpp and MSE; loss = mean(bpp + lambda * 255^2 * mse)."""
    bpp = bits_per_pixel(out["likelihoods"], x.shape[-2] * x.shape[-1])
    mse = (out["x_hat"] - x).pow(2).flatten(1).mean(1)
    loss = (bpp + lam.to(x.device) * 255**2 * mse).mean()
    return loss, bpp.detach(), mse.detach()
