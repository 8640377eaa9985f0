"""What a frozen model computes from each training crop, computed once (issue 31's cheap stages).

When a stage trains one part of decoder v2 against frozen others (stage 2's entropy model on v1's latents, the
synthesis stage's g_s on a model's decoded latents), a crop's inputs never change. Each crop is then computed once
into a bounded on-disk cache in the run folder: memory-mapped .npy files, one per named field, filled lazily as
steps draw entries. Entry i is crop i of a one-crop stream at a quality drawn from a generator seeded by i
(CropEntries), so an entry is the same whenever and in whatever order it is filled, and a resumed run reads what a
straight run would have computed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import Tensor

from .data import CropStream
from .loop import random_qualities

#: A cache field: the shape of one entry and its stored dtype.
Field = tuple[tuple[int, ...], type[np.generic]]


class CropEntries:
    """Entry i's crop (1, 3, crop, crop) and quality (1,): a pure function of (seed, i)."""

    def __init__(self, root: Path, paths: list[str], crop: int, seed: int) -> None:
        self.crops = CropStream(root, paths, {}, 1, crop, crop, 0.0, seed)
        self.root, self.count, self.crop, self.seed = root, len(paths), crop, seed

    def key(self, model_id: str, dtype: torch.dtype) -> dict[str, object]:
        """What a cache of these entries depends on, beside its fields: the frozen model, the crops, the arithmetic."""
        return {"teacher_id": model_id, "data": str(self.root.resolve()), "train": self.count, "crop": self.crop,
                "seed": self.seed, "precision": str(dtype)}

    def __call__(self, i: int) -> tuple[Tensor, Tensor]:
        with torch.random.fork_rng():
            torch.manual_seed(self.seed * 1_000_003 + i)
            quality = random_qualities(1)
        return self.crops.batch(i)[0], quality


class CropCache:
    """`count` entries of the named fields under `folder`. `key` names what the entries depend on (the frozen
    model's id, the data, the crop size, the seed, the arithmetic): another key, or other fields, clear the cache."""

    def __init__(self, folder: Path, count: int, fields: Mapping[str, Field], key: Mapping[str, object]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        meta = folder / "cache.json"
        layout = {name: [list(shape), np.dtype(dtype).str] for name, (shape, dtype) in fields.items()}
        text = json.dumps({**key, "count": count, "fields": layout}, sort_keys=True)
        fresh = not meta.exists() or meta.read_text() != text
        mode = "w+" if fresh else "r+"
        self.fields = {name: open_memmap(folder / f"{name}.npy", mode, dtype, (count, *shape))
                       for name, (shape, dtype) in fields.items()}
        self.filled = open_memmap(folder / "filled.npy", mode, np.bool_, (count,))
        if fresh:
            self.filled[:] = False
            self.filled.flush()
            meta.write_text(text)  # last: a cache interrupted while being cleared is cleared again

    def __len__(self) -> int:
        return len(self.filled)

    def cached(self) -> int:
        return int(self.filled.sum())

    def get(self, indices: list[int], compute: Callable[[int], Mapping[str, np.ndarray]]) -> dict[str, Tensor]:
        """The entries' fields, stacked (B, ...) in their stored dtypes; entries not cached yet are computed first."""
        for i in indices:
            if not self.filled[i]:
                entry = compute(i)
                for name, array in self.fields.items():
                    array[i] = entry[name]
                    array.flush()
                self.filled[i] = True  # after its data is on disk
                self.filled.flush()
        return {name: torch.from_numpy(np.asarray(array[indices])) for name, array in self.fields.items()}

    def draw(self, batch_size: int) -> list[int]:
        """A batch of entry indices, uniform, from torch's RNG (which checkpoints save and restore)."""
        return torch.randint(len(self), (batch_size,)).tolist()
