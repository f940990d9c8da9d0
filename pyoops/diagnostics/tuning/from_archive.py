r"""Tuning data from innovation archives: the observation-space matrices of each archived cycle.

An innovation archive (:mod:`pyoops.diagnostics.archive`) holds, per observation and cycle,
:math:`d = y - H(x_b)`, the assumed :math:`\sigma_o`, the locations, labels and, with an
ensemble, the perturbations :math:`\mathbf Y` of :math:`H(x^b_k)`, so
:math:`\mathbf C_e = \mathbf{YY}^\mathrm T/(N-1)`.  It holds only the *diagonal* of the static
:math:`\mathbf{HB_sH}^\mathrm T`; the full matrix is rebuilt here from the static covariance
(a SABER section) and the observation locations, through the geometry's interpolation
(observations of model variables, the ``Identity`` operator):

.. math::
    \mathbf G_k = \mathbf W_k\,\mathbf B_s^{1/2}, \qquad \mathbf C_{s,k} = \mathbf G_k\mathbf G_k^\mathrm T,

with :math:`\mathbf W_k` the interpolation to cycle :math:`k`'s locations (variable by
variable) and :math:`\mathbf B_s^{1/2}` applied to the :math:`K` unit control vectors
(exact: :math:`K` = the control size, computed once for all cycles; refused above
``max control size``, where a randomized factor would be needed).  Cycles that share their
locations share :math:`\mathbf W_k` (cached by a digest of the coordinates).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pyoops.diagnostics.archive import InnovationData
from pyoops.diagnostics.tuning.data import TuningCycle, TuningData
from pyoops.fields.fieldset import FieldSet
from pyoops.interface.geometry import Locations
from pyoops.util.errors import ConfigError
from pyoops.util.variables import Variables

__all__ = ["StaticFactor", "geometry_distance", "tuning_data"]


def geometry_distance(geometry: Any) -> Any:
    """The tuning distance function from the geometry's horizontal distance (periodic where the grid is),
    with the geometry's KD-tree coordinates (:meth:`~pyoops.interface.geometry.Geometry.search_coordinates`)
    as its ``search_coordinates`` (:func:`~pyoops.diagnostics.tuning.localization.search_coordinates`)."""

    def distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(geometry.distance({k: np.asarray(v)[:, None] for k, v in a.items()},
                                            {k: np.asarray(v)[None, :] for k, v in b.items()}), dtype=np.float64)

    distance.search_coordinates = lambda coords: geometry.search_coordinates(Locations(coords))  # type: ignore
    return distance


class StaticFactor:
    r""":math:`\mathbf B_s^{1/2}` on the grid, and :math:`\mathbf G = \mathbf W\mathbf B_s^{1/2}` at given locations.

    Parameters
    ----------
    covariance:
        A built :class:`~pyoops.saber.chain.ErrorCovariance` (it needs a square root).
    geometry:
        Its geometry (interpolation to the observation locations).
    max_control_size:
        Largest control vector applied column by column.
    path:
        YAML path of the covariance section, for errors.
    """

    def __init__(self, covariance: Any, geometry: Any, max_control_size: int = 20000,
                 path: str = "static covariance"):
        k = int(covariance.ctl_vec_size)
        if k > max_control_size:
            raise ConfigError(f"the static covariance has a control vector of {k} values; the exact factor "
                              f"W B^1/2 is built up to 'max control size' {max_control_size}", path)
        self.geometry = geometry
        self.variables = list(covariance.variables)
        columns = covariance.chain.multiply_sqrt(np.eye(k))      # batch axis: the K unit control vectors
        self.columns = {v: np.asarray(columns[v], dtype=np.float64) for v in self.variables}   # (K, *grid)
        self.size = k
        self._cache: dict[str, np.ndarray] = {}

    def at(self, coordinates: Mapping[str, np.ndarray], variable: Sequence[str]) -> np.ndarray:
        r""":math:`\mathbf G` (``(p, K)``) for observations of ``variable`` (one name per observation) at
        ``coordinates``; rows in the given order."""
        variable = np.asarray(variable, dtype=object)
        key = hashlib.sha256(b"".join(np.ascontiguousarray(coordinates[c], dtype=np.float64).tobytes()
                                      for c in sorted(coordinates)) + "|".join(variable.tolist()).encode()).hexdigest()
        if key in self._cache:
            return self._cache[key]
        p = variable.size
        g = np.empty((p, self.size))
        for v in np.unique(variable):
            if v not in self.columns:
                raise ConfigError(f"the archive has observations of {v!r}, which the static covariance does not "
                                  f"cover (it has {self.variables})", "static covariance")
            rows = np.flatnonzero(variable == v)
            locs = Locations({c: np.asarray(a, dtype=np.float64)[rows] for c, a in coordinates.items()})
            geovals = self.geometry.interpolator(locs).apply(FieldSet({v: self.columns[v]}, copy=False),
                                                             Variables([v]))
            g[rows] = np.asarray(geovals[v], dtype=np.float64).T            # (K, p_v) -> (p_v, K)
        self._cache[key] = g
        return g


def tuning_data(data: InnovationData, static: StaticFactor | None, distance: Any = None,
                use_ensemble: bool = True) -> TuningData:
    """One :class:`~pyoops.diagnostics.tuning.data.TuningCycle` per archived cycle (in cycle order).

    ``static``: the static factor (None: no static part, :math:`\\mathbf G` with no column);
    ``use_ensemble``: pass the archive's ensemble perturbations (when it has them).
    """
    cycles = []
    start = 0
    for k, nobs in zip(data.cycle_index.tolist(), data.cycle_nobs.tolist()):
        rows = slice(start, start + nobs)
        start += nobs
        if nobs == 0:
            continue
        coords = {c: a[rows] for c, a in data.coordinates.items()}
        factor = (np.zeros((nobs, 0)) if static is None else static.at(coords, data.variable[rows]))
        pert = (data.ensemble_perturbations[rows]
                if use_ensemble and data.ensemble_perturbations is not None else None)
        cycles.append(TuningCycle(data.omb[rows], data.obs_error[rows], factor, 1.0, pert, coords,
                                  data.region[rows], data.obs_group[rows], int(k)))
    if not cycles:
        raise ConfigError("the archives hold no observations", "archives")
    return TuningData(tuple(cycles), distance)
