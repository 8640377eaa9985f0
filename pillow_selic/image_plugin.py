"""Pillow plugin for .selic files, in the shape of Pillow's own AvifImagePlugin.

`_accept` matches the magic bytes, so no other format ever reaches this decoder. `Image.open`
reads the header and the small metadata chunks only (seeking over the coded streams); `load()`
decodes through `selic_engine.decode`; `_save` builds the whole file in memory before writing
a byte. torch is imported on the first load() or save(), never by opening or registering.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from typing import IO, Any

from PIL import Image, ImageFile

from selic_engine.config import DEFAULT_QUALITY, QUALITY_MAX, QUALITY_MIN
from selic_engine.container import (
    HEADER_SIZE,
    SelicFormatError,
    UnsupportedVersionError,
    accept,
    info,
    read_header,
    scan_metadata,
    unpack,
)

FORMAT = "SELIC"
MIME = "image/x-selic"
EXTENSIONS = [".selic"]

#: Device used by load(); Image.open takes no decoder options (as AvifImagePlugin's module settings).
#: None: $SELIC_DEVICE, else CUDA when present, else CPU.
DECODE_DEVICE: str | None = None

#: Save options passed straight to selic_engine.encode.
ENCODE_OPTIONS = ("caption", "store_caption", "model", "device")
#: Metadata kept on save from the options, else from the image's info, as Pillow's other plugins do.
KEPT_METADATA = ("icc_profile", "exif", "xmp")

_ICC_SPACE = {"RGB": b"RGB ", "RGBA": b"RGB ", "L": b"GRAY", "LA": b"GRAY"}  # ICC header bytes 16..20


def _accept(prefix: bytes) -> bool | str:
    """The magic bytes; a string (Pillow turns it into a warning) for a file from a newer selic."""
    if not accept(prefix):
        return False
    try:
        read_header(prefix)
    except UnsupportedVersionError as exc:
        return f"image file could not be identified: {exc}"
    except SelicFormatError:
        pass  # a 16-byte prefix is too short for the header: _open reads all of it
    return True


class SelicImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "SELIC learned image codec"

    def _open(self) -> None:
        assert self.fp is not None
        self.fp.seek(0)
        try:
            header = read_header(self.fp.read(HEADER_SIZE))
        except SelicFormatError as exc:  # Pillow moves on to the next format on SyntaxError
            raise SyntaxError(str(exc)) from exc
        self._size = header.size
        self._mode = header.mode
        self.info.update(info(header, scan_metadata(self.fp)))
        # a marker tile, as in AvifImageFile: Pillow sees an image not loaded yet; load() makes the pixels
        self.tile = [ImageFile._Tile("raw", (0, 0, *self.size), 0, self.mode)]

    def _read_all(self) -> bytes:
        assert self.fp is not None
        self.fp.seek(0)
        return self.fp.read()

    def load(self) -> Image.core.PixelAccess | None:
        if self.tile:
            from selic_engine import engine

            try:  # engine.decode applies Pillow's MAX_IMAGE_PIXELS check before it decodes
                decoded = engine.decode(self._read_all(), device=DECODE_DEVICE)
            except Image.DecompressionBombError:
                raise  # Pillow's own error type for this, even though selic's subclass is also a ValueError
            except ValueError as exc:  # SelicFormatError, DesyncError, UnknownModelError, damaged alpha
                raise OSError(f"cannot decode .selic file: {exc}") from exc
            if (decoded.mode, decoded.size) != (self.mode, self.size):
                raise OSError(f"decoded {decoded.mode} {decoded.size} image does not match its header")
            self.im = decoded.im
            self.readonly = 0
            self.tile = []
            if self._exclusive_fp and self._close_exclusive_fp_after_loading:
                self.fp.close()
            self.fp = None
        return Image.Image.load(self)

    def load_seek(self, pos: int) -> None:
        """Never called: its presence tells ImageFile.Parser and mmap that this format loads itself (as Avif)."""

    def verify(self) -> None:
        """Check structure and CRC without decoding (Pillow's verify convention: SyntaxError if broken)."""
        data = self._read_all()
        super().verify()  # closes the file, as Pillow's verify does, whatever the outcome
        try:
            unpack(data)
        except SelicFormatError as exc:
            raise SyntaxError(f"broken .selic file: {exc}") from exc


def _quality(value: Any) -> float:
    """Validated before any model loads; Pillow habits (quality=90, "keep") get the 1..8 range back."""
    from selic_engine.engine import check_quality

    if value is None:
        return DEFAULT_QUALITY
    if not isinstance(value, numbers.Real):
        raise ValueError(f"quality must be a number from {QUALITY_MIN:g} to {QUALITY_MAX:g}, got {value!r}")
    return check_quality(value)


def _metadata(source: Image.Image, coded_mode: str, options: Mapping[str, Any]) -> dict[str, bytes]:
    """icc_profile, exif and xmp from the options, else from the image's info.

    An inherited ICC profile whose colour space no longer matches the stored pixels (a CMYK profile
    after CMYK -> RGB) is dropped; one passed explicitly is kept as given.
    """
    meta = {}
    for key in KEPT_METADATA:
        value = options[key] if key in options else source.info.get(key)
        if isinstance(value, Image.Exif):
            value = value.tobytes()
        elif isinstance(value, str):
            value = value.encode("utf-8")
        if value:
            meta[key] = bytes(value)
    icc = meta.get("icc_profile")
    if icc and "icc_profile" not in options and icc[16:20] != _ICC_SPACE[coded_mode]:
        del meta["icc_profile"]
    return meta


def encode_with_options(im: Image.Image, options: Mapping[str, Any]) -> bytes:
    """Encode with Pillow-style save options (shared by `_save` and the imageio plugin).

    quality (1..8, default 4), max_bytes / bpp (size targets; quality becomes the upper bound),
    caption, store_caption, model, device, icc_profile, exif, xmp. A caption stored in a .selic
    file the image came from is reused and kept, like the other metadata.
    """
    from selic_engine import engine, imaging

    quality = _quality(options.get("quality"))
    image = imaging.normalize_mode(im)  # the engine's mode policy; refuses I;16, I, F before any model loads
    kwargs = {key: options[key] for key in ENCODE_OPTIONS if key in options}
    if options.get("caption") is None and isinstance(im.info.get("caption"), str):
        kwargs["caption"] = im.info["caption"]
        kwargs.setdefault("store_caption", True)
    kwargs["metadata"] = _metadata(im, image.mode, options)
    if options.get("max_bytes") is None and options.get("bpp") is None:
        return engine.encode(image, quality, **kwargs)
    from selic_engine.rate_control import encode_to_size

    max_quality = QUALITY_MAX if options.get("quality") is None else quality
    return encode_to_size(image, options.get("max_bytes"), options.get("bpp"), max_quality=max_quality, **kwargs)


def _discard_if_empty(fp: IO[bytes], filename: str | bytes) -> None:
    """Remove the file being saved to if nothing is in it yet: Image.save cleans up after an Exception
    only, so without this Ctrl-C while encoding would leave the empty file it opened."""
    try:
        opened = os.fstat(fp.fileno())
        if filename and opened.st_size == 0 and os.path.samestat(opened, os.stat(filename)):
            os.remove(filename)
    except (OSError, AttributeError):  # not a real file (BytesIO), or already gone
        pass


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    """Encode completely before writing a byte. Pillow has already opened (and so emptied) the target:
    on an error it removes a file it created but leaves one that existed empty; `save` avoids both."""
    try:
        data = encode_with_options(im, im.encoderinfo)
    except (KeyboardInterrupt, SystemExit):  # Image.save cleans up after an Exception, not after these
        _discard_if_empty(fp, filename)
        raise
    fp.write(data)


def save(im: Image.Image, path: str | os.PathLike, **options: Any) -> None:
    """Image.save(path, format="SELIC", **options), but atomic: the file is written to a temporary
    beside `path` and renamed over it, so a bad option, an error or Ctrl-C leaves an existing file as it
    was (Image.save itself empties the target before any plugin code runs)."""
    from selic_engine.atomic import write_atomic

    data = encode_with_options(im, options)
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def register() -> None:
    """Register open, save, the .selic extension and the MIME type with Pillow (idempotent)."""
    Image.register_open(FORMAT, SelicImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extensions(FORMAT, EXTENSIONS)
    Image.register_mime(FORMAT, MIME)


register()
