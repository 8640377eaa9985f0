"""The SELIC text-image fusion module: project a text vector to M channels and fuse it into the latent."""

from __future__ import annotations

from collections.abc import Callable

import torch
from compressai.layers import ResidualBlock
from torch import Tensor, nn

from ..config import FUSION_MODES, FusionMode


def _concat(y3: Tensor, y2: Tensor) -> Tensor:
    return torch.cat([y3, y2], dim=1)


#: Every fusing mode of config.FusionMode: how it combines the latent y3 with the projected text y2, and the
#: channel count of the result in units of M. "none" (no semantic branch) has no module, so no entry.
FUSE: dict[FusionMode, tuple[Callable[[Tensor, Tensor], Tensor], int]] = {
    "concat": (_concat, 2),
    "add": (torch.add, 1),
    "mul": (torch.mul, 1),
}


class SemanticFusion(nn.Module):
    """y = RB(fuse(y3, broadcast(FC(e)))): concat (the paper), add or mul (its ablation), or none.

    A learned null vector stands in for a missing caption, so uncaptioned images use the
    same path as captioned ones (training drops captions to teach it).
    """

    def __init__(self, text_dim: int, M: int, mode: FusionMode) -> None:
        super().__init__()
        self.mode = mode
        self.text_dim = text_dim
        if mode == "none":
            return
        if mode not in FUSE:
            raise ValueError(f"unknown fusion mode {mode!r}; choose from {', '.join(FUSION_MODES)}")
        self.null_embedding = nn.Parameter(torch.zeros(text_dim))
        self.project = nn.Sequential(nn.Linear(text_dim, M), nn.LeakyReLU(inplace=True), nn.Linear(M, M))
        self.refine = ResidualBlock(FUSE[mode][1] * M, M)

    def forward(self, y3: Tensor, embedding: Tensor | None, has_caption: Tensor | None = None) -> Tensor:
        """Fuse y3 (B, M, h, w) with embedding (B, D); rows where has_caption is False use the null vector."""
        if self.mode == "none":
            return y3
        batch = y3.shape[0]
        null = self.null_embedding.to(y3.dtype).expand(batch, -1)
        if embedding is None:
            embedding = null
        else:
            embedding = embedding.to(device=y3.device, dtype=y3.dtype)
            if has_caption is not None:
                embedding = torch.where(has_caption.to(y3.device)[:, None], embedding, null)
        y2 = self.project(embedding)[:, :, None, None].expand_as(y3)
        combine, _ = FUSE[self.mode]
        return self.refine(combine(y3, y2))
