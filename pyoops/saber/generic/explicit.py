r"""``explicit covariance``: a dense covariance matrix read from a file, for tiny problems.

.. math::

    \mathbf{C}\,x = \mathbf{M}\,\mathrm{vec}(x), \qquad
    \mathbf{C}^{1/2} = \mathbf{V}\,\mathrm{diag}(\lambda^{1/2}), \quad \mathbf{M} = \mathbf{V}\,\mathrm{diag}(\lambda)\,\mathbf{V}^\mathsf{T},

where :math:`\mathrm{vec}(x)` concatenates the raveled fields of the active variables
(in the order of the block's variables) and :math:`\mathbf{M}` is the symmetric,
positive semi-definite matrix of the file.  This block is for *small* problems
only (calibration and reference experiments on a few hundred grid values, such as
Lorenz-96's climatological :math:`\mathbf{B}`): it stores :math:`n^2` numbers and costs
:math:`O(n^2)` per application, so it refuses matrices above ``max size`` (default
4096) values.  Production covariances are built from the scalable blocks.

YAML::

    saber central block:
      saber block name: explicit covariance
      read: {filename: data/b_clim.nc}       # or .npy; netCDF variable 'covariance' (row, column)

The matrix file is a NumPy ``.npy`` array or a netCDF file holding a 2-D variable
``covariance`` (name configurable with ``variable``); it is checked for shape,
finiteness, symmetry (relative tolerance 1e-10) and positive semi-definiteness.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
from pydantic import Field

from pyoops.config.parameters import Parameters, validate
from pyoops.fields.fieldset import FieldSet
from pyoops.saber.blocks import BlockContext, SaberBlockParameters, SaberCentralBlock
from pyoops.util.atomic import input_path
from pyoops.util.errors import ConfigError, InputFileError, join_path

__all__ = ["ExplicitCovariance", "ExplicitCovarianceParameters", "ExplicitReadParameters", "read_matrix",
           "write_matrix"]


class ExplicitReadParameters(Parameters):
    """``read:`` of ``explicit covariance``."""

    filename: str = Field(description="A .npy array or a netCDF file with a 2-D variable (n x n).")
    variable: str = Field("covariance", description="Name of the matrix variable in a netCDF file.")


class ExplicitCovarianceParameters(SaberBlockParameters):
    """Keys of ``explicit covariance`` (``read`` is required)."""

    saber_block_name: Literal["explicit covariance"]
    max_size: int = Field(4096, gt=0, description="Refuse matrices of more rows than this (dense storage).")


def read_matrix(filename: str, variable: str = "covariance") -> np.ndarray:
    """A 2-D float64 matrix from a ``.npy`` file or a netCDF variable."""
    if not os.path.isfile(filename):
        raise InputFileError(filename, "matrix file not found")
    if filename.endswith(".npy"):
        try:
            return np.asarray(np.load(input_path(filename), allow_pickle=False), dtype=np.float64)
        except (ValueError, OSError) as exc:
            raise InputFileError(filename, f"is not a readable .npy array ({exc})") from None
    import netCDF4

    try:
        with netCDF4.Dataset(input_path(filename)) as ds:
            if variable not in ds.variables:
                raise InputFileError(filename, f"has no variable '{variable}' (an n x n matrix)")
            return np.asarray(ds.variables[variable][...], dtype=np.float64)
    except OSError as exc:
        raise InputFileError(filename, f"is not a readable netCDF file ({exc.strerror or exc})") from None


def write_matrix(filename: str, matrix: np.ndarray, variable: str = "covariance") -> None:
    """Write ``matrix`` as a netCDF variable (``row``, ``column``), atomically (or ``.npy``)."""
    from pyoops.util.atomic import atomic_output

    matrix = np.asarray(matrix, dtype=np.float64)
    if filename.endswith(".npy"):
        with atomic_output(filename, ".npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, matrix)
        return
    import netCDF4

    with atomic_output(filename, ".nc") as tmp:
        with netCDF4.Dataset(tmp, "w") as ds:
            ds.createDimension("row", matrix.shape[0])
            ds.createDimension("column", matrix.shape[1])
            ds.createVariable(variable, "f8", ("row", "column"))[:] = matrix


class ExplicitCovariance(SaberCentralBlock):
    r"""``explicit covariance``: :math:`\mathbf{C}` given as a dense matrix (small problems only).

    Attributes
    ----------
    matrix:
        The :math:`n \times n` matrix, :math:`n` = the number of grid values of the active variables.
    """

    Parameters = ExplicitCovarianceParameters

    def __init__(self, params: ExplicitCovarianceParameters, context: BlockContext):
        self.matrix: np.ndarray | None = None
        super().__init__(params, context)
        if self.matrix is None:
            raise ConfigError("'explicit covariance' needs 'read: {filename: ...}' (the matrix file)", context.path)

    @property
    def _sizes(self) -> list[int]:
        return [int(np.prod(self.geometry.field_shape(v))) for v in self.variables]

    def read(self, config: dict[str, Any]) -> None:
        path = join_path(self.context.path, "read")
        params = validate(ExplicitReadParameters, config, path)
        n = sum(self._sizes)
        if n > self.params.max_size:
            raise ConfigError(f"the active variables have {n} grid values; a dense matrix is allowed up to "
                              f"'max size' {self.params.max_size} (use a scalable block)", self.context.path)
        m = read_matrix(params.filename, params.variable)
        if m.shape != (n, n):
            raise InputFileError(params.filename, f"matrix has shape {m.shape}, expected ({n}, {n}) for variables "
                                                  f"{list(self.variables)} on this geometry")
        if not np.isfinite(m).all():
            raise InputFileError(params.filename, "matrix has non-finite values")
        scale = max(float(np.abs(m).max()), np.finfo(float).tiny)
        if np.abs(m - m.T).max() > 1e-10 * scale:
            raise InputFileError(params.filename, "matrix is not symmetric")
        m = 0.5 * (m + m.T)
        lam, vec = np.linalg.eigh(m)
        if lam.min() < -1e-10 * max(lam.max(), 0.0):
            raise InputFileError(params.filename, f"matrix is not positive semi-definite (eigenvalue {lam.min():.3g})")
        self.matrix = m
        self._sqrt = vec * np.sqrt(np.clip(lam, 0.0, None))

    # Flat vectors ----------------------------------------------------------------------------
    def _flatten(self, fields: FieldSet) -> tuple[np.ndarray, tuple[int, ...]]:
        parts, batch = [], ()
        for v in self.variables:
            a = np.asarray(fields[v], dtype=np.float64)
            shape = self.geometry.field_shape(v)
            batch = a.shape[: a.ndim - len(shape)]
            parts.append(a.reshape(batch + (-1,)))
        return np.concatenate(parts, axis=-1), batch

    def _unflatten(self, flat: np.ndarray, batch: tuple[int, ...]) -> FieldSet:
        out, start = {}, 0
        for v, size in zip(self.variables, self._sizes):
            out[v] = flat[..., start:start + size].reshape(batch + tuple(self.geometry.field_shape(v)))
            start += size
        return FieldSet(out, copy=False)

    # Operators --------------------------------------------------------------------------------
    def multiply(self, fields: FieldSet) -> FieldSet:
        x, batch = self._flatten(fields)
        return self._unflatten(x @ self.matrix, batch)  # symmetric: x M = (M x^T)^T

    @property
    def ctl_vec_size(self) -> int:
        return int(sum(self._sizes))

    def multiply_sqrt(self, ctl: np.ndarray) -> FieldSet:
        ctl = np.asarray(ctl, dtype=np.float64)
        return self._unflatten(ctl @ self._sqrt.T, ctl.shape[:-1])

    def multiply_sqrt_ad(self, fields: FieldSet) -> np.ndarray:
        x, _ = self._flatten(fields)
        return x @ self._sqrt
