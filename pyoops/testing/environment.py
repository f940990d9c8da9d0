"""Objects under test, built from an interface-test YAML file through the registry.

:class:`InterfaceEnvironment` turns a validated :class:`~pyoops.testing.parameters.InterfaceTestParameters`
into the plugin's geometry, states, increments, models, observers and variable
changes, building each at most once.  The suites in :mod:`pyoops.testing.suites`
get one environment per test class (a class-scoped fixture); it is equally usable
from a script or a notebook::

    env = InterfaceEnvironment.from_file("plugins/lorenz96/tests/interface.yaml")
    x = env.initial_state()
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from pyoops.config.parameters import validate
from pyoops.testing.parameters import InterfaceTestParameters, load_interface_parameters
from pyoops.util.datetime import DateTime
from pyoops.util.errors import ConfigError, join_path
from pyoops.util.variables import Variables

__all__ = ["InterfaceEnvironment"]


class InterfaceEnvironment:
    """The plugin objects described by an interface-test configuration.

    Parameters
    ----------
    params
        The validated configuration.
    directory
        Directory that relative file names in the configuration refer to.
    registry
        The plugin registry (default: :func:`pyoops.registry.get_registry`).
    source
        Name of the configuration file, for messages.
    """

    def __init__(self, params: InterfaceTestParameters, directory: "str | Path | None" = None,
                 registry: Any = None, source: str = "<config>"):
        if registry is None:
            from pyoops.registry import get_registry

            registry = get_registry()
        self.params = params
        self.directory = Path(directory) if directory is not None else Path.cwd()
        self.registry = registry
        self.source = source

    @classmethod
    def from_file(cls, source: "str | Path | dict[str, Any]", registry: Any = None) -> "InterfaceEnvironment":
        """Load, validate and wrap an interface-test YAML file (or mapping)."""
        params, directory = load_interface_parameters(source)
        name = str(source) if not isinstance(source, dict) else "<config>"
        return cls(params, directory, registry, name)

    # Files ---------------------------------------------------------------------------------
    def resolve(self, filename: str) -> str:
        """``filename`` relative to the configuration's directory (absolute names unchanged)."""
        path = Path(filename)
        return str(path if path.is_absolute() else self.directory / path)

    # Geometry ------------------------------------------------------------------------------
    @functools.cached_property
    def plugin(self) -> Any:
        """The :class:`~pyoops.registry.ModelPlugin` named by ``model plugin``."""
        return self.registry.model_plugin(self.params.model_plugin, "model plugin")

    def build_geometry(self, config: Any, path: str = "geometry") -> Any:
        """A new geometry of the plugin from ``config``."""
        geometry_cls = self.plugin.geometry
        return geometry_cls(validate(geometry_cls.Parameters, config, path))

    @functools.cached_property
    def geometry(self) -> Any:
        """The geometry of the ``geometry`` section."""
        return self.build_geometry(self.params.geometry, "geometry")

    # States and increments -------------------------------------------------------------------
    def state_config(self) -> dict[str, Any]:
        """The state section without test-only keys, with its file name resolved."""
        cfg = self.params.state_config()
        if isinstance(cfg.get("filename"), str):
            cfg["filename"] = self.resolve(cfg["filename"])
        return cfg

    def read_state(self, config: Any, path: str = "state") -> Any:
        """A state of the plugin built by ``State.from_config`` from ``config``."""
        return self.plugin.state.from_config(self.geometry, config, path)

    @functools.cached_property
    def _initial_state(self) -> Any:
        state = self.read_state(self.state_config(), "state")
        if not state.fields.is_finite():
            raise ConfigError(f"{self.source}: the initial state is not finite", "state")
        return state

    def initial_state(self) -> Any:
        """A fresh copy of the state of the ``state`` section (built once)."""
        return self._initial_state.copy()

    @property
    def time(self) -> DateTime:
        """Valid time of the initial state."""
        return self._initial_state.time

    @property
    def variables(self) -> Variables:
        """Variables of the initial state (those of the increments under test)."""
        return Variables(list(self._initial_state.fields))

    def increment(self, time: Any = None, batch_shape: tuple[int, ...] = (), variables: Any = None) -> Any:
        """A zero increment of the plugin (at the initial time by default)."""
        time = self.time if time is None else DateTime(time)
        variables = self.variables if variables is None else Variables(variables)
        if batch_shape:
            return self.plugin.increment.zeros(self.geometry, variables, time, batch_shape=tuple(batch_shape))
        return self.plugin.increment.zeros(self.geometry, variables, time)

    def dirac_config(self) -> dict[str, Any]:
        """The ``increment test.dirac`` config, or impulses at the first and last point (and one per variable)."""
        given = self.params.increment_test.dirac
        if given is not None:
            return dict(given)
        variables = list(self.variables)
        n = int(np.prod(self.geometry.field_shape(variables[0])))
        ixdir = [0, n - 1]
        names = [variables[0], variables[0]]
        for v in variables[1:]:
            ixdir.append(int(np.prod(self.geometry.field_shape(v))) // 2)
            names.append(v)
        return {"ixdir": ixdir, "variables": names}

    # Models ---------------------------------------------------------------------------------
    def _make(self, factory: Any, config: Any, path: str, *args: Any) -> Any:
        return factory.maker_for(config, path)(factory.parameters(config, path), *args)

    @functools.cached_property
    def model(self) -> Any:
        """The model of the ``model`` section."""
        if self.params.model is None:
            raise ConfigError(f"{self.source}: no 'model' section")
        return self._make(self.registry.model, self.params.model, "model", self.geometry)

    @functools.cached_property
    def linear_model(self) -> Any:
        """The linear model of the ``linear model`` section."""
        if self.params.linear_model is None:
            raise ConfigError(f"{self.source}: no 'linear model' section")
        return self._make(self.registry.linear_model, self.params.linear_model, "linear model", self.geometry)

    # Observations ------------------------------------------------------------------------------
    @functools.cached_property
    def observers(self) -> Any:
        """The :class:`~pyoops.generic.observers.Observers` of ``observations test``."""
        from pyoops.generic.observers import Observers, validate_observations

        section = self.params.observations_test
        if section is None:
            raise ConfigError(f"{self.source}: no 'observations test' section")
        observers = []
        for obs in section.observers:
            obs = dict(obs)
            space = dict(obs.get("obs space") or {})
            if isinstance(space.get("obsdatain"), dict) and isinstance(space["obsdatain"].get("filename"), str):
                space["obsdatain"] = {**space["obsdatain"], "filename": self.resolve(space["obsdatain"]["filename"])}
            obs["obs space"] = space
            observers.append(obs)
        path = "observations test"
        params = validate_observations({"observers": observers}, self.registry, path)
        return Observers.from_config(params, section.time_window.window(), self.geometry, self.registry, path)

    # Variable changes ------------------------------------------------------------------------
    def _variable_change_section(self) -> Any:
        section = self.params.variable_change_test
        if section is None:
            raise ConfigError(f"{self.source}: no 'variable change test' section")
        return section

    @functools.cached_property
    def variable_change(self) -> Any:
        """The nonlinear variable change of ``variable change test``, or None."""
        cfg = self._variable_change_section().variable_change
        if cfg is None:
            return None
        return self._make(self.registry.variable_change, cfg, join_path("variable change test", "variable change"),
                          self.geometry)

    @functools.cached_property
    def linear_variable_change(self) -> Any:
        """The linear variable change of ``variable change test``, or None."""
        cfg = self._variable_change_section().linear_variable_change
        if cfg is None:
            return None
        return self._make(self.registry.linear_variable_change, cfg,
                          join_path("variable change test", "linear variable change"), self.geometry)

    @property
    def variable_change_inputs(self) -> Variables:
        """Input variables of the variable change; by default the state's."""
        given = self._variable_change_section().input_variables
        return Variables(given) if given else self.variables

    def __repr__(self) -> str:
        return f"InterfaceEnvironment({self.source!r}, model plugin={self.params.model_plugin!r})"
