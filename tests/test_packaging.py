"""Packaging: the wheel holds every package, the shipped weights and the demo photo, and works from a
plain install (no dev extra)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from selic_engine import cli

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("selic_engine", "pillow_selic")


def _package_files() -> set[str]:
    """Every module and shipped data file of the source tree, as wheel paths."""
    files = {p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts}
    for pattern in ("weights/*.safetensors", "weights/*.json", "weights/*.md", "data/*"):
        files |= set((ROOT / "selic_engine").glob(pattern))
    return {p.relative_to(ROOT).as_posix() for p in files}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built offline from a copy of the source (the working tree gets no build/ or egg-info)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp / "dist"), str(src)], check=True, timeout=300)
    (built,) = (tmp / "dist").glob("selic-*.whl")
    return built


def test_wheel_holds_every_package_the_weights_and_the_demo_photo(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not sorted(_package_files() - names)
    assert "selic_engine/training/__init__.py" in names and "selic_engine/data/astronaut.jpg" in names


def test_training_and_export_import_from_the_installed_wheel(wheel, tmp_path):
    """`selic train` and `selic export` need selic_engine.training: import them from the wheel alone."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target),
                    str(wheel)], check=True, timeout=300)
    code = ("import selic_engine, selic_engine.training.loop as loop, selic_engine.weights.files; "
            "print(loop.__file__); selic_engine.weights.files.export")
    # -S: no site-packages .pth files, so the editable install of this checkout cannot answer the imports
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]])}
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(str(target))


def test_demo_without_an_image_needs_no_scikit_image(tiny_weights, monkeypatch, capsys):
    """The README's `make demo` runs from a plain install: the photo ships with selic."""
    monkeypatch.setitem(sys.modules, "skimage", None)  # as if scikit-image were not installed
    cli.main(["demo", "--model", str(tiny_weights), "-q", "4", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "astronaut" in out and "PSNR" in out
