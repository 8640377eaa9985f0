"""The imageio plugin: registration, v3 and v2 reads/writes/props/meta, bytes and paths, failures."""

from __future__ import annotations

import io

import imageio.v2 as iio2
import imageio.v3 as iio
import numpy as np
import pytest
from imageio.config import known_plugins
from imageio.config.extensions import known_extensions

import pillow_selic
import selic_engine.decoding
from pillow_selic.imageio_plugin import SelicPlugin
from selic_engine.container import MAGIC


@pytest.fixture
def small(photo) -> np.ndarray:
    return photo[:24, :40]


@pytest.fixture
def opts(tiny_engine) -> dict:
    return {"model": tiny_engine.model_id, "caption": False}


@pytest.fixture
def selic_file(tmp_path, small, opts):
    path = tmp_path / "x.selic"
    iio.imwrite(path, small, quality=6, **opts)
    return path


def test_registered_first_for_the_extension():
    assert known_plugins["selic"].plugin_class is SelicPlugin
    pillow_selic.register()
    pillow_selic.register()
    entries = known_extensions[".selic"]
    assert [e.priority for e in entries] == [["selic"]]  # idempotent, and chosen without trying other plugins


def test_v3_write_read_props_meta(selic_file, small):
    assert selic_file.read_bytes().startswith(MAGIC)
    props = iio.improps(selic_file)
    assert (props.shape, props.dtype, props.is_batch) == ((24, 40, 3), np.uint8, False)
    meta = iio.immeta(selic_file)
    assert meta["quality"] == 6 and meta["mode"] == "RGB" and meta["shape"] == (40, 24)
    image = iio.imread(selic_file)
    assert image.shape == small.shape and image.dtype == np.uint8 and image.flags.writeable
    assert np.abs(image.astype(int) - small).mean() < 128  # a lossy copy of the same picture, not garbage
    assert iio.imread(str(selic_file), plugin="selic").shape == small.shape
    assert iio.imread(selic_file, index=...).shape == (1, *small.shape)
    assert iio.improps(selic_file, index=...).n_images == 1
    assert iio.imread(selic_file, mode="L").shape == small.shape[:2]
    with pytest.raises(ValueError, match="one image"):
        iio.imread(selic_file, index=1)


def test_meta_and_props_do_not_decode(selic_file, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(selic_engine.decoding, "decode", fail)
    assert iio.improps(selic_file).shape == (24, 40, 3)
    assert iio.immeta(selic_file)["quality"] == 6


@pytest.mark.parametrize("shape", [(24, 40), (24, 40, 2), (24, 40, 4)])
def test_gray_and_alpha_arrays(tmp_path, small, opts, shape):
    alpha = np.broadcast_to(np.arange(40, dtype=np.uint8) * 6, (24, 40))[..., None]
    rgba = np.concatenate([small, alpha], axis=-1)
    array = {2: rgba[..., 2:], 4: rgba}[shape[2]] if len(shape) == 3 else small[..., 0]
    iio.imwrite(tmp_path / "x.selic", array, **opts)
    assert iio.improps(tmp_path / "x.selic").shape == shape
    out = iio.imread(tmp_path / "x.selic")
    assert out.shape == shape
    if len(shape) == 3 and shape[2] in (2, 4):
        assert np.array_equal(out[..., -1], array[..., -1])  # alpha is lossless


def test_bytes_and_file_objects(small, opts):
    data = iio.imwrite("<bytes>", small, extension=".selic", quality=2, **opts)
    assert isinstance(data, bytes) and data.startswith(MAGIC)
    assert iio.imread(data).shape == small.shape  # found by its magic bytes
    assert iio.imread(data, plugin="selic").shape == small.shape
    assert iio.immeta(data, plugin="selic")["quality"] == 2
    buf = io.BytesIO()
    iio.imwrite(buf, small, plugin="selic", **opts)
    assert buf.getvalue().startswith(MAGIC)
    buf.seek(0)
    assert iio.imread(buf, plugin="selic").shape == small.shape
    assert not buf.closed  # a caller's file object stays open


def test_v2_read_write(tmp_path, small, opts):
    path = tmp_path / "x.selic"
    iio2.imwrite(path, small, quality=3, **opts)
    assert iio2.imread(path).shape == small.shape
    assert iio2.imread(path.read_bytes(), format="selic").shape == small.shape
    data = iio2.imwrite("<bytes>", small, format="SELIC", **opts)
    assert iio.immeta(data)["quality"] == 4.0


def test_caption_and_metadata_options(tmp_path, small, tiny_engine):
    path = tmp_path / "x.selic"
    iio.imwrite(path, small, model=tiny_engine.model_id, caption="a test card", store_caption=True, xmp=b"<x/>")
    meta = iio.immeta(path)
    assert meta["caption"] == "a test card" and meta["xmp"] == b"<x/>"


def test_size_target(tmp_path, small, opts):
    path = tmp_path / "x.selic"
    limit = len(selic_engine.encode(small, 8, **opts)) - 1
    iio.imwrite(path, small, max_bytes=limit, **opts)
    assert path.stat().st_size <= limit and iio.immeta(path)["quality"] < 8


def test_other_formats_untouched(tmp_path, small):
    iio.imwrite(tmp_path / "x.png", small)
    assert np.array_equal(iio.imread(tmp_path / "x.png"), small)
    assert iio.immeta(tmp_path / "x.png")["mode"] == "RGB"
    png = (tmp_path / "x.png").read_bytes()
    with pytest.raises(OSError):
        iio.imread(png, plugin="selic")
    with pytest.raises(OSError):  # the plugin writes .selic only, unless told extension=".selic"
        iio.imwrite(tmp_path / "y.png", small, plugin="selic")
    assert not (tmp_path / "y.png").exists()


def test_png_named_selic_falls_back_to_pillow(tmp_path, small):
    iio.imwrite(tmp_path / "x.png", small)
    (tmp_path / "x.selic").write_bytes((tmp_path / "x.png").read_bytes())
    assert np.array_equal(iio.imread(tmp_path / "x.selic"), small)


@pytest.mark.parametrize("damage", ["header", "body"])
def test_damaged_files_raise_oserror(tmp_path, small, opts, damage):
    data = bytearray(iio.imwrite("<bytes>", small, extension=".selic", **opts))
    if damage == "header":
        data[len(MAGIC)] = 99  # version
    else:
        data = data[: len(data) // 2]
    (tmp_path / "x.selic").write_bytes(bytes(data))
    with pytest.raises(OSError):
        iio.imread(tmp_path / "x.selic")


@pytest.mark.parametrize("bad", ["float", "quality", "batch"])
def test_failed_write_leaves_no_file(tmp_path, small, opts, bad):
    path = tmp_path / "x.selic"
    kwargs = dict(opts)
    array = small
    if bad == "float":
        array = small / 255.0
    elif bad == "quality":
        kwargs["quality"] = 9
    else:
        array = np.stack([small, small])
    with pytest.raises(ValueError):
        iio.imwrite(path, array, **kwargs)
    assert not path.exists()


def test_failed_write_keeps_an_existing_file(tmp_path, small, opts):
    path = tmp_path / "x.selic"
    path.write_bytes(b"previous")
    with pytest.raises(ValueError):
        iio.imwrite(path, small, quality=9, **opts)
    assert path.read_bytes() == b"previous"  # nothing is opened for writing until the encode succeeded
