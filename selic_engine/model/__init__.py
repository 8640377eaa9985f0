"""The SELIC network."""

from .. import _compressai  # noqa: F401  (first: imports compressai without transformers)
from .selic import Coded, SelicModel  # noqa: E402

__all__ = ["Coded", "SelicModel"]
