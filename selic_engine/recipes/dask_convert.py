"""Convert a folder of images on a Dask cluster, one file per task.

    from dask.distributed import Client, LocalCluster
    from selic_engine.recipes.dask_convert import convert_folder

    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        report = convert_folder(client, "photos", "out", quality=5)        # images -> .selic
        report = convert_folder(client, "out", "png", to=".png")           # .selic -> PNG
    for src, why in report.failed.items():
        print(src, why)

Each worker process loads the model once (selic's engine cache is per process; `SelicWorker` loads it as the
worker starts) and runs torch at one thread, so n_workers x threads_per_worker should be the cores to use:
torch's own threads would otherwise multiply them. A file that fails (unreadable, damaged, too large) is
reported in the result and the others go on, as with the `selic` command; files are written completely or
not at all.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import Client, WorkerPlugin, as_completed

from ..cli import FILE_ERRORS, SUFFIX, _output_format, compress_file, decompress_file
from ..saving import SaveOptions


@dataclass
class Report:
    """What convert_folder did: source -> the line the `selic` command prints for it, or why it failed."""

    done: dict[Path, str] = field(default_factory=dict)
    failed: dict[Path, str] = field(default_factory=dict)


class SelicWorker(WorkerPlugin):
    """Set up each worker process as it starts: torch's threads, and the model loaded into the engine cache,
    where every later task of that worker finds it."""

    name = "selic"

    def __init__(self, torch_threads: int = 1, model: str | os.PathLike | None = None) -> None:
        self.torch_threads = torch_threads
        self.model = model

    def setup(self, worker: Any) -> None:
        import torch

        from ..engine import get_engine

        torch.set_num_threads(self.torch_threads)
        if self.model is not None:
            get_engine(self.model)


def convert_file(src: Path, dst: Path, options: SaveOptions | None, fmt: str | None) -> str:
    """One task: compress `src` with `options`, or (options None) decompress it to the Pillow format `fmt`."""
    return compress_file(src, dst, options) if options is not None else decompress_file(src, dst, fmt)


def convert_folder(
    client: Client,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    to: str = SUFFIX,
    pattern: str | None = None,
    torch_threads: int = 1,
    **save_options: Any,
) -> Report:
    """Convert the files of `src` matching `pattern` (default: every file to compress, *.selic to decompress)
    into `dst` (created), as `selic compress` (to=".selic", with Pillow-style save options: quality, caption,
    model, ...) or `selic decompress` (to=".png", ".jpg"...) would, on the cluster's workers. Outputs that exist
    are replaced."""
    files = sorted(p for p in Path(src).glob(pattern or ("*" if to == SUFFIX else "*" + SUFFIX)) if p.is_file())
    out = Path(dst)
    if to == SUFFIX:
        options: SaveOptions | None = SaveOptions.from_mapping(save_options)
        suffix, fmt = SUFFIX, None
    else:
        options = None
        try:
            suffix, fmt = _output_format(to)
        except argparse.ArgumentTypeError as exc:  # the check of `selic decompress --format`
            raise ValueError(str(exc)) from None
    targets = {p: out / (p.stem + suffix) for p in files}
    if len(set(targets.values())) < len(targets):
        raise ValueError(f"two files of {src} have the same name before the extension; convert them apart")
    out.mkdir(parents=True, exist_ok=True)
    client.register_plugin(SelicWorker(torch_threads, options.model if options else None))
    futures = {client.submit(convert_file, p, targets[p], options, fmt, pure=False): p for p in files}
    report = Report()
    for future in as_completed(futures):
        source = futures[future]
        if future.status == "error" and isinstance(future.exception(), FILE_ERRORS):
            report.failed[source] = str(future.exception())
        else:
            report.done[source] = future.result()  # raises what no file can cause: a bug, not a bad file
    return report
