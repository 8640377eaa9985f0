"""The plugin manager: entry-point discovery, $SELIC_LOAD_PLUGINS, runtime registration, defaults last."""

from __future__ import annotations

import hashlib
import json
import logging
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selic_engine import plugins, semantic
from selic_engine.plugins import hookimpl

EP_CAPTION = "caption from an entry-point plugin"


class HashEmbedder:
    """A deterministic D-dimensional text embedder with no model: stands in for a third-party plugin."""

    def __init__(self, dim: int, name: str | None = None) -> None:
        self.dim = dim
        self.name = name or f"hash{dim}"

    def vector(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    @hookimpl
    def selic_embed_text(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    @hookimpl
    def selic_text_embedder_info(self) -> dict[str, object]:
        return {"name": self.name, "dim": self.dim}


class FixedCaptioner:
    """A captioner plugin that always answers `text` (None: passes to the next plugin)."""

    def __init__(self, text: str | None) -> None:
        self.text = text
        self.calls = 0

    @hookimpl
    def selic_caption(self, image: Image.Image) -> str | None:
        self.calls += 1
        return self.text


@pytest.fixture(autouse=True)
def fresh_plugins():
    """A fresh process-wide plugin manager per test; nothing registered here leaks into other tests."""
    with plugins.isolated() as pm:
        yield pm


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """A folder with two installed-looking distributions: a working entry-point plugin and a broken one."""
    root = tmp_path_factory.mktemp("site")
    (root / "selic_test_plugin_mod.py").write_text(textwrap.dedent(f"""
        from selic_engine.plugins import hookimpl

        @hookimpl
        def selic_caption(image):
            return {EP_CAPTION!r}
    """))
    for dist, entry in [("selic-test-plugin", "testcap = selic_test_plugin_mod"),
                        ("selic-broken-plugin", "broken = selic_no_such_module_xyz")]:
        info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[selic]\n{entry}\n")
    return root


@pytest.fixture
def installed(plugin_site, monkeypatch) -> Path:
    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.delenv("SELIC_LOAD_PLUGINS", raising=False)
    return plugin_site


def names() -> set[str]:
    return {p["name"] for p in plugins.list_plugins()}


def test_defaults_registered_and_asked_last(fresh_plugins):
    listed = {p["name"]: p for p in plugins.list_plugins()}
    assert listed[plugins.DEFAULTS_NAME] == {
        "name": plugins.DEFAULTS_NAME, "distribution": None,
        "hooks": ["selic_caption", "selic_embed_text", "selic_text_embedder_info"],
    }
    assert semantic.text_embedder_info() == {"name": "all-MiniLM-L6-v2", "dim": 384}  # no model loaded for this
    name = plugins.register(HashEmbedder(8))
    assert semantic.text_embedder_info() == {"name": "hash8", "dim": 8}
    assert semantic.embed_texts(["a", "b"], 8).shape == (2, 8)
    plugins.unregister(name=name)
    assert semantic.text_embedder_info()["name"] == "all-MiniLM-L6-v2"


def test_plugin_answering_none_passes_to_the_next():
    image = Image.new("RGB", (8, 8))
    declining, answering = FixedCaptioner(None), FixedCaptioner("a grey square")
    plugins.register(answering)
    plugins.register(declining)  # newest first: asked before `answering`
    assert semantic.resolve_caption(image, None) == "a grey square"
    assert (declining.calls, answering.calls) == (1, 1)


def test_registered_plugin_wins_over_defaults_whenever_registered():
    """trylast on the defaults: a plugin answers even when the defaults were (re)registered after it."""
    pm = plugins.get_plugin_manager()
    defaults = pm.unregister(name=plugins.DEFAULTS_NAME)
    plugins.register(HashEmbedder(16))
    pm.register(defaults, name=plugins.DEFAULTS_NAME)
    assert semantic.text_embedder_info()["name"] == "hash16"


def test_isolated_leaves_nothing_behind():
    plugins.register(FixedCaptioner("outer"), name="outer")
    with plugins.isolated():
        plugins.register(FixedCaptioner("inner"), name="inner")
        assert "inner" in names() and "outer" not in names()
    assert "outer" in names() and "inner" not in names()


def test_entry_point_plugin_is_discovered(installed, caplog):
    with caplog.at_level(logging.WARNING, logger="selic"), plugins.isolated():
        listed = {p["name"]: p for p in plugins.list_plugins()}
        assert listed["testcap"] == {"name": "testcap", "hooks": ["selic_caption"], "distribution": "selic-test-plugin"}
        assert semantic.resolve_caption(Image.new("RGB", (8, 8)), None) == EP_CAPTION
        assert semantic.resolve_caption(Image.new("RGB", (8, 8)), "the caller's own") == "the caller's own"
    assert "broken" not in listed
    assert "'broken' (selic-broken-plugin) failed to load" in caplog.text


@pytest.mark.parametrize(
    ("setting", "loaded"),
    [("", False), ("someone-else", False), ("testcap", True), ("selic-test-plugin", True),
     (" other , selic-test-plugin ", True)],
)
def test_load_plugins_env_restricts_entry_points(installed, monkeypatch, setting, loaded):
    monkeypatch.setenv("SELIC_LOAD_PLUGINS", setting)
    with plugins.isolated():
        assert ("testcap" in names()) is loaded
        assert "broken" not in names()
        assert plugins.DEFAULTS_NAME in names()  # the built-in plugin is not an entry point
        plugins.register(FixedCaptioner("runtime"), name="runtime")  # run-time registration is unaffected
        assert "runtime" in names()


def test_cli_lists_plugins(installed, capsys):
    from selic_engine.cli import main

    with plugins.isolated():
        main(["plugins"])
    shown = json.loads(capsys.readouterr().out)
    listed = {p["name"]: p for p in shown["plugins"]}
    assert {"testcap", plugins.DEFAULTS_NAME} <= set(listed)
    assert listed["testcap"]["distribution"] == "selic-test-plugin"
    assert "testcap" in shown["captioner"]["plugins_asked_first"]


def test_blocked_name_is_refused():
    plugins.get_plugin_manager().set_blocked("nope")
    with pytest.raises(ValueError, match="blocked"):
        plugins.register(FixedCaptioner("x"), name="nope")
