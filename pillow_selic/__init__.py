"""Register .selic with Pillow and imageio: `import pillow_selic`, then Image.open / img.save / iio.imread.

Importing is light on purpose: torch loads on the first encode or decode, not here.
"""

from __future__ import annotations

from .image_plugin import EXTENSIONS, FORMAT, MIME, SelicImageFile, save
from .image_plugin import register as _register_pillow

__all__ = ["EXTENSIONS", "FORMAT", "MIME", "SelicImageFile", "register", "save"]


def register() -> None:
    """Register with Pillow and, when it is installed, imageio (both idempotent; import already does this)."""
    _register_pillow()
    try:
        from .imageio_plugin import register as register_imageio
    except ImportError:  # imageio is optional for Pillow-only use
        return
    register_imageio()


register()
