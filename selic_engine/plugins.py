"""The plugin manager: entry-point group "selic", runtime registration, built-in defaults last.

$SELIC_LOAD_PLUGINS limits entry-point plugins: unset loads all, an empty string loads none,
"a,b" loads only the distributions or entry points named a and b (as llm's LLM_LOAD_PLUGINS).
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
from typing import Any

import pluggy

from .semantic import hookspecs
from .semantic.hookspecs import hookimpl

__all__ = ["get_plugin_manager", "hookimpl", "list_plugins", "register", "unregister"]

_pm: pluggy.PluginManager | None = None
_lock = threading.Lock()


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    setting = os.environ.get("SELIC_LOAD_PLUGINS")
    allowed = None if setting is None else {s.strip() for s in setting.split(",") if s.strip()}
    for ep in importlib.metadata.entry_points(group="selic"):
        dist = ep.dist.name if ep.dist else ""
        if allowed is not None and ep.name not in allowed and dist not in allowed:
            continue
        if pm.get_plugin(ep.name) is None:
            pm.register(ep.load(), name=ep.name)


def get_plugin_manager() -> pluggy.PluginManager:
    global _pm
    with _lock:
        if _pm is None:
            from .semantic.defaults import Defaults

            pm = pluggy.PluginManager("selic")
            pm.add_hookspecs(hookspecs)
            pm.register(Defaults(), name="selic-defaults")
            _load_entry_points(pm)
            _pm = pm
        return _pm


def register(plugin: Any, name: str | None = None) -> str:
    """Register a plugin object or module at run time; returns its name."""
    pm = get_plugin_manager()
    return pm.register(plugin, name=name) or (name or pm.get_name(plugin))


def unregister(plugin: Any = None, name: str | None = None) -> None:
    get_plugin_manager().unregister(plugin, name=name)


def list_plugins() -> list[dict[str, Any]]:
    """Name and implemented hooks of every loaded plugin, in call order for each hook."""
    pm = get_plugin_manager()
    out = []
    for plugin in pm.get_plugins():
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        dist = next((d.project_name for p, d in pm.list_plugin_distinfo() if p is plugin), None)
        out.append({"name": pm.get_name(plugin), "hooks": hooks, "distribution": dist})
    return sorted(out, key=lambda d: d["name"])
