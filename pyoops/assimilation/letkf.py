r"""Local ensemble Kalman filters: LETKF and GETKF, observation-space localization, inflation.

Everything here works on stacked arrays, separately from files, so that a cycling
loop can call it directly:

.. code-block:: python

    selection = local_obs_selection(geometry, obs_locations, [ObsLocalization(lengthscale=0.2)])
    for cycle in ...:
        xb = forecast(xa)                                   # (N, *grid) or FieldSet of them
        hxb = xb[:, obs_index]                              # (N, p) H(x_k), any H
        xa = letkf_analysis(xb, hxb, y, obs_variance, selection, mult=1.03)

LETKF (Hunt et al. 2007)
------------------------

With :math:`N` members, raw perturbations :math:`X'` (columns
:math:`x_k - \bar x`), observation-space perturbations :math:`Y` (columns
:math:`\mathcal{H}(x_k) - \overline{\mathcal{H}(x)}`) and departures
:math:`d = y - \overline{\mathcal{H}(x)}`, every grid point :math:`g` selects the
observations within the localization cutoff (``geometry.distance``) and weights
their inverse error variances by the localization function,
:math:`\mathbf{R}_g^{-1} = \mathrm{diag}(\rho_{go}/\sigma_o^2)`. With the
multiplicative inflation :math:`\rho` (``mult``):

.. math::

    \tilde{\mathbf{P}}_a = \big[(N-1)\mathbf{I}/\rho + \mathbf{Y}^\mathsf{T}\mathbf{R}_g^{-1}\mathbf{Y}\big]^{-1},
    \quad
    \bar w = \tilde{\mathbf{P}}_a \mathbf{Y}^\mathsf{T}\mathbf{R}_g^{-1} d,
    \quad
    \mathbf{W} = \big[(N-1)\tilde{\mathbf{P}}_a\big]^{1/2},

and :math:`x^a_k(g) = \bar x(g) + X'(g)\,(\bar w + \mathbf{W}_{:,k})`: the mean update and
the symmetric square-root perturbation update.  The symmetric square root keeps the
analysis perturbations centred (:math:`\mathbf{W}\mathbf{1} = \sqrt{\rho}\,\mathbf{1}`).
A grid point without any local observation keeps its background unchanged (as OOPS
does; multiplicative inflation is not applied there either).

Implementation: with :math:`S = \sqrt{\rho/(N-1)}\,\mathbf{R}_g^{-1/2}\mathbf{Y}`
(:math:`m` local observations by :math:`N`),
:math:`\mathbf{W} = \sqrt\rho\,(\mathbf{I} + S^\mathsf{T}S)^{-1/2}` and
:math:`\bar w = \sqrt{\rho/(N-1)}\,S^\mathsf{T}(\mathbf{I} + SS^\mathsf{T})^{-1}\tilde d` with
:math:`\tilde d = \mathbf{R}_g^{-1/2} d`.  The
eigen-decomposition is done in ensemble space (:math:`S^\mathsf{T}S`, :math:`N \times N`)
or, when there are fewer local observations than members, in observation space
(:math:`SS^\mathsf{T}`, :math:`m \times m`, using
:math:`(\mathbf{I}+S^\mathsf{T}S)^{-1/2} = \mathbf{I} - S^\mathsf{T}U f(\Gamma) U^\mathsf{T} S` with
:math:`f(\gamma) = 1/(1 + \gamma + \sqrt{1+\gamma})`): both give the same weights to
round-off.

Vectorisation: the local observation sets are precomputed once per observation
network as padded arrays (:class:`LocalObsSelection`: index and weight of up to
:math:`m_{max}` observations per point, weight 0 for padding), grid points with
identical selections (e.g. all levels of a column, or every point without
localization) share one row, and all rows are solved at once by one
``numpy.linalg.eigh`` on a stacked ``(rows, n, n)`` array.  There is no Python loop
over grid points.

Scale: the selection is built from the point–observation pairs within the
localization cutoff (:func:`localization_cutoff`), found with a KD-tree where the
geometry provides :meth:`~pyoops.interface.geometry.Geometry.search_coordinates`, so its
memory is proportional to the pairs, never to :math:`n_{points} \times n_{obs}`; and the
rows are solved, and the weights applied, in blocks of rows
(:data:`BLOCK_BYTES` of temporaries), so the peak memory beyond the inputs and the
weights themselves is bounded.  Neither changes a bit of the result.

GETKF (Bishop et al. 2017; Lei et al. 2018)
-------------------------------------------

The gain form of the ETKF with a *modulated* ensemble: with :math:`M` modulation
modes :math:`v_j` (the leading eigenvectors of a model-space localization matrix
:math:`\mathbf{L} \approx \sum_j v_j v_j^\mathsf{T}`, see :func:`modulation_modes`), the
:math:`K = NM` members :math:`z_{kj} = \sqrt{\rho/(N-1)}\, v_j \circ x'_k` satisfy
:math:`\mathbf{Z}\mathbf{Z}^\mathsf{T} = \rho\,\mathbf{L}\circ\mathbf{P}_e`.  With
:math:`S = \mathbf{R}_g^{-1/2}\mathbf{H}\mathbf{Z}` and
:math:`S^\mathsf{T}S = C\Gamma C^\mathsf{T}`:

.. math::

    \bar x^a = \bar x + \mathbf{Z}\,C(\mathbf{I}+\Gamma)^{-1}C^\mathsf{T}S^\mathsf{T}\tilde d,
    \qquad
    X'_a = \sqrt\rho\,X' - \mathbf{Z}\,C f(\Gamma) C^\mathsf{T} S^\mathsf{T}\,
    \sqrt\rho\,\mathbf{R}_g^{-1/2}\mathbf{Y},

i.e. :math:`X'_a = (\mathbf{I} - \tilde{\mathbf{K}}\mathbf{H})X'` with the modified gain
:math:`\tilde{\mathbf{K}} = \mathbf{Z}C[\mathbf{I} - (\mathbf{I}+\Gamma)^{-1/2}]\Gamma^{-1}C^\mathsf{T}S^\mathsf{T}\mathbf{R}^{-1/2}`
applied to the :math:`N` original members, whose analysis covariance is
:math:`(\mathbf{I}-\mathbf{K}\mathbf{H})\mathbf{Z}\mathbf{Z}^\mathsf{T}` for the modulated ensemble.
:math:`\mathbf{H}\mathbf{Z}` is either computed by applying :math:`\mathcal{H}` to the
modulated members :math:`\bar x + v_j\circ x'_k` (what the application does, as OOPS)
or approximated in observation space by :math:`v_j(o)\,Y_{ko}` (:func:`modulate_obs`),
which is exact for observations at grid points.  The observation-space localization
still applies on top (per grid point, as for LETKF).  With one constant mode
(:math:`v = 1`) the GETKF equals the LETKF.

Posterior inflation
-------------------

* RTPP (Zhang et al. 2004): :math:`X'_a \leftarrow (1-\alpha)X'_a + \alpha X'_b`;
* RTPS (Whitaker & Hamill 2012): :math:`X'_a \leftarrow X'_a\,\big(1 + \alpha(\sigma_b-\sigma_a)/\sigma_a\big)`
  pointwise, with :math:`\sigma` the ensemble standard deviations;

both relax towards the background perturbations *before* multiplicative inflation
(as OOPS).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from pyoops.config.parameters import Parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.interface.geometry import Locations
from pyoops.saber.generic.ensemble import gaspari_cohn
from pyoops.util.errors import ConfigError
from pyoops.util.logging import logger

__all__ = [
    "EnsembleWeights",
    "InflationParameters",
    "LocalEnsembleDAParameters",
    "LocalObsSelection",
    "ModulationParameters",
    "ObsLocalization",
    "apply_weights",
    "ensemble_transform",
    "getkf_analysis",
    "getkf_weights",
    "letkf_analysis",
    "letkf_weights",
    "local_obs_selection",
    "localization_cutoff",
    "localization_function",
    "modulate",
    "modulate_obs",
    "modulation_modes",
    "relax_to_prior_perturbations",
    "relax_to_prior_spread",
]

_GC = ("Gaspari-Cohn", "Horizontal Gaspari-Cohn")
_BOX = ("Box Car", "Horizontal Box car")
_NEGLIGIBLE = 1e-12
LocalizationMethod = Literal["Gaspari-Cohn", "Box Car", "Horizontal Gaspari-Cohn", "Horizontal Box car"]


# Parameters -------------------------------------------------------------------------------------
class ObsLocalization(Parameters):
    """One entry of an observer's ``obs localizations`` (UFO's horizontal localizations).

    ``lengthscale`` is the distance at which the localization reaches zero, in the
    units of ``geometry.distance`` (the domain length is 1 on Lorenz-96), as in UFO:
    Gaspari–Cohn is :math:`\\mathrm{GC}(r; c = \\text{lengthscale}/2)`, Box Car is 1 up to
    ``lengthscale`` and 0 beyond.  Several localizations of one observer multiply.
    """

    localization_method: LocalizationMethod = Field(
        "Gaspari-Cohn", description="'Gaspari-Cohn' or 'Box Car' ('Horizontal ...' names accepted).")
    lengthscale: float = Field(description="Cutoff distance (the localization is zero beyond it); > 0.")

    @field_validator("lengthscale")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"lengthscale must be a positive distance (the localization radius), got {value}")
        return value


class InflationParameters(Parameters):
    """``inflation: {mult, rtpp, rtps}`` of ``local ensemble DA``."""

    mult: float = Field(1.0, description="Multiplicative (prior) inflation of the covariance, >= 1.")
    posterior_mult: float = Field(
        1.0, alias="posterior mult",
        description="Multiplicative posterior inflation of the covariance, >= 1: the analysis perturbations are "
                    "multiplied by its square root after RTPP and RTPS (DAPPER's and DART's posterior inflation; "
                    "DAPPER's infl = sqrt of it).")
    rtpp: float = Field(0.0, description="Relaxation to prior perturbations, 0 <= rtpp <= 1 (0: off).")
    rtps: float = Field(0.0, description="Relaxation to prior spread, 0 <= rtps <= 1 (0: off).")

    @field_validator("mult", "posterior_mult")
    @classmethod
    def _mult(cls, value: float) -> float:
        if not (np.isfinite(value) and value >= 1.0):
            raise ValueError(f"multiplicative inflation must be >= 1 (deflation is not allowed), got {value}")
        return value

    @field_validator("rtpp", "rtps")
    @classmethod
    def _relaxation(cls, value: float, info: Any) -> float:
        if not (np.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"{info.field_name} must lie in [0, 1], got {value}")
        return value


class ModulationParameters(Parameters):
    """Model-space localization whose square root modulates the GETKF ensemble."""

    localization_method: LocalizationMethod = Field("Gaspari-Cohn", description="'Gaspari-Cohn' or 'Box Car'.")
    lengthscale: float = Field(description="Cutoff distance of the model-space localization; > 0.")
    fraction_of_retained_variance: float = Field(
        0.95, description="Keep the fewest leading modes whose eigenvalues reach this fraction of the sum of "
                          "the non-negative eigenvalues of L (negative ones set to 0), 0 < f <= 1.")
    number_of_modes: int | None = Field(None, ge=1, description="Keep this many modes instead (raised to the end "
                                                                "of a group of equal eigenvalues, with a warning).")

    @field_validator("lengthscale")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"lengthscale must be a positive distance, got {value}")
        return value

    @field_validator("fraction_of_retained_variance")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not (0.0 < value <= 1.0):
            raise ValueError(f"must lie in (0, 1], got {value}")
        return value


class LocalEnsembleDAParameters(Parameters):
    """The ``local ensemble DA`` section (OOPS LocalEnsembleDA solver options)."""

    solver: Literal["LETKF", "GETKF"] = Field("LETKF", description="'LETKF' or 'GETKF'.")
    inflation: InflationParameters = Field(default_factory=InflationParameters,
                                           description="Multiplicative, RTPP and RTPS inflation.")
    vertical_localization: ModulationParameters | None = Field(
        None, description="GETKF: modulate by the level-axis localization (as OOPS's GETKF).")
    horizontal_localization: ModulationParameters | None = Field(
        None, description="GETKF on grids without levels: modulate by the model-space horizontal localization.")

    @model_validator(mode="after")
    def _modulation(self) -> "LocalEnsembleDAParameters":
        given = [k for k in ("vertical_localization", "horizontal_localization") if getattr(self, k) is not None]
        if self.solver == "GETKF" and len(given) != 1:
            raise ValueError("GETKF needs exactly one of 'vertical localization' and 'horizontal localization' "
                             "(the localization whose square root modulates the ensemble)")
        if self.solver == "LETKF" and given:
            raise ValueError(f"'{given[0].replace('_', ' ')}' only applies to the GETKF solver")
        return self

    @property
    def modulation(self) -> tuple[str, ModulationParameters] | None:
        if self.vertical_localization is not None:
            return "vertical", self.vertical_localization
        if self.horizontal_localization is not None:
            return "horizontal", self.horizontal_localization
        return None


# BLAS threads ---------------------------------------------------------------------------------------
class _BlasThreads:
    """Run BLAS/LAPACK single-threaded inside ``with`` (restored on exit).

    The local problems are many small matrices: OpenBLAS threading inside each
    ``eigh`` or ``matmul`` of size 20–40 costs more than it gains (2–5 times slower on
    a busy two-core machine).  Acts on every OpenBLAS loaded in the process (numpy's,
    scipy's), found in ``/proc/self/maps``; a no-op where there is none.
    """

    def __init__(self) -> None:
        self._libs: list[tuple[Any, Any]] = []
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: list[int] = []
        try:
            self._find()
        except Exception:  # pragma: no cover - platform dependent
            self._libs = []

    def _find(self) -> None:
        import ctypes
        import os

        if not os.path.exists("/proc/self/maps"):
            return
        with open("/proc/self/maps") as maps:
            names = [line.split()[-1] for line in maps if "openblas" in line]
        for path in sorted({name for name in names if name.startswith("/")}):
            lib = ctypes.CDLL(path)
            for prefix in ("scipy_openblas", "openblas"):
                for suffix in ("64_", ""):
                    get, set_ = f"{prefix}_get_num_threads{suffix}", f"{prefix}_set_num_threads{suffix}"
                    if hasattr(lib, get) and hasattr(lib, set_):
                        getter = getattr(lib, get)
                        getter.restype = ctypes.c_int
                        self._libs.append((getter, getattr(lib, set_)))
                        break
                else:
                    continue
                break

    def __enter__(self) -> "_BlasThreads":
        if self._libs:
            with self._lock:
                if self._depth == 0:
                    self._saved = [int(get()) for get, _ in self._libs]
                    for (_, set_), n in zip(self._libs, self._saved):
                        if n != 1:
                            set_(1)
                self._depth += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._libs:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    for (_, set_), n in zip(self._libs, self._saved):
                        if n != 1:
                            set_(n)


_single_threaded_blas = _BlasThreads()


# Localization functions -------------------------------------------------------------------------
def localization_function(distance: Any, method: str, lengthscale: float) -> np.ndarray:
    """Localization weight at ``distance``: Gaspari–Cohn reaching 0 at ``lengthscale``, or Box Car."""
    r = np.abs(np.asarray(distance, dtype=np.float64))
    if method in _GC:
        return gaspari_cohn(r, 0.5 * float(lengthscale))
    if method in _BOX:
        return (r <= lengthscale).astype(np.float64)
    raise ConfigError(f"unknown localization method {method!r} (known: Gaspari-Cohn, Box Car)")


def localization_cutoff(method: str, lengthscale: float) -> float:
    """Distance beyond which :func:`localization_function` is zero (its support is ``[0, cutoff]``).

    Gaspari–Cohn with :math:`c = \\text{lengthscale}/2` vanishes for :math:`r \\ge 2c`
    (:func:`~pyoops.saber.generic.ensemble.gaspari_cohn`), Box Car for :math:`r >
    \\text{lengthscale}`: both cut off at ``lengthscale`` (Gaspari–Cohn is already 0 there,
    Box Car still 1).
    """
    if method in _GC or method in _BOX:
        return float(lengthscale)
    raise ConfigError(f"unknown localization method {method!r} (known: Gaspari-Cohn, Box Car)")


def _localization_product(distance: np.ndarray, localizations: Sequence[Any]) -> np.ndarray:
    w = np.ones_like(distance)
    for loc in localizations:
        w = w * localization_function(distance, loc.localization_method, loc.lengthscale)
    return w


# Local observation selection --------------------------------------------------------------------
@dataclass
class LocalObsSelection:
    """Which observations each grid point uses, and with which localization weight.

    Rows are the distinct selections; ``point_row[q]`` is the row of grid point ``q``
    (flat C-order index of the geometry's grid).  ``index[r, :]`` holds the
    observation indices of row ``r`` in increasing order, padded with 0,
    ``weight[r, :]`` their localization weights padded with 0 (a padded entry has no
    effect).  When the widest row holds every observation, rows are not compacted
    instead: ``index[r] = 0, 1, ..., nobs - 1`` and ``weight[r, o]`` is the weight of
    observation ``o`` (0 where unused).  The rows are in increasing lexicographic
    order of (index, weight) (``numpy.unique``).
    """

    index: np.ndarray
    weight: np.ndarray
    point_row: np.ndarray
    nobs: int

    @property
    def npoints(self) -> int:
        return int(self.point_row.size)

    @property
    def nrows(self) -> int:
        return int(self.index.shape[0])

    @property
    def width(self) -> int:
        """Padded number of local observations."""
        return int(self.index.shape[1])

    def counts(self) -> np.ndarray:
        """Number of observations with a non-zero weight, per grid point."""
        return (self.weight > 0).sum(axis=1)[self.point_row]


def _as_location_list(obs_locations: "Locations | Sequence[Locations]") -> list[Locations]:
    return [obs_locations] if isinstance(obs_locations, Locations) else list(obs_locations)


#: Relative margin of the KD-tree search radius.  The tree's distance and ``geometry.distance``
#: differ by the rounding of a few operations on the coordinates (a few ulp of their
#: magnitude, ~1e-15 relative); a margin a million times larger cannot miss a pair, and
#: the surplus pairs get their exact weight (0) from ``geometry.distance``.
_SEARCH_MARGIN = 1e-9

SearchMethod = Literal["auto", "kdtree", "brute"]


def local_obs_selection(geometry: Any, obs_locations: "Locations | Sequence[Locations]",
                        localizations: Any = None, points: Locations | None = None,
                        chunk: int = 1 << 21, search: SearchMethod = "auto") -> LocalObsSelection:
    r"""Precompute the local observations of every grid point (reusable while the network is fixed).

    Point :math:`q` uses observation :math:`o` of group :math:`g` with the weight
    :math:`\rho_{qo} = \prod_{\ell \in g} \ell\big(\text{distance}(q, o)\big)` of the
    group's localizations (1 without localization) when :math:`\rho_{qo} > 10^{-12}`
    (a weight below that, e.g. a point at the cutoff up to rounding, counts as 0 so
    that the selection stays symmetric).  The product vanishes beyond the smallest
    :func:`localization_cutoff` :math:`r_g` of the group, so only the pairs with
    :math:`\text{distance} \le r_g` need a weight.

    Search: with ``geometry.search_coordinates``
    (:meth:`~pyoops.interface.geometry.Geometry.search_coordinates`) the candidate
    pairs of each localized group come from two :class:`scipy.spatial.cKDTree`
    (grid points and observations, radius :math:`r_g(1 + 10^{-9})` plus
    :math:`10^{-9}` of the coordinate magnitude, see ``_SEARCH_MARGIN``), in
    :math:`O((n + p)\log(n + p) + P)` time and :math:`O(P)` memory for :math:`P`
    pairs within the cutoff; otherwise (``brute``) ``distance`` is evaluated between
    all point–observation pairs, ``chunk`` at a time, keeping only the used pairs.
    Either way the weight of a pair is computed by the same elementwise operations
    on the same coordinates (``geometry.distance`` and :func:`localization_function`),
    so both searches give the same selection, weights bit for bit.  A group without
    localization contributes every observation to every row; it is added to the
    distinct rows of the localized groups, never to every point.

    Parameters
    ----------
    geometry:
        Provides ``distance`` and ``grid_locations`` (and optionally ``search_coordinates``).
    obs_locations:
        Locations of the observation values in the order of the observation vector,
        or one :class:`~pyoops.interface.geometry.Locations` per group (observer) of consecutive values.
    localizations:
        ``None`` or ``[]``: no localization (every observation at every point); a
        list of :class:`ObsLocalization` (or objects with ``localization_method`` and
        ``lengthscale``) applied to every group, multiplied; or, with several
        groups, one such list per group.
    points:
        The analysed points (default: every grid point, ``geometry.grid_locations()``).
    chunk:
        Brute-force search: number of point–observation distances evaluated at once (memory bound).
    search:
        ``auto`` (KD-tree where the geometry provides search coordinates, else brute
        force), ``kdtree`` (an error if it does not) or ``brute``.
    """
    groups = _as_location_list(obs_locations)
    if localizations is None:
        per_group: list[list[Any]] = [[] for _ in groups]
    elif len(localizations) and isinstance(localizations[0], (list, tuple)):
        per_group = [list(loc or []) for loc in localizations]
        if len(per_group) != len(groups):
            raise ValueError(f"{len(per_group)} localization lists for {len(groups)} observation groups")
    else:
        per_group = [list(localizations)] * len(groups)
    if search not in ("auto", "kdtree", "brute"):
        raise ValueError(f"search must be 'auto', 'kdtree' or 'brute', got {search!r}")
    points = geometry.grid_locations() if points is None else points
    npts = points.nlocs
    offsets = np.cumsum([0] + [g.nlocs for g in groups])
    nobs = int(offsets[-1])
    point_tree = None
    if search != "brute" and any(per_group):
        point_coords = geometry.search_coordinates(points)
        if point_coords is None and search == "kdtree":
            raise ValueError(f"{type(geometry).__name__} provides no search coordinates for a KD-tree search")
        if point_coords is not None and npts:
            point_tree = point_coords.kd_tree()
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    unlocalized: list[np.ndarray] = []
    for locs, locz, offset in zip(groups, per_group, offsets[:-1]):
        if not locz:
            unlocalized.append(np.arange(offset, offset + locs.nlocs))
            continue
        cutoff = min(localization_cutoff(loc.localization_method, loc.lengthscale) for loc in locz)
        if point_tree is not None:
            p, j, w = _tree_pairs(geometry, points, point_tree, locs, locz, cutoff)
        else:
            p, j, w = _brute_pairs(geometry, points, locs, locz, chunk)
        pairs.append((p, j + offset, w))
    if pairs:
        p, o, w = (np.concatenate(parts) for parts in zip(*pairs))
    else:
        p, o, w = np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0)
    index, weight = _padded_rows(p, o, w, npts, nobs)
    if not unlocalized:
        return _merged_selection(index, weight, np.arange(npts), nobs)
    # Distinct rows of the localized groups first, then every unlocalized observation added to each.
    local = _merged_selection(index, weight, np.arange(npts), nobs)
    rows, col = np.nonzero(local.weight)
    every = np.concatenate(unlocalized)
    nrows = local.nrows
    p = np.concatenate([rows, np.repeat(np.arange(nrows), every.size)])
    o = np.concatenate([local.index[rows, col], np.tile(every, nrows)])
    w = np.concatenate([local.weight[rows, col], np.ones(nrows * every.size)])
    index, weight = _padded_rows(p, o, w, nrows, nobs)
    return _merged_selection(index, weight, local.point_row, nobs)


def _pair_weights(geometry: Any, points: Locations, locs: Locations, p: np.ndarray, j: np.ndarray,
                  localizations: Sequence[Any]) -> np.ndarray:
    """Localization weights of the pairs (point ``p[i]``, observation ``j[i]``)."""
    a = {k: v[p] for k, v in points.coords.items()}
    b = {k: v[j] for k, v in locs.coords.items()}
    return _localization_product(np.asarray(geometry.distance(a, b), dtype=np.float64), localizations)


def _tree_pairs(geometry: Any, points: Locations, point_tree: Any, locs: Locations,
                localizations: Sequence[Any], cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Used (point, observation, weight) triples of one group from a KD-tree search within ``cutoff``.

    ``point_tree`` is the :class:`scipy.spatial.cKDTree` of the points' search coordinates.
    """
    from scipy.spatial import cKDTree

    obs_coords = geometry.search_coordinates(locs)
    # A location with a non-finite coordinate has a NaN distance, hence weight 0 (as in the brute search).
    finite = np.flatnonzero(np.isfinite(obs_coords.points).all(axis=1))
    empty = np.zeros(0, np.intp)
    if finite.size == 0 or points.nlocs == 0:
        return empty, empty, np.zeros(0)
    xo = obs_coords.points[finite]
    scale = max(np.abs(xo).max(), np.abs(point_tree.data).max(), np.max(point_tree.boxsize, initial=0.0))
    radius = cutoff * (1.0 + _SEARCH_MARGIN) + _SEARCH_MARGIN * scale
    obs_tree = cKDTree(xo, boxsize=point_tree.boxsize)
    found = point_tree.sparse_distance_matrix(obs_tree, radius, output_type="ndarray")
    p, j = found["i"].astype(np.intp), finite[found["j"]]
    w = _pair_weights(geometry, points, locs, p, j, localizations)
    used = w > _NEGLIGIBLE
    return p[used], j[used], w[used]


def _brute_pairs(geometry: Any, points: Locations, locs: Locations, localizations: Sequence[Any],
                 chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Used (point, observation, weight) triples of one group from all distances, ``chunk`` at a time."""
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    step = max(1, chunk // max(locs.nlocs, 1))
    b = {k: v[None, :] for k, v in locs.coords.items()}
    for start in range(0, points.nlocs, step):
        stop = min(points.nlocs, start + step)
        a = {k: v[start:stop, None] for k, v in points.coords.items()}
        w = _localization_product(np.asarray(geometry.distance(a, b), dtype=np.float64), localizations)
        p, j = np.nonzero(w > _NEGLIGIBLE)
        parts.append((p + start, j, w[p, j]))
    if not parts:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0)
    p, j, w = (np.concatenate(x) for x in zip(*parts))
    return p, j, w


def _padded_rows(rows: np.ndarray, obs: np.ndarray, weight: np.ndarray, nrows: int, nobs: int,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Padded ``(nrows, width)`` index and weight arrays from (row, observation, weight) triples.

    Within a row the observations are in increasing order, padded with (0, 0.0) up to the
    widest row; if that row holds all ``nobs`` observations, observation ``o`` sits in
    column ``o`` of every row instead (see :class:`LocalObsSelection`).
    """
    order = np.argsort(rows.astype(np.int64) * max(nobs, 1) + obs, kind="stable")
    rows, obs, weight = rows[order], obs[order], weight[order]
    counts = np.bincount(rows, minlength=nrows)
    width = int(counts.max()) if nrows and rows.size else 0
    if width == nobs:
        index = np.broadcast_to(np.arange(nobs), (nrows, nobs)).copy()
        col = obs
    else:
        index = np.zeros((nrows, width), dtype=np.intp)
        col = np.arange(rows.size) - (np.cumsum(counts) - counts)[rows]
        index[rows, col] = obs
    padded = np.zeros((nrows, width))
    padded[rows, col] = weight
    return index, padded


def _merged_selection(index: np.ndarray, weight: np.ndarray, point_row: np.ndarray, nobs: int,
                      ) -> LocalObsSelection:
    """The selection of the distinct rows of (``index``, ``weight``), ``point_row`` mapped onto them."""
    if index.shape[0] == 0:
        return LocalObsSelection(index, weight, np.zeros(point_row.size, dtype=np.intp), nobs)
    key = np.concatenate([index.astype(np.float64), weight], axis=1)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    return LocalObsSelection(index[first], weight[first], inverse.ravel().astype(np.intp)[point_row], nobs)


# The ensemble-space kernel ----------------------------------------------------------------------
def _f_gamma(gamma: np.ndarray) -> np.ndarray:
    """:math:`(1 - (1+\\gamma)^{-1/2})/\\gamma = 1/(1 + \\gamma + \\sqrt{1+\\gamma})`, stable at 0."""
    return 1.0 / (1.0 + gamma + np.sqrt(1.0 + gamma))


def ensemble_transform(s: np.ndarray, d: np.ndarray, sb: np.ndarray | None = None,
                       space: Literal["auto", "ensemble", "observation"] = "auto") -> tuple[np.ndarray, np.ndarray]:
    r"""Batched gain-form ensemble transform.

    For each batch entry, with :math:`S` (``m × K``, observation-space perturbations of
    the ensemble that defines the covariance, scaled by :math:`\mathbf{R}^{-1/2}` and
    normalised so that :math:`\mathbf{H}\mathbf{P}\mathbf{H}^\mathsf{T} = \mathbf{R}^{1/2}SS^\mathsf{T}\mathbf{R}^{1/2}`)
    and :math:`\tilde d` (``m``, scaled departures), returns

    * the mean weights :math:`w = S^\mathsf{T}(\mathbf{I}+SS^\mathsf{T})^{-1}\tilde d` (``K``);
    * if ``sb`` (``m × N``) is given, :math:`P = S^\mathsf{T}U f(\Gamma)U^\mathsf{T} S_b`
      (``K × N``, the GETKF perturbation weights); otherwise the symmetric square root
      :math:`(\mathbf{I}+S^\mathsf{T}S)^{-1/2}` (``K × K``, the ETKF transform).

    Shapes: ``s`` ``(..., m, K)``, ``d`` ``(..., m)``, ``sb`` ``(..., m, N)``.
    ``space`` chooses the eigen-decomposition: ensemble space (``K × K``) or observation
    space (``m × m``); ``auto`` takes the smaller.
    """
    with _single_threaded_blas:
        return _ensemble_transform(s, d, sb, space)


def _ensemble_transform(s: np.ndarray, d: np.ndarray, sb: np.ndarray | None, space: str,
                        ) -> tuple[np.ndarray, np.ndarray]:
    m, k = s.shape[-2], s.shape[-1]
    if m == 0:  # no observation at all
        batch = s.shape[:-2]
        pert = np.broadcast_to(np.eye(k), batch + (k, k)).copy() if sb is None else np.zeros(batch + (k, sb.shape[-1]))
        return np.zeros(batch + (k,)), pert
    if space == "auto":
        space = "observation" if m < k else "ensemble"
    st = np.swapaxes(s, -1, -2)
    if space == "ensemble":
        gamma, c = np.linalg.eigh(st @ s)
        gamma = np.maximum(gamma, 0.0)
        ct = np.swapaxes(c, -1, -2)
        std = (st @ d[..., None])[..., 0]
        mean = (c @ ((ct @ std[..., None])[..., 0] / (1.0 + gamma))[..., None])[..., 0]
        if sb is None:
            pert = (c * (1.0 / np.sqrt(1.0 + gamma))[..., None, :]) @ ct
        else:
            pert = (c * _f_gamma(gamma)[..., None, :]) @ (ct @ (st @ sb))
        return mean, pert
    if space != "observation":
        raise ValueError(f"space must be 'auto', 'ensemble' or 'observation', got {space!r}")
    gamma, u = np.linalg.eigh(s @ st)
    gamma = np.maximum(gamma, 0.0)
    ut = np.swapaxes(u, -1, -2)
    stu = st @ u
    mean = (stu @ ((ut @ d[..., None])[..., 0] / (1.0 + gamma))[..., None])[..., 0]
    if sb is None:
        pert = np.eye(k) - (stu * _f_gamma(gamma)[..., None, :]) @ np.swapaxes(stu, -1, -2)
    else:
        pert = (stu * _f_gamma(gamma)[..., None, :]) @ (ut @ sb)
    return mean, pert


# Weights ---------------------------------------------------------------------------------------
@dataclass
class EnsembleWeights:
    r"""Analysis weights of every selection row, to apply to background members.

    LETKF: ``mean`` ``(rows, N)`` and ``pert`` ``(rows, N, N)`` act on the raw
    perturbations: :math:`\bar x^a = \bar x + X'\,\text{mean}`, :math:`X'_a = X'\,\text{pert}`.
    GETKF: ``mean`` ``(rows, N, M)`` and ``pert`` ``(rows, N, M, N)`` act on the
    modulated raw perturbations :math:`x'_k v_j`, and ``scale`` ``(rows,)`` is the factor
    of :math:`X'` in :math:`X'_a = \text{scale}\,X' - \sum_{kj} x'_k v_j\,\text{pert}_{kj}`.
    ``active`` marks rows with at least one used observation (inactive rows keep the
    background).
    """

    solver: str
    mean: np.ndarray
    pert: np.ndarray
    scale: np.ndarray
    active: np.ndarray
    point_row: np.ndarray
    nmembers: int

    def at_points(self) -> "EnsembleWeights":
        """The same weights expanded to one row per grid point."""
        r = self.point_row
        return EnsembleWeights(self.solver, self.mean[r], self.pert[r], self.scale[r], self.active[r],
                               np.arange(r.size), self.nmembers)


def _obs_arrays(hofx: Any, y: Any, obs_variance: Any, nobs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Perturbations Y (N, p), departures d (p,) and R^-1 (p,) with unusable observations zeroed."""
    hx = np.asarray(hofx, dtype=np.float64)
    if hx.ndim != 2:
        hx = hx.reshape(hx.shape[0], -1)
    n = hx.shape[0]
    if n < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {n}")
    y = np.asarray(y, dtype=np.float64).ravel()
    var = np.asarray(obs_variance, dtype=np.float64)
    var = np.full(y.shape, float(var)) if var.ndim == 0 else var.ravel()
    if hx.shape[1] != y.size or y.size != nobs or var.size != y.size:
        raise ValueError(f"H(x) has {hx.shape[1]} values, y {y.size}, the variances {var.size}, the selection "
                         f"{nobs} observations")
    with np.errstate(invalid="ignore", over="ignore"):
        # A sum over the members is finite only if every member's H(x) is (NaN and inf propagate).
        ok = np.isfinite(y + hx.sum(axis=0)) & (var > 0) & (var < np.inf)
    if ok.all():
        mean = hx.mean(axis=0)
        return hx - mean, y - mean, 1.0 / var
    rinv = np.zeros_like(var)
    rinv[ok] = 1.0 / var[ok]
    hx = np.where(ok, hx, 0.0)
    mean = hx.mean(axis=0)
    return hx - mean, np.where(ok, y - mean, 0.0), rinv


#: Memory budget of one block of rows (points) in :func:`letkf_weights`, :func:`getkf_weights`
#: and :func:`apply_weights`: their temporaries are proportional to the rows processed at
#: once, so processing rows in blocks of this many bytes bounds the peak memory apart from
#: the outputs.  64 MiB keeps blocks of thousands of rows, large enough that the per-block
#: overhead (a few NumPy calls) is negligible.
BLOCK_BYTES = 64 << 20


def _row_blocks(nrows: int, bytes_per_row: int, block: int | None) -> list[slice]:
    """Consecutive slices covering ``range(nrows)``: ``block`` rows each, or as many as fit in :data:`BLOCK_BYTES`."""
    step = block if block is not None else max(1, BLOCK_BYTES // max(bytes_per_row, 1))
    if step < 1:
        raise ValueError(f"block must be a positive number of rows, got {block}")
    return [slice(start, min(nrows, start + step)) for start in range(0, nrows, step)]


def _rows_for(selection: LocalObsSelection, mult: "float | np.ndarray"
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The rows to solve for a prior inflation ``mult``: the selection's rows for one value (or a uniform
    field), one row per grid point for a varying field ``(npoints,)``; returns index, weight, point_row and
    ``mult`` as a scalar array or per row."""
    index, weight, point_row = selection.index, selection.weight, selection.point_row
    mult_arr = np.asarray(mult, dtype=np.float64)
    if mult_arr.ndim:
        if mult_arr.shape != (selection.npoints,):
            raise ValueError(f"mult has shape {mult_arr.shape}, expected a scalar or ({selection.npoints},)")
        if np.all(mult_arr == mult_arr[0]):
            mult_arr = mult_arr[0]
        else:  # one problem per point
            index, weight, point_row = index[point_row], weight[point_row], np.arange(selection.npoints)
    return index, weight, point_row, mult_arr


def letkf_weights(selection: LocalObsSelection, hofx: Any, y: Any, obs_variance: Any,
                  mult: "float | np.ndarray" = 1.0,
                  space: Literal["auto", "ensemble", "observation"] = "auto",
                  block: int | None = None) -> EnsembleWeights:
    """LETKF weights of every selection row.

    ``hofx`` is ``(N, p)`` (:math:`\\mathcal{H}(x_k)` of each member), ``y`` and
    ``obs_variance`` ``(p,)``; observations with a non-finite value, H(x) or variance,
    or a non-positive variance, are not used.  ``mult``: one prior inflation, or one per
    grid point ``(npoints,)`` (a spatially varying, e.g. adaptive, inflation: rows are then
    solved per point unless the inflation is uniform).  Rows are solved ``block`` at a time
    (default: as many as fit in :data:`~pyoops.assimilation.letkf.BLOCK_BYTES` of
    temporaries); every row is an independent problem, so the weights do not depend
    on the blocking, bit for bit.
    """
    yp, d, rinv = _obs_arrays(hofx, y, obs_variance, selection.nobs)
    n = yp.shape[0]
    index, weight, point_row, mult_arr = _rows_for(selection, mult)
    rows, m = index.shape
    c_rows = np.broadcast_to(np.sqrt(mult_arr / (n - 1)), (rows,))
    mean, pert = np.empty((rows, n)), np.empty((rows, n, n))
    active = np.empty(rows, dtype=bool)
    for sl in _row_blocks(rows, 8 * (m * n + 4 * n * n + 4 * m * m), block):
        idx = index[sl]
        sw = np.sqrt(weight[sl] * rinv[idx])                              # (rows, m)
        c = c_rows[sl, None]
        s = yp.T[idx] * (c * sw)[..., None]                               # (rows, m, N)
        mean[sl], pert[sl] = ensemble_transform(s, d[idx] * sw, space=space)
        active[sl] = (sw > 0).any(axis=1)
    mean *= c_rows[:, None]
    pert *= np.broadcast_to(np.sqrt(mult_arr), (rows,))[:, None, None]
    mean[~active] = 0.0
    pert[~active] = np.eye(n)
    return EnsembleWeights("LETKF", mean, pert, np.ones(active.shape), active, point_row, n)


def getkf_weights(selection: LocalObsSelection, hofx: Any, hofx_modulated: Any, y: Any, obs_variance: Any,
                  mult: "float | np.ndarray" = 1.0, space: Literal["auto", "ensemble", "observation"] = "auto",
                  block: int | None = None) -> EnsembleWeights:
    """GETKF weights of every selection row.

    ``hofx`` ``(N, p)``: H(x) of the members; ``hofx_modulated`` ``(N, M, p)``: H(x) of the
    modulated members :math:`\\bar x + v_j \\circ x'_k` (or their perturbations, e.g. from
    :func:`modulate_obs`: only deviations from their mean over all :math:`(k, j)` are used).
    Rows are solved ``block`` at a time and ``mult`` may vary per grid point, as in :func:`letkf_weights`.
    """
    yp, d, rinv = _obs_arrays(hofx, y, obs_variance, selection.nobs)
    n = yp.shape[0]
    hz = np.asarray(hofx_modulated, dtype=np.float64)
    if hz.ndim != 3 or hz.shape[0] != n or hz.shape[2] != yp.shape[1]:
        raise ValueError(f"modulated H(x) must have shape (N={n}, M, p={yp.shape[1]}), got {hz.shape}")
    nmodes = hz.shape[1]
    used = rinv > 0
    hz = np.where(used, hz, 0.0)
    zp = (hz - hz.mean(axis=(0, 1))).reshape(n * nmodes, -1)       # (K, p), member-major
    index, weight, point_row, mult_arr = _rows_for(selection, mult)
    rows, m = index.shape
    k = n * nmodes
    c_rows = np.broadcast_to(np.sqrt(mult_arr / (n - 1)), (rows,))
    root_rows = np.broadcast_to(np.sqrt(mult_arr), (rows,))
    mean, pert = np.empty((rows, k)), np.empty((rows, k, n))
    active = np.empty(rows, dtype=bool)
    for sl in _row_blocks(rows, 8 * (m * (k + n) + 4 * k * k + 4 * m * m), block):
        idx = index[sl]
        sw = np.sqrt(weight[sl] * rinv[idx])
        s = zp.T[idx] * (c_rows[sl, None] * sw)[..., None]              # (rows, m, K)
        sb = yp.T[idx] * (root_rows[sl, None] * sw)[..., None]          # (rows, m, N)
        mean[sl], pert[sl] = ensemble_transform(s, d[idx] * sw, sb, space=space)
        active[sl] = (sw > 0).any(axis=1)
    mean = (mean * c_rows[:, None]).reshape(rows, n, nmodes)
    pert = (pert * c_rows[:, None, None]).reshape(rows, n, nmodes, n)
    mean[~active] = 0.0
    pert[~active] = 0.0
    scale = np.where(active, root_rows, 1.0)
    return EnsembleWeights("GETKF", mean, pert, scale, active, point_row, n)


# Applying weights --------------------------------------------------------------------------------
def _stack(members: Any, npoints: int) -> tuple[np.ndarray, Any]:
    """``(N, npoints, nvars)`` view of the members and how to rebuild their type."""
    if isinstance(members, Mapping):
        names = list(members)
        arrays = [np.asarray(members[v], dtype=np.float64) for v in names]
        shapes = [a.shape for a in arrays]
        for v, a in zip(names, arrays):
            if a.ndim < 2 or int(np.prod(a.shape[1:])) != npoints:
                raise ValueError(f"field '{v}' has shape {a.shape}: expected (members, grid) with "
                                 f"{npoints} grid points")
        stacked = np.stack([a.reshape(a.shape[0], npoints) for a in arrays], axis=-1)
        return stacked, ("fields", names, shapes, type(members))
    arr = np.asarray(members, dtype=np.float64)
    if arr.ndim < 2 or int(np.prod(arr.shape[1:])) != npoints:
        raise ValueError(f"members have shape {arr.shape}: expected (members, grid) with {npoints} grid points")
    return arr.reshape(arr.shape[0], npoints, 1), ("array", arr.shape)


def _unstack(stacked: np.ndarray, how: Any) -> Any:
    if how[0] == "array":
        return stacked[..., 0].reshape(how[1])
    _, names, shapes, kind = how
    fields = {v: stacked[..., i].reshape(shape) for i, (v, shape) in enumerate(zip(names, shapes))}
    return FieldSet(fields, copy=False) if kind is FieldSet or issubclass(kind, FieldSet) else fields


def relax_to_prior_perturbations(xa_pert: np.ndarray, xb_pert: np.ndarray, alpha: float) -> np.ndarray:
    """RTPP: :math:`(1-\\alpha)X'_a + \\alpha X'_b`."""
    return (1.0 - alpha) * xa_pert + alpha * xb_pert if alpha else xa_pert


def relax_to_prior_spread(xa_pert: np.ndarray, xb_pert: np.ndarray, alpha: float, axis: int = 0) -> np.ndarray:
    """RTPS: :math:`X'_a\\,(1 + \\alpha(\\sigma_b - \\sigma_a)/\\sigma_a)`, spreads over ``axis`` (members)."""
    if not alpha:
        return xa_pert
    eps = np.finfo(np.float64).eps
    n = xa_pert.shape[axis]
    sa = np.maximum(np.sqrt((xa_pert**2).sum(axis=axis, keepdims=True) / (n - 1)), eps)
    sb = np.maximum(np.sqrt((xb_pert**2).sum(axis=axis, keepdims=True) / (n - 1)), eps)
    return xa_pert * (1.0 + alpha * (sb - sa) / sa)


def apply_weights(weights: EnsembleWeights, members: Any, modes: np.ndarray | None = None,
                  rtpp: float = 0.0, rtps: float = 0.0, posterior_mult: float = 1.0, block: int | None = None) -> Any:
    r"""Analysis members from background ``members`` and ``weights`` (then RTPP, RTPS and the
    posterior multiplicative inflation: perturbations times :math:`\sqrt{\rho_a}`, ``posterior_mult``).

    ``members``: an array ``(N, *grid)`` or a FieldSet/mapping of such arrays (all
    variables on the grid of the selection); returned in the same form.  ``modes``
    ``(npoints, M)``: the modulation modes, for GETKF weights.  Grid points are
    updated ``block`` at a time (default: as many as fit in
    :data:`~pyoops.assimilation.letkf.BLOCK_BYTES` of temporaries, chiefly the
    weights gathered per point); each point's update is independent of the others, so
    the result does not depend on the blocking, bit for bit.
    """
    with _single_threaded_blas:
        return _apply_weights(weights, members, modes, rtpp, rtps, posterior_mult, block)


def _apply_weights(weights: EnsembleWeights, members: Any, modes: np.ndarray | None, rtpp: float,
                   rtps: float, posterior_mult: float = 1.0, block: int | None = None) -> Any:
    npts = weights.point_row.size
    x, how = _stack(members, npts)                     # (N, npts, nv)
    n, nv = x.shape[0], x.shape[2]
    if n != weights.nmembers:
        raise ValueError(f"weights for {weights.nmembers} members applied to {n}")
    if weights.solver != "LETKF":
        if modes is None:
            raise ValueError("GETKF weights need the modulation modes")
        modes = np.asarray(modes, dtype=np.float64)
        if modes.shape[0] != npts or modes.shape[1] != weights.mean.shape[-1]:
            raise ValueError(f"modes have shape {modes.shape}, expected ({npts}, {weights.mean.shape[-1]})")
    mean = x.mean(axis=0)
    # Contiguous, so that RTPS's sums over the members run along the last axis for every point
    # in the same order whatever the block (NumPy sums a strided axis in a shape-dependent order).
    xp = np.ascontiguousarray((x - mean).transpose(1, 2, 0))      # (npts, nv, N)
    out = np.empty_like(x)
    # Temporaries per point, in values: the gathered weights, about six (nv, N) arrays (the
    # update, the relaxations, the output), and for GETKF the modulated perturbations (nv, N*M).
    modulated = int(np.prod(weights.mean.shape[1:]))
    per_point = int(np.prod(weights.pert.shape[1:])) + modulated + 6 * nv * n
    if weights.solver != "LETKF":
        per_point += 2 * nv * modulated
    for sl in _row_blocks(npts, 8 * per_point, block):
        xa, mean_a = _block_update(weights, xp[sl], mean[sl], weights.point_row[sl],
                                   None if modes is None else modes[sl])
        xa = relax_to_prior_perturbations(xa, xp[sl], rtpp)
        xa = relax_to_prior_spread(xa, xp[sl], rtps, axis=-1)
        if posterior_mult != 1.0:
            xa = xa * np.sqrt(posterior_mult)
        out[:, sl] = mean_a[None] + xa.transpose(2, 0, 1)
    idle = ~weights.active[weights.point_row]
    if idle.any():
        out[:, idle] = x[:, idle]  # no local observation: the background, bit for bit
    return _unstack(out, how)


def _block_update(weights: EnsembleWeights, xp: np.ndarray, mean: np.ndarray, r: np.ndarray,
                  modes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Analysis perturbations ``(npts, nv, N)`` and mean ``(npts, nv)`` of a block of points.

    ``xp`` ``(npts, nv, N)`` background perturbations, ``mean`` their mean, ``r`` the
    points' selection rows, ``modes`` ``(npts, M)`` (GETKF).
    """
    n = weights.nmembers
    single = weights.mean.shape[0] == 1                # one problem for every point: one matrix product
    if weights.solver == "LETKF":
        if single:
            return xp @ weights.pert[0], mean + xp @ weights.mean[0]
        return xp @ weights.pert[r], mean + (xp @ weights.mean[r][..., None])[..., 0]
    assert modes is not None
    npts = xp.shape[0]
    q = (xp[..., :, None] * modes[:, None, None, :]).reshape(npts, xp.shape[1], -1)   # (npts, nv, N*M)
    nm = q.shape[-1]
    if single:
        return weights.scale[0] * xp - q @ weights.pert[0].reshape(nm, n), mean + q @ weights.mean[0].reshape(nm)
    xa = weights.scale[r][:, None, None] * xp - q @ weights.pert[r].reshape(npts, nm, n)
    return xa, mean + (q @ weights.mean[r].reshape(npts, nm, 1))[..., 0]


def letkf_analysis(members: Any, hofx: Any, y: Any, obs_variance: Any, selection: LocalObsSelection,
                   mult: "float | np.ndarray" = 1.0, rtpp: float = 0.0, rtps: float = 0.0,
                   posterior_mult: float = 1.0) -> Any:
    """One LETKF analysis: weights from H(x) and the observations, applied to ``members``."""
    with _single_threaded_blas:
        return apply_weights(letkf_weights(selection, hofx, y, obs_variance, mult), members, rtpp=rtpp, rtps=rtps,
                             posterior_mult=posterior_mult)


def getkf_analysis(members: Any, hofx: Any, hofx_modulated: Any, y: Any, obs_variance: Any,
                   selection: LocalObsSelection, modes: np.ndarray, mult: float = 1.0, rtpp: float = 0.0,
                   rtps: float = 0.0, posterior_mult: float = 1.0) -> Any:
    """One GETKF analysis (see :func:`getkf_weights` for ``hofx_modulated``)."""
    with _single_threaded_blas:
        weights = getkf_weights(selection, hofx, hofx_modulated, y, obs_variance, mult)
        return apply_weights(weights, members, modes, rtpp=rtpp, rtps=rtps, posterior_mult=posterior_mult)


# Modulation --------------------------------------------------------------------------------------
def _same(lam: np.ndarray, i: int, j: int) -> bool:
    """Eigenvalues ``i`` and ``j`` are equal to 1e-8 of the largest (a degenerate pair of a periodic grid)."""
    return abs(lam[i] - lam[j]) <= 1e-8 * lam[0]


def _whole_group(lam: np.ndarray, nmodes: int) -> int:
    """``nmodes`` raised to the end of the group of equal eigenvalues its last mode belongs to.

    Within a group of equal eigenvalues the eigenvectors are any basis LAPACK chooses;
    keeping part of the group would make a homogeneous localization uneven.
    """
    last = nmodes - 1
    while nmodes < lam.size and _same(lam, nmodes, last):
        nmodes += 1
    return nmodes


def _group_start(lam: np.ndarray, nmodes: int) -> int:
    """Index of the first eigenvalue of the group holding mode ``nmodes - 1``."""
    start = nmodes - 1
    while start > 0 and _same(lam, start - 1, nmodes - 1):
        start -= 1
    return start


def modulation_modes(geometry: Any, params: Any, axes: Literal["horizontal", "vertical"] = "horizontal",
                     ) -> np.ndarray:
    r"""Modulation modes ``(npoints, M)`` from a model-space localization.

    ``horizontal``: :math:`\mathbf{L}_{ij} = \ell(\text{distance}(i, j))` between all grid
    points; ``vertical``: :math:`\ell(|z_i - z_j|)` between the levels of the grid's
    level axis, each grid point taking its level's values.  With the eigenpairs
    :math:`(\lambda_j, e_j)` of :math:`\mathbf{L}` in decreasing order and negative
    eigenvalues set to 0 (a Gaspari–Cohn matrix on a grid can have small ones), the first
    :math:`M` modes are kept: the fewest whose eigenvalues reach ``fraction of retained
    variance`` of :math:`\sum_j \max(\lambda_j, 0)`, or ``number of modes``; either count
    is then completed to a whole group of equal eigenvalues (a warning says so for
    ``number of modes``), so that a homogeneous localization stays homogeneous.  Then
    :math:`v_j = \sqrt{\lambda_j} e_j` is rescaled pointwise so that
    :math:`\sum_j v_j(i)^2 = 1` (unit variance, so :math:`\mathbf{L}\circ\mathbf{P}_e` keeps
    the ensemble variances).
    """
    method, length = params.localization_method, params.lengthscale
    pts = geometry.grid_locations()
    if axes == "horizontal":
        a = {k: v[:, None] for k, v in pts.coords.items()}
        b = {k: v[None, :] for k, v in pts.coords.items()}
        lmat = localization_function(np.asarray(geometry.distance(a, b), dtype=float), method, length)
        level_of_point = None
    elif axes == "vertical":
        level_axes = [ax for ax in getattr(geometry, "axes", ()) if not getattr(ax, "horizontal", True)]
        if len(level_axes) != 1:
            raise ConfigError("vertical localization needs a grid with one level axis; on a grid without levels "
                              "use 'horizontal localization'")
        ax = level_axes[0]
        z = np.asarray(ax.points, dtype=float)
        lmat = localization_function(z[:, None] - z[None, :], method, length)
        level_of_point = np.abs(pts.coords[ax.name][:, None] - z[None, :]).argmin(axis=1)
    else:
        raise ValueError(f"axes must be 'horizontal' or 'vertical', got {axes!r}")
    lam, vec = np.linalg.eigh(0.5 * (lmat + lmat.T))
    lam, vec = np.maximum(lam[::-1], 0.0), vec[:, ::-1]
    asked = getattr(params, "number_of_modes", None)
    if asked is None:
        frac = getattr(params, "fraction_of_retained_variance", 1.0)
        cum = np.cumsum(lam) / lam.sum()
        nmodes = _whole_group(lam, int(np.searchsorted(cum, frac * (1 - 1e-12)) + 1))
    else:
        nmodes = _whole_group(lam, min(int(asked), lam.size))
        if nmodes != min(int(asked), lam.size):
            logger.warning("GETKF modulation: 'number of modes' %d splits a group of equal eigenvalues of the "
                           "localization (modes %d to %d); keeping %d modes, so that the localization stays as "
                           "homogeneous as the matrix", asked, _group_start(lam, asked) + 1, nmodes, nmodes)
    v = vec[:, :nmodes] * np.sqrt(lam[:nmodes])
    norm = np.sqrt((v**2).sum(axis=1, keepdims=True))
    v = v / np.where(norm > 0, norm, 1.0)
    return v if level_of_point is None else v[level_of_point]


def modulate(members: Any, modes: np.ndarray) -> Any:
    """Modulated members :math:`\\bar x + v_j \\circ x'_k`, member-major ``(N*M, *grid)`` (or FieldSet)."""
    npts = modes.shape[0]
    x, how = _stack(members, npts)
    mean = x.mean(axis=0)
    z = (x - mean)[:, None, :, :] * modes.T[None, :, :, None]         # (N, M, npts, nv)
    out = mean + z.reshape(-1, npts, x.shape[-1])
    if how[0] == "array":
        return out[..., 0].reshape((out.shape[0],) + tuple(how[1][1:]))
    _, names, shapes, kind = how
    fields = {v: out[..., i].reshape((out.shape[0],) + tuple(shape[1:]))
              for i, (v, shape) in enumerate(zip(names, shapes))}
    return FieldSet(fields, copy=False) if issubclass(kind, FieldSet) else fields


def modulate_obs(hofx: Any, modes_at_obs: np.ndarray) -> np.ndarray:
    """Observation-space modulation :math:`v_j(o)\\,(\\mathcal{H}(x_k) - \\overline{\\mathcal{H}(x)})_o`.

    ``hofx`` ``(N, p)``, ``modes_at_obs`` ``(p, M)`` (the modes interpolated to the
    observation locations); returns ``(N, M, p)`` for :func:`getkf_weights`.  Exact for
    observations at grid points with a pointwise observation operator.
    """
    hx = np.asarray(hofx, dtype=np.float64)
    yp = hx - hx.mean(axis=0)
    return yp[:, None, :] * np.asarray(modes_at_obs, dtype=np.float64).T[None, :, :]
