"""Validation on the held-out photos: estimated bpp and PSNR per quality, of the weights and of their average."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from ..model import Architecture
from .data import load_rgb
from .loss import rd_loss

VAL_QUALITIES = (1.0, 4.0, 8.0)
VAL_CROP = 256  # pixels: the centre square of each held-out photo


def validation_images(root: Path, paths: list[str]) -> list[torch.Tensor]:
    """The centre crops validation measures, as (1, 3, H, W) floats in [0, 1]."""
    out = []
    for p in paths:
        img = load_rgb(root / p)
        w, h = img.size
        s = VAL_CROP
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        out.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()[None].float() / 255)
    return out


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> float:
    """PSNR in dB of x_hat against x, clamped to [0, 1] as decoded pixels are."""
    return -10 * math.log10(max((x_hat.clamp(0, 1) - x).pow(2).mean().item(), 1e-10))


@torch.no_grad()
def validate(model: Architecture, images: list[torch.Tensor]) -> dict[str, dict[str, float]]:
    """Estimated bpp (rounded latents, model likelihoods) and PSNR on held-out images, per quality, and the
    transforms' ceiling: the PSNR of g_s on the unquantized latent (issue 31 steers by how fast it rises)."""
    model.eval()
    autocast, model.transform_autocast = model.transform_autocast, None  # measure what the codec will do
    result = {}
    for q in VAL_QUALITIES:
        quality = torch.full((1,), q)
        bpps, psnrs, ceilings = [], [], []
        for x in images:
            out = model(x, quality)
            _, bpp, mse = rd_loss(out, x, torch.zeros(1))
            bpps.append(bpp.item())
            psnrs.append(psnr(out["x_hat"], x))
            ceilings.append(psnr(model.synthesize(out["y"], quality), x))
        result[f"q{q:g}"] = {"bpp": sum(bpps) / len(bpps), "psnr": sum(psnrs) / len(psnrs),
                             "ceiling_psnr": sum(ceilings) / len(ceilings)}
    model.transform_autocast = autocast
    model.train()
    return result


def validate_run(model: Architecture, average: AveragedModel | None,
                 images: list[torch.Tensor]) -> dict[str, dict[str, dict[str, float]]]:
    """{"val": the weights' results, "val_ema": their average's (when kept)}: what the log records."""
    results = {"val": validate(model, images)}
    if average is not None:
        results["val_ema"] = validate(average.module, images)
    return results
