"""What a fresh process loads: nothing of torch until pixels are coded, and of compressai only what coding uses.

Each test runs a fresh interpreter, since this one has long imported everything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def run(script: str, *args: str) -> str:
    res = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


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
