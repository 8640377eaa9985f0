"""pluggy hook specifications (project name "selic") for captioners and text embedders."""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("selic")
hookimpl = pluggy.HookimplMarker("selic")


@hookspec(firstresult=True)
def selic_caption(image: Any) -> str | None:
    """Describe a PIL image in one sentence, or return None to let the next plugin try."""


@hookspec(firstresult=True)
def selic_embed_text(texts: list[str]) -> Any:
    """Return an array-like of shape (len(texts), D) for the texts, or None to pass."""


@hookspec(firstresult=True)
def selic_text_embedder_info() -> dict[str, Any] | None:
    """Return {"name": str, "dim": int} for the embedder that selic_embed_text uses, or None."""
