"""Pillow plugin for .selic files, in the shape of Pillow's own AvifImagePlugin.

`_accept` matches the magic bytes, so no other format ever reaches this decoder. `Image.open`
reads the header and the small metadata chunks only (seeking over the coded streams); `load()`
decodes through `selic_engine.decode`; `_save` builds the whole file in memory before writing
a byte, then writes it whole or not at all. torch is imported on the first load() or save(),
never by opening or registering.
"""

from __future__ import annotations

import os
from typing import IO, Any

from PIL import Image, ImageFile

from selic_engine import decoding
from selic_engine.atomic import write_atomic, write_whole
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
from selic_engine.saving import encode_with_options

FORMAT = "SELIC"
MIME = "image/x-selic"
EXTENSIONS = [".selic"]

#: Device used by load(); Image.open takes no decoder options (as AvifImagePlugin's module settings).
#: None: $SELIC_DEVICE, else CUDA when present, else CPU.
DECODE_DEVICE: str | None = None



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
        if self.fp is None:  # close(), or the end of Image.open's with block, before the pixels were loaded
            raise ValueError("Operation on closed image")  # Pillow's error for its own formats (PNG's load)
        self.fp.seek(0)
        return self.fp.read()

    def load(self) -> Image.core.PixelAccess | None:
        if self.tile:
            data = self._read_all()
            try:  # decode checks the file and Pillow's MAX_IMAGE_PIXELS before it imports torch
                decoded = decoding.decode(data, device=DECODE_DEVICE)
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


def _discard_if_empty(fp: IO[bytes], filename: str | bytes) -> None:
    """Remove the file being saved to if nothing is in it: Image.save cleans up after an Exception only,
    so without this Ctrl-C would leave the emptied file it opened."""
    try:
        opened = os.fstat(fp.fileno())
        if filename and opened.st_size == 0 and os.path.samestat(opened, os.stat(filename)):
            os.remove(filename)
    except (OSError, AttributeError):  # not a real file (BytesIO), or already gone
        pass


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    """Encode completely, then write the bytes whole or not at all (a full disk cuts off what was written).

    Pillow has already opened, and so emptied, the target. After an error it removes a file it created and
    leaves an existing one empty; after Ctrl-C, which Pillow does not clean up after, this removes the emptied
    file, new or existing alike, since nothing tells them apart here. `save` keeps an existing file instead.
    """
    try:
        write_whole(fp, encode_with_options(im, im.encoderinfo))  # the save policy: selic_engine.saving
    except (KeyboardInterrupt, SystemExit):
        _discard_if_empty(fp, filename)
        raise


def _save_all(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    """Image.save with save_all=True (or append_images): Pillow takes save_all out of the options, so it goes
    back in for the save policy to refuse, in its words (without this handler Pillow raised KeyError)."""
    im.encoderinfo = {**im.encoderinfo, "save_all": True}  # Image.save restores encoderinfo afterwards
    _save(im, fp, filename)


def save(im: Image.Image, path: str | os.PathLike, **options: Any) -> None:
    """Image.save(path, format="SELIC", **options), but atomic: the file is written to a temporary
    beside `path` and renamed over it, so a bad option, an error or Ctrl-C leaves an existing file as it
    was (Image.save itself empties the target before any plugin code runs)."""
    data = encode_with_options(im, options)
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def register() -> None:
    """Register open, save (and save_all, to refuse it), the .selic extension and the MIME type with Pillow
    (idempotent)."""
    Image.register_open(FORMAT, SelicImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_save_all(FORMAT, _save_all)
    Image.register_extensions(FORMAT, EXTENSIONS)
    Image.register_mime(FORMAT, MIME)


register()
