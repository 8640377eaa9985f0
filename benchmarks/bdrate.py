"""Bjøntegaard deltas (VCEG-M33) with PCHIP interpolation, as in the JCT-VC/JVET CTC sheets.

BD-rate: the mean difference of log-rate between two curves, each interpolated (PCHIP, log-rate
as a function of quality) over the quality range both curves cover, as a percentage.
Negative means the test codec needs fewer bits than the anchor for the same quality.
BD-PSNR: the mean quality difference over the common log-rate range. PCHIP is monotone and
shape-preserving, which avoids the overshoot of the original cubic-polynomial fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator


class NoOverlapError(ValueError):
    """The two curves share no quality (or rate) range: a BD value would be an extrapolation."""


def _sorted_strict(x: Sequence[float], y: Sequence[float], what: str) -> tuple[np.ndarray, np.ndarray]:
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"{what}: rate and quality must be 1-d sequences of equal length")
    if xa.size < 2:
        raise ValueError(f"{what}: at least two rate-distortion points are needed, got {xa.size}")
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ya))):
        raise ValueError(f"{what}: non-finite values")
    order = np.argsort(xa, kind="stable")
    xa, ya = xa[order], ya[order]
    if np.any(np.diff(xa) <= 0):
        raise ValueError(f"{what}: repeated values on the interpolation axis; the curve is not a function")
    return xa, ya


def _mean_over(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    return float(PchipInterpolator(x, y).integrate(lo, hi) / (hi - lo))


def _common_range(a: np.ndarray, b: np.ndarray, what: str) -> tuple[float, float]:
    lo, hi = max(a[0], b[0]), min(a[-1], b[-1])
    if not hi > lo:
        raise NoOverlapError(f"the curves do not overlap in {what} ([{a[0]:.4g}, {a[-1]:.4g}] vs "
                             f"[{b[0]:.4g}, {b[-1]:.4g}])")
    return lo, hi


def bd_rate(rate_anchor: Sequence[float], dist_anchor: Sequence[float],
            rate_test: Sequence[float], dist_test: Sequence[float]) -> float:
    """Percent rate change of test vs anchor at equal quality (PSNR, or MS-SSIM in dB)."""
    for r in (rate_anchor, rate_test):
        if np.any(np.asarray(r, dtype=float) <= 0):
            raise ValueError("rates must be positive")
    da, la = _sorted_strict(dist_anchor, np.log(np.asarray(rate_anchor, dtype=float)), "anchor")
    dt, lt = _sorted_strict(dist_test, np.log(np.asarray(rate_test, dtype=float)), "test")
    lo, hi = _common_range(da, dt, "quality")
    return (math.exp(_mean_over(dt, lt, lo, hi) - _mean_over(da, la, lo, hi)) - 1.0) * 100.0


def bd_psnr(rate_anchor: Sequence[float], dist_anchor: Sequence[float],
            rate_test: Sequence[float], dist_test: Sequence[float]) -> float:
    """Mean quality gain (dB) of test over anchor at equal rate."""
    la, da = _sorted_strict(np.log(np.asarray(rate_anchor, dtype=float)), dist_anchor, "anchor")
    lt, dt = _sorted_strict(np.log(np.asarray(rate_test, dtype=float)), dist_test, "test")
    lo, hi = _common_range(la, lt, "log-rate")
    return _mean_over(lt, dt, lo, hi) - _mean_over(la, da, lo, hi)


def overlap_fraction(dist_a: Sequence[float], dist_b: Sequence[float]) -> float:
    """Intersection over union of the two quality ranges: a BD value over a small overlap says little."""
    a, b = np.asarray(dist_a, dtype=float), np.asarray(dist_b, dtype=float)
    inter = min(a.max(), b.max()) - max(a.min(), b.min())
    union = max(a.max(), b.max()) - min(a.min(), b.min())
    return max(inter, 0.0) / union if union > 0 else 0.0


def bd_rate_or_nan(rate_anchor: Sequence[float], dist_anchor: Sequence[float],
                   rate_test: Sequence[float], dist_test: Sequence[float]) -> float:
    """bd_rate, or NaN where it is undefined (no overlap, too few points) — for matrices of many codecs."""
    try:
        return bd_rate(rate_anchor, dist_anchor, rate_test, dist_test)
    except ValueError:
        return math.nan


def quality_at_rate_or_nan(rate: Sequence[float], dist: Sequence[float], target: float) -> float:
    """quality_at_rate, or NaN for a curve that is not a function of rate (e.g. an untrained model's)."""
    try:
        return quality_at_rate(rate, dist, target)
    except ValueError:
        return math.nan


def quality_at_rate(rate: Sequence[float], dist: Sequence[float], target: float) -> float:
    """Quality of a curve at one rate (PCHIP in log-rate); NaN outside the measured rate range."""
    lr, d = _sorted_strict(np.log(np.asarray(rate, dtype=float)), dist, "curve")
    x = math.log(target)
    return float(PchipInterpolator(lr, d)(x)) if lr[0] <= x <= lr[-1] else math.nan
