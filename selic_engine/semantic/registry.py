"""Name -> built-in text embedder (the pluggy layer in semantic.hooks builds on this)."""

from __future__ import annotations

from . import embedders

BUILTIN_EMBEDDERS = {"minilm": embedders.minilm, "bert": embedders.bert}


def embedder(name: str) -> embedders.TransformersTextEmbedder:
    try:
        return BUILTIN_EMBEDDERS[name]()
    except KeyError:
        raise ValueError(f"unknown text embedder {name!r}; built in: {sorted(BUILTIN_EMBEDDERS)}") from None
