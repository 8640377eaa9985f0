"""benchmarks.forgeries: a forged wide file is decoded in a fresh process and its refusal is what gets reported."""

from __future__ import annotations

from benchmarks import forgeries
from benchmarks.common import machine


def test_a_forgery_is_refused_in_a_fresh_process_and_reported(tiny_weights):
    row = forgeries.measure(str(tiny_weights), 1 << 14, 1, 64, threads=1)
    assert row["result"] == "DesyncError" and row["seconds"] >= 0 and row["grown_mib"] >= 0, row
    text = forgeries.markdown({"threads": 1, "cases": [row], "machine": machine()})
    assert "| 16384x1 | 64 | DesyncError |" in text
