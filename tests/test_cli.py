"""The `selic` command line with ordinary mistakes: arguments checked before any model work, batches that
go on past a bad file, no silent overwrites, output folders created, readable progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import selic_engine as se
from selic_engine import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pics(tmp_path, monkeypatch) -> Path:
    """A working folder with a.png, a.jpg, b.png, a sub-folder and a file that is not an image."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for name in ("a.png", "a.jpg", "b.png"):
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "folder").mkdir()
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "folder" / "c.png")
    (tmp_path / "notes.png").write_text("not an image")
    return tmp_path


def _compress(weights: Path, *argv: str) -> None:
    cli.main(["compress", *argv, "--model", str(weights), "--no-caption"])


def test_bad_arguments_fail_in_one_line_before_torch_is_imported(pics):
    """Each mistake: a non-zero exit, one line on stderr, no traceback, and torch never imported."""
    (pics / "out").mkdir()
    (pics / "out" / "a.selic").write_bytes(b"earlier")
    cases = {
        "not allowed with": ["compress", "a.png", "--caption", "x", "--no-caption"],
        "xyz": ["decompress", "out/a.selic", "--format", "xyz"],
        "missing.png": ["compress", "missing.png"],
        "missing.selic": ["decompress", "missing.selic"],
        "quality": ["compress", "a.png", "-q", "9"],
        "folder": ["compress", "folder"],
        "a.selic": ["compress", "a.png", "a.jpg"],
        "--force": ["compress", "a.png", "-o", "out"],
    }
    script = """if True:
        import contextlib, io, json, sys
        from selic_engine import cli
        results = []
        for argv in json.loads(sys.argv[1]):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                try:
                    cli.main(argv)
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else print(exc.code, file=sys.stderr) or 1
            results.append([code, err.getvalue()])
        print(json.dumps({"results": results, "torch": "torch" in sys.modules}))
    """
    out = subprocess.run([sys.executable, "-c", script, json.dumps(list(cases.values()))], cwd=pics,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    for (expected, argv), (code, err) in zip(cases.items(), report["results"], strict=True):
        assert code != 0 and expected in err and "Traceback" not in err, (argv, code, err)
        assert len(err.strip().splitlines()) == 1, (argv, err)
    assert not report["torch"]
    assert (pics / "out" / "a.selic").read_bytes() == b"earlier"


def test_missing_output_folder_is_created(pics, tiny_weights):
    _compress(tiny_weights, "a.png", "-o", "new/deeper")
    assert se.probe((pics / "new" / "deeper" / "a.selic").read_bytes()).size == (30, 20)


def test_a_folder_argument_is_refused_not_skipped(pics, tiny_weights):
    with pytest.raises(SystemExit, match="folder"):
        _compress(tiny_weights, "folder", "-o", "out")
    assert not (pics / "out").exists()


def test_one_bad_input_does_not_stop_the_batch(pics, tiny_weights, capsys):
    with pytest.raises(SystemExit, match="1 of 3 files failed") as info:
        _compress(tiny_weights, "a.png", "notes.png", "b.png", "-o", "out")
    assert info.value.code != 0
    assert sorted(p.name for p in (pics / "out").iterdir()) == ["a.selic", "b.selic"]
    assert "notes.png" in capsys.readouterr().err


def test_info_reports_every_file_and_names_the_bad_one(pics, tiny_weights, capsys):
    """`selic info bad good` used to stop at the bad file without naming it."""
    _compress(tiny_weights, "a.png", "b.png")
    (pics / "bad.selic").write_bytes((pics / "a.selic").read_bytes()[:-9])  # truncated
    capsys.readouterr()
    with pytest.raises(SystemExit, match="1 of 3 files failed: bad.selic") as done:
        cli.main(["info", "a.selic", "bad.selic", "b.selic"])
    assert isinstance(done.value.code, str)  # a message: exit status 1, as compress
    out, err = capsys.readouterr()
    assert [json.loads(line)["file"] for line in out.splitlines()] == ["a.selic", "b.selic"]
    assert "bad.selic: CRC mismatch" in err


def test_out_of_range_quality_is_an_argument_error(pics, capsys):
    """-q 9 used to exit 1, as a failed file does; the README says argument errors exit 2."""
    for argv in (["compress", "a.png", "-q", "9"], ["compress", "a.png", "-q", "nan"], ["demo", "-q", "0.5"]):
        with pytest.raises(SystemExit) as done:
            cli.main(argv)
        assert done.value.code == 2, argv
        assert "quality must be a number from 1 to 8" in capsys.readouterr().err


def test_colliding_outputs_are_refused_before_any_work(pics, tiny_weights):
    with pytest.raises(SystemExit, match="a.jpg and a.png"):
        _compress(tiny_weights, "a.*", "-o", "out")
    assert not (pics / "out").exists()


def test_existing_outputs_are_kept_unless_force(pics, tiny_weights):
    (pics / "a.selic").write_bytes(b"earlier")
    with pytest.raises(SystemExit, match="--force"):
        _compress(tiny_weights, "a.png", "b.png")
    assert (pics / "a.selic").read_bytes() == b"earlier" and not (pics / "b.selic").exists()
    _compress(tiny_weights, "a.png", "b.png", "--force")
    assert se.probe((pics / "a.selic").read_bytes()).size == (30, 20)


@pytest.fixture(scope="module")
def two_file_run(tmp_path_factory, tiny_weights) -> str:
    """stdout and stderr of `selic compress` of two files with a caption (the text embedder loads), merged
    unbuffered in the order a terminal would show them."""
    tmp = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(1)
    for name in ("one.png", "two.png"):
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp / name)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    out = subprocess.run([sys.executable, "-m", "selic_engine", "compress", "one.png", "two.png", "--model",
                          str(tiny_weights), "--caption", "a test pattern", "-o", "out"], cwd=tmp,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                         env={**env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stdout
    return out.stdout


def test_progress_bar_and_per_file_lines_do_not_interleave(two_file_run):
    lines = [line.split("\r")[-1] for line in two_file_run.splitlines() if " -> " in line]
    assert len(lines) == 2 and all(line.startswith(("one.png ->", "two.png ->")) for line in lines), two_file_run


def test_model_loading_bars_stay_quiet(two_file_run):
    assert "Loading" not in two_file_run and "it/s" not in two_file_run, two_file_run


def test_train_has_a_flag_for_every_train_config_field(capsys):
    import dataclasses

    from selic_engine.config import TrainConfig

    with pytest.raises(SystemExit) as done:
        cli.main(["train", "--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith("usage: selic train") and "--config" in usage
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in usage, f.name


def test_train_flags_override_the_config_file(tmp_path):
    from .conftest import train_config

    config = tmp_path / "run.json"
    config.write_text(json.dumps({"steps": 7, "lr": 0.1, "adapter": True}))
    cfg = train_config("--config", str(config), "--lr", "0.5", "--precision", "float32")
    assert (cfg.steps, cfg.lr, cfg.adapter, cfg.precision, cfg.batch_size) == (7, 0.5, True, "float32", 8)


def test_python_m_selic_engine_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "selic_engine", "train", "--help"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and "--batch-size" in out.stdout, out.stderr
