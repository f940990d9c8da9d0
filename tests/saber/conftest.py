"""Fixtures of the SABER block tests: a test-only correlation block, a test geometry plugin, dense matrices.

``test gaussian correlation`` is a *dense* Gaussian correlation on small structured grids
(test use only; production blocks never form n x n matrices).  It reads its length scale
from ``length scale:`` or from a calibrated localization-length file (``read: {filename}``),
and can pretend to have no square root (``no sqrt: true``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest
from pydantic import Field

from pyoops.config.parameters import Parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.generic.grid import Axis, StructuredGrid
from pyoops.registry import ModelPlugin, get_registry
from pyoops.saber.blocks import SaberBlockParameters, SaberCentralBlock
from pyoops.saber.generic.ensemble import read_localization_length
from pyoops.util.errors import ConfigError


class _GaussParams(SaberBlockParameters):
    saber_block_name: Literal["test gaussian correlation"]
    length_scale: float | None = Field(None, gt=0)
    no_sqrt: bool = False


class DenseGaussianCorrelation(SaberCentralBlock):
    """C_ij = exp(-d_ij^2 / (2 L^2)) on the horizontal distance (dense; tests only)."""

    Parameters = _GaussParams

    def __init__(self, params: Any, context: Any):
        self.length = params.length_scale
        super().__init__(params, context)  # may call read()
        if self.length is None:
            raise ConfigError("give 'length scale' or 'read'", context.path)
        mesh = {k: v.ravel() for k, v in self.geometry.mesh().items()}
        a = {k: v[:, None] for k, v in mesh.items()}
        b = {k: v[None, :] for k, v in mesh.items()}
        dist = self.geometry.distance(a, b)
        corr = np.exp(-0.5 * (dist / self.length) ** 2)
        lam, vec = np.linalg.eigh(corr)
        self.sqrt_matrix = vec * np.sqrt(np.clip(lam, 0.0, None))
        self.matrix = self.sqrt_matrix @ self.sqrt_matrix.T  # exactly S S^T
        self.n = corr.shape[0]

    def read(self, config: dict[str, Any]) -> None:
        self.length = float(read_localization_length(config["filename"])["length scale"])

    def sqrt_unavailable(self) -> str | None:
        return "'no sqrt: true' was given" if self.params.no_sqrt else super().sqrt_unavailable()

    def _flat(self, arr: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
        shape = self.geometry.shape
        batch = arr.shape[: arr.ndim - len(shape)]
        return arr.reshape((-1, self.n)), batch

    def multiply(self, fields: FieldSet) -> FieldSet:
        out = {}
        for v, arr in fields.items():
            flat, batch = self._flat(arr)
            out[v] = (flat @ self.matrix.T).reshape(batch + self.geometry.shape)
        return FieldSet(out, copy=False)

    @property
    def ctl_vec_size(self) -> int:
        return self.n * len(self.variables)

    def multiply_sqrt(self, ctl: np.ndarray) -> FieldSet:
        if self.params.no_sqrt:
            raise ConfigError("no square root", self.context.path)
        batch = ctl.shape[:-1]
        out = {}
        for i, v in enumerate(self.variables):
            part = ctl[..., i * self.n:(i + 1) * self.n].reshape((-1, self.n))
            out[v] = (part @ self.sqrt_matrix.T).reshape(batch + self.geometry.shape)
        return FieldSet(out, copy=False)

    def multiply_sqrt_ad(self, fields: FieldSet) -> np.ndarray:
        if self.params.no_sqrt:
            raise ConfigError("no square root", self.context.path)
        parts = []
        for v in self.variables:
            flat, batch = self._flat(fields[v])
            parts.append((flat @ self.sqrt_matrix).reshape(batch + (self.n,)))
        return np.concatenate(parts, axis=-1)

    def randomize(self, rng: np.random.Generator, batch_shape: tuple[int, ...] = ()) -> FieldSet:
        out = {}
        for v in self.variables:
            z = rng.standard_normal(tuple(batch_shape) + (self.n,))
            out[v] = (z @ self.sqrt_matrix.T).reshape(tuple(batch_shape) + self.geometry.shape)
        return FieldSet(out, copy=False)


class _TestGridParams(Parameters):
    kind: Literal["periodic 1d", "periodic 2d", "channel 2d"] = "periodic 1d"
    nx: int = Field(gt=1)
    ny: int = 1
    lx: float = 1.0
    ly: float = 1.0
    variables: list[str] = ["a", "b"]


class TestGrid(StructuredGrid):
    """A structured grid built from YAML (the geometry of the ``testgrid`` model plugin)."""

    Parameters = _TestGridParams
    __test__ = False

    def __init__(self, params: _TestGridParams):
        self.params = params
        if params.kind == "periodic 1d":
            axes = [Axis.periodic_axis("x", params.nx, params.lx, dim="position")]
        elif params.kind == "periodic 2d":
            axes = [Axis.periodic_axis("y", params.ny, params.ly), Axis.periodic_axis("x", params.nx, params.lx)]
        else:
            axes = [Axis.bounded_axis("y", params.ny, params.ly), Axis.periodic_axis("x", params.nx, params.lx)]
        super().__init__(axes, params.variables)


@pytest.fixture(scope="session")
def registry():
    reg = get_registry()
    reg.saber_block.register("test gaussian correlation", DenseGaussianCorrelation, plugin="tests", replace=True)
    return reg


@pytest.fixture(scope="session")
def testgrid():
    """``(make_grid, model_plugin)``: ``make_grid(**yaml)`` builds a TestGrid; the plugin builds them from YAML."""
    def make(**cfg: Any) -> TestGrid:
        return TestGrid(_TestGridParams(**cfg))

    return make, ModelPlugin("testgrid", geometry=TestGrid)


def _dense(apply: Any, geometry: Any, variables: Any, times: int | None = None) -> np.ndarray:
    """Dense matrix of a linear map on FieldSets: one batched application to all unit vectors (tests only).

    With ``times``, the map acts on 4-D fields ``(time, *grid)``; vectors are ordered variable, time, grid.
    """
    template = geometry.zeros(variables, () if times is None else (times,))
    n = template.to_vector().size
    eye = np.eye(n)
    start = 0
    batch = {}
    for v in template:
        size = template[v].size
        batch[v] = eye[:, start:start + size].reshape((n,) + template[v].shape)
        start += size
    out = apply(FieldSet(batch, copy=False))
    if isinstance(out, np.ndarray):  # a map to control vectors
        return out.reshape((n, -1)).T
    names = [v for v in variables if v in out]
    cols = np.concatenate([out[v].reshape((n, -1)) for v in names], axis=1)  # row j = A e_j
    return cols.T


@pytest.fixture(scope="session")
def dense():
    return _dense
