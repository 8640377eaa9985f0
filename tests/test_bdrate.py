"""Bjøntegaard delta: identities, exact scaling, a closed-form case, and undefined cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.bdrate import NoOverlapError, bd_psnr, bd_rate, bd_rate_or_nan, overlap_fraction, quality_at_rate

RATE = [0.12, 0.25, 0.48, 0.86, 1.41]
PSNR = [27.1, 29.6, 32.3, 35.0, 37.6]


def test_curve_against_itself_is_zero() -> None:
    assert bd_rate(RATE, PSNR, RATE, PSNR) == pytest.approx(0.0, abs=1e-12)
    assert bd_psnr(RATE, PSNR, RATE, PSNR) == pytest.approx(0.0, abs=1e-12)


def test_rates_scaled_by_point_nine_give_minus_ten_percent() -> None:
    assert bd_rate(RATE, PSNR, [0.9 * r for r in RATE], PSNR) == pytest.approx(-10.0, abs=1e-6)
    assert bd_rate([0.9 * r for r in RATE], PSNR, RATE, PSNR) == pytest.approx(100 / 0.9 - 100, abs=1e-6)


def test_order_of_points_does_not_matter() -> None:
    assert bd_rate(RATE[::-1], PSNR[::-1], [0.8 * r for r in RATE], PSNR) == pytest.approx(-20.0, abs=1e-6)


def test_psnr_offset_gives_bd_psnr() -> None:
    assert bd_psnr(RATE, PSNR, RATE, [p + 0.5 for p in PSNR]) == pytest.approx(0.5, abs=1e-9)


def test_closed_form_value() -> None:
    """Log-linear curves are interpolated exactly by PCHIP, so BD-rate has a closed form.

    anchor: ln R = -6 + 0.2 D;  test: ln R = -5.5 + 0.18 D;  common range D in [30, 38]:
    mean difference = 0.5 - 0.02 * 34 = -0.18, so BD-rate = exp(-0.18) - 1 = -16.47...%.
    """
    d_anchor = np.linspace(29.0, 38.0, 6)
    d_test = np.linspace(30.0, 40.0, 5)
    r_anchor = np.exp(-6 + 0.2 * d_anchor)
    r_test = np.exp(-5.5 + 0.18 * d_test)
    expected = (math.exp(0.5 - 0.02 * 34.0) - 1) * 100
    assert bd_rate(r_anchor, d_anchor, r_test, d_test) == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(-16.4729, abs=1e-4)


def test_non_overlapping_curves_are_undefined() -> None:
    high = [p + 20 for p in PSNR]
    with pytest.raises(NoOverlapError, match="do not overlap"):
        bd_rate(RATE, PSNR, RATE, high)
    with pytest.raises(NoOverlapError):
        bd_psnr(RATE, PSNR, [r * 100 for r in RATE], PSNR)
    assert math.isnan(bd_rate_or_nan(RATE, PSNR, RATE, high))
    assert overlap_fraction(PSNR, high) == 0.0


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="two"):
        bd_rate([1.0], [30.0], RATE, PSNR)
    with pytest.raises(ValueError, match="repeated"):
        bd_rate([0.1, 0.2, 0.3], [30.0, 30.0, 31.0], RATE, PSNR)
    with pytest.raises(ValueError, match="positive"):
        bd_rate([0.0, 0.2], [30.0, 31.0], RATE, PSNR)


def test_quality_at_rate_interpolates_and_refuses_to_extrapolate() -> None:
    assert quality_at_rate(RATE, PSNR, 0.25) == pytest.approx(29.6)
    assert PSNR[1] < quality_at_rate(RATE, PSNR, 0.3) < PSNR[2]
    assert math.isnan(quality_at_rate(RATE, PSNR, 5.0))
