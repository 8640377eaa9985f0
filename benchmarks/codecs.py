"""The codecs compared on Kodak: classic encoders through Pillow (and plugins), and selic itself.

Each codec records its library version and fixed settings, and sweeps one setting (quality,
or target bpp for JPEG 2000) widely enough to span about 0.1-2 bpp on Kodak. A codec whose
library or plugin is missing is reported as skipped, with the reason, instead of failing the run.
"""

from __future__ import annotations

import importlib.metadata
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL
from PIL import Image, features

#: encode(image, setting, caption) -> the whole file's bytes; only selic looks at the caption.
EncodeFn = Callable[[Image.Image, float, "str | None"], bytes]


class CodecUnavailableError(RuntimeError):
    """The library or plugin a codec needs is not installed (the message says which)."""


@dataclass
class Codec:
    name: str  # registry key, used on the command line and in results
    label: str  # legend text
    setting: str  # what the sweep varies
    settings: tuple[float, ...]
    quick_settings: tuple[float, ...]
    encode: EncodeFn
    decode: Callable[[bytes], Image.Image]
    library: str  # library and version actually used
    params: dict[str, Any] = field(default_factory=dict)  # fixed encoder settings

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "library": self.library, "setting": self.setting,
                "settings": list(self.settings), "params": self.params}


def pillow_decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def pillow_encoder(fmt: str, params: dict[str, Any], setting_to_params: Callable[[float], dict[str, Any]]) -> EncodeFn:
    """An encoder saving through Pillow with fixed params plus the swept setting."""

    def encode(image: Image.Image, setting: float, caption: str | None = None) -> bytes:
        buf = io.BytesIO()
        image.save(buf, fmt, **params, **setting_to_params(setting))
        return buf.getvalue()

    return encode


def quality_param(setting: float) -> dict[str, Any]:
    return {"quality": int(setting)}


def _pillow_codec(name: str, label: str, fmt: str, library: str, params: dict[str, Any], settings: tuple[float, ...],
                  setting: str = "quality", setting_to_params: Callable[[float], dict[str, Any]] = quality_param,
                  ) -> Codec:
    quick = settings[:: max(1, len(settings) // 4)]
    return Codec(name, label, setting, settings, quick, pillow_encoder(fmt, params, setting_to_params), pillow_decode,
                 library, params)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        raise CodecUnavailableError(f"Python package {dist!r} is not installed (pip install {dist})") from None


def _check_feature(feature: str) -> str:
    if not features.check(feature):
        raise CodecUnavailableError(f"this Pillow {PIL.__version__} was built without {feature}")
    return str(features.version(feature))


def _jpeg_library() -> str:
    if features.check("libjpeg_turbo"):
        return f"libjpeg-turbo {features.version('libjpeg_turbo')} (Pillow {PIL.__version__})"
    return f"libjpeg {_check_feature('jpg')} (Pillow {PIL.__version__})"


JPEG_QUALITIES = (2, 5, 10, 20, 30, 50, 70, 85, 92)


def jpeg(subsampling: str) -> Codec:
    code = {"4:4:4": 0, "4:2:0": 2}[subsampling]
    return _pillow_codec(f"jpeg-{subsampling.replace(':', '')}", f"JPEG {subsampling}", "JPEG", _jpeg_library(),
                         {"subsampling": code, "optimize": True}, JPEG_QUALITIES)


def webp() -> Codec:
    library = f"libwebp {_check_feature('webp')} (Pillow {PIL.__version__})"
    return _pillow_codec("webp", "WebP", "WEBP", library, {"method": 6}, (0, 5, 15, 30, 50, 70, 80, 90))


def _avif_library() -> str:
    if features.check("avif"):
        from PIL import _avif

        return f"libavif {features.version('avif')} [{_avif.codec_versions()}] (Pillow {PIL.__version__} built-in)"
    try:
        import pillow_avif  # noqa: F401  (registers the AVIF plugin)
    except ImportError:
        raise CodecUnavailableError("Pillow has no built-in AVIF and pillow-avif-plugin is not installed") from None
    return f"pillow-avif-plugin {_version('pillow-avif-plugin')}"


def avif(subsampling: str) -> Codec:
    params = {"subsampling": subsampling, "speed": 6, "max_threads": 1}
    return _pillow_codec(f"avif-{subsampling.replace(':', '')}", f"AVIF {subsampling}", "AVIF", _avif_library(),
                         params, (2, 10, 20, 30, 40, 50, 60, 70, 80))


def jpeg_xl() -> Codec:
    try:
        import pillow_jxl  # noqa: F401  (registers the JXL plugin)
    except ImportError:
        raise CodecUnavailableError("pillow-jxl-plugin is not installed (pip install pillow-jxl-plugin)") from None
    library = f"pillow-jxl-plugin {_version('pillow-jxl-plugin')} (libjxl bundled via jpegxl-rs)"
    return _pillow_codec("jpeg-xl", "JPEG XL", "JXL", library, {"effort": 7, "num_threads": 1},
                         (5, 15, 30, 45, 60, 70, 80, 88, 93))


def heif(chroma: str = "420") -> Codec:
    try:
        import pillow_heif
    except ImportError:
        raise CodecUnavailableError("pillow-heif is not installed (pip install pillow-heif)") from None
    info = pillow_heif.libheif_info()
    if not info.get("HEIF"):
        raise CodecUnavailableError(f"libheif {info.get('libheif')} in pillow-heif has no HEVC encoder")
    pillow_heif.register_heif_opener()
    library = f"pillow-heif {pillow_heif.__version__}, libheif {info['libheif']}, {info['HEIF']}"
    params = {"chroma": chroma, "x265 preset": "libheif default"}
    return Codec(f"heif-{chroma}", f"HEIF (x265) {chroma[0]}:{chroma[1]}:{chroma[2]}", "quality",
                 (0, 5, 10, 20, 30, 40, 50, 60), (0, 20, 40, 60),
                 pillow_encoder("HEIF", {"chroma": chroma}, quality_param), pillow_decode, library, params)


def jpeg2000() -> Codec:
    library = f"OpenJPEG {_check_feature('jpg_2000')} (Pillow {PIL.__version__})"
    params = {"irreversible": True, "mct": 1, "quality_mode": "rates", "no_jp2": True}

    def rate(target_bpp: float) -> dict[str, Any]:
        return {"quality_layers": [24.0 / target_bpp]}  # compression ratio of 24-bit RGB

    return _pillow_codec("jpeg2000", "JPEG 2000", "JPEG2000", library, params,
                         (0.1, 0.15, 0.25, 0.4, 0.6, 0.9, 1.3, 2.0), setting="target bpp", setting_to_params=rate)


SELIC_QUALITIES = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)


def selic(model: str, semantic: bool = True) -> Codec:
    """selic through its public API; semantic=False encodes with caption=False (no text branch)."""
    import selic_engine as se

    try:
        engine = se.get_engine(model)
    except se.WeightsNotFoundError as exc:
        raise CodecUnavailableError(str(exc)) from None

    def encode(image: Image.Image, quality: float, caption: str | None = None) -> bytes:
        return se.encode(image, quality, caption=caption if semantic else False, model=model)

    path = str(model) if str(model).endswith(".safetensors") else f"preset {model!r}"
    library = (f"selic {se.__version__} model {engine.model_id} ({path}, config {engine.config.name}, "
               f"fusion {engine.config.fusion}) on {engine.device}")
    name, label = ("selic", "selic (captions)") if semantic else ("selic-nocaption", "selic (caption=False)")
    params = {"caption": "kodak/captions.tsv" if semantic else False, "model_id": engine.model_id}
    return Codec(name, label, "quality", SELIC_QUALITIES, (1.0, 3.0, 5.0, 8.0), encode, se.decode, library, params)


CLASSIC: dict[str, Callable[[], Codec]] = {
    "jpeg-420": lambda: jpeg("4:2:0"),
    "jpeg-444": lambda: jpeg("4:4:4"),
    "webp": webp,
    "avif-444": lambda: avif("4:4:4"),
    "avif-420": lambda: avif("4:2:0"),
    "jpeg-xl": jpeg_xl,
    "heif-420": lambda: heif("420"),
    "jpeg2000": jpeg2000,
}
SELIC_NAMES = ("selic", "selic-nocaption")
ALL_NAMES = (*SELIC_NAMES, *CLASSIC)


def _probe(codec: Codec) -> None:
    """Encode and decode a small image once, so a broken plugin is caught before the sweep."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    out = codec.decode(codec.encode(image, codec.settings[len(codec.settings) // 2], "a test pattern"))
    if out.size != image.size:
        raise CodecUnavailableError(f"{codec.name}: decoded size {out.size} != {image.size}")


def build(names: list[str], model: str) -> tuple[list[Codec], dict[str, str]]:
    """The requested codecs that work here, and {name: reason} for those skipped."""
    codecs, skipped = [], {}
    for name in names:
        try:
            if name in SELIC_NAMES:
                codec = selic(model, semantic=name == "selic")
            elif name in CLASSIC:
                codec = CLASSIC[name]()
            else:
                raise ValueError(f"unknown codec {name!r}; choose from {', '.join(ALL_NAMES)}")
            if name not in SELIC_NAMES:  # selic is exercised by its own tests; probing it would load MiniLM early
                _probe(codec)
            codecs.append(codec)
        except (CodecUnavailableError, OSError, RuntimeError) as exc:
            skipped[name] = str(exc)
    return codecs, skipped

