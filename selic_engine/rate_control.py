"""Size targets: find the largest quality whose file fits a byte or bits-per-pixel budget.

File size grows with quality, so a bisection over the fractional quality (stored in thousandths)
converges in a few encodes; ~8 steps resolve the 1..8 range to about 0.03.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import imaging
from .config import QUALITY_MAX, QUALITY_MIN
from .container import quantize_quality
from .engine import DEFAULT_MODEL, check_quality, encode, get_engine

BISECTION_STEPS = 8


def byte_budget(size: tuple[int, int], max_bytes: int | None = None, bpp: float | None = None) -> int:
    """The tighter of `max_bytes` and `bpp` (bits per pixel of a width x height image), in bytes."""
    limits = []
    if max_bytes is not None:
        limits.append(int(max_bytes))
    if bpp is not None:
        bits = float(bpp) * size[0] * size[1]
        if not bits >= 0:  # also rejects NaN
            raise ValueError(f"bpp must be positive, got {bpp!r}")
        limits.append(int(bits // 8))
    if not limits:
        raise ValueError("give a size target: max_bytes=... or bpp=...")
    budget = min(limits)
    if budget <= 0:
        raise ValueError(f"the size target must be positive, got max_bytes={max_bytes!r}, bpp={bpp!r}")
    return budget


def _caption_once(image: Image.Image, caption: str | bool | None, model: Any, device: Any) -> str | bool | None:
    """Resolve caption=None once: a captioner run per bisection step would dominate the cost."""
    if caption is not None or get_engine(model, device).config.fusion == "none":
        return caption
    from . import semantic

    return semantic.resolve_caption(image, None) or False


def encode_to_size(
    image: Image.Image | np.ndarray,
    max_bytes: int | None = None,
    bpp: float | None = None,
    *,
    max_quality: float = QUALITY_MAX,
    steps: int = BISECTION_STEPS,
    caption: str | bool | None = None,
    model: str | os.PathLike = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    **encode_kwargs: Any,
) -> bytes:
    """Encode at the largest quality <= max_quality whose file fits the target.

    Raises ValueError when even quality 1 does not fit. Other keywords go to `selic_engine.encode`.
    """
    image = imaging.normalize_mode(imaging.as_pil(image))
    budget = byte_budget(image.size, max_bytes, bpp)
    hi = check_quality(max_quality)
    caption = _caption_once(image, caption, model, device)

    def at(quality: float) -> bytes:
        return encode(image, quality, caption, model=model, device=device, **encode_kwargs)

    best = at(hi)
    if len(best) <= budget:
        return best
    lo = QUALITY_MIN
    if hi > lo:
        best = at(lo)
    if len(best) > budget:
        raise ValueError(
            f"the target of {budget} bytes is too small: even quality {QUALITY_MIN:g} needs {len(best)} bytes"
        )
    for _ in range(steps):
        quality = quantize_quality((lo + hi) / 2)
        if not lo < quality < hi:
            break
        data = at(quality)
        if len(data) <= budget:
            lo, best = quality, data
        else:
            hi = quality
    return best
