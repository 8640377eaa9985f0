"""Concurrency and determinism: threads sharing the cached engine get exactly the sequential results;
a (tiled) file decodes bit-identically with 1 or 2 threads and in a fresh process; GPU files decode on the CPU."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

import selic_engine as se
from selic_engine.testing import build_tiny

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(40, 56), (77, 101), (64, 130), (129, 65), (33, 200), (96, 96)]


def images() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    out = []
    for h, w in SIZES:
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([128 + 90 * np.sin(xx / (5 + h % 7)), 128 + 90 * np.cos(yy / 6), (xx * 3 + yy) % 256], -1)
        out.append((base + rng.normal(0, 8, base.shape)).clip(0, 255).astype(np.uint8))
    return out


def test_threads_share_the_engine_and_match_sequential_runs(tiny_engine):
    """Eight threads encoding and decoding at once (each image twice, interleaved) reproduce the sequential bytes
    and pixels exactly."""
    imgs = images()
    qualities = [1, 2.5, 4, 5.25, 7, 8]
    mid = tiny_engine.model_id
    files = [se.encode(img, q, caption=False, model=mid) for img, q in zip(imgs, qualities, strict=True)]
    pixels = [np.asarray(se.decode(data)) for data in files]

    def encode(i: int) -> tuple[str, int, bytes]:
        return "encode", i, se.encode(imgs[i], qualities[i], caption=False, model=mid)

    def decode(i: int) -> tuple[str, int, np.ndarray]:
        return "decode", i, np.asarray(se.decode(files[i]))

    jobs = [(fn, i) for _ in range(2) for i in range(len(imgs)) for fn in (encode, decode)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda job: job[0](job[1]), jobs))
    for kind, i, value in results:
        if kind == "encode":
            assert value == files[i], f"threaded encode of image {i} differs"
        else:
            assert np.array_equal(value, pixels[i]), f"threaded decode of image {i} differs"


DECODE_IN_FRESH_PROCESS = """
import hashlib, os, sys
import numpy as np, torch
torch.set_num_threads(int(sys.argv[2]))
import selic_engine as se
img = np.asarray(se.decode(open(sys.argv[1], "rb").read(), tile=int(sys.argv[3])))
print(hashlib.sha256(img.tobytes()).hexdigest(), torch.get_num_threads())
"""


def test_tiled_decode_is_bit_identical_for_any_thread_count_and_process(tiny_weights, tmp_path):
    """A file decoded in 192-px tiles: the same pixels with 1 or 2 threads, here and in fresh processes."""
    yy, xx = np.mgrid[0:300, 0:420]
    img = np.stack([128 + 100 * np.sin(xx / 13), 128 + 100 * np.cos(yy / 9), (xx ^ yy) % 256], -1).astype(np.uint8)
    data = se.encode(img, 5, caption=False, model=tiny_weights, tile=192)
    path = tmp_path / "x.selic"
    path.write_bytes(data)
    before = torch.get_num_threads()
    decoded = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            decoded[threads] = np.asarray(se.decode(data, tile=192))
    finally:
        torch.set_num_threads(before)
    reference = decoded[1]
    assert np.array_equal(reference, decoded[2])
    env = {**os.environ, "SELIC_MODEL_PATH": str(tiny_weights)}
    expected = hashlib.sha256(reference.tobytes()).hexdigest()
    for threads in (1, 2):
        res = subprocess.run([sys.executable, "-c", DECODE_IN_FRESH_PROCESS, str(path), str(threads), "192"],
                             env=env, cwd=ROOT, capture_output=True, text=True, check=True)
        digest, used = res.stdout.split()
        assert (digest, int(used)) == (expected, threads), f"fresh process with {threads} thread(s)"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_encoded_file_decodes_on_the_cpu(photo):
    """g_a runs on the GPU but the probability tables stay on the CPU in float64, so the CPU decoder follows.

    The GPU's float32 g_a may round a latent differently from the CPU's, so the files need not be
    identical; both must decode on the CPU (no DesyncError) to the same quality.
    """
    gpu = se.register_model(build_tiny(), device="cuda")
    cpu = se.register_model(build_tiny(), device="cpu")
    assert gpu.model_id == cpu.model_id
    data = se.encode(photo, 5, caption=False, model=gpu.model_id, device="cuda")
    on_cpu = np.asarray(se.decode(data, device="cpu"), dtype=np.float64)
    on_gpu = np.asarray(se.decode(data, device="cuda"), dtype=np.float64)
    reference = np.asarray(se.decode(se.encode(photo, 5, caption=False, model=cpu.model_id, device="cpu")),
                           dtype=np.float64)

    def psnr(a: np.ndarray, b: np.ndarray) -> float:
        return 10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-12))

    assert psnr(on_cpu, photo) > psnr(reference, photo) - 0.5
    assert psnr(on_gpu, on_cpu) > 40  # same symbols; g_s differs only by float rounding between devices
    print(json.dumps({"gpu_file_cpu_decode_psnr": psnr(on_cpu, photo), "cpu_file_psnr": psnr(reference, photo)}))


def test_openmp_waits_passively_unless_the_caller_chose(tmp_path):
    """Importing selic before torch sets OMP_WAIT_POLICY=PASSIVE (no spinning threads to collapse a shared CPU);
    a caller's own setting, or torch already loaded, is left alone."""
    code = "import os, selic_engine, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = lambda c, e: subprocess.run([sys.executable, "-c", c], capture_output=True, text=True, env=e,  # noqa: E731
                                      check=True).stdout.strip()
    assert run(code, env) == "PASSIVE"
    assert run(code, {**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
    assert run("import os, torch, selic_engine; print(os.environ.get('OMP_WAIT_POLICY'))", env) == "None"
