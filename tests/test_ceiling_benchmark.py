"""benchmarks.ceiling: the channel columns and rate spread it reports, and how it keeps the other source's results."""

from __future__ import annotations

import math

import pytest

from benchmarks import ceiling
from selic_engine.testing import photo_like


@pytest.fixture(scope="module")
def measured(tiny_weights):
    return ceiling.measure(str(tiny_weights), [photo_like(64, 64, seed) for seed in range(2)])


def test_every_quality_has_every_column_and_a_consistent_rate_spread(measured):
    m = measured["M"]
    for q in ("q1", "q4", "q8"):
        assert set(measured["psnr"][q]) == set(ceiling.COLUMNS)
        assert all(math.isfinite(v) for v in measured["psnr"][q].values())
        spread = measured["channels"][q]
        # channels are ranked by rate, so the top fraction k of them carries at least k of it
        for k in ceiling.KEEP:
            assert k - 1e-9 <= spread[f"rate share top {k:g}"] <= 1 + 1e-9
        assert 1 <= spread["channels for 99% of the rate"] <= m


def test_a_run_replaces_its_own_source_and_keeps_the_other(monkeypatch, tiny_weights, measured):
    monkeypatch.setattr(ceiling, "load_images", lambda source, count: [photo_like(64, 64)])
    monkeypatch.setattr(ceiling, "measure", lambda name, images: measured)
    previous = {"sources": {"validation": {"images": 12, "models": ["kept"], "machine": {}},
                            "kodak": {"images": 8, "models": ["replaced"], "machine": {}}}}
    res = ceiling.run([str(tiny_weights)], "kodak", 1, previous)
    assert list(res["sources"]) == ["kodak", "validation"]
    assert res["sources"]["validation"]["models"] == ["kept"]
    assert res["sources"]["kodak"]["models"] == [measured]
    assert "held-out centre crops" not in ceiling._source_markdown("kodak", res["sources"]["kodak"])
