"""The shipped weights still reconstruct as measured: real photos through the public API, bpp and PSNR pinned.

Every other round trip uses a random tiny model, so only this test notices when the shipped
weights, or the code between them and the file, stop coding as well as they did. The model
card's Kodak table is a 24-image mean; a test of a few images cannot match it, so the expected
values are per image, measured once with `measure` below:

    nice -n 19 env OMP_NUM_THREADS=1 python -c "from tests.test_shipped_model import measure; measure()"

They were measured on 2026-12-05 with the weights file whose sha256 begins MEASURED_WITH (decoder v1,
model id 206cfae08713c396, with the encoder adapted for 10,500 steps against it: the model card's), at
precision="float32" (bfloat16 is chosen only on some CPUs; float32 holds on
every CPU kind up to rare roundings), without a caption, on an AMD EPYC with two threads (a
precision's results do not depend on the thread count). Re-measure them whenever the shipped
weights change: the check of the file's sha256 below fails first, on purpose (an encoder-only update keeps
the model id, so the id alone would not notice).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import selic_engine as se
from benchmarks.metrics import psnr_rgb
from selic_engine.cli import DEMO_PHOTO
from selic_engine.engine import DEFAULT_MODEL
from selic_engine.weights import resolve_weights, sha256_file

from .conftest import KODAK, kodak_or_skip

MEASURED_WITH = "8c781944ab10c81d"  # sha256 prefix of the shipped weights file the table below was measured with
QUALITIES = (1, 8)
KODAK_IMAGES = ("kodim01", "kodim12", "kodim23")  # centre 256x256 crops: seconds, not minutes
BPP_TOLERANCE = 0.01  # relative
PSNR_TOLERANCE = 0.05  # dB

#: (image, quality) -> (bpp, RGB PSNR in dB), from `measure`.
EXPECTED: dict[tuple[str, int], tuple[float, float]] = {
    ("astronaut", 1): (0.2023, 29.420),
    ("astronaut", 8): (0.6314, 32.786),
    ("kodim01", 1): (0.3395, 25.260),
    ("kodim01", 8): (0.9122, 27.383),
    ("kodim12", 1): (0.1974, 28.931),
    ("kodim12", 8): (0.7413, 32.897),
    ("kodim23", 1): (0.1647, 30.679),
    ("kodim23", 8): (0.5485, 35.082),
}


def load(name: str, kodak: Path = KODAK) -> Image.Image:
    """The demo photo (512x512), or the centre 256x256 of a Kodak image."""
    if name == "astronaut":
        return Image.open(DEMO_PHOTO).convert("RGB")
    image = Image.open(kodak / f"{name}.png").convert("RGB")
    left, top = (image.width - 256) // 2, (image.height - 256) // 2
    return image.crop((left, top, left + 256, top + 256))


def code(image: Image.Image, quality: int) -> tuple[float, float]:
    """(bpp of the real file, RGB PSNR of its decoding) with the shipped weights in float32."""
    data = se.encode(image, quality, caption=False, model=DEFAULT_MODEL, precision="float32")
    decoded = se.decode(data, precision="float32")
    return 8 * len(data) / (image.width * image.height), psnr_rgb(np.asarray(image), np.asarray(decoded))


def measure() -> None:
    """Print EXPECTED afresh (see the module docstring)."""
    print(f"# model id {se.get_engine(DEFAULT_MODEL).model_id}")
    for name in ("astronaut", *KODAK_IMAGES):
        for quality in QUALITIES:
            bpp, psnr = code(load(name), quality)
            print(f'    ("{name}", {quality}): ({bpp:.4f}, {psnr:.3f}),')


def check(name: str, image: Image.Image) -> None:
    for quality in QUALITIES:
        bpp, psnr = code(image, quality)
        want_bpp, want_psnr = EXPECTED[name, quality]
        assert bpp == pytest.approx(want_bpp, rel=BPP_TOLERANCE), (name, quality, bpp, psnr)
        assert psnr == pytest.approx(want_psnr, abs=PSNR_TOLERANCE), (name, quality, bpp, psnr)


def test_the_expected_values_belong_to_the_shipped_weights():
    """A new export changes the file: then EXPECTED (and the model card) must be measured again."""
    sha = sha256_file(resolve_weights(DEFAULT_MODEL))
    assert sha.startswith(MEASURED_WITH), f"shipped weights changed ({sha[:16]}): re-measure EXPECTED with measure()"
    card = (Path(se.__file__).parent / "weights" / "README.md").read_text(encoding="utf-8")
    assert f"`{se.get_engine(DEFAULT_MODEL).model_id}`" in card


def test_demo_photo_codes_as_measured():
    check("astronaut", load("astronaut"))


@pytest.mark.data
@pytest.mark.parametrize("name", KODAK_IMAGES)
def test_kodak_crop_codes_as_measured(name):
    check(name, load(name, kodak_or_skip()))
