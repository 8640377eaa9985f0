"""The SELIC networks: the architecture registry and every registered (decoder-version) model class."""

from .. import _compressai  # noqa: F401  (first: imports compressai without transformers)
from .registry import ARCHITECTURES, Architecture, architecture, build_model, register_architecture  # noqa: E402
from .selic import Coded, SelicModel  # noqa: E402  (registers "selic-v1")
from .selic_v2 import SelicV2  # noqa: E402  (registers "selic-v2", for development)

__all__ = ["ARCHITECTURES", "Architecture", "Coded", "SelicModel", "SelicV2", "architecture", "build_model",
           "register_architecture"]
