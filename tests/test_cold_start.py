"""What a fresh process loads: nothing of torch until pixels are coded, and of compressai only what coding uses.

Each test runs a fresh interpreter, since this one has long imported everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import selic_engine as se
from selic_engine.testing import photo_like

ROOT = Path(__file__).resolve().parents[1]

REFUSE = textwrap.dedent("""
    import contextlib, io, json, sys
    from PIL import Image
    import pillow_selic
    import selic_engine as se
    from selic_engine import cli

    def error(call):
        try:
            call()
        except BaseException as exc:  # noqa: BLE001  (SystemExit from the command too)
            return type(exc).__name__
        return None

    def decompress(path):
        with contextlib.redirect_stderr(io.StringIO()):
            cli.main(["decompress", path, "-o", sys.argv[1]])

    out = {}
    for path in sys.argv[2:]:
        data = open(path, "rb").read()
        out[path] = {"probe": error(lambda: se.probe(data)), "decode": error(lambda: se.decode(data)),
                     "pillow": error(lambda: Image.open(path).load()), "cli": error(lambda: decompress(path))}
    print(json.dumps({"errors": out, "torch": "torch" in sys.modules}))
""")


def run(script: str, *args: str) -> str:
    res = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


def test_damaged_and_foreign_files_are_refused_before_torch_loads(tiny_engine, tmp_path):
    """Failed before: every path imported torch and the model (4.3 s, 930 MB) before it checked the CRC."""
    data = bytearray(se.encode(photo_like(40, 40), 3, caption=False, model=tiny_engine.model_id))
    data[-10] ^= 0x01
    damaged, foreign = tmp_path / "damaged.selic", tmp_path / "foreign.selic"
    damaged.write_bytes(bytes(data))
    foreign.write_bytes(b"this is not an image at all" * 10)
    report = json.loads(run(REFUSE, str(tmp_path / "out"), str(damaged), str(foreign)))
    assert report["errors"] == {
        str(damaged): {"probe": None, "decode": "SelicFormatError", "pillow": "OSError", "cli": "SystemExit"},
        str(foreign): {"probe": "SelicFormatError", "decode": "SelicFormatError", "pillow": "UnidentifiedImageError",
                       "cli": "SystemExit"},
    }
    assert not report["torch"]
    assert not (tmp_path / "out" / "damaged.png").exists()


LIGHT_COMPRESSAI = textwrap.dedent("""
    import sys
    import selic_engine.engine
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch_geometric", "pandas", "matplotlib",
                                                             "transformers", "sympy"})
    loaded = ["scipy.stats._stats_py" in sys.modules]
    import compressai
    from compressai.registry import TRANSFORMS     # what the lighter import deferred still answers
    from compressai.zoo import bmshj2018_factorized
    print(heavy, loaded, compressai.get_entropy_coder(), "RandomCrop" in TRANSFORMS, "torch_geometric" in sys.modules)
""")


def test_the_engine_imports_only_the_compressai_that_coding_uses():
    """torch_geometric (and, through it, torch._dynamo, transformers, pandas) and scipy.stats load only when
    something asks for them."""
    assert run(LIGHT_COMPRESSAI) == "[] [False] ans True True"
