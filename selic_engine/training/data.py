"""Training data: the photo pool held in memory, random antialiased downscale, crops, flips, captions."""

from __future__ import annotations

import csv
import hashlib
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MAX_SIDE = 1024  # larger sources are downscaled once at load; training crops are <= 256 px


def list_images(root: Path) -> list[str]:
    """Relative paths of every image under root, sorted so that runs are reproducible."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def read_captions(path: Path) -> dict[str, list[str]]:
    """captions.tsv (path<TAB>caption, header line) -> {relative path: [captions]}."""
    out: dict[str, list[str]] = defaultdict(list)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader, None)
        for row in reader:
            if len(row) >= 2 and row[1].strip():
                out[row[0]].append(row[1].strip())
    return dict(out)


def split_holdout(paths: list[str], count: int) -> tuple[list[str], list[str]]:
    """A fixed validation subset chosen by hash of the path, so it never changes between runs."""
    ranked = sorted(paths, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    held = set(ranked[:count])
    return [p for p in paths if p not in held], [p for p in paths if p in held]


def load_rgb(path: Path) -> Image.Image:
    img = Image.open(path)
    img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # cheap JPEG DCT-domain downscale
    img = img.convert("RGB")
    if max(img.size) > MAX_SIDE:
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return img


class CropStream(IterableDataset):
    """Endless stream of batches: (images (B,3,c,c), caption ids (B,), has_caption (B,)).

    Caption ids index the precomputed embedding matrix; -1 means no caption (dropout).
    One crop size per batch, drawn from [min_crop, crop] in steps of 64.
    Workers share the pool copy-on-write (it is loaded before they fork).
    """

    def __init__(
        self,
        root: Path,
        paths: list[str],
        caption_ids: dict[str, list[int]],
        batch_size: int,
        crop: int,
        min_crop: int,
        caption_dropout: float,
        seed: int,
        start_step: int = 0,
    ) -> None:
        self.images = [load_rgb(root / p) for p in paths]
        self.caption_ids = [caption_ids.get(p, []) for p in paths]
        self.batch_size = batch_size
        self.sizes = list(range(min_crop, crop + 1, 64)) or [crop]
        self.caption_dropout = caption_dropout
        self.seed = seed
        self.start_step = start_step

    def _sample(self, rng: random.Random, size: int) -> tuple[np.ndarray, int]:
        i = rng.randrange(len(self.images))
        img = self.images[i]
        w, h = img.size
        # random antialiased downscale by s in [0.5, 1], never below the crop size
        s = rng.uniform(max(0.5, size / min(w, h)), 1.0) if min(w, h) > size else size / min(w, h)
        box = size / s
        x0, y0 = rng.uniform(0, w - box), rng.uniform(0, h - box)
        patch = img.resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + box, y0 + box), reducing_gap=2.0)
        arr = np.asarray(patch)
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        if rng.random() < 0.5:
            arr = arr[::-1]
        caps = self.caption_ids[i]
        kept = rng.random() >= self.caption_dropout
        cap = rng.choice(caps) if caps else -1  # drawn even when dropped: the crops never depend on the dropout
        return arr, cap if kept else -1

    def batch(self, step: int, rank: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch of a given step is a pure function of (seed, rank, step): resuming replays it exactly."""
        rng = random.Random(f"{self.seed}-{rank}-{step}")
        size = rng.choice(self.sizes)
        arrs, caps = zip(*(self._sample(rng, size) for _ in range(self.batch_size)), strict=True)
        # NCHW-contiguous: channels_last inputs crash conv backward in this torch build (seen here)
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous().float().div_(255)
        ids = torch.tensor(caps, dtype=torch.long)
        return x, ids.clamp(min=0), ids >= 0

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        # DataLoader takes one batch from each worker in turn, so worker w serves steps w, w+W, ...
        step = self.start_step + worker
        while True:
            yield self.batch(step, rank)
            step += workers
