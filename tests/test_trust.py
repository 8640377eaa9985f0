"""Trust: weights come only from safetensors and match their recorded sha256; nothing unpickles a file;
a failed save leaves no partial output."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

import selic_engine as se
import selic_engine.engine as engine
from selic_engine import cli, weights

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("selic_engine", "pillow_selic", "benchmarks")


# --- weights --------------------------------------------------------------------------------------------------------

@pytest.fixture
def weights_dir(monkeypatch, tmp_path, tiny_weights) -> Path:
    """A temporary shipped-weights folder holding the tiny model as 'small', with a correct manifest."""
    path = tmp_path / "selic-small.safetensors"
    shutil.copyfile(tiny_weights, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "manifest.json").write_text(json.dumps({path.name: {"sha256": digest}}))
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    return tmp_path


def test_shipped_weights_load_when_their_sha256_matches(weights_dir):
    assert weights.resolve_weights("small") == weights_dir / "selic-small.safetensors"


def test_tampered_shipped_weights_are_refused(weights_dir, monkeypatch):
    path = weights_dir / "selic-small.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # one bit of one tensor
    path.write_bytes(bytes(data))
    loads: list[Path] = []
    monkeypatch.setattr(engine, "load_weights", lambda p: loads.append(p))
    with pytest.raises(se.WeightsNotFoundError, match="sha256"):
        weights.resolve_weights("small")
    with pytest.raises(se.WeightsNotFoundError, match="sha256"):
        se.encode(np.zeros((8, 8, 3), np.uint8), 4, caption=False, model="small")
    assert not loads  # refused before a single tensor was read


def test_weights_without_a_manifest_entry_are_refused(weights_dir):
    (weights_dir / "manifest.json").write_text("{}")
    with pytest.raises(se.WeightsNotFoundError, match="not installed"):
        weights.resolve_weights("small")


def test_shipped_manifest_matches_the_shipped_files():
    """Whatever the package ships is recorded, and the records are right (nothing to check before export)."""
    manifest_path = weights.WEIGHTS_DIR / weights.MANIFEST
    shipped = sorted(weights.WEIGHTS_DIR.glob("*.safetensors"))
    if not shipped:
        pytest.skip("no shipped weights in this checkout yet")
    manifest = json.loads(manifest_path.read_text())
    for path in shipped:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == manifest[path.name]["sha256"], path.name


class _Exploit:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt", ".pkl", ""])
def test_pickled_weights_are_never_loaded(tmp_path, suffix, monkeypatch):
    """A pickle with any name other than .safetensors is not a weights file; torch.load is never reached."""
    marker = tmp_path / "pwned"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps(_Exploit(marker)))
    monkeypatch.setattr("torch.load", lambda *a, **k: pytest.fail("torch.load called"))
    with pytest.raises(se.WeightsNotFoundError):
        weights.resolve_weights(path)
    with pytest.raises(se.WeightsNotFoundError):
        se.encode(np.zeros((8, 8, 3), np.uint8), 4, caption=False, model=path)
    assert not marker.exists()


def test_a_pickle_named_safetensors_is_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(Exception) as info:  # its type is the subject of the next test
        se.encode(np.zeros((8, 8, 3), np.uint8), 4, caption=False, model=path)
    assert not marker.exists() and "pwned" not in str(info.value)


def test_corrupt_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises((OSError, ValueError)):
        se.encode(np.zeros((8, 8, 3), np.uint8), 4, caption=False, model=path)


# --- nothing unpickles data from a file -----------------------------------------------------------------------------

UNPICKLERS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "cPickle.loads", "dill.load",
              "dill.loads", "joblib.load", "marshal.load", "marshal.loads", "shelve.open", "pandas.read_pickle",
              "pd.read_pickle", "torch.jit.load", "_pickle.load", "_pickle.loads"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def unpickling_calls(source: str, filename: str) -> list[str]:
    """Calls that can unpickle: pickle & co., torch.load without weights_only=True, np.load with allow_pickle=True,
    yaml.load without a safe loader; also `from pickle import load`-style imports."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "_pickle", "dill", "marshal", "shelve"):
            found.append(f"{where} from {node.module} import ...")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name in UNPICKLERS:
            found.append(f"{where} {name}")
        elif name == "torch.load":
            flag = _keyword(node, "weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                found.append(f"{where} torch.load without weights_only=True")
        elif name in ("np.load", "numpy.load"):
            flag = _keyword(node, "allow_pickle")
            if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                found.append(f"{where} {name} with allow_pickle")
        elif name == "yaml.load" and "Safe" not in ast.unparse(_keyword(node, "Loader") or ast.Constant(None)):
            found.append(f"{where} yaml.load without SafeLoader")
    return found


def test_checker_finds_unpickling():
    bad = ("import pickle, torch, numpy as np\nfrom pickle import loads\npickle.load(f)\ntorch.load(p)\n"
           "torch.load(p, weights_only=False)\nnp.load(p, allow_pickle=True)\nyaml.load(s)\n")
    assert len(unpickling_calls(bad, "bad.py")) == 6
    good = "torch.load(p, map_location='cpu', weights_only=True)\nnp.load(p)\nnp.load(p, allow_pickle=False)\n"
    assert unpickling_calls(good, "good.py") == []


def test_nothing_unpickles_data_from_a_file():
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found += unpickling_calls(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not found, "\n".join(found)


# --- a failed save leaves nothing behind ------------------------------------------------------------------------------

@pytest.fixture
def source(tmp_path, photo) -> Path:
    from PIL import Image

    path = tmp_path / "in" / "photo.png"
    path.parent.mkdir()
    Image.fromarray(photo).save(path)
    return path


def _compress(source: Path, out: Path, *extra: str) -> None:
    cli.main(["compress", str(source), "-o", str(out), "--no-caption", *extra])


def test_compress_writes_one_complete_file(source, tmp_path, tiny_weights):
    out = tmp_path / "out"
    out.mkdir()
    _compress(source, out, "--model", str(tiny_weights))
    assert [p.name for p in out.iterdir()] == ["photo.selic"]
    assert se.decode((out / "photo.selic").read_bytes()).size == (101, 77)


@pytest.mark.parametrize("failure", ["encoder raises", "bad quality", "missing model", "disk full", "interrupted"])
def test_failed_compress_leaves_no_partial_output(source, tmp_path, tiny_weights, monkeypatch, failure):
    """Whatever fails, the output folder is as it was: no new file, no temporary, an old file untouched."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "photo.selic").write_bytes(b"previous version")
    args = ["--model", str(tiny_weights), "--force"]
    expected: type[BaseException] = SystemExit
    if failure == "encoder raises":
        monkeypatch.setattr(se.engine.Engine, "encode", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    elif failure == "bad quality":
        args += ["-q", "9"]
    elif failure == "missing model":
        args = ["--model", str(tmp_path / "nope.safetensors"), "--force"]
    else:
        real_write = Path.write_bytes

        def half_then_fail(self: Path, data: bytes) -> int:
            real_write(self, data[: len(data) // 2])
            raise OSError(28, "No space left on device") if failure == "disk full" else KeyboardInterrupt

        monkeypatch.setattr(Path, "write_bytes", half_then_fail)
        expected = SystemExit if failure == "disk full" else KeyboardInterrupt
    with pytest.raises(expected):
        _compress(source, out, *args)
    assert sorted(os.listdir(out)) == ["photo.selic"]
    assert (out / "photo.selic").read_bytes() == b"previous version"


def test_failed_decompress_leaves_no_partial_output(source, tmp_path, tiny_weights, monkeypatch):
    from PIL import Image

    out = tmp_path / "out"
    out.mkdir()
    _compress(source, out, "--model", str(tiny_weights))

    def failing_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(SystemExit):
        cli.main(["decompress", str(out / "photo.selic"), "-o", str(out)])
    assert sorted(os.listdir(out)) == ["photo.selic"]


@pytest.fixture
def full_disk(monkeypatch, tmp_path):
    """fill(free, error): from then on, files opened for writing under tmp_path lie on a disk with `free` bytes
    left: writes fill them, then raise `error` (default ENOSPC). The files are real buffered files over a raw file
    that fails, as the OS gives them, so buffering (Pillow's close() writing a buffered tail) is as in life."""
    import builtins
    import errno
    import io

    real_open = io.open

    def fill(free: int, error: BaseException | None = None) -> None:
        left = [free]

        class Disk(io.FileIO):
            def write(self, data) -> int:
                n = min(len(memoryview(data)), left[0])
                if n == 0:
                    raise error or OSError(errno.ENOSPC, "No space left on device")
                left[0] -= n
                return super().write(memoryview(data)[:n])

        def open_on_disk(file, mode="r", buffering=-1, *args, **kwargs):
            if isinstance(file, str | bytes | os.PathLike) and set(mode) & set("wax+") and \
                    os.path.abspath(os.fsdecode(file)).startswith(str(tmp_path)):
                raw = Disk(file, mode.replace("b", ""))
                return io.BufferedRandom(raw) if "+" in mode else io.BufferedWriter(raw)
            return real_open(file, mode, buffering, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", open_on_disk)
        monkeypatch.setattr(io, "open", open_on_disk)

    return fill


def _save_to(front: str, source: Path, target: Path, weights: Path) -> None:
    """Save the image in `source` to `target` through one front end (the tiny model, no caption)."""
    import imageio.v3 as iio
    from PIL import Image

    import pillow_selic  # noqa: F401  (registers SELIC with Pillow and imageio)

    if front == "selic compress":
        _compress(source, target.parent, "--model", str(weights), "--force")
        return
    with Image.open(source) as image:
        if front == "Image.save":
            image.save(target, model=str(weights), caption=False)
        elif front == "imageio path":
            iio.imwrite(target, image, model=str(weights), caption=False)
        else:  # a file the caller opened
            with open(target, "wb") as f:
                iio.imwrite(f, image, plugin="selic", model=str(weights), caption=False)


@pytest.mark.parametrize("existing", [False, True], ids=["new file", "over a file"])
@pytest.mark.parametrize("front", ["Image.save", "imageio path", "imageio file", "selic compress"])
def test_a_full_disk_leaves_no_partial_file(front, existing, source, tmp_path, tiny_weights, full_disk):
    """imwrite to a full disk used to leave a partial .selic file (or damage the file it replaced), and so did
    Image.save. Now a save is whole or not there. Image.save and a caller's open file are the exception the README
    names: they were emptied before selic ran, so an old file is left empty."""
    out = tmp_path / "out"
    out.mkdir()
    target = out / "photo.selic"
    if existing:
        target.write_bytes(b"previous version")
    full_disk(100)
    with pytest.raises(SystemExit if front == "selic compress" else OSError):
        _save_to(front, source, target, tiny_weights)
    emptied_first = front in ("Image.save", "imageio file")
    if existing or front == "imageio file":
        assert os.listdir(out) == ["photo.selic"]
        assert target.read_bytes() == (b"" if emptied_first else b"previous version")
    else:
        assert os.listdir(out) == []


@pytest.mark.parametrize("existing", [False, True], ids=["new file", "over a file"])
@pytest.mark.parametrize("front", ["Image.save", "imageio path", "selic compress"])
def test_ctrl_c_while_writing_leaves_no_partial_file(front, existing, source, tmp_path, tiny_weights, full_disk):
    """Ctrl-C in the middle of the write: Image.save used to leave what it had written. Now the file is whole or
    not there: Image.save removes the file it had emptied, the others keep the old one."""
    out = tmp_path / "out"
    out.mkdir()
    target = out / "photo.selic"
    if existing:
        target.write_bytes(b"previous version")
    full_disk(100, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        _save_to(front, source, target, tiny_weights)
    if existing and front != "Image.save":
        assert os.listdir(out) == ["photo.selic"] and target.read_bytes() == b"previous version"
    else:
        assert os.listdir(out) == []
