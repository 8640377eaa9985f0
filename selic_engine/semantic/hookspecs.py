"""pluggy hook specifications (project name "selic") for captioners and text embedders.

Every hook is firstresult: plugins are asked newest first (the built-in defaults last) and the
first answer that is not None wins, so a plugin can decline by returning None.
"""

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
    """Return an array-like of shape (len(texts), D) for the texts, or None to pass.

    D must equal the model's text_dim; a model for another D needs an adapter (`selic train --adapter`).
    """


@hookspec(firstresult=True)
def selic_text_embedder_info() -> dict[str, Any] | None:
    """Return {"name": str, "dim": int} for the embedder that selic_embed_text uses, or None.

    The name keys the training cache of caption vectors and names the embedder in error messages.
    """
