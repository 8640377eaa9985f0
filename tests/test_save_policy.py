"""One save policy (selic_engine.saving) behind every way to save: the API, Pillow, imageio and the CLI."""

from __future__ import annotations

import io

import imageio.v3 as iio
import pytest
from PIL import Image, ImageCms

import pillow_selic  # noqa: F401  (registers SELIC with Pillow and imageio)
import selic_engine as se
from selic_engine import cli
from selic_engine.saving import SaveOptions


def _srgb() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("bad", ["5", True, 9, float("nan")])
def test_every_way_to_save_refuses_the_same_quality_with_the_same_words(tiny_engine, photo, bad):
    """The API used to accept quality="5" and True (float() of them) while Image.save refused "5"."""
    image = Image.fromarray(photo)
    opts = {"model": tiny_engine.model_id, "caption": False}
    saves = {
        "SaveOptions": lambda: SaveOptions(quality=bad),
        "selic_engine.encode": lambda: se.encode(image, bad, **opts),
        "Image.save": lambda: image.save(io.BytesIO(), format="SELIC", quality=bad, **opts),
        "imageio": lambda: iio.imwrite("<bytes>", photo, extension=".selic", quality=bad, **opts),
    }
    for save in saves.values():
        with pytest.raises(ValueError, match=r"quality must be a number from 1 to 8 \(fractions allowed\)"):
            save()


def test_the_api_keeps_metadata_like_image_save(tiny_engine, photo):
    """selic_engine.encode used to drop the image's own ICC profile, EXIF and XMP that Image.save kept."""
    image = Image.fromarray(photo)
    image.info.update(icc_profile=_srgb(), xmp=b"<x/>")
    via_api = se.decode(se.encode(image, 4, False, model=tiny_engine.model_id))
    buf = io.BytesIO()
    image.save(buf, format="SELIC", quality=4, caption=False, model=tiny_engine.model_id)
    via_pillow = Image.open(buf)
    for key in ("icc_profile", "xmp"):
        assert via_api.info[key] == via_pillow.info[key] == image.info[key]


def test_the_cli_follows_the_save_policy(tmp_path, tiny_weights, monkeypatch, photo):
    """`selic compress` used to keep an ICC profile that no longer matched the stored pixels, and had no size
    target; both now come from the one policy."""
    monkeypatch.chdir(tmp_path)
    Image.fromarray(photo).convert("L").save("gray.png", icc_profile=_srgb())  # an RGB profile on L pixels
    Image.fromarray(photo).save("color.png")
    cli.main(["compress", "gray.png", "--model", str(tiny_weights), "--no-caption"])
    with Image.open("gray.selic") as gray:
        assert gray.mode == "L" and "icc_profile" not in gray.info
    full = len(se.encode(Image.open("color.png"), 8, False, model=tiny_weights))
    cli.main(["compress", "color.png", "--model", str(tiny_weights), "--no-caption", "--max-bytes", str(full - 1)])
    data = (tmp_path / "color.selic").read_bytes()
    assert len(data) <= full - 1 and se.probe(data).quality < 8


@pytest.mark.parametrize("option", [{"max_bytes": 0}, {"bpp": float("nan")}, {"caption": 3},
                                    {"precision": "float16"}, {"exif": 5}, {"store_caption": "yes"}])
def test_options_are_checked_before_any_model_loads(photo, option):
    """A bad option names itself, before the (here missing) model would be loaded."""
    with pytest.raises(ValueError, match=next(iter(option))):
        Image.fromarray(photo).save(io.BytesIO(), format="SELIC", model="no-such-model", **option)


def _every_front_end(image: Image.Image, **options) -> dict:
    """A save through Pillow and through imageio, each with these options (the tiny model, no caption)."""
    return {
        "Image.save": lambda: image.save(io.BytesIO(), format="SELIC", **options),
        "imageio": lambda: iio.imwrite("<bytes>", image, extension=".selic", **options),
    }


@pytest.mark.parametrize(("option", "words"), [
    ({"lossless": True}, "lossless"),
    ({"save_all": True}, "one image"),  # Image.save used to raise KeyError: 'SELIC'
    ({"append_images": ["another frame"]}, "one image"),
    ({"append": True}, "one image"),  # Pillow would have written over the old file without truncating it
])
def test_options_selic_cannot_honour_are_refused(tiny_engine, photo, option, words):
    """lossless=True used to give a lossy file without a word, and the others were ignored or a KeyError."""
    image = Image.fromarray(photo)
    for save in _every_front_end(image, model=tiny_engine.model_id, caption=False, **option).values():
        with pytest.raises(ValueError, match=words):
            save()
    with pytest.raises(ValueError, match=words):
        SaveOptions.from_mapping(option)


def test_an_unknown_option_is_warned_at_the_callers_line(tiny_engine, photo):
    """qualtiy=2 used to be ignored in silence: the file came out at the default quality."""
    image = Image.fromarray(photo)
    for name, save in _every_front_end(image, model=tiny_engine.model_id, caption=False, qualtiy=2).items():
        with pytest.warns(UserWarning, match=r"'qualtiy'.*did you mean 'quality'") as caught:
            save()
        assert [w.filename for w in caught] == [__file__], name


def test_known_and_pillow_generic_options_are_not_warned(tiny_engine, photo, recwarn):
    """Pillow's own keys (append, append_images, save_all when off) and lossless=False are no mistake."""
    image = Image.fromarray(photo)
    options = dict(model=tiny_engine.model_id, caption=False, quality=3, lossless=False, append=False,
                   append_images=[], save_all=False, xmp=b"<x/>")
    for save in _every_front_end(image, **options).values():
        save()
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)], [str(w.message) for w in recwarn]
