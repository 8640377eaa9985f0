"""Every released decoder keeps decoding the files it wrote: the conformance streams of tests/conformance, on
every commit (symbols exact everywhere, pixels exact per machine kind and precision)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import selic_engine as se
from selic_engine import conformance, engine
from selic_engine import weights as weights_pkg
from selic_engine.container import read_header
from selic_engine.precision import machine_kind
from selic_engine.weights import released_decoders

ROOT = Path(__file__).parent / "conformance"
FOLDERS = sorted(p for p in ROOT.iterdir() if (p / conformance.STREAMS).exists())
CASES = [(folder, stream) for folder in FOLDERS for stream in conformance.load(folder)["streams"]]


def test_every_released_decoder_has_conformance_streams():
    versions = {conformance.load(folder)["decoder"] for folder in FOLDERS}
    assert {r.version for r in released_decoders()} <= versions


@pytest.mark.parametrize(("folder", "stream"), CASES, ids=[f"{f.name}/{s['file']}" for f, s in CASES])
def test_conformance_stream(folder: Path, stream: dict):
    data = (folder / stream["file"]).read_bytes()
    header = read_header(data)
    assert (header.width, header.height, header.mode) == (stream["width"], stream["height"], stream["mode"])
    assert conformance.check(folder, stream) == []
    if machine_kind() not in stream["pixels_sha256"]:
        pytest.skip(f"pixels not pinned for {machine_kind()} (symbols checked): run "
                    f"`python -m selic_engine.conformance record {folder}` on such a machine")


def test_the_set_covers_what_the_issue_asks():
    for folder in FOLDERS:
        streams = conformance.load(folder)["streams"]
        assert {"RGB", "L", "RGBA"} <= {s["mode"] for s in streams}
        assert any(s["width"] % 2 and s["height"] % 2 for s in streams)  # odd sizes
        assert any(s["height"] > 1024 for s in streams)  # taller than a coding band (64 latent rows)
        assert {1.0, 8.0} <= {s["quality"] for s in streams} and any(s["quality"] % 1 for s in streams)
        assert any(s["stored_caption"] for s in streams) and any(not s["stored_caption"] for s in streams)
        assert all((folder / s["file"]).stat().st_size < 4096 for s in streams)


def test_a_v1_file_opens_bit_identically_after_the_default_model_changes(tmp_path: Path, monkeypatch):
    """The release process for a new default: its weights become selic-small, v1's file stays under its decoder
    version in the manifest. A file of the 71,000-step release then still decodes to the same pixels."""
    from selic_engine.testing import build_tiny
    from selic_engine.weights.files import export

    v1 = released_decoders()[0]
    shutil.copy(v1.path, tmp_path / "selic-v1.safetensors")
    new_default = build_tiny(seed=7)
    new_id = export(new_default, tmp_path / "selic-small.safetensors")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["selic-small.safetensors"].update(decoder=v1.version + 1, release="selic 9.0.0")
    manifest["selic-v1.safetensors"] = {"sha256": weights_pkg.sha256_file(tmp_path / "selic-v1.safetensors"),
                                        "model_id": v1.model_id, "decoder": v1.version, "release": v1.release}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(weights_pkg, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(engine, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(engine, "_loaded", type(engine._loaded)())

    assert se.get_engine("small").model_id == new_id != v1.model_id
    folder = ROOT / "v1"
    stream = conformance.load(folder)["streams"][0]
    data = (folder / stream["file"]).read_bytes()
    assert conformance.symbols_sha256(data) == stream["symbols_sha256"]
    pinned = stream["pixels_sha256"].get(machine_kind(), {})
    for precision, expected in pinned.items():
        assert conformance.pixels_sha256(data, precision) == expected
    fresh = se.encode(se.decode(data), 4, caption=False)  # a save now uses the new default and tags its decoder
    assert se.probe(fresh).model_id == new_id
    assert se.decode(fresh).info["decoder"] == f"v{v1.version + 1}"


WIDE = ROOT / "wide-v1" / "rgb-8000x40-q2.selic"
#: Written (and decoded) on commit 67e1dce by decoder v1's whole-band code, before the probability side ran in
#: column windows: a photo-like 8000x40 strip at quality 2, 500 latent columns (more than one window).
WIDE_SYMBOLS = "470034c644661bc240c3f92a00af9268af0b4b4a80e550f1cae09c2368d4612c"
WIDE_PIXELS = {"cpu-avx512bf16": {"float32": "8ebaa6a6492f4c5e72f3295d7e83e9d9765d4e5616523f9f37e02a217915af97",
                                  "bfloat16": "9284c4d6fdff942e0d78701f1d131f6c6b0d85a38d3045bf25eb544614394db9"}}


def test_a_v1_file_wider_than_a_window_decodes_as_the_whole_band_decoder_did():
    """Issue 32: h_s and the ChARM nets now run in column windows (entropy.columns); a v1 file wider than one
    decodes to the symbols and pixels that the whole-band computation gave it."""
    data = WIDE.read_bytes()
    assert conformance.symbols_sha256(data) == WIDE_SYMBOLS
    for precision, expected in WIDE_PIXELS.get(machine_kind(), {}).items():
        if precision in conformance.precisions():
            assert conformance.pixels_sha256(data, precision) == expected, precision
