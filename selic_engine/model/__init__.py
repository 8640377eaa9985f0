"""The SELIC networks: the architecture registry and every registered (decoder-version) model class."""

from .. import _compressai  # noqa: F401  (first: imports compressai without transformers)
from .registry import ARCHITECTURES, Architecture, architecture, build_model, register_architecture  # noqa: E402
from .selic import Coded, SelicModel  # noqa: E402  (registers "selic-v1")

__all__ = ["ARCHITECTURES", "Architecture", "Coded", "SelicModel", "architecture", "build_model",
           "register_architecture"]
