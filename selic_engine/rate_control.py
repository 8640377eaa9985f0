"""Size targets: find the largest quality whose file fits a byte or bits-per-pixel budget.

File size grows with quality, so a bisection over the fractional quality (stored in thousandths)
converges in a few encodes; ~8 steps resolve the 1..8 range to about 0.03. Reached through
`saving.encode` (max_bytes= / bpp=), which has checked the options.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from .config import QUALITY_MIN
from .container import quantize_quality
from .engine import Engine

BISECTION_STEPS = 8


def byte_budget(size: tuple[int, int], max_bytes: int | None = None, bpp: float | None = None) -> int:
    """The tighter of `max_bytes` and `bpp` (bits per pixel of a width x height image), in bytes."""
    limits = [int(max_bytes)] if max_bytes is not None else []
    if bpp is not None:
        limits.append(int(float(bpp) * size[0] * size[1] // 8))  # int(NaN) raises ValueError too
    if not limits:
        raise ValueError("give a size target: max_bytes=... or bpp=...")
    budget = min(limits)
    if budget <= 0:
        raise ValueError(f"the size target must be at least one byte, got max_bytes={max_bytes!r}, bpp={bpp!r}")
    return budget


def encode_to_size(
    engine: Engine,
    image: Image.Image,
    max_bytes: int | None,
    bpp: float | None,
    max_quality: float,
    caption: str | bool | None,
    steps: int = BISECTION_STEPS,
    **encode_kwargs: Any,
) -> bytes:
    """Encode at the largest quality <= max_quality whose file fits the target.

    Raises ValueError when even quality 1 does not fit. Other keywords go to `Engine.encode`.
    """
    budget = byte_budget(image.size, max_bytes, bpp)
    if caption is None and engine.config.fusion != "none":  # once: a captioner run per step would dominate
        from . import semantic

        caption = semantic.resolve_caption(image, None) or False

    def at(quality: float) -> bytes:
        return engine.encode(image, quality, caption, **encode_kwargs)

    hi = max_quality
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
