"""Caption embeddings, computed once per (embedder, caption set) and cached outside the repository."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    base = os.environ.get("SELIC_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "selic")
    return Path(base).expanduser()


def embed_captions(
    captions: dict[str, list[str]], embedder_name: str, embed, batch: int = 64
) -> tuple[np.ndarray, dict[str, list[int]]]:
    """Returns (matrix (n_unique, D) float32, {path: [row ids]}). `embed(list[str]) -> ndarray`."""
    unique = sorted({c for caps in captions.values() for c in caps})
    index = {c: i for i, c in enumerate(unique)}
    ids = {p: [index[c] for c in caps] for p, caps in captions.items()}
    key = hashlib.sha256("\n".join([embedder_name, *unique]).encode()).hexdigest()[:16]
    path = cache_dir() / f"captions-{embedder_name}-{key}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False), ids
    matrix = np.concatenate([embed(unique[i : i + batch]) for i in range(0, len(unique), batch)]).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, matrix, allow_pickle=False)
    os.replace(tmp, path)
    return matrix, ids
