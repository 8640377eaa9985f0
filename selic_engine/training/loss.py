"""The rate-distortion objective, shared by the training step and validation."""

from __future__ import annotations

import torch


def rd_loss(out: dict, x: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample bpp and MSE; loss = mean(bpp + lambda * 255^2 * mse)."""
    pixels = x.shape[-2] * x.shape[-1]
    bpp = sum(-torch.log2(v).flatten(1).sum(1) for v in out["likelihoods"].values()) / pixels
    mse = (out["x_hat"] - x).pow(2).flatten(1).mean(1)
    loss = (bpp + lam.to(x.device) * 255**2 * mse).mean()
    return loss, bpp.detach(), mse.detach()
