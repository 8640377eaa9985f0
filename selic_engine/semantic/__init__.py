"""The encoder-side semantic branch: where a caption comes from and how it becomes a vector.

Only the encode path imports this package; decoding never does.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np

_warned_no_caption = False

EXIF_IMAGE_DESCRIPTION = 0x010E
_XMP_DESCRIPTION = re.compile(rb"<dc:description>.*?<rdf:li[^>]*>(.*?)</rdf:li>", re.S)


def metadata_caption(image: Any) -> str | None:
    """A caption stored in the image itself: EXIF ImageDescription, PNG Description/Title, XMP dc:description."""
    try:
        text = image.getexif().get(EXIF_IMAGE_DESCRIPTION)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not stop encoding
        text = None
    info = getattr(image, "info", {}) or {}
    text = text or info.get("Description") or info.get("Title")
    if not text and info.get("xmp"):
        xmp = info["xmp"] if isinstance(info["xmp"], bytes) else str(info["xmp"]).encode()
        m = _XMP_DESCRIPTION.search(xmp)
        text = m.group(1).decode("utf-8", "replace") if m else None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = (text or "").strip().strip("\x00")
    return text or None


def resolve_caption(image: Any, caption: str | None) -> str | None:
    """Caller's caption, else the image's metadata, else the captioner hook, else None (warned once)."""
    global _warned_no_caption
    if caption and caption.strip():
        return caption.strip()
    text = metadata_caption(image)
    if text:
        return text
    from ..plugins import get_plugin_manager

    text = get_plugin_manager().hook.selic_caption(image=image)
    if text:
        return text
    if not _warned_no_caption:
        _warned_no_caption = True
        warnings.warn(
            "selic: no caption and no captioner available; encoding without semantic guidance. Pass caption=..., "
            "put BLIP in the Hugging Face cache (Salesforce/blip-image-captioning-base), or register a "
            "selic_caption plugin.",
            stacklevel=3,
        )
    return None


def embed_texts(texts: list[str], dim: int) -> np.ndarray:
    """(len(texts), dim) float32 vectors from the first text-embedder plugin that answers."""
    from ..plugins import get_plugin_manager

    pm = get_plugin_manager()
    vectors = pm.hook.selic_embed_text(texts=list(texts))
    if vectors is None:
        raise RuntimeError("no text-embedding plugin answered")
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != len(texts):
        raise ValueError(f"text embedder returned shape {arr.shape}, expected ({len(texts)}, D)")
    if arr.shape[1] != dim:
        info = pm.hook.selic_text_embedder_info() or {}
        raise ValueError(
            f"text embedder {info.get('name', '?')!r} gives {arr.shape[1]}-d vectors but the model expects {dim}-d; "
            "use a matching embedder or train an adapter with `selic train --adapter`"
        )
    return arr
