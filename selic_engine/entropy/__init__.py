"""Entropy coding: the ChARM latent model and the rANS streams it drives."""

from .charm import ChannelARM

__all__ = ["ChannelARM"]
