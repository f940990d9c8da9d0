"""FieldSet-backed State and Increment with the full OOPS algebra.

Both accept FieldSets with leading batch axes: an "ensemble state" is a State
whose arrays are ``(nmembers, *grid_shape)``; every operation acts member-wise
where that makes sense (``+=``, ``axpy``) and over all values for inner
products and norms.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, model_validator

from pyoops.config.parameters import DateTimeField, Parameters, validate
from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import read_fields, write_fields
from pyoops.interface.geometry import Geometry
from pyoops.interface.state import Increment, State
from pyoops.util.datetime import DateTime
from pyoops.util.errors import ConfigError, join_path
from pyoops.util.variables import Variables

__all__ = ["DiracParameters", "GenericIncrement", "GenericState", "StateParameters", "analytic_init_methods",
           "select_analytic_init"]


def analytic_init_methods(union: Any) -> dict[str, type[Parameters]]:
    """``{method: Parameters class}`` of a discriminated union ``Annotated[Union[...], Field(discriminator="method")]``.

    Each class declares ``method: Literal["name"]``.
    """
    from typing import get_args

    return {get_args(cls.model_fields["method"].annotation)[0]: cls for cls in get_args(get_args(union)[0])}


def select_analytic_init(methods: dict[str, type[Parameters]], config: Any, path: str) -> Any:
    """Validate an ``analytic init`` mapping against the class its ``method`` names.

    An unknown or missing method is one ConfigError naming ``<path>.method`` and listing
    the known methods.
    """
    method = config.get("method") if isinstance(config, dict) else None
    if not isinstance(method, str) or method not in methods:
        raise ConfigError(f"unknown analytic init method {method!r} (known methods: {', '.join(methods)})",
                          join_path(path, "method"))
    return validate(methods[method], config, path)


class StateParameters(Parameters):
    """How to obtain a state: from a file or from analytic initial conditions."""

    date: DateTimeField = Field(description="Valid time of the state (ISO-8601).")
    filename: str | None = Field(None, description="netCDF file in the documented state layout.")
    analytic_init: dict[str, Any] | None = Field(
        None, description="Analytic initial condition: {method: NAME, ...} (methods depend on the model plugin)."
    )
    state_variables: list[str] | None = Field(None, description="Variables to read (default: the geometry's).")
    member: int | None = Field(None, ge=0, description="Member index to read from an ensemble file.")
    allow_other_geometry: bool = Field(
        False, description="Read a file written on another geometry of the same dimensions and shape, point by "
                           "point (e.g. a truth run with other layer depths in a twin experiment); the difference "
                           "is logged. By default such a file is refused.")

    @model_validator(mode="after")
    def _one_source(self) -> "StateParameters":
        if (self.filename is None) == (self.analytic_init is None):
            raise ValueError("give exactly one of 'filename' and 'analytic init'")
        if self.allow_other_geometry and self.filename is None:
            raise ValueError("'allow other geometry' is for a state read from 'filename'")
        return self


class DiracParameters(Parameters):
    """Grid points (flat indices of the grid shape) and variables of Dirac impulses."""

    ixdir: list[int] = Field(description="Flat grid indices of the impulses.")
    variables: list[str] | None = Field(None, description="Variable of each impulse (default: the first).")


class _FieldsHolder:
    """Shared plumbing of GenericState and GenericIncrement."""

    geometry: Geometry
    fields: FieldSet
    time: DateTime

    def __init__(self, geometry: Geometry, fields: FieldSet, time: DateTime):
        self.geometry = geometry
        self.fields = fields if isinstance(fields, FieldSet) else FieldSet(fields)
        self.time = DateTime(time)
        for var, arr in self.fields.items():
            shape = geometry.field_shape(var)
            if arr.shape[arr.ndim - len(shape):] != shape:
                raise ValueError(f"field '{var}' has shape {arr.shape}, grid shape is {shape}")

    @property
    def variables(self) -> Variables:
        return self.fields.variables

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Leading (ensemble) axes; ``()`` for a single state or increment."""
        return self.fields.batch_shape(self.geometry.field_shapes(self.variables))

    @property
    def nmembers(self) -> int | None:
        b = self.batch_shape
        return b[0] if len(b) == 1 else None

    def member(self, index: int) -> Any:
        """One member of a batched object (a view on the same arrays)."""
        return type(self)(self.geometry, self.fields.map(lambda a: a[index]), self.time)

    def norm(self) -> float:
        """RMS over every value, as OOPS's ``norm``."""
        return self.fields.rms()

    def write(self, filename: str) -> None:
        write_fields(filename, self.geometry, self.fields, self.time, kind=self._kind)

    def to_xarray(self) -> Any:
        """An :class:`xarray.Dataset` with the grid coordinates and a ``time`` attribute."""
        import xarray as xr

        coords = self.geometry.coordinates
        data_vars = {}
        for var, arr in self.fields.items():
            dims = self.geometry.field_dims(var)
            lead = tuple("member" if i == 0 else f"batch{i}" for i in range(arr.ndim - len(dims)))
            data_vars[var] = (lead + dims, arr.copy())
        return xr.Dataset(data_vars, coords={d: coords[d] for d in self.geometry.dims},
                          attrs={"date": str(self.time), "pyoops_kind": self._kind})

    @classmethod
    def from_xarray(cls, geometry: Geometry, dataset: Any, time: Any = None,
                    variables: Any = None) -> Any:
        """Build from an :class:`xarray.Dataset` laid out as :meth:`to_xarray` writes it.

        ``variables`` defaults to the geometry's; grid dimensions may come in any
        order (they are matched by name), leading dimensions are members.
        """
        if time is None and "date" not in dataset.attrs:
            raise ConfigError("xarray dataset has no 'date' attribute: pass time=...")
        time = DateTime(time if time is not None else dataset.attrs["date"])
        fields = {}
        for var in Variables(variables) if variables is not None else geometry.variables:
            if var not in dataset:
                raise ConfigError(f"xarray dataset has no variable '{var}'")
            da = dataset[var]
            dims = geometry.field_dims(var)
            missing = [d for d in dims if d not in da.dims]
            if missing:
                raise ConfigError(f"xarray variable '{var}' has dimensions {da.dims}, expected {dims}")
            fields[var] = np.asarray(da.transpose(..., *dims).values, dtype=np.float64)
        return cls(geometry, FieldSet(fields), time)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.fields!r}, time={self.time}, norm={self.norm():.6g})"


class GenericState(_FieldsHolder, State):
    """A model state backed by a FieldSet.

    Model plugins subclass this to provide :meth:`analytic_init`.
    """

    _kind = "state"

    #: Names of the analytic initial conditions a subclass provides.
    analytic_methods: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, geometry: Geometry, config: Any, path: str = "") -> "GenericState":
        """Read or build a state from a ``{date, filename | analytic init}`` mapping."""
        params = config if isinstance(config, StateParameters) else validate(StateParameters, config, path)
        variables = Variables(params.state_variables) if params.state_variables else geometry.variables
        if params.filename is not None:
            fields, _ = read_fields(params.filename, geometry, variables, params.date, member=params.member,
                                    other_geometry=params.allow_other_geometry)
            return cls(geometry, fields, params.date)
        fields = cls.analytic_init(geometry, params.analytic_init or {}, params.date,
                                   join_path(path, "analytic init"))
        return cls(geometry, fields.subset(variables) if set(fields) != set(variables) else fields, params.date)

    @classmethod
    def analytic_init(cls, geometry: Geometry, config: dict[str, Any], date: DateTime, path: str) -> FieldSet:
        """Analytic initial fields; the generic state has none."""
        raise ConfigError(f"this model plugin provides no analytic initial conditions "
                          f"(state class {cls.__name__}); give 'filename' instead", path)

    def copy(self) -> "GenericState":
        return type(self)(self.geometry, self.fields.copy(), self.time)

    def __iadd__(self, increment: Increment) -> "GenericState":
        if increment.time != self.time:
            raise ValueError(f"increment valid at {increment.time} added to a state valid at {self.time}")
        for var, arr in increment.fields.items():
            self.fields[var] = self.fields[var] + arr
        return self

    def __sub__(self, other: "GenericState") -> "GenericIncrement":
        inc = GenericIncrement(self.geometry, self.fields.zeros_like(), self.time)
        inc.diff(self, other)
        return inc


class GenericIncrement(_FieldsHolder, Increment):
    """An increment backed by a FieldSet, with the OOPS increment algebra."""

    _kind = "increment"

    @classmethod
    def zeros(cls, geometry: Geometry, variables: Variables, time: DateTime,
              batch_shape: tuple[int, ...] = ()) -> "GenericIncrement":
        """A zero increment (the OOPS constructor)."""
        return cls(geometry, geometry.zeros(Variables(variables), batch_shape), time)

    @classmethod
    def read(cls, geometry: Geometry, filename: str, variables: Variables | None = None,
             date: DateTime | None = None) -> "GenericIncrement":
        fields, file_date = read_fields(filename, geometry, variables or geometry.variables, date)
        return cls(geometry, fields, file_date)

    def copy(self) -> "GenericIncrement":
        return type(self)(self.geometry, self.fields.copy(), self.time)

    def zeros_like(self) -> "GenericIncrement":
        return type(self)(self.geometry, self.fields.zeros_like(), self.time)

    def _check(self, other: Increment) -> None:
        if other.variables != self.variables:
            raise ValueError(f"increments hold different variables: {self.variables} vs {other.variables}")

    def zero(self) -> None:
        for arr in self.fields.values():
            arr[...] = 0.0

    def ones(self) -> None:
        for arr in self.fields.values():
            arr[...] = 1.0

    def axpy(self, a: float, other: Increment, check: bool = True) -> None:
        if check and other.time != self.time:
            raise ValueError(f"axpy of increments valid at {self.time} and {other.time}")
        self._check(other)
        self.fields.axpy(a, other.fields)

    def dot_product_with(self, other: Increment) -> float:
        self._check(other)
        return self.fields.dot(other.fields)

    def schur_product_with(self, other: Increment) -> None:
        self._check(other)
        self.fields.schur(other.fields)

    def random(self, rng: np.random.Generator) -> None:
        for arr in self.fields.values():
            arr[...] = rng.standard_normal(arr.shape)

    def diff(self, x1: State, x2: State) -> None:
        for var in self.variables:
            self.fields[var] = x1.fields[var] - x2.fields[var]
        self.time = DateTime(x1.time)

    def dirac(self, config: Any) -> None:
        params = config if isinstance(config, DiracParameters) else validate(DiracParameters, config, "dirac")
        variables = params.variables or [self.variables[0]] * len(params.ixdir)
        if len(variables) != len(params.ixdir):
            raise ConfigError(f"{len(params.ixdir)} impulse positions but {len(variables)} variables", "dirac.variables")
        self.zero()
        for index, var in zip(params.ixdir, variables):
            if var not in self.variables:
                raise ConfigError(f"unknown variable '{var}' (increment has {self.variables})", "dirac.variables")
            # Index into the grid shape (not the raveled array, which may be a copy or hold members):
            # every member of a batched increment gets the impulse.
            shape = self.geometry.field_shape(var)
            size = int(np.prod(shape))
            if not 0 <= index < size:
                raise ConfigError(f"grid index {index} outside 0..{size - 1}", "dirac.ixdir")
            self.fields[var][(...,) + np.unravel_index(index, shape)] = 1.0

    def serialize(self) -> np.ndarray:
        return self.fields.to_vector()

    def deserialize(self, vector: np.ndarray) -> None:
        self.fields = self.fields.from_vector(vector)

    def __iadd__(self, other: Increment) -> "GenericIncrement":
        self._check(other)
        self.fields += other.fields
        return self

    def __isub__(self, other: Increment) -> "GenericIncrement":
        self._check(other)
        self.fields -= other.fields
        return self

    def __imul__(self, factor: float) -> "GenericIncrement":
        self.fields *= float(factor)
        return self
