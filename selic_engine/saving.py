"""The save policy: options in, .selic bytes out.

`selic_engine.encode`, Pillow's `Image.save`, imageio's `imwrite` and the `selic compress` command
all come through `encode` here, so every option is checked once (`SaveOptions`), before any model
loads, and every caller gets the same defaults, metadata inheritance, ICC handling, caption reuse
and size targets. Importing this module does not import torch.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from PIL import Image

from .callers import warn_at_caller
from .config import DEFAULT_MODEL, DEFAULT_QUALITY, QUALITY_MAX, QUALITY_MIN, Precision
from .container import IMAGE_METADATA, quantize_quality

_ICC_SPACE = {"RGB": b"RGB ", "RGBA": b"RGB ", "L": b"GRAY", "LA": b"GRAY"}  # ICC header bytes 16..20
#: Keys that Image.save itself reads for every format (several frames, appending to the file): no mistake when
#: off, refused when on, since a .selic file holds one image.
PILLOW_FRAME_OPTIONS = ("save_all", "append_images", "append")


def check_quality(quality: Any) -> float:
    """A number from 1 to 8 (fractions allowed), as stored (thousandths). Strings and bools are refused:
    Pillow habits (quality=90, "keep") get the range back."""
    if isinstance(quality, bool) or not isinstance(quality, numbers.Real) or not \
            QUALITY_MIN <= quality <= QUALITY_MAX:  # the comparison also refuses NaN
        raise ValueError(
            f"quality must be a number from {QUALITY_MIN:g} to {QUALITY_MAX:g} (fractions allowed), got {quality!r}")
    return quantize_quality(quality)


def _positive(name: str, value: Any, kind: type) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return kind(value)


def _metadata_bytes(key: str, value: Any) -> bytes | None:
    """icc_profile / exif / xmp as Pillow keeps them (bytes, str, Image.Exif) -> bytes; empty -> None."""
    if isinstance(value, Image.Exif):
        value = value.tobytes()
    elif isinstance(value, str):
        value = value.encode("utf-8")
    if value is not None and not isinstance(value, bytes | bytearray | memoryview):
        raise ValueError(f"{key} must be bytes, got {type(value).__name__}")
    return bytes(value) if value else None


@dataclass(frozen=True)
class SaveOptions:
    """Everything a save can be told, checked on construction.

    quality: 1..8 (default 4); with a size target (max_bytes and/or bpp) it is the upper bound, else 8.
    caption: text, None (the image's own caption, else the captioner), or False (no semantic branch).
    store_caption: keep the caption in the file; None keeps it only when it came from a .selic file.
    tile: g_a runs in overlapping square tiles of this side in pixels (a positive multiple of 64; default
    tiling.DEFAULT_TILE), which bounds the memory a large image needs. The tile size is not part of the file:
    any file decodes with any tile, and results differ between tile sizes only by float rounding.
    metadata: icc_profile / exif / xmp given explicitly; the others are inherited from the image's info
    (None or b"" drops one).
    """

    quality: float | None = None
    max_bytes: int | None = None
    bpp: float | None = None
    caption: str | bool | None = None
    store_caption: bool | None = None
    model: str | os.PathLike = DEFAULT_MODEL
    device: Any = None  # str or torch.device
    precision: Precision | None = None
    tile: int | None = None
    metadata: Mapping[str, bytes | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalised values are set once, here
        if self.quality is not None:
            set_(self, "quality", check_quality(self.quality))
        set_(self, "max_bytes", _positive("max_bytes", self.max_bytes, int))
        set_(self, "bpp", _positive("bpp", self.bpp, float))
        if not (self.caption is None or self.caption is False or isinstance(self.caption, str)):
            raise ValueError(f"caption must be text, None or False, got {self.caption!r}")
        if self.store_caption not in (None, True, False):
            raise ValueError(f"store_caption must be True or False, got {self.store_caption!r}")
        if self.precision not in (None, *typing.get_args(Precision)):
            raise ValueError(f"precision must be one of {typing.get_args(Precision)}, got {self.precision!r}")
        unknown = set(self.metadata) - set(IMAGE_METADATA)
        if unknown:
            raise ValueError(f"metadata keys must be among {IMAGE_METADATA}, got {sorted(unknown)}")
        set_(self, "metadata", {k: _metadata_bytes(k, v) for k, v in self.metadata.items()})

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> SaveOptions:
        """Pillow-style save keywords (Image.save's encoderinfo, imageio's write kwargs).

        What selic cannot honour is refused (lossless=True, several frames) rather than quietly not done; an
        unknown key (qualtiy=2) is warned about at the caller's line, then ignored as Pillow's plugins do.
        """
        names = {f.name for f in fields(cls)} - {"metadata"}
        if options.get("lossless"):
            raise ValueError("lossless=True: selic is a lossy codec; save as PNG or lossless WebP to keep every "
                             "pixel, or use quality=8, selic's best")
        frames = [k for k in PILLOW_FRAME_OPTIONS if options.get(k)]
        if frames:
            raise ValueError(f"a .selic file holds one image, so {' and '.join(frames)} cannot be honoured; "
                             "save each frame to its own file")
        known = names | set(IMAGE_METADATA)
        for key in sorted(set(options) - known - {"lossless", *PILLOW_FRAME_OPTIONS}, key=str):
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            warn_at_caller(f"selic ignores the unknown save option {key!r}"
                           + (f"; did you mean {close[0]!r}?" if close else f"; it knows {', '.join(sorted(known))}"))
        return cls(**{k: v for k, v in options.items() if k in names},
                   metadata={k: options[k] for k in IMAGE_METADATA if k in options})

    @property
    def size_target(self) -> bool:
        return self.max_bytes is not None or self.bpp is not None


def _metadata(source: Image.Image, coded_mode: str, given: Mapping[str, bytes | None]) -> dict[str, bytes]:
    """The explicit metadata, else the image's own. An inherited ICC profile whose colour space no longer
    matches the stored pixels (a CMYK profile after CMYK -> RGB) is dropped; one given explicitly is kept."""
    meta = {}
    for key in IMAGE_METADATA:
        value = given[key] if key in given else _metadata_bytes(key, source.info.get(key))
        if value:
            meta[key] = value
    icc = meta.get("icc_profile")
    if icc and "icc_profile" not in given and icc[16:20] != _ICC_SPACE[coded_mode]:
        del meta["icc_profile"]
    return meta


def encode_with_options(image: Image.Image | Any, options: SaveOptions | Mapping[str, Any] | None = None) -> bytes:
    """Encode a PIL image or uint8 array with these options (a SaveOptions or Pillow-style keywords).

    Options, mode and size are checked before any model loads; a caption stored in the .selic file the
    image came from is reused and kept, like its other metadata.
    """
    from . import imaging  # torch: not before a save
    from .model.tiling import tile_size

    opts = options if isinstance(options, SaveOptions) else SaveOptions.from_mapping(options or {})
    tile_size(opts.tile)  # the tiling's rule, before any model loads
    source = imaging.as_pil(image)
    coded = imaging.normalize_mode(source)  # refuses I;16, I, F and empty images before any model loads
    caption, store = opts.caption, opts.store_caption
    if caption is None and isinstance(source.info.get("caption"), str):
        caption, store = source.info["caption"], True if store is None else store
    from .engine import get_engine

    engine = get_engine(opts.model, opts.device)
    metadata = _metadata(source, coded.mode, opts.metadata)
    if not opts.size_target:
        return engine.encode(coded, DEFAULT_QUALITY if opts.quality is None else opts.quality, caption,
                             store_caption=bool(store), metadata=metadata, precision=opts.precision, tile=opts.tile)
    from .rate_control import encode_to_size

    return encode_to_size(engine, coded, opts.max_bytes, opts.bpp, QUALITY_MAX if opts.quality is None
                          else opts.quality, caption, store_caption=bool(store), metadata=metadata,
                          precision=opts.precision, tile=opts.tile)


def encode(
    image: Image.Image | Any,
    quality: float | None = None,
    caption: str | bool | None = None,
    *,
    model: str | os.PathLike = DEFAULT_MODEL,
    device: Any = None,
    store_caption: bool | None = None,
    metadata: Mapping[str, bytes | None] | None = None,
    precision: Precision | None = None,
    max_bytes: int | None = None,
    bpp: float | None = None,
    tile: int | None = None,
) -> bytes:
    """Compress a PIL image or uint8 array to .selic bytes (the options: see SaveOptions).

    precision: the arithmetic of g_a (engine.transform_dtype); the symbols never depend on it.
    """
    return encode_with_options(image, SaveOptions(quality, max_bytes, bpp, caption, store_caption, model, device,
                                                  precision, tile, metadata or {}))
