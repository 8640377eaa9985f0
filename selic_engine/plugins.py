"""The plugin manager: entry-point group "selic", runtime registration, built-in defaults last.

Plugin authors decorate functions or methods with `selic_engine.plugins.hookimpl` and either
declare them under the entry-point group "selic" in their package metadata, or call
`selic_engine.plugins.register(obj)` at run time. The built-in BLIP / MiniLM plugin is marked
trylast, so any other plugin that answers a hook wins.

$SELIC_LOAD_PLUGINS limits entry-point plugins: unset loads all, an empty string loads none,
"a,b" loads only the distributions or entry points named a and b (as llm's LLM_LOAD_PLUGINS).
Runtime registration is not affected.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pluggy

from .semantic import hookspecs
from .semantic.hookspecs import hookimpl

__all__ = ["DEFAULTS_NAME", "ENTRY_POINT_GROUP", "describe", "get_plugin_manager", "hookimpl", "isolated",
           "list_plugins", "register", "unregister"]

ENTRY_POINT_GROUP = "selic"
DEFAULTS_NAME = "selic-defaults"

logger = logging.getLogger("selic")


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with selic's hook specs, remembering the distribution of each entry-point plugin."""

    def __init__(self) -> None:
        super().__init__("selic")
        self.add_hookspecs(hookspecs)
        self.distributions: dict[str, str] = {}  # plugin name -> distribution name


_pm: PluginManager | None = None
_lock = threading.RLock()  # re-entrant: a plugin may call register() while being loaded


def _allowed_plugins() -> set[str] | None:
    """None: load every entry point; else the entry-point or distribution names allowed."""
    setting = os.environ.get("SELIC_LOAD_PLUGINS")
    return None if setting is None else {s.strip() for s in setting.split(",") if s.strip()}


def _load_entry_points(pm: PluginManager) -> None:
    allowed = _allowed_plugins()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else ""
        if allowed is not None and ep.name not in allowed and dist not in allowed:
            continue
        if pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - one broken third-party plugin must not stop every encode
            logger.warning("selic: plugin %r (%s) failed to load and is skipped: %s", ep.name, dist or "?", exc)
            continue
        pm.register(plugin, name=ep.name)
        pm.distributions[ep.name] = dist


def _new_plugin_manager() -> PluginManager:
    from .semantic.defaults import Defaults  # cheap: the models themselves load on first use

    pm = PluginManager()
    pm.register(Defaults(), name=DEFAULTS_NAME)
    _load_entry_points(pm)
    return pm


def get_plugin_manager() -> PluginManager:
    """The process-wide manager, built on first use (entry points are read then, not at import)."""
    global _pm
    with _lock:
        if _pm is None:
            _pm = _new_plugin_manager()
        return _pm


@contextmanager
def isolated() -> Iterator[PluginManager]:
    """A fresh manager (entry points re-read, $SELIC_LOAD_PLUGINS re-applied) for the block; the old one after.

    For tests and for applications that need a clean plugin set: nothing registered inside leaks out.
    """
    global _pm
    with _lock:
        saved, _pm = _pm, None
    try:
        yield get_plugin_manager()
    finally:
        with _lock:
            _pm = saved


def register(plugin: Any, name: str | None = None) -> str:
    """Register a plugin object or module at run time (it is asked before earlier ones); returns its name."""
    pm = get_plugin_manager()
    registered = pm.register(plugin, name=name)
    if registered is None:
        raise ValueError(f"plugin name {name!r} is blocked")
    return registered


def unregister(plugin: Any = None, name: str | None = None) -> None:
    """Remove a plugin registered earlier, by object or by name."""
    get_plugin_manager().unregister(plugin, name=name)


def list_plugins() -> list[dict[str, Any]]:
    """Name, implemented hooks and source distribution (None: built in or registered at run time) of each plugin."""
    pm = get_plugin_manager()
    out = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # a blocked name
            continue
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        out.append({"name": name, "hooks": hooks, "distribution": pm.distributions.get(name)})
    return sorted(out, key=lambda d: d["name"])


def describe() -> dict[str, Any]:
    """For `selic plugins`: the plugins, and per hook the plugins asked before the built-in captioner / embedder,
    which one of those the settings select and why. Loads no model."""
    pm = get_plugin_manager()
    defaults = pm.get_plugin(DEFAULTS_NAME)
    out = defaults.describe() if defaults is not None else {"captioner": {}, "embedder": {}}
    for role, hook in (("captioner", pm.hook.selic_caption), ("embedder", pm.hook.selic_embed_text)):
        asked = [impl.plugin_name for impl in reversed(hook.get_hookimpls())]  # pluggy's calling order
        out[role]["plugins_asked_first"] = [name for name in asked if name != DEFAULTS_NAME]
    return {**out, "plugins": list_plugins()}
