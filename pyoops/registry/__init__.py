"""Plugin registry: pluggy hook specifications and one named factory per kind.

Plugins are Python distributions that declare an entry point in the group
``pyoops``; the object it points to (usually a module) holds hook
implementations.  pyoops's own generic makers are registered the same way,
through the ``generic`` entry point of the ``pyoops`` distribution.

A maker is registered either as the object itself or, lazily, by its import path
``"module:Class"``: the module is imported the first time the maker is used, so that
commands that only need the names (``pyoops --help``, ``pyoops plugins``) import
neither the makers nor numpy and scipy.  A plugin module looks like::

    from pyoops.registry import hookimpl

    @hookimpl
    def pyoops_register(registry):
        registry.add_model_plugin("lorenz96", geometry="pyoops_lorenz96.geometry:Lorenz96Geometry",
                                  state="pyoops_lorenz96.state:Lorenz96State")
        registry.model.register("Lorenz96", "pyoops_lorenz96.model:Lorenz96Model")
        registry.linear_model.register("Lorenz96TLM", Lorenz96TLM)  # the class itself works too
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import re
import sys
from typing import Any

import pluggy

from pyoops.util.errors import ConfigError, PluginError, UnknownNameError, join_path

__all__ = [
    "ENTRY_POINT_GROUP",
    "Entry",
    "Factory",
    "ModelPlugin",
    "Registry",
    "get_registry",
    "hookimpl",
    "hookspec",
    "reset_registry",
]

ENTRY_POINT_GROUP = "pyoops"
hookspec = pluggy.HookspecMarker("pyoops")
hookimpl = pluggy.HookimplMarker("pyoops")


class PyoopsHookSpecs:
    """The plugin contract: hooks a pyoops plugin may implement."""

    @hookspec
    def pyoops_register(self, registry: "Registry") -> None:
        """Register named makers (classes) with the factories of ``registry``.

        Called once per plugin when the registry is first built.
        """


#: The kinds of maker, with the YAML key that names the maker in a config.
KINDS: dict[str, str] = {
    "geometry": "",
    "model": "name",
    "linear model": "name",
    "obs operator": "name",
    "linear obs operator": "name",
    "obs error": "covariance model",
    "variable change": "variable change name",
    "linear variable change": "variable change name",
    "saber block": "saber block name",
    "application": "",
}


#: ``"package.module:Class"`` or ``"package.module:Outer.Inner"``: a maker's import path.
_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_UNLOADED = object()


def import_path(obj: Any) -> str | None:
    """``"module:QualName"`` of a class or function (None for objects without a stable one)."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<locals>" in qualname:
        return None
    return f"{module}:{qualname}"


class Entry:
    """One registered maker: its name, the plugin that registered it and the maker itself.

    ``maker`` may be given as the object or as its import path ``"module:Class"``; in the
    second case the module is imported the first time :attr:`maker` is read (a module or
    attribute that cannot be imported is a :class:`~pyoops.util.errors.PluginError`).
    Reading ``name``, ``plugin``, ``kind``, ``target`` (the import path, None for an object
    without a stable one) and ``summary`` (one line, for an application's help) never
    imports anything.
    """

    def __init__(self, name: str, maker: Any, plugin: str, summary: str | None = None, kind: str = ""):
        self.name = name
        self.plugin = plugin
        self.kind = kind
        if isinstance(maker, str):
            if not _TARGET.match(maker):
                raise PluginError(plugin, kind, name, maker, "is not an import path of the form 'package.module:Class'")
            self.target: str | None = maker
            self._maker: Any = _UNLOADED
        else:
            self.target = import_path(maker)
            self._maker = maker
        if summary is None:
            summary = "" if self._maker is _UNLOADED else str(getattr(self._maker, "summary", "") or "")
        self.summary = summary

    @property
    def module(self) -> str:
        """The name of the module that defines the maker (known without importing it)."""
        return (self.target or "").partition(":")[0]

    @property
    def loaded(self) -> bool:
        """Whether the maker has been imported already."""
        return self._maker is not _UNLOADED

    @property
    def maker(self) -> Any:
        """The maker (class or callable), imported on first use if registered by import path."""
        if self._maker is _UNLOADED:
            module_name, _, attribute = (self.target or "").partition(":")
            try:
                obj: Any = importlib.import_module(module_name)
                for part in attribute.split("."):
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as exc:
                raise PluginError(self.plugin, self.kind, self.name, self.target,
                                  f"cannot be imported ({type(exc).__name__}: {exc})") from exc
            self._maker = obj
        return self._maker

    def loaded_maker(self) -> Any:
        """The maker if it is loaded or its module already imported, else None (never imports)."""
        if self._maker is _UNLOADED and self.module not in sys.modules:
            return None
        try:
            return self.maker
        except PluginError:
            return None

    def same_maker(self, other: Entry) -> bool:
        """Whether ``other`` registers the same maker (compared by import path, without importing)."""
        if self.target is not None and other.target is not None:
            return self.target == other.target
        return self.loaded and other.loaded and self._maker is other._maker

    def __repr__(self) -> str:
        what = self.target if self.target is not None else repr(self._maker)
        return f"Entry({self.name!r}, {what}, plugin={self.plugin!r}{'' if self.loaded else ', not loaded'})"


class Factory:
    """Named makers of one kind (``model``, ``obs operator``, ...).

    ``factory.get(name, path)`` returns the registered class (importing it if it was
    registered by import path) or raises a ConfigError that lists every known name, like
    OOPS's "X does not exist in the model factory".  :meth:`names` and :meth:`entries`
    import nothing.
    """

    def __init__(self, kind: str, name_key: str = "", current_plugin: Any = None):
        self.kind = kind
        self.name_key = name_key
        self._entries: dict[str, Entry] = {}
        self._current_plugin = current_plugin or (lambda: "")

    def register(self, name: str, maker: Any, *, plugin: str = "", replace: bool = False,
                 summary: str | None = None) -> None:
        """Register ``maker`` under ``name``; a clash between plugins is an error.

        ``maker`` is the class (or callable) or its import path ``"module:Class"``, imported
        on first use.  ``summary`` is a one-line description (the help of an application);
        by default the maker's ``summary`` attribute if it is given as an object.
        """
        plugin = plugin or self._current_plugin()
        entry = Entry(name, maker, plugin, summary, self.kind)
        if name in self._entries and not replace and not self._entries[name].same_maker(entry):
            other = self._entries[name].plugin
            raise ConfigError(
                f"{self.kind} '{name}' is registered twice (by plugin '{other}' and by '{plugin or '?'}')"
            )
        self._entries[name] = entry

    def names(self) -> list[str]:
        """The registered names, sorted (imports nothing)."""
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        """The entries, sorted by name (imports nothing; reading ``entry.maker`` does)."""
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: Any, path: str = "") -> Any:
        """The maker registered as ``name``."""
        if not isinstance(name, str) or name not in self._entries:
            known = ", ".join(self.names()) or "none registered"
            close = difflib.get_close_matches(str(name), self.names(), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UnknownNameError(
                f"{self.kind} '{name}' does not exist in the {self.kind} factory{hint} (known: {known})", path
            )
        return self._entries[name].maker

    def name_from_config(self, config: Any, path: str = "") -> str:
        """Read the maker name from ``config[name_key]``."""
        if not isinstance(config, dict):
            raise ConfigError(f"expected a mapping with key '{self.name_key}', got {config!r}", path)
        if self.name_key not in config:
            known = ", ".join(self.names())
            raise ConfigError(f"required key is missing (one of: {known})", join_path(path, self.name_key))
        return config[self.name_key]

    def maker_for(self, config: Any, path: str = "") -> Any:
        """The maker named by ``config[name_key]``."""
        name = self.name_from_config(config, path)
        return self.get(name, join_path(path, self.name_key))

    def parameters(self, config: Any, path: str = "", name: str | None = None) -> Any:
        """Validate ``config`` against the Parameters class of the maker it names.

        A maker without a Parameters class, or whose Parameters class has no field for the
        key that names it (``name``, ``saber block name`` ...), is a
        :class:`~pyoops.util.errors.PluginError`: the plugin's mistake, not the YAML's.
        """
        if name is None:
            name = self.name_from_config(config, path)
            self.get(name, join_path(path, self.name_key))
        else:
            self.get(name, path)
        from pyoops.config.parameters import validate

        params_cls = self.parameters_class(name)
        return validate(params_cls, config, path)

    def parameters_class(self, name: str) -> Any:
        """The Parameters class of the maker registered as ``name``, checked (see :meth:`parameters`)."""
        from pydantic import BaseModel

        entry = self._entries[name]
        params_cls = getattr(entry.maker, "Parameters", None)
        if not (isinstance(params_cls, type) and issubclass(params_cls, BaseModel)):
            raise PluginError(entry.plugin, self.kind, name, entry.maker,
                              "has no Parameters class: the plugin must give it one (a subclass of "
                              "pyoops.config.parameters.Parameters) for its YAML keys")
        if self.name_key and not any(self.name_key in (f.alias, key) for key, f in params_cls.model_fields.items()):
            raise PluginError(entry.plugin, self.kind, name, entry.maker,
                              f"has a Parameters class ({params_cls.__name__}) without the key '{self.name_key}' "
                              f"that names it: the plugin must declare it, e.g. "
                              f"{self.name_key.replace(' ', '_')}: Literal['{name}']")
        return params_cls


class ModelPlugin:
    """What a model plugin provides (OOPS's MODEL traits).

    The properties :attr:`geometry`, :attr:`state` and :attr:`increment` are the classes;
    each may be given as the class or as its import path ``"module:Class"``, imported on
    first use.

    Attributes
    ----------
    name:
        The value of the top-level ``model plugin:`` key.
    description:
        One line for ``pyoops plugins``.
    plugin:
        The plugin (entry point) that declared it.
    extras:
        Further plugin-specific objects, keyword arguments of :meth:`Registry.add_model_plugin`.
    """

    def __init__(self, name: str, geometry: Any, state: Any = None, increment: Any = None,
                 description: str = "", plugin: str = "", extras: dict[str, Any] | None = None):
        self.name = name
        self.description = description
        self.plugin = plugin
        self.extras = dict(extras or {})
        self._geometry = Entry(name, geometry, plugin, "", "geometry")
        self._state = Entry(name, state or "pyoops.generic.state:GenericState", plugin, "", "state")
        self._increment = Entry(name, increment or "pyoops.generic.state:GenericIncrement", plugin, "",
                                "increment")

    @property
    def geometry(self) -> Any:
        """The Geometry class (imported on first use); also registered in the ``geometry`` factory."""
        return self._geometry.maker

    @geometry.setter
    def geometry(self, value: Any) -> None:
        self._geometry = Entry(self.name, value, self.plugin, "", "geometry")

    @property
    def state(self) -> Any:
        """The State class (imported on first use); pyoops's generic FieldSet-backed one by default."""
        return self._state.maker

    @state.setter
    def state(self, value: Any) -> None:
        self._state = Entry(self.name, value, self.plugin, "", "state")

    @property
    def increment(self) -> Any:
        """The Increment class (imported on first use); the generic FieldSet-backed one by default."""
        return self._increment.maker

    @increment.setter
    def increment(self, value: Any) -> None:
        self._increment = Entry(self.name, value, self.plugin, "", "increment")

    @property
    def geometry_module(self) -> str:
        """The module that defines the geometry class (known without importing it)."""
        return self._geometry.module

    def __repr__(self) -> str:
        return (f"ModelPlugin({self.name!r}, geometry={self._geometry.target or self._geometry.maker!r}, "
                f"plugin={self.plugin!r})")

    def make_geometry(self, config: Any, path: str = "geometry") -> Any:
        """The plugin's geometry from the YAML mapping at ``path``.

        A check made while building the grid without a key of its own (its size against
        memory, say) is reported at ``path``.
        """
        from pyoops.config.parameters import validate

        params = validate(self.geometry.Parameters, config, path)
        try:
            return self.geometry(params)
        except ConfigError as exc:
            if exc.path:
                raise
            raise ConfigError(exc.message, path) from None


class Registry:
    """Every factory, filled by the hook implementations of every plugin."""

    def __init__(self) -> None:
        self.factories: dict[str, Factory] = {
            kind: Factory(kind, key, lambda: self._current_plugin) for kind, key in KINDS.items()
        }
        self.model_plugins: dict[str, ModelPlugin] = {}
        self.plugin_manager = pluggy.PluginManager("pyoops")
        self.plugin_manager.add_hookspecs(PyoopsHookSpecs)
        self._current_plugin = ""
        self.distributions: dict[str, str] = {}

    # Short attribute names for the factories, for hook implementations.
    @property
    def geometry(self) -> Factory:
        return self.factories["geometry"]

    @property
    def model(self) -> Factory:
        return self.factories["model"]

    @property
    def linear_model(self) -> Factory:
        return self.factories["linear model"]

    @property
    def obs_operator(self) -> Factory:
        return self.factories["obs operator"]

    @property
    def linear_obs_operator(self) -> Factory:
        return self.factories["linear obs operator"]

    @property
    def obs_error(self) -> Factory:
        return self.factories["obs error"]

    @property
    def variable_change(self) -> Factory:
        return self.factories["variable change"]

    @property
    def linear_variable_change(self) -> Factory:
        return self.factories["linear variable change"]

    @property
    def saber_block(self) -> Factory:
        return self.factories["saber block"]

    @property
    def application(self) -> Factory:
        return self.factories["application"]

    def factory(self, kind: str) -> Factory:
        if kind not in self.factories:
            raise KeyError(f"no factory of kind {kind!r}; kinds: {', '.join(self.factories)}")
        return self.factories[kind]

    def add_model_plugin(self, name: str, geometry: Any, state: Any = None, increment: Any = None,
                         description: str = "", **extras: Any) -> ModelPlugin:
        """Declare a model plugin (the ``model plugin:`` value) and register its geometry.

        ``geometry``, ``state`` and ``increment`` are classes or import paths ``"module:Class"``
        (imported on first use); ``state`` and ``increment`` default to pyoops's generic ones.
        """
        entry = ModelPlugin(name, geometry, state, increment, description, self._current_plugin, dict(extras))
        if name in self.model_plugins and not self.model_plugins[name]._geometry.same_maker(entry._geometry):
            raise ConfigError(f"model plugin '{name}' is registered twice")
        self.model_plugins[name] = entry
        self.geometry.register(name, geometry, plugin=self._current_plugin)
        return entry

    def model_plugin(self, name: Any, path: str = "model plugin") -> ModelPlugin:
        """The model plugin called ``name`` or a ConfigError listing the installed ones."""
        if not isinstance(name, str) or name not in self.model_plugins:
            known = ", ".join(sorted(self.model_plugins)) or "none installed"
            close = difflib.get_close_matches(str(name), sorted(self.model_plugins), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UnknownNameError(
                f"model plugin '{name}' is not installed{hint} (installed: {known}); "
                "install it with pip, e.g. 'pip install -e plugins/<name>'", path)
        return self.model_plugins[name]

    def register_plugin(self, plugin: Any, name: str | None = None) -> None:
        """Register an in-process plugin object (module or instance) and run its hooks."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        if self.plugin_manager.is_registered(plugin):
            return
        self.plugin_manager.register(plugin, name=name)
        self._call_register(plugin, name)

    def _call_register(self, plugin: Any, name: str) -> None:
        impl = getattr(plugin, "pyoops_register", None)
        if impl is None:
            return
        self._current_plugin = name
        try:
            impl(registry=self)
        finally:
            self._current_plugin = ""

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Load every plugin declared in the entry-point group ``group``."""
        for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: (e.name != "generic", e.name)):
            if self.plugin_manager.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not hide the others' names
                raise ConfigError(f"plugin '{ep.name}' ({ep.value}) failed to import: {exc}") from exc
            self.plugin_manager.register(plugin, name=ep.name)
            dist = getattr(ep, "dist", None)
            self.distributions[ep.name] = f"{dist.name} {dist.version}" if dist is not None else ep.value
            self._call_register(plugin, ep.name)

    def describe(self) -> dict[str, list[tuple[str, str]]]:
        """``{kind: [(name, plugin), ...]}`` for ``pyoops plugins``."""
        out: dict[str, list[tuple[str, str]]] = {
            "model plugin": [(m.name, m.plugin) for m in sorted(self.model_plugins.values(), key=lambda m: m.name)]
        }
        for kind, factory in self.factories.items():
            out[kind] = [(e.name, e.plugin) for e in factory.entries()]
        return out


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built from the entry points on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        registry = Registry()
        registry.load_entry_points()
        if "generic" not in registry.distributions:
            # pyoops is imported from a source tree that was never installed:
            # its own entry point is missing, so register the built-ins directly.
            from pyoops.generic import plugin as generic_plugin

            registry.register_plugin(generic_plugin, name="generic")
        _REGISTRY = registry
    return _REGISTRY


def reset_registry() -> None:
    """Forget the registry so that the next :func:`get_registry` reloads the plugins."""
    global _REGISTRY
    _REGISTRY = None
