"""The SELIC network."""

from .selic import STRIDE, Coded, SelicModel

__all__ = ["STRIDE", "Coded", "SelicModel"]
