"""Large images: tiled analysis and synthesis match the whole-image transforms, with no seams.

The tiles' margins exceed the receptive fields of g_a and g_s, so tiling should change nothing
but float rounding; these tests check that on a ~1300x900 image with a small forced tile size,
that images under one tile take exactly the untiled path, and (slow) that a 24 MP round trip
stays in bounded memory.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import selic_engine as se
from selic_engine.model.determinism import onednn_conv
from selic_engine.model.tiling import (
    ALIGN,
    DEFAULT_TILE,
    analyze_tiled,
    spans,
    synthesize_tiled,
    tile_size,
    to_pixels,
)
from selic_engine.testing import photo_like


def pad_to_stride(x: torch.Tensor) -> torch.Tensor:
    """The whole-image reference for tiling: replicate-pad to a multiple of 64, as analyze_tiled does virtually."""
    ph, pw = (-x.shape[-2]) % ALIGN, (-x.shape[-1]) % ALIGN
    return torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


SMALL_TILE = 384  # 1344x896 padded -> 4x3 tiles: interior tiles with margins on every side


def as_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1).contiguous()[None].float().div_(255)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a.double() - b.double()).pow(2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def seam_ratio(err: torch.Tensor, tile: int) -> float:
    """Mean error on the rows/columns next to internal tile edges over the mean error elsewhere (0/0 -> 1)."""
    h, w = err.shape[-2:]
    border = torch.zeros(h, w, dtype=torch.bool)
    for length, axis in ((h, 0), (w, 1)):
        for edge, _ in spans(-(-length // ALIGN) * ALIGN, tile)[1:]:
            sl = slice(max(edge - 2, 0), min(edge + 2, length))
            if axis == 0:
                border[sl, :] = True
            else:
                border[:, sl] = True
    e = err.abs().mean(dim=(0, 1))
    on, off = float(e[border].mean()), float(e[~border].mean())
    return 1.0 if on == off == 0 else on / max(off, 1e-12)


@pytest.fixture(scope="module")
def big():
    return photo_like(900, 1300)


def test_tiled_analysis_matches_whole_image(tiny_engine, big):
    model = tiny_engine.model
    q = torch.tensor([4.0])
    x = as_tensor(big)
    with torch.no_grad():
        whole = model.analyze(pad_to_stride(x), q, None, None)
        tiled = analyze_tiled(lambda w: model.analyze(w, q, None, None), x, model.config.M, model.geometry, SMALL_TILE)
    assert tiled.shape == whole.shape
    assert torch.allclose(tiled, whole, rtol=0, atol=1e-4 * float(whole.abs().max()))


def test_tiled_synthesis_matches_whole_image_without_seams(tiny_engine, big):
    """The decoder's g_s in 384-px tiles vs in one piece, on a real decoded latent: > 45 dB and no seams."""
    model = tiny_engine.model
    coded = model.compress(as_tensor(big), 4.0)
    y_hat = model.latent_codec.decompress(coded.z_stream, coded.y_stream, coded.z_shape,
                                          model.geometry.coding_band_rows)[0]
    q = torch.tensor([4.0])
    with torch.no_grad(), onednn_conv():
        whole = model.synthesize(y_hat, q)[..., :900, :1300].clamp(0, 1)
        tiled = synthesize_tiled(lambda w: model.synthesize(w, q), y_hat, (900, 1300), model.geometry, SMALL_TILE)
    assert tiled.shape == (900, 1300, 3) and tiled.dtype == torch.uint8
    tiled = tiled.permute(2, 0, 1)[None].double() / 255
    assert psnr(tiled, whole) > 45
    assert seam_ratio(tiled - whole, SMALL_TILE) < 2.0


def test_engine_round_trip_with_forced_small_tiles(tiny_engine):
    """Through encode/decode with tile=192 (3x2 tiles): same pixels as untiled, within 45 dB, no seams."""
    img = photo_like(300, 520, seed=1)
    plain = se.encode(img, 4, caption=False, model=tiny_engine.model_id)
    reference = torch.from_numpy(np.asarray(se.decode(plain), dtype=np.float64)).permute(2, 0, 1)[None] / 255
    for data in (plain, se.encode(img, 4, caption=False, model=tiny_engine.model_id, tile=192)):
        out = torch.from_numpy(np.asarray(se.decode(data, tile=192), dtype=np.float64)).permute(2, 0, 1)[None] / 255
        assert psnr(out, reference) > 45
        assert seam_ratio(out - reference, 192) < 2.0


def test_images_within_one_tile_take_the_untiled_path(tiny_engine):
    """Below the tile size nothing changes: same latent as analyze(pad(x)), same pixels as g_s(y)[:H, :W]."""
    model = tiny_engine.model
    x = as_tensor(photo_like(200, 330, seed=2))
    q = torch.tensor([3.0])
    with torch.no_grad():
        y = model.analyze(pad_to_stride(x), q, None, None)
        g = model.geometry
        assert torch.equal(analyze_tiled(lambda w: model.analyze(w, q, None, None), x, model.config.M, g), y)
        assert torch.equal(synthesize_tiled(lambda w: model.synthesize(w, q), y, (200, 330), model.geometry),
                           to_pixels(model.synthesize(y, q)[..., :200, :330]))


def test_uint8_input_matches_float_input(tiny_engine):
    img = photo_like(100, 140, seed=3)
    model = tiny_engine.model
    as_uint8 = torch.from_numpy(img).permute(2, 0, 1).contiguous()[None]
    assert model.compress(as_uint8, 5).symbol_hash == model.compress(as_tensor(img), 5).symbol_hash


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_split_fills_every_row_band(tiny_engine, monkeypatch, mode):
    """split converts in row bands into one channel-last array; coding its strided view equals coding a copy."""
    from PIL import Image

    from selic_engine import imaging

    monkeypatch.setattr(imaging, "SPLIT_ROWS", 7)  # many bands, the last one short
    image = Image.fromarray(photo_like(50, 70, seed=4)).convert(mode)
    x, _ = imaging.split(image)
    assert x.shape == (1, 3, 50, 70) and not x.is_contiguous()
    assert torch.equal(x[0].permute(1, 2, 0), torch.from_numpy(np.array(image.convert("RGB"))))
    model = tiny_engine.model
    assert model.compress(x, 5).symbol_hash == model.compress(x.contiguous(), 5).symbol_hash


@given(st.integers(1, 300), st.integers(1, 40))
def test_spans_cover_the_image_in_aligned_tiles(units, tile_units):
    length, tile = units * ALIGN, tile_units * ALIGN
    parts = spans(length, tile)
    assert parts[0][0] == 0 and parts[-1][1] == length
    assert all(a < b and b - a <= tile and a % ALIGN == 0 for a, b in parts)
    assert all(p[1] == q[0] for p, q in zip(parts, parts[1:], strict=False))
    sizes = [b - a for a, b in parts]
    assert max(sizes) - min(sizes) <= ALIGN  # near-equal: no sliver tile


def test_tile_size_setting(tiny_engine):
    assert tile_size() == DEFAULT_TILE == 1024 and tile_size(256) == 256
    for bad in (0, 100, -64):
        with pytest.raises(ValueError, match="multiple of 64"):
            tile_size(bad)
    data = se.encode(np.zeros((8, 8, 3), np.uint8), 4, caption=False, model=tiny_engine.model_id)
    with pytest.raises(ValueError, match="multiple of 64") as info:  # an option, not a damaged file
        se.decode(data, tile=100)
    assert not isinstance(info.value, se.SelicFormatError)
    with pytest.raises(ValueError, match="multiple of 64"):
        se.encode(np.zeros((8, 8, 3), np.uint8), 4, caption=False, model=tiny_engine.model_id, tile=100)
    g = tiny_engine.model.geometry
    assert g.tile_margin % ALIGN == 0 and g.tile_margin // g.latent_stride >= 8  # g_s: 7 latents, g_a: 89 px


LARGE_ROUND_TRIP = """
import json, resource, sys, time
import numpy as np, torch
sys.path.insert(0, {root!r})
import selic_engine as se
from selic_engine.container import unpack
from selic_engine.model.determinism import onednn_conv
from selic_engine.model.tiling import spans
from selic_engine.testing import build_tiny, photo_like
engine = se.register_model(build_tiny())
img = photo_like({h}, {w})
t0 = time.perf_counter()
data = se.encode(img, 4, caption=False, model=engine.model_id)
t1 = time.perf_counter()
out = np.asarray(se.decode(data))
t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
# the interior tile corner nearest the centre, synthesised in one piece from the same latent
m, f = engine.model, unpack(data)
r = min((a for a, _ in spans(-(-{h} // 64) * 64, 1024)[1:]), key=lambda e: abs(e - {h} // 2)) // 16
c = min((a for a, _ in spans(-(-{w} // 64) * 64, 1024)[1:]), key=lambda e: abs(e - {w} // 2)) // 16
with torch.no_grad(), onednn_conv():
    y_hat = m.latent_codec.decompress(f.z_stream, f.y_stream, m.geometry.z_shape(({h}, {w})),
                                      m.geometry.coding_band_rows)[0]
    window = m.synthesize(y_hat[..., r - 16 : r + 16, c - 16 : c + 16], torch.tensor([4.0]))[0, :, 128:384, 128:384]
expected = window.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
got = out[r * 16 - 128 : r * 16 + 128, c * 16 - 128 : c * 16 + 128]
print(json.dumps({{"peak_mib": peak, "bytes": len(data), "encode_s": t1 - t0, "decode_s": t2 - t1,
                  "corner": [r * 16, c * 16], "corner_max_diff": int(np.abs(got.astype(int) - expected).max())}}))
"""


@pytest.mark.slow
def test_24_megapixel_round_trip_in_bounded_memory():
    """6000x4000 in a fresh process: bounded peak memory, and around an interior tile corner the decoded pixels
    equal a one-piece synthesis of the same latent (no seam)."""
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    code = LARGE_ROUND_TRIP.format(root=root, h=4000, w=6000)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=3600)
    stats = json.loads(res.stdout.strip().splitlines()[-1])
    assert stats["peak_mib"] < 3072, stats
    assert stats["corner_max_diff"] <= 1, stats
