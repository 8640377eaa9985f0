"""The built-in captioner (BLIP) and text embedder (MiniLM, or BERT as in the paper), registered to run last.

Both load lazily on first use and only from a local path or the Hugging Face cache.
Settings: $SELIC_TEXT_EMBEDDER ("minilm" | "bert" | a local model folder) and
$SELIC_CAPTIONER (a BLIP model id or folder; "none" disables captioning).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from .embedders import TransformersTextEmbedder, bert, minilm
from .hookspecs import hookimpl

DEFAULT_BLIP = "Salesforce/blip-image-captioning-base"


def embedder_from_setting(setting: str) -> TransformersTextEmbedder:
    if setting == "minilm":
        return minilm()
    if setting == "bert":
        return bert()
    if os.path.isdir(setting):
        from transformers import AutoConfig

        return TransformersTextEmbedder(setting, os.path.basename(setting.rstrip("/")),
                                        AutoConfig.from_pretrained(setting).hidden_size)
    raise ValueError(f"unknown text embedder {setting!r}: use 'minilm', 'bert' or a local model folder")


class BlipCaptioner:
    """BLIP image captioning through transformers; None when the model is not available locally."""

    def __init__(self, source: str, device: str = "cpu", max_new_tokens: int = 30) -> None:
        self.source = source
        self.device = device
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None
        self.unavailable: str | None = None

    def _load(self) -> tuple[Any, Any] | None:
        with self._lock:
            if self._loaded is None and self.unavailable is None:
                from transformers import BlipForConditionalGeneration, BlipProcessor

                try:
                    processor = BlipProcessor.from_pretrained(self.source, local_files_only=True)
                    model = BlipForConditionalGeneration.from_pretrained(self.source, local_files_only=True)
                    self._loaded = (processor, model.to(self.device).eval())
                except OSError as exc:
                    self.unavailable = f"BLIP captioner {self.source!r} is not available locally ({exc.__class__.__name__})"
            return self._loaded

    def caption(self, image: Any) -> str | None:
        import torch

        loaded = self._load()
        if loaded is None:
            return None
        processor, model = loaded
        with torch.no_grad():
            inputs = processor(images=image.convert("RGB"), return_tensors="pt").to(self.device)
            ids = model.generate(**inputs, max_new_tokens=self.max_new_tokens)
        text = processor.decode(ids[0], skip_special_tokens=True).strip()
        return text or None


class Defaults:
    """Registered under the name "selic-defaults" with trylast: any other plugin is asked first."""

    def __init__(self) -> None:
        self._embedder: TransformersTextEmbedder | None = None
        self.captioner: BlipCaptioner | None = None
        self._lock = threading.Lock()

    def embedder(self) -> TransformersTextEmbedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = embedder_from_setting(os.environ.get("SELIC_TEXT_EMBEDDER", "minilm"))
            return self._embedder

    @hookimpl(trylast=True)
    def selic_caption(self, image: Any) -> str | None:
        source = os.environ.get("SELIC_CAPTIONER", DEFAULT_BLIP)
        if source == "none":
            return None
        with self._lock:
            if self.captioner is None or self.captioner.source != source:
                self.captioner = BlipCaptioner(source)
        return self.captioner.caption(image)

    @hookimpl(trylast=True)
    def selic_embed_text(self, texts: list[str]) -> Any:
        return self.embedder().embed(texts)

    @hookimpl(trylast=True)
    def selic_text_embedder_info(self) -> dict[str, Any]:
        e = self.embedder()
        return {"name": e.name, "dim": e.dim}
