"""Entropy coding: latent codecs (hyperprior + ChARM over compressai's rANS) behind one seam, the band driver
that codes any of them, and the guard that keeps hostile streams in bounds."""

from .. import _compressai  # noqa: F401  (first: imports compressai without transformers)
from .bands import BandedLatentCodec, Coded, coding_bands  # noqa: E402
from .charm import ChannelARM  # noqa: E402
from .latent_codec import HyperpriorChARM  # noqa: E402

__all__ = ["BandedLatentCodec", "ChannelARM", "Coded", "HyperpriorChARM", "coding_bands"]
