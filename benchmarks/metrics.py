"""Distortion metrics on 8-bit RGB, computed the way the learned-compression papers report them."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def psnr_rgb(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR over all three channels of one image (peak 255); inf for identical images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ms_ssim_rgb(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM (pytorch_msssim, data_range=255) on the RGB channels, 5 scales as in the papers."""
    import torch
    from pytorch_msssim import ms_ssim

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(x, copy=True)).permute(2, 0, 1)[None].float()

    with torch.no_grad():
        return float(ms_ssim(tensor(a), tensor(b), data_range=255, size_average=True))


def ms_ssim_db(value: float) -> float:
    """-10 log10(1 - MS-SSIM): spreads the values near 1 where codecs differ."""
    return math.inf if value >= 1 else -10 * math.log10(1 - value)
