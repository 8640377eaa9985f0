"""The Pillow plugin: registration, lazy open, save options, modes, metadata, size targets, damage."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError

import pillow_selic
import selic_engine.decoding
import selic_engine.engine
from pillow_selic import image_plugin
from selic_engine.container import MAGIC

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rgb(photo) -> Image.Image:
    """Small on purpose: every test here encodes and decodes."""
    return Image.fromarray(photo[:24, :40])


@pytest.fixture
def save(tiny_engine):
    """img.save with the tiny model and no semantic branch unless a test asks."""

    def _save(img: Image.Image, target, **options) -> None:
        options.setdefault("caption", False)
        img.save(target, model=tiny_engine.model_id, **options)

    return _save


@pytest.fixture
def decode_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = selic_engine.decoding.decode

    def counting(data, **kwargs):
        calls.append(len(data))
        return real(data, **kwargs)

    monkeypatch.setattr(selic_engine.decoding, "decode", counting)
    return calls


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_registered_with_pillow():
    assert "SELIC" in Image.ID and Image.OPEN["SELIC"][0] is pillow_selic.SelicImageFile
    assert Image.SAVE["SELIC"] is image_plugin._save
    assert Image.registered_extensions()[".selic"] == "SELIC"
    assert Image.MIME["SELIC"] == "image/x-selic"
    before = list(Image.ID)
    pillow_selic.register()
    pillow_selic.register()
    assert Image.ID == before  # idempotent


def test_import_and_open_do_not_import_torch(save, rgb, tmp_path):
    save(rgb, tmp_path / "x.selic", quality=3)
    code = (
        "import sys, pillow_selic; from PIL import Image;"
        f"im = Image.open({str(tmp_path / 'x.selic')!r});"
        "print(im.format, im.mode, im.size, im.info['quality'], 'torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    assert res.stdout.split() == ["SELIC", "RGB", "(40,", "24)", "3.0", "False"]


def test_open_reads_header_only_and_load_decodes(save, rgb, tmp_path, decode_calls):
    save(rgb, tmp_path / "x.selic", quality=5.5)
    with Image.open(tmp_path / "x.selic") as im:
        assert (im.format, im.mode, im.size) == ("SELIC", "RGB", (40, 24))
        assert im.info["quality"] == 5.5 and len(im.info["model"]) == 16
        assert im.get_format_mimetype() == "image/x-selic"
        assert decode_calls == []
        im.load()
        im.load()
        assert len(decode_calls) == 1
        assert im.fp is None  # the file Pillow opened is closed after loading, as for other formats
        assert np.asarray(im).shape == (24, 40, 3)


@pytest.mark.parametrize("kind", ["str", "pathlib", "fileobj", "format"])
def test_save_and_open_apis(save, rgb, tmp_path, kind):
    path = tmp_path / "x.selic"
    if kind == "str":
        save(rgb, str(path))
        opened = Image.open(str(path))
    elif kind == "pathlib":
        save(rgb, path)
        opened = Image.open(path)
    else:  # a file object needs format=; a path with another extension too
        target = io.BytesIO() if kind == "fileobj" else tmp_path / "x.bin"
        save(rgb, target, format="SELIC")
        data = target.getvalue() if kind == "fileobj" else target.read_bytes()
        assert data.startswith(MAGIC)
        opened = Image.open(io.BytesIO(data))
    with opened:
        assert (opened.format, opened.size) == ("SELIC", rgb.size)
        assert opened.info["quality"] == 4.0  # the default


def _with_alpha(rgb: Image.Image, mode: str) -> Image.Image:
    alpha = Image.linear_gradient("L").resize(rgb.size)
    out = rgb.convert(mode[0] if mode == "LA" else "RGB")
    out.putalpha(alpha)
    return out


def _palette(rgb: Image.Image, transparent: bool) -> Image.Image:
    p = rgb.quantize(16)
    if transparent:
        p.info["transparency"] = 0
    return p


CASES = {  # source image -> mode stored
    "RGB": (lambda im: im, "RGB"),
    "L": (lambda im: im.convert("L"), "L"),
    "RGBA": (lambda im: _with_alpha(im, "RGBA"), "RGBA"),
    "LA": (lambda im: _with_alpha(im, "LA"), "LA"),
    "P": (lambda im: _palette(im, False), "RGB"),
    "P+transparency": (lambda im: _palette(im, True), "RGBA"),
    "PA": (lambda im: _with_alpha(im, "RGBA").convert("PA"), "RGBA"),
    "1": (lambda im: im.convert("1"), "L"),
    "CMYK": (lambda im: im.convert("CMYK"), "RGB"),
    "YCbCr": (lambda im: im.convert("YCbCr"), "RGB"),
}


@pytest.mark.parametrize("case", CASES)
def test_modes_round_trip(save, rgb, tmp_path, case):
    make, stored = CASES[case]
    src = make(rgb)
    save(src, tmp_path / "x.selic")
    with Image.open(tmp_path / "x.selic") as im:
        assert im.mode == stored
        im.load()
        assert (im.mode, im.size) == (stored, rgb.size)
        if stored.endswith("A"):  # alpha is stored losslessly
            expected = src.convert("RGBA" if stored == "RGBA" else "LA").getchannel("A")
            assert np.array_equal(np.asarray(im.getchannel("A")), np.asarray(expected))


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_high_bit_modes_refused_and_no_file_left(save, rgb, tmp_path, mode):
    target = tmp_path / "x.selic"
    with pytest.raises(ValueError, match="8-bit"):
        save(rgb.convert("L").convert(mode), target)
    assert not target.exists()


@pytest.mark.parametrize("bad", [0, 0.99, 8.5, 90, float("nan"), "keep"])
def test_quality_out_of_range(save, rgb, tmp_path, bad):
    target = tmp_path / "x.selic"
    with pytest.raises(ValueError, match=r"1.* 8"):
        save(rgb, target, quality=bad)
    assert not target.exists()  # Image.save removes the file it created when _save raises


def test_failed_save_to_file_object_writes_nothing(save, rgb):
    buf = io.BytesIO()
    with pytest.raises(ValueError):
        save(rgb, buf, format="SELIC", quality=9)
    assert buf.getvalue() == b""


def test_interrupted_save_leaves_no_empty_file(save, rgb, tmp_path, monkeypatch):
    """Ctrl-C while encoding: Pillow cleans up only after an Exception, so the plugin removes the empty
    file Pillow opened (issue 17)."""
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(selic_engine.engine.Engine, "encode", interrupt)
    target = tmp_path / "x.selic"
    with pytest.raises(KeyboardInterrupt):
        save(rgb, target)
    assert not target.exists()


def test_interrupted_save_over_an_existing_file_removes_it(save, rgb, tmp_path, monkeypatch):
    """Pillow empties the old file before the plugin runs, so Ctrl-C cannot give it back: the plugin removes
    it, new or old alike (it cannot tell them apart), rather than leave an empty, invalid .selic file."""
    monkeypatch.setattr(selic_engine.engine.Engine, "encode", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    target = tmp_path / "x.selic"
    target.write_bytes(b"earlier")
    with pytest.raises(KeyboardInterrupt):
        save(rgb, target)
    assert os.listdir(tmp_path) == []


def test_load_after_close_is_pillows_closed_image_error(save, rgb, tmp_path):
    """load() after close() used to fail a bare assert; Pillow's own formats raise this ValueError."""
    rgb.save(tmp_path / "x.png")
    save(rgb, tmp_path / "x.selic")
    for name in ("x.png", "x.selic"):
        image = Image.open(tmp_path / name)
        image.close()
        with pytest.raises(ValueError, match="Operation on closed image"):
            image.load()


def test_atomic_save_keeps_the_existing_file(rgb, tmp_path, tiny_engine, monkeypatch):
    """Image.save cannot keep a file it failed to replace (Pillow empties it before the plugin runs);
    pillow_selic.save can: a bad option, an error or Ctrl-C leaves the old file and no temporary."""
    target = tmp_path / "x.selic"
    target.write_bytes(b"earlier")
    with pytest.raises(ValueError, match="quality"):
        rgb.save(target, quality=90, model=tiny_engine.model_id, caption=False)
    assert target.read_bytes() == b""  # the documented limitation of Image.save
    target.write_bytes(b"earlier")
    with pytest.raises(ValueError, match="quality"):
        pillow_selic.save(rgb, target, quality=90, model=tiny_engine.model_id, caption=False)
    with pytest.raises(ValueError, match="8-bit"):
        pillow_selic.save(rgb.convert("F"), target, model=tiny_engine.model_id, caption=False)
    with monkeypatch.context() as patch:
        patch.setattr(selic_engine.engine.Engine, "encode", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            pillow_selic.save(rgb, target, model=tiny_engine.model_id, caption=False)
    assert target.read_bytes() == b"earlier" and os.listdir(tmp_path) == ["x.selic"]
    pillow_selic.save(rgb, target, quality=5, model=tiny_engine.model_id, caption=False)
    with Image.open(target) as img:
        assert img.info["quality"] == 5 and img.size == rgb.size


def test_metadata_round_trip(save, rgb, tmp_path):
    icc = srgb_profile()
    exif = Image.Exif()
    exif[0x0110] = "selic test camera"  # Model
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    save(rgb, tmp_path / "x.selic", icc_profile=icc, exif=exif, xmp=xmp, caption="a striped test card",
         store_caption=True)
    with Image.open(tmp_path / "x.selic") as im:
        assert im.info["icc_profile"] == icc
        assert im.info["xmp"] == xmp  # bytes, as Pillow's JPEG/PNG/WebP plugins give it
        assert im.info["caption"] == "a striped test card"
        assert im.getexif()[0x0110] == "selic test camera"
        # re-saving keeps everything, like other Pillow plugins (Image.save loads the pixels first)
        save(im, tmp_path / "y.selic", caption=None)
    with Image.open(tmp_path / "y.selic") as again:
        for key in ("icc_profile", "exif", "xmp", "caption"):
            assert again.info[key] == im.info[key], key


def test_metadata_from_image_info_and_caption_not_stored_by_default(save, rgb, tmp_path):
    rgb.info.update(icc_profile=srgb_profile(), xmp="<x/>")
    save(rgb, tmp_path / "x.selic", caption="not stored")
    with Image.open(tmp_path / "x.selic") as im:
        assert im.info["icc_profile"] == rgb.info["icc_profile"]
        assert im.info["xmp"] == b"<x/>"
        assert "caption" not in im.info and "exif" not in im.info


def test_options_override_and_drop_inherited_metadata(save, rgb, tmp_path):
    rgb.info.update(icc_profile=srgb_profile(), xmp=b"<x/>")
    save(rgb, tmp_path / "x.selic", icc_profile=None, xmp=b"")
    with Image.open(tmp_path / "x.selic") as im:
        assert "icc_profile" not in im.info and "xmp" not in im.info


def test_inherited_icc_of_another_colour_space_is_dropped(save, rgb, tmp_path):
    rgb.info["icc_profile"] = srgb_profile()
    save(rgb.convert("L"), tmp_path / "gray.selic")  # an RGB profile cannot describe L pixels
    explicit = srgb_profile()
    save(rgb.convert("L"), tmp_path / "kept.selic", icc_profile=explicit)  # explicit wins
    with Image.open(tmp_path / "gray.selic") as gray, Image.open(tmp_path / "kept.selic") as kept:
        assert "icc_profile" not in gray.info
        assert kept.info["icc_profile"] == explicit


def test_size_targets(save, rgb, tmp_path, tiny_engine):
    sizes = {q: len(selic_engine.encode(rgb, q, False, model=tiny_engine.model_id)) for q in (1, 8)}
    assert sizes[1] < sizes[8]
    target = (sizes[1] + sizes[8]) // 2
    save(rgb, tmp_path / "bytes.selic", max_bytes=target)
    save(rgb, tmp_path / "bpp.selic", bpp=target * 8 / (rgb.width * rgb.height))
    for name in ("bytes", "bpp"):
        path = tmp_path / f"{name}.selic"
        assert path.stat().st_size <= target
        with Image.open(path) as im:
            assert 1 < im.info["quality"] < 8
    # the largest quality that fits: a step above it does not
    quality = selic_engine.decoding.probe((tmp_path / "bytes.selic").read_bytes()).quality
    above = len(selic_engine.encode(rgb, min(8, quality + 0.1), False, model=tiny_engine.model_id))
    assert above > target


def test_size_target_with_quality_cap_and_too_small(save, rgb, tmp_path):
    save(rgb, tmp_path / "x.selic", max_bytes=10**6, quality=3)
    assert selic_engine.decoding.probe((tmp_path / "x.selic").read_bytes()).quality == 3
    target = tmp_path / "y.selic"
    with pytest.raises(ValueError, match="too small"):
        save(rgb, target, max_bytes=100)
    assert not target.exists()


def test_png_unaffected_and_never_reaches_selic(rgb, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("selic decoder called for a non-selic file")

    monkeypatch.setattr(selic_engine.decoding, "decode", fail)
    rgb.save(tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as im:
        im.load()
        assert im.format == "PNG"
    assert not image_plugin._accept(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(UnidentifiedImageError):
        Image.open(tmp_path / "x.png", formats=["SELIC"])


def _saved_bytes(save, rgb) -> bytes:
    buf = io.BytesIO()
    save(rgb, buf, format="SELIC")
    return buf.getvalue()


@pytest.mark.parametrize("damage", ["truncated", "flipped", "no-crc"])
def test_damaged_body_raises_oserror_on_load(save, rgb, damage):
    data = bytearray(_saved_bytes(save, rgb))
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped":
        data[len(data) // 2] ^= 0x40
    else:
        data = data[:-4]
    im = Image.open(io.BytesIO(bytes(data)))  # the header is intact
    assert im.size == rgb.size
    with pytest.raises(OSError, match="cannot decode"):
        im.load()
    with pytest.raises(SyntaxError):
        Image.open(io.BytesIO(bytes(data))).verify()


@pytest.mark.parametrize("damage", ["empty", "magic-only", "mode-code"])
def test_damaged_header_is_not_identified(save, rgb, damage):
    data = bytearray(_saved_bytes(save, rgb))
    if damage == "empty":
        data = b""
    elif damage == "magic-only":
        data = MAGIC
    else:
        data[len(MAGIC) + 1 + 8 + 16] = 7  # HEAD: model id (8), width, height (4 each), then the mode code
    with pytest.raises(UnidentifiedImageError):  # an OSError, as for any unreadable file
        Image.open(io.BytesIO(bytes(data)))


def test_newer_version_says_upgrade(save, rgb):
    data = bytearray(_saved_bytes(save, rgb))
    data[len(MAGIC)] = 99
    with pytest.warns(UserWarning, match="version 99 .*upgrade selic"), pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(bytes(data)))


def test_byte_budget():
    from selic_engine.rate_control import byte_budget

    assert byte_budget((10, 10), max_bytes=100) == 100
    assert byte_budget((10, 10), bpp=2) == 25
    assert byte_budget((10, 10), max_bytes=20, bpp=2) == 20  # the tighter one
    for bad in ({}, {"max_bytes": 0}, {"bpp": -1}, {"bpp": float("nan")}):
        with pytest.raises(ValueError):
            byte_budget((10, 10), **bad)


def test_verify_accepts_a_good_file(save, rgb):
    Image.open(io.BytesIO(_saved_bytes(save, rgb))).verify()


def test_decompression_bomb_check_before_decoding(save, rgb, monkeypatch):
    data = _saved_bytes(save, rgb)
    im = Image.open(io.BytesIO(data))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(Image.DecompressionBombError):
        im.load()
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))


def test_incremental_parser_uses_the_selic_decoder(save, rgb, decode_calls):
    data = _saved_bytes(save, rgb)
    parser = ImageFile.Parser()
    for i in range(0, len(data), 500):
        parser.feed(data[i : i + 500])
    im = parser.close()
    assert (im.format, im.mode, im.size, len(decode_calls)) == ("SELIC", "RGB", rgb.size, 1)
    assert np.array_equal(np.asarray(im), np.asarray(Image.open(io.BytesIO(data))))
