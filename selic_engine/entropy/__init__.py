"""Entropy coding: the latent codec (hyperprior + ChARM over compressai's rANS) behind one seam."""

from .. import _compressai  # noqa: F401  (first: imports compressai without transformers)
from .charm import ChannelARM  # noqa: E402
from .latent_codec import Coded, HyperpriorChARM  # noqa: E402

__all__ = ["ChannelARM", "Coded", "HyperpriorChARM"]
