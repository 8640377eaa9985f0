"""The cheap stages' crop cache (training.crop_cache): entries filled once, in any order, kept across runs while
what they depend on is the same."""

from __future__ import annotations

import numpy as np
import torch

from selic_engine.training.crop_cache import CropCache, CropEntries

FIELDS = {"latent": ((2, 1, 1), np.float16), "photo": ((3, 2, 2), np.uint8), "quality": ((), np.float32)}


def entry(i: int) -> dict[str, np.ndarray]:
    return {"latent": np.full((2, 1, 1), i / 2), "photo": np.full((3, 2, 2), 250 + i), "quality": np.float32(i)}


def test_entries_are_computed_once_and_kept_while_the_key_is_the_same(tmp_path):
    computed = []

    def compute(i):
        computed.append(i)
        return entry(i)

    cache = CropCache(tmp_path, 3, FIELDS, {"model_id": "x"})
    got = cache.get([2, 0, 2], compute)
    assert computed == [2, 0] and cache.cached() == 2  # a repeated index is computed once
    assert got["latent"].dtype == torch.float16 and got["latent"][:, 0, 0, 0].tolist() == [1.0, 0.0, 1.0]
    assert got["photo"].dtype == torch.uint8 and got["photo"][:, 0, 0, 0].tolist() == [252, 250, 252]
    assert got["quality"].tolist() == [2.0, 0.0, 2.0]
    assert CropCache(tmp_path, 3, FIELDS, {"model_id": "x"}).cached() == 2
    assert CropCache(tmp_path, 3, FIELDS, {"model_id": "y"}).cached() == 0  # another model: cleared
    CropCache(tmp_path, 3, FIELDS, {"model_id": "x"}).get([1], entry)
    assert CropCache(tmp_path, 3, {**FIELDS, "photo": ((3, 2, 2), np.float16)}, {"model_id": "x"}).cached() == 0


def test_an_entry_is_the_same_whatever_the_order(dataset):
    from selic_engine.training.data import list_images

    paths = list_images(dataset)
    a, b = CropEntries(dataset, paths, 64, 3), CropEntries(dataset, paths, 64, 3)
    first = [a(i) for i in (0, 1, 2)]
    later = [b(i) for i in (2, 1, 0)][::-1]
    for (x, q), (x2, q2) in zip(first, later, strict=True):
        assert torch.equal(x, x2) and torch.equal(q, q2) and x.shape == (1, 3, 64, 64) and 1 <= q.item() <= 8
    assert not torch.equal(first[0][0], first[1][0])
