"""The built-in captioner (BLIP) and text embedder (MiniLM, or BERT as in the paper), registered to run last.

Both load lazily on first use and only from a local path or the Hugging Face cache.
Settings, read at each call: $SELIC_TEXT_EMBEDDER ("minilm" | "bert" | a local model folder or
cached model id) and $SELIC_CAPTIONER (a BLIP model id or folder; "none" disables captioning).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .embedders import MINILM, TransformersTextEmbedder, embedder_from_setting
from .hookspecs import hookimpl

DEFAULT_BLIP = "Salesforce/blip-image-captioning-base"
NO_CAPTIONER = "none"

logger = logging.getLogger("selic")
T = TypeVar("T")


class BlipCaptioner:
    """BLIP image captioning through transformers; answers None when the model is not available locally."""

    def __init__(self, source: str, device: str = "cpu", max_new_tokens: int = 30) -> None:
        self.source = source
        self.device = device
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None
        self.unavailable: str | None = None  # why loading failed; then it is not retried

    def _load(self) -> tuple[Any, Any] | None:
        with self._lock:
            if self._loaded is None and self.unavailable is None:
                from transformers import BlipForConditionalGeneration, BlipProcessor

                try:
                    processor = BlipProcessor.from_pretrained(self.source, local_files_only=True)
                    model = BlipForConditionalGeneration.from_pretrained(self.source, local_files_only=True)
                    self._loaded = (processor, model.to(self.device).eval())
                except (OSError, ValueError) as exc:  # ValueError: not even a valid hub id (HFValidationError)
                    self.unavailable = f"BLIP captioner {self.source!r} is not available locally: {exc}"
                    if self.source != DEFAULT_BLIP:  # configured on purpose: say why it is not used
                        logger.warning("selic: %s", self.unavailable)
            return self._loaded

    def caption(self, image: Any) -> str | None:
        loaded = self._load()
        if loaded is None:
            return None
        import torch

        processor, model = loaded
        with torch.no_grad():
            inputs = processor(images=image.convert("RGB"), return_tensors="pt").to(self.device)
            ids = model.generate(**inputs, max_new_tokens=self.max_new_tokens)
        text = processor.decode(ids[0], skip_special_tokens=True).strip()
        return text or None


class Defaults:
    """Registered under the name "selic-defaults" with trylast: any other plugin is asked first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, Any]] = {}  # slot -> (setting, object built from it)

    def _for_setting(self, slot: str, setting: str, build: Callable[[str], T]) -> T:
        """The object for the current setting, rebuilt only when the setting changes (building loads nothing)."""
        with self._lock:
            cached = self._cache.get(slot)
            if cached is None or cached[0] != setting:
                cached = self._cache[slot] = (setting, build(setting))
            return cached[1]

    def embedder(self) -> TransformersTextEmbedder:
        return self._for_setting("embedder", os.environ.get("SELIC_TEXT_EMBEDDER", MINILM), embedder_from_setting)

    def captioner(self) -> BlipCaptioner | None:
        source = os.environ.get("SELIC_CAPTIONER", DEFAULT_BLIP)
        return None if source == NO_CAPTIONER else self._for_setting("captioner", source, BlipCaptioner)

    @hookimpl(trylast=True)
    def selic_caption(self, image: Any) -> str | None:
        captioner = self.captioner()
        return captioner.caption(image) if captioner else None

    @hookimpl(trylast=True)
    def selic_embed_text(self, texts: list[str]) -> Any:
        return self.embedder().embed(texts)

    @hookimpl(trylast=True)
    def selic_text_embedder_info(self) -> dict[str, Any]:
        e = self.embedder()
        return {"name": e.name, "dim": e.dim}
