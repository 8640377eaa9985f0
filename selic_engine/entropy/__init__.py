"""Entropy coding: the ChARM latent model and the rANS streams it drives."""

from .. import _compressai  # noqa: F401  (first: imports compressai without transformers)
from .charm import ChannelARM  # noqa: E402

__all__ = ["ChannelARM"]
