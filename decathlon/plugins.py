"""The plugin manager: finds adapter plugins and holds the registered adapters."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import logging
import re
from collections.abc import Iterable
from typing import Any, Optional

import pluggy

from decathlon import hookspecs
from decathlon.contract import Adapter
from decathlon.errors import PluginError, did_you_mean

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Registry:
    """The adapters registered by all plugins of one plugin manager."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.adapters: dict[str, Adapter] = {}
        self.origin: dict[str, str] = {}

    def _register(self, plugin_name: str, adapter: Adapter) -> None:
        if not isinstance(adapter, Adapter):
            raise PluginError(
                f"plugin '{plugin_name}' registered {adapter!r}, not a decathlon.contract.Adapter"
            )
        if not _NAME.match(adapter.name):
            raise PluginError(
                f"plugin '{plugin_name}': adapter name '{adapter.name}' must be lowercase letters,"
                " digits and underscores, starting with a letter"
            )
        if ":" not in adapter.run:
            raise PluginError(
                f"plugin '{plugin_name}': adapter '{adapter.name}' has run={adapter.run!r};"
                " expected 'package.module:function'"
            )
        if adapter.name in self.adapters:
            raise PluginError(
                f"adapter '{adapter.name}' is registered by both plugin"
                f" '{self.origin[adapter.name]}' and plugin '{plugin_name}'"
            )
        self.adapters[adapter.name] = adapter
        self.origin[adapter.name] = plugin_name

    def get(self, name: str) -> Adapter:
        try:
            return self.adapters[name]
        except KeyError:
            known = ", ".join(sorted(self.adapters)) or "none"
            raise PluginError(
                f"unknown adapter '{name}'.{did_you_mean(name, self.adapters)} Known: {known}"
            ) from None


def make_registry(extra_plugins: Iterable[object] = (), *, entry_points: bool = True) -> Registry:
    """A fresh registry: a new plugin manager with every plugin registered (``.pm``), and the
    adapters they provide (``.adapters``, ``.origin``).

    ``entry_points=False`` skips the ``decathlon`` entry-point group (then only
    ``extra_plugins`` count), which tests use to get a clean manager.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    try:
        if entry_points:
            _import_entry_points()
            pm.load_setuptools_entrypoints(hookspecs.ENTRY_POINT_GROUP)
        for plugin in extra_plugins:
            pm.register(plugin)
        pm.check_pending()  # a hook of a name no spec has (a typo) would never be called
    except pluggy.PluginValidationError as exc:  # a hook implementation the spec does not take
        name = pm.get_name(exc.plugin) or getattr(exc.plugin, "__name__", repr(exc.plugin))
        raise PluginError(
            f"plugin '{name}' does not match decathlon's hook specifications:"
            f" {' '.join(str(exc).split())}"
        ) from exc
    registry = Registry(pm)
    for impl in pm.hook.decathlon_register_adapters.get_hookimpls():
        name = impl.plugin_name

        def register(adapter: Adapter, _name: str = name) -> None:
            registry._register(_name, adapter)

        try:
            impl.function(register=register)
        except PluginError:
            raise
        except (Exception, SystemExit) as exc:  # a third-party plugin's bug: name it
            raise PluginError(
                f"plugin '{name}' failed in decathlon_register_adapters: {exc}"
            ) from exc
    return registry


def _import_entry_points() -> None:
    """Import every module of the ``decathlon`` entry-point group, so that one that raises (a
    plugin file with a syntax error, or importing a package that is not installed) is a
    :class:`PluginError` naming the plugin, its file and the exception in one line, not a
    traceback from inside pluggy; pluggy then finds them imported. Two plugins of one
    entry-point name are a :class:`PluginError` naming both: pluggy loads the first it meets
    and skips the other without a word."""
    found = importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP)
    first: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in found:
        other = first.setdefault(ep.name, ep)
        if other.value != ep.value:
            raise PluginError(
                f"plugins '{other.name} = {other.value}'{_of(other)} and"
                f" '{ep.name} = {ep.value}'{_of(ep)} take the same entry-point name '{ep.name}':"
                " only one of them would be loaded; uninstall one, or rename its entry point"
            )
    for ep in found:
        try:
            ep.load()
        # SystemExit too: a plugin that calls sys.exit() (or parses the command line) when
        # imported would end every command, silently and with the status it chose
        except (Exception, SystemExit) as exc:
            dist = _of(ep)
            fix = f"; fix the file or uninstall {ep.dist.name}" if ep.dist is not None else ""
            raise PluginError(
                f"plugin '{ep.name}' (entry point '{ep.name} = {ep.value}'{dist}) cannot be"
                f" imported: {type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
                f" while importing {_file_of(ep.module)}{fix}"
            ) from exc


def _of(ep: importlib.metadata.EntryPoint) -> str:
    """`` of DISTRIBUTION VERSION``, the distribution that declares ``ep``; empty if unknown."""
    return f" of {ep.dist.name} {ep.dist.version}" if ep.dist is not None else ""


def _file_of(module: str) -> str:
    """Where ``module`` is, found without running it; its name when that cannot be told."""
    try:
        found = importlib.util.find_spec(module)
    except Exception:  # a parent package that fails to import
        found = None
    if found is None or not found.has_location or not found.origin:
        return module
    return found.origin


def add_commands(registry: Registry, commands: argparse._SubParsersAction[Any]) -> None:
    """Let every plugin add its commands (``decathlon_add_commands``); a plugin that fails, or
    takes a name already taken, is a :class:`PluginError` that names it."""
    for impl in registry.pm.hook.decathlon_add_commands.get_hookimpls():
        try:
            impl.function(commands=commands)
        except argparse.ArgumentError as exc:  # argparse's "conflicting subparser: NAME"
            raise PluginError(f"plugin '{impl.plugin_name}' adds a command: {exc}") from exc
        except (Exception, SystemExit) as exc:  # a third-party plugin's bug: name it
            raise PluginError(
                f"plugin '{impl.plugin_name}' failed in decathlon_add_commands: {exc}"
            ) from exc


#: The former name of :func:`make_registry`, kept for plugins and branches written against it.
make_plugin_manager = make_registry


def find_adapter(name: str, registry: Optional[Registry] = None) -> Adapter:
    return (registry or make_registry()).get(name)
