"""Published Kodak RD curves (CompressAI's results/image/kodak), labelled as such wherever used.

They are figures from other people's runs, not measured here: every table and plot that shows
them says "(published)" and names the source.
"""

from __future__ import annotations

from typing import Any

from .common import REFERENCE, read_json
from .metrics import ms_ssim_db

SOURCE = "CompressAI repository, results/image/kodak at commit 869a9f5 (InterDigitalInc/CompressAI, June 2025)"

#: file stem -> short label; VTM is the anchor the SELIC paper quotes (-4.9% BD-rate).
DEFAULT = {
    "vtm": "VTM 9.1 4:4:4 intra",
    "hm": "HM (HEVC) 4:4:4",
    "av1": "AV1 intra",
    "bpg_444_x265_ycbcr": "BPG 4:4:4",
    "paper-minnen2020-cc10_mse": "Minnen 2020 ChARM",
    "paper-elic2022_mse": "ELIC 2022",
    "compressai-mbt2018-mean_mse_cpu": "mbt2018-mean (CompressAI)",
}
PAPER_CLAIM_VS_VTM = -4.9  # BD-rate (%) the SELIC paper reports against VTM on Kodak


def load(stem: str, label: str | None = None) -> dict[str, Any]:
    """One published curve: bpp, psnr, ms_ssim_db where present (sorted by bpp)."""
    path = REFERENCE / f"{stem}.json"
    if not path.is_file():
        raise FileNotFoundError(f"published curve {path} not found (../shared/reference: development machines only)")
    data = read_json(path)
    res = data["results"]
    curve: dict[str, Any] = {"label": f"{label or data['name']} (published)", "file": path.name,
                             "source": SOURCE, "bpp": list(res["bpp"])}
    if "psnr-rgb" in res:
        curve["psnr"] = list(res["psnr-rgb"])
    if "ms-ssim-rgb" in res:
        curve["ms_ssim"] = list(res["ms-ssim-rgb"])
        curve["ms_ssim_db"] = [ms_ssim_db(v) for v in res["ms-ssim-rgb"]]
    elif "ms-ssim-db-rgb" in res:
        curve["ms_ssim_db"] = list(res["ms-ssim-db-rgb"])
    order = sorted(range(len(curve["bpp"])), key=curve["bpp"].__getitem__)
    for key in ("bpp", "psnr", "ms_ssim", "ms_ssim_db"):
        if key in curve:
            curve[key] = [curve[key][i] for i in order]
    return curve


def load_many(stems: dict[str, str] | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Curves that exist, and {stem: reason} for those that do not."""
    curves, missing = {}, {}
    for stem, label in (DEFAULT if stems is None else stems).items():
        try:
            curves[stem] = load(stem, label)
        except (FileNotFoundError, KeyError) as exc:
            missing[stem] = str(exc)
    return curves, missing
