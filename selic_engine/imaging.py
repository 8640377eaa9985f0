"""Pixels in and out of the codec: mode policy, alpha planes, tensor conversion.

Mode policy (also in README): RGB and L are coded as they are; RGBA and LA keep their alpha
losslessly in a PNG-compressed plane; P/PA become RGB(A) with their transparency; 1 becomes L;
CMYK, YCbCr, LAB and HSV become RGB; RGBa/La are un-premultiplied. High-bit-depth and float
modes (I;16*, I, F) are refused: selic stores 8-bit images and will not drop bits silently.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from .container import SelicFormatError

CONVERT = {"1": "L", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "RGBa": "RGBA", "La": "LA",
           "RGBX": "RGB", "PA": "RGBA"}
#: Rows converted at a time by split (bounds its transient copies).
SPLIT_ROWS = 256


def as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    """Accept a PIL image or an (H, W), (H, W, 1/3/4) uint8 array."""
    if isinstance(image, Image.Image):
        return image
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"arrays must be uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return Image.fromarray(arr, "L")
    if arr.ndim == 3 and arr.shape[2] in (2, 3, 4):
        return Image.fromarray(arr, {2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[2]])
    raise ValueError(f"expected an (H, W) or (H, W, C) image array with C in 1..4, got shape {arr.shape}")


def normalize_mode(image: Image.Image) -> Image.Image:
    """Bring any Pillow mode to one of RGB, L, RGBA, LA, or raise ValueError saying why not.

    Also the first check of every encode path, so an empty image is refused here, before any model loads.
    """
    if image.width < 1 or image.height < 1:
        raise ValueError(f"cannot encode an empty {image.width}x{image.height} image: both sides must be at least 1")
    mode = image.mode
    if mode in ("RGB", "L", "RGBA", "LA"):
        return image
    if mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if mode in CONVERT:
        return image.convert(CONVERT[mode])
    raise ValueError(
        f"selic stores 8-bit RGB, L, RGBA or LA images; mode {mode!r} would lose bit depth or meaning. "
        "Convert it explicitly first (for example img.convert('RGB') or img.convert('L'))."
    )


def split(image: Image.Image) -> tuple[torch.Tensor, bytes | None]:
    """-> (1, 3, H, W) uint8 tensor, PNG bytes of the alpha plane or None.

    The tensor is a channel-first view of one H x W x 3 array, filled in row bands: the only
    whole-image copy the encoder makes of its input is those 3 bytes per pixel (analysis cuts
    contiguous windows out of the view; see model.tiling).
    """
    alpha = None
    if image.mode in ("RGBA", "LA"):
        buf = io.BytesIO()
        image.getchannel("A").save(buf, format="PNG", optimize=True)
        alpha = buf.getvalue()
    width, height = image.size
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    for top in range(0, height, SPLIT_ROWS):
        band = image.crop((0, top, width, min(height, top + SPLIT_ROWS)))
        rgb[top : top + band.height] = np.asarray(band if band.mode == "RGB" else band.convert("RGB"))
    return torch.from_numpy(rgb).permute(2, 0, 1)[None], alpha


def alpha_plane(data: bytes, size: tuple[int, int]) -> Image.Image:
    """A file's stored alpha plane (an 8-bit grayscale PNG) as an L image of the image's size.

    The decoder calls this before the RGB decode, so a damaged plane costs nothing; the PNG's header is
    checked against `size` before its pixels inflate, so it cannot be a decompression bomb.
    Raises SelicFormatError.
    """
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as png:
            mode, found = png.mode, png.size
            if (mode, found) == ("L", size):
                png.load()
                return png
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise SelicFormatError(f"damaged alpha plane: {exc}") from exc
    raise SelicFormatError(f"the alpha plane is a {mode} {found[0]}x{found[1]} image, "
                           f"not the image's L {size[0]}x{size[1]}")


def merge(pixels: torch.Tensor, mode: str, alpha: Image.Image | None) -> Image.Image:
    """(H, W, 3) uint8 pixels + the alpha plane (from alpha_plane) -> a PIL image in the original mode."""
    image = Image.fromarray(pixels.numpy(), "RGB")
    if mode in ("L", "LA"):
        image = image.convert("L")
    if alpha is not None:
        image.putalpha(alpha)
    return image
