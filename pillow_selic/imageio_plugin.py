"""imageio v3 plugin for .selic, built on the Pillow plugin so headers, metadata and options share one path.

Registered as "selic" in `imageio.config.known_plugins` and first in the priority list of the
`.selic` extension, so imageio picks it from the extension without trying every plugin; bytes
and file objects are recognised by their magic bytes (`_accept`). Also serves imageio.v2.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import EllipsisType
from typing import Any

import numpy as np
from imageio.config import known_plugins
from imageio.config.extensions import FileExtension, extension_list, known_extensions
from imageio.config.plugins import PluginConfig
from imageio.core.request import URI_BYTES, URI_FILENAME, InitializationError, IOMode, Request
from imageio.core.v3_plugin_api import ImageProperties, PluginV3
from PIL import Image

from selic_engine.atomic import write_atomic, write_whole
from selic_engine.saving import encode_with_options

from .image_plugin import EXTENSIONS, SelicImageFile, _accept

PLUGIN_NAME = "selic"
Index = int | EllipsisType | None


def _source(request: Request) -> str:
    return "<bytes>" if request._uri_type == URI_BYTES else str(request.raw_uri)


def _check_index(index: Index) -> None:
    if not (index is None or index is Ellipsis or index == 0):
        raise ValueError(f"a .selic file holds one image; index {index!r} is out of range")


def _frames(ndimage: Any, is_batch: bool | None) -> list[Any]:
    """Split a write argument into images, with the channel-last guess of imageio's pillow plugin."""
    if isinstance(ndimage, Image.Image):
        return [ndimage]
    if isinstance(ndimage, list):
        return ndimage
    array = np.asarray(ndimage)
    if is_batch is None:
        is_batch = array.ndim == 4 or (array.ndim == 3 and array.shape[-1] > 4)
    return list(array) if is_batch else [array]


class SelicPlugin(PluginV3):
    """Read: `index` 0, None or ... (adds a batch axis); `mode` converts like imageio's pillow plugin.
    Write: one uint8 image (H, W), (H, W, 1..4) or PIL image, with the Pillow save options
    (quality, max_bytes, bpp, caption, store_caption, model, device, icc_profile, exif, xmp).
    """

    def __init__(self, request: Request) -> None:
        self._image: SelicImageFile | None = None
        self._owns_request = False  # imageio hands the request to the next plugin if this one declines
        self._written = False
        super().__init__(request)
        if request.mode.io_mode == IOMode.read:
            if not _accept(request.firstbytes):
                raise InitializationError(f"{_source(request)} is not a .selic file")
            try:
                self._image = SelicImageFile(request.get_file())  # header and metadata only
            except SyntaxError as exc:
                request.finish()
                raise OSError(f"{_source(request)}: cannot read this .selic file: {exc}") from exc
        elif request.extension not in (None, *EXTENSIONS):
            raise InitializationError(
                f"the selic plugin writes .selic files, not {request.extension}; pass extension='.selic' to force it"
            )
        self._owns_request = True

    def _opened(self) -> SelicImageFile:
        if self._image is None:
            raise ValueError("this plugin was opened for writing")
        return self._image

    def read(self, *, index: Index = None, mode: str | None = None) -> np.ndarray:
        _check_index(index)
        image: Image.Image = self._opened()
        if mode is not None:
            image = image.convert(mode)
        array = np.array(image)  # a writable copy
        return array[None] if index is Ellipsis else array

    def iter(self, *, mode: str | None = None) -> Iterator[np.ndarray]:
        yield self.read(index=0, mode=mode)

    def properties(self, index: Index = None) -> ImageProperties:
        """From the header: no decoding."""
        _check_index(index)
        image = self._opened()
        bands = Image.getmodebands(image.mode)
        shape: tuple[int, ...] = (image.height, image.width) + ((bands,) if bands > 1 else ())
        batch = index is Ellipsis
        return ImageProperties(
            shape=(1, *shape) if batch else shape, dtype=np.dtype(np.uint8), n_images=1 if batch else None,
            is_batch=batch,
        )

    def metadata(self, index: Index = None, exclude_applied: bool = True) -> dict[str, Any]:
        """The Pillow info (quality, model, icc_profile, exif, xmp, caption) plus mode and shape,
        where shape is (width, height) as imageio's pillow plugin reports it. No decoding."""
        _check_index(index)
        image = self._opened()
        return {**image.info, "mode": image.mode, "shape": image.size}

    def write(self, ndimage: Any, *, is_batch: bool | None = None, **kwargs: Any) -> bytes | None:
        """Encode fully, then write whole or not at all: a file path through a temporary renamed over it (an
        error, a full disk or Ctrl-C leaves no file, or the old one as it was); a caller's file object cut back
        to where it was on a failure. Returns the bytes for '<bytes>'."""
        if self._written:
            raise ValueError("a .selic file holds one image; open a new file for the next one")
        frames = _frames(ndimage, is_batch)
        if len(frames) != 1:
            raise ValueError(f"a .selic file holds one image, got a batch of {len(frames)}")
        data = encode_with_options(frames[0], kwargs)
        if self.request._uri_type == URI_FILENAME:
            write_atomic(self.request.filename, lambda tmp: tmp.write_bytes(data))
        else:  # '<bytes>' and zip members: a BytesIO that imageio passes on; or the caller's file object
            write_whole(self.request.get_file(), data)
        self._written = True
        return data if self.request._uri_type == URI_BYTES else None

    def close(self) -> None:
        if self._image is not None:
            self._image.fp = None  # the request owns the file (and must not close a caller's file object)
            self._image.close()
            self._image = None
        if self._owns_request:
            self._owns_request = False
            self.request.finish()


def register() -> None:
    """Add the "selic" plugin and put it first for .selic files (idempotent)."""
    known_plugins[PLUGIN_NAME] = PluginConfig(name=PLUGIN_NAME, class_name="SelicPlugin", module_name=__name__)
    for ext in EXTENSIONS:
        entries = known_extensions.setdefault(ext, [])
        if not entries:
            entry = FileExtension(
                name="SELIC", extension=ext, priority=[], description="SELIC learned image codec",
            )
            entries.append(entry)
            extension_list.append(entry)
        for entry in entries:
            for priority in (entry.priority, entry.default_priority):
                if PLUGIN_NAME in priority:
                    priority.remove(PLUGIN_NAME)
                priority.insert(0, PLUGIN_NAME)
