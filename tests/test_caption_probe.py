"""The caption probe of benchmarks.ablation (d): the shuffle, the latent-change measure and the summary."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from benchmarks.ablation import latent_change, probe_summary, shuffled


def test_shuffle_is_a_fixed_derangement():
    names = [f"kodim{i:02d}.png" for i in range(1, 25)]
    wrong = shuffled(names, 0)
    assert sorted(wrong.values()) == names and all(wrong[n] != n for n in names)
    assert wrong == shuffled(names, 0) and wrong != shuffled(names, 1)


def test_latent_change_is_zero_for_the_null_vector_and_not_for_another(tiny_engine, photo):
    null = tiny_engine.model.fusion.null_embedding.detach().numpy()
    other = np.random.default_rng(0).standard_normal(null.shape).astype(np.float32)
    out = latent_change(tiny_engine, Image.fromarray(photo), {"same": null, "other": other}, (1.0, 8.0))
    assert len(out["same"]["ratio_per_channel"]) == tiny_engine.config.M
    assert max(out["same"]["ratio_per_channel"]) == 0.0
    assert out["same"]["in_bins"]["8"]["rounded_values_changed"] == 0.0
    assert max(out["other"]["ratio_per_channel"]) > 0.0


def test_probe_summary_differences_are_against_the_right_caption():
    images = ["a.png", "b.png"]

    def pts(bpp, psnr):
        return [{"image": n, "setting": 4.0, "bpp": bpp[i], "psnr": psnr[i]} for i, n in enumerate(images)]

    pr = {"images": images, "qualities": [4.0],
          "points": {"right": pts([1.0, 2.0], [30.0, 31.0]), "wrong": pts([1.1, 2.2], [30.0, 30.0]),
                     "null": pts([1.0, 2.0], [30.0, 31.0])}}
    row = probe_summary(pr)["rows"][0]
    assert row["wrong"]["bpp_pct_mean"] == pytest.approx(10.0)
    assert row["wrong"]["psnr_db_mean"] == pytest.approx(-0.5)
    assert row["wrong"]["images_wrong_worse"] == 2
    assert row["null"]["bpp_pct_mean"] == 0.0 and row["null"]["images_wrong_worse"] == 0
