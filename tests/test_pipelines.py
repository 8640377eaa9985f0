"""selic in other processes: fork and spawn pools, DataLoader workers, a Dask cluster (the recipe).

The parent decodes first in each test, at two threads, so that its OpenMP thread pool exists when the
workers are forked (GNU OpenMP's pool does not survive fork; selic_engine._one_thread_after_fork).
A hang fails through the timeout mark; nothing here times anything.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pillow_selic  # noqa: F401  (registers .selic with Pillow, as a user's pipeline would)
import selic_engine as se
from selic_engine.testing import photo_like


@pytest.fixture
def two_threads():
    """torch at two threads in this process while the test runs, whatever the machine's core count."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def selic_files(tmp_path, tiny_engine, two_threads) -> tuple[list[Path], list[np.ndarray]]:
    """Three small .selic files (tiny model) and their pixels as this process decodes them, at two threads."""
    paths, pixels = [], []
    for i, (h, w) in enumerate([(64, 64), (40, 72), (70, 33)]):
        path = tmp_path / f"{i}.selic"
        path.write_bytes(se.encode(photo_like(h, w, seed=i), 4, caption=False, model=tiny_engine.model_id))
        paths.append(path)
        pixels.append(np.asarray(se.decode(path.read_bytes())))
    return paths, pixels


def decode_file(path: Path) -> np.ndarray:
    """What a worker does: open the file with Pillow and take its pixels."""
    with Image.open(path) as im:
        return np.asarray(im)


@pytest.mark.timeout(60)
def test_fork_pool_decodes_after_the_parent_has_decoded(selic_files):
    """Failed before the fix: both workers hung for ever in their first convolution."""
    paths, expected = selic_files
    with multiprocessing.get_context("fork").Pool(2) as pool:
        decoded = pool.map(decode_file, paths * 2)
    assert all(np.array_equal(d, e) for d, e in zip(decoded, expected * 2, strict=True))


@pytest.mark.timeout(120)
def test_spawn_pool_decodes_with_the_model_from_its_file(selic_files, tiny_weights, monkeypatch):
    """Spawned workers start fresh: they find the model on $SELIC_MODEL_PATH, not in the parent's memory."""
    monkeypatch.setenv("SELIC_MODEL_PATH", str(tiny_weights))
    paths, expected = selic_files
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        decoded = pool.map(decode_file, paths)
    assert all(np.array_equal(d, e) for d, e in zip(decoded, expected, strict=True))


class SelicFolder(torch.utils.data.Dataset):
    """A Dataset of .selic files, as a training pipeline would read them."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return decode_file(self.paths[i])


@pytest.mark.timeout(60)
def test_dataloader_workers_read_selic_files(selic_files):
    paths, expected = selic_files
    loader = torch.utils.data.DataLoader(SelicFolder(paths * 2), batch_size=None, num_workers=2)  # fork on Linux
    decoded = [t.numpy() for t in loader]
    assert all(np.array_equal(d, e) for d, e in zip(decoded, expected * 2, strict=True))


@pytest.mark.timeout(180)
def test_dask_recipe_converts_a_folder_and_reports_bad_files(tmp_path):
    """Two worker processes, one thread each, the shipped model loaded once per worker; a bad file in each
    direction is reported and the others are converted."""
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    from selic_engine.recipes.dask_convert import convert_folder

    photos = tmp_path / "photos"
    photos.mkdir()
    sizes = {"a": (48, 64), "b": (64, 40), "c": (33, 50)}
    for name, (h, w) in sizes.items():
        Image.fromarray(photo_like(h, w, seed=len(name))).save(photos / f"{name}.png")
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        compressed = convert_folder(client, photos, tmp_path / "selic", quality=3, caption=False)
        damaged = tmp_path / "selic" / "damaged.selic"
        data = bytearray((tmp_path / "selic" / "a.selic").read_bytes())
        data[-20] ^= 0xFF
        damaged.write_bytes(bytes(data))
        decompressed = convert_folder(client, tmp_path / "selic", tmp_path / "png", to=".png")
        torch_threads = client.run(torch.get_num_threads)
    assert sorted(p.name for p in compressed.done) == ["a.png", "b.png", "c.png"]
    assert list(compressed.failed) == [photos / "broken.png"]
    assert sorted(p.name for p in decompressed.done) == ["a.selic", "b.selic", "c.selic"]
    assert list(decompressed.failed) == [damaged] and "CRC" in decompressed.failed[damaged]
    assert set(torch_threads.values()) == {1}
    for name, (h, w) in sizes.items():
        assert se.probe((tmp_path / "selic" / f"{name}.selic").read_bytes()).size == (w, h)
        with Image.open(tmp_path / "png" / f"{name}.png") as im:
            assert np.array_equal(np.asarray(im), np.asarray(se.decode((tmp_path / "selic" / f"{name}.selic")
                                                                      .read_bytes())))
