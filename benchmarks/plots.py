"""Figures: RD curves (measured solid, published dashed) and a side-by-side crop comparison."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

METRIC_LABELS = {"psnr": "PSNR RGB (dB)", "ms_ssim_db": "MS-SSIM RGB (dB, -10 log10(1 - MS-SSIM))"}


def rd_plot(measured: Mapping[str, Mapping[str, Any]], published: Mapping[str, Mapping[str, Any]], metric: str,
            path: Path, title: str, max_bpp: float = 2.2) -> None:
    """One RD figure. Curves are {name: {"label", "bpp", metric}}; published ones dashed (VTM purple, others grey)."""
    fig, ax = plt.subplots(figsize=(9, 6.5), dpi=110)
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i not in (4, 7)]  # purple, grey: published
    solid = iter(palette * 2)
    for curve in measured.values():
        if metric in curve:
            selic = curve.get("label", "").startswith("selic")
            color = ("dimgray" if "caption=False" in curve["label"] else "black") if selic else next(solid)
            ax.plot(curve["bpp"], curve[metric], marker="o", ms=3.5, lw=2.4 if selic else 1.4, color=color,
                    label=curve["label"], zorder=3 if selic else 2)
    markers = iter("^svDP*x<>" * 3)
    for name, curve in published.items():
        if metric in curve:
            anchor = name == "vtm"
            ax.plot(curve["bpp"], curve[metric], ls="--", marker="." if anchor else next(markers), ms=4, lw=1.0,
                    color="tab:purple" if anchor else "0.55", alpha=0.9, label=curve["label"])
    ax.set_xlim(0, max_bpp)
    ax.set_xlabel("bits per pixel (whole file)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="lower right", ncol=2)
    _autoscale_y(ax, max_bpp)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _autoscale_y(ax: Any, max_bpp: float) -> None:
    """Fit the y range to the points inside the shown rate range (published curves extend far beyond it)."""
    ys = [y for line in ax.get_lines() for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)
          if 0.05 <= x <= max_bpp]
    if ys:
        ax.set_ylim(min(ys) - 0.5, max(ys) + 0.5)


def crop_figure(panels: Sequence[tuple[str, Image.Image]], path: Path, title: str, zoom: int = 2) -> None:
    """Crops side by side, enlarged by an integer factor with nearest-neighbour (no resampling blur),
    each titled with codec, setting and bpp."""
    dpi, pad, head = 100, 12, 70
    w, h = panels[0][1].width * zoom, panels[0][1].height * zoom
    fig_w, fig_h = len(panels) * (w + pad) + pad, h + head + pad
    fig = plt.figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi)
    for i, (label, image) in enumerate(panels):
        ax = fig.add_axes(((pad + i * (w + pad)) / fig_w, pad / fig_h, w / fig_w, h / fig_h))
        ax.imshow(image.resize((w, h), Image.Resampling.NEAREST), interpolation="none")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=11, y=1 - 8 / fig_h, va="top")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
