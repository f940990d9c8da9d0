r"""A linear-Gaussian twin whose innovation statistics are known exactly.

The truth is a random walk observed at every grid point, assimilated with the
persistence model (``model: {name: Identity}``, :mod:`pyoops.generic.identity_model`):

.. math::
    x^t_k = x^t_{k-1} + \eta_k,\quad \eta_k \sim N(0, \mathbf{Q}), \qquad
    y_{k,j} = x^t_k + \varepsilon_{k,j},\quad \varepsilon_{k,j} \sim N(0, \sigma_o^2 \mathbf{I}),

with :math:`x^t_k` the truth on the window of cycle :math:`k`, :math:`(a_k - L, a_k]`
(:math:`a_k = T_0 + (k+1)L`), observed :math:`m` times per window (``obs offsets``
:math:`\tau_j \in (-L, 0]` relative to :math:`a_k`; one time, :math:`\tau = 0`, for the 3-D
methods, several for 4D-Var).  With persistence and :math:`\mathbf{H} = \mathbf{I}` per
observation time, the Kalman filter's forecast-error covariance converges to the
solution of the discrete algebraic Riccati equation (DARE)

.. math::
    \mathbf{P}_f (\mathbf{P}_f + \mathbf{R}/m)^{-1} \mathbf{P}_f = \mathbf{Q},
    \qquad \mathbf{P}_a = \mathbf{P}_f - \mathbf{Q}

(the filter form of ``scipy.linalg.solve_discrete_are`` with :math:`A = B = I`; in a
scalar mode :math:`p_f = (q + \sqrt{q^2 + 4qr/m})/2`).  A 3D-Var (4D-Var) cycled with
:math:`\mathbf{B} = \mathbf{P}_f` from a background drawn from :math:`N(x^t_0,
\mathbf{P}_f)` *is* the steady-state Kalman filter, so its innovations satisfy the
Desroziers relations exactly in expectation: :math:`E[d\,d^\mathrm{T}] = \mathbf{P}_f +
\mathbf{R}`, :math:`E[d^a d^\mathrm{T}] = \mathbf{R}`, :math:`E[\delta d^\mathrm{T}] =
\mathbf{P}_f`, :math:`E[2J(x_a)] = p`.  Any other assumed :math:`\mathbf{B}` or
:math:`\mathbf{R}` is a known mis-specification.

Ensemble filters carry the covariance in their members.  When :math:`\mathbf{Q}` is white,
:math:`\mathbf{Q} = q\mathbf{I}` and :math:`\mathbf{R} = r\mathbf{I}`, the steady state is
white too, :math:`\mathbf{P}_a = \mathbf{P}_f\,r/(m p_f + r)`, and multiplicative inflation
by :math:`\lambda = p_f/p_a` turns the persistence forecast of the analysis ensemble into
the forecast covariance exactly: a deterministic square-root filter (LETKF) with
:math:`N - 1 \ge n` members whose initial sample covariance is exactly the steady state
then reproduces the Kalman filter (:meth:`LinearGaussianTwin.ensemble` builds such
members); a perturbed-observation EDA does so in expectation.

Everything is written in pyoops's file formats (state files of the geometry, IODA-like
observation files, a dense ``explicit covariance`` matrix), so ``pyoops cycle`` runs on
it through ``observations.obsdatain``, ``truth.filename`` and
``cycling.initial background`` / ``initial ensemble``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg

from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import write_fields
from pyoops.generic.obs_space import DATETIME_UNITS, LOCATION_DIM
from pyoops.saber.generic.explicit import write_matrix
from pyoops.util.atomic import atomic_output
from pyoops.util.datetime import DateTime, Duration
from pyoops.util.random import generator

if TYPE_CHECKING:
    from pyoops.interface.geometry import Geometry

__all__ = ["LinearGaussianTwin", "exact_covariance_members", "steady_state_covariances"]


def steady_state_covariances(q: np.ndarray, r: np.ndarray, nobs_times: int = 1) -> tuple[np.ndarray, np.ndarray]:
    r"""Steady-state forecast and analysis covariances of the Kalman filter of a random walk.

    Model :math:`x_k = x_{k-1} + \eta_k`, :math:`\eta_k \sim N(0, \mathbf{Q})`, every state
    value observed ``nobs_times`` times per cycle with error covariance :math:`\mathbf{R}`
    (the same :math:`\mathbf{R}` at each time, independent between times, so the cycle's
    information is :math:`m\mathbf{R}^{-1}`).  Returns :math:`(\mathbf{P}_f, \mathbf{P}_a)`,
    :math:`\mathbf{P}_f` the stabilising solution of
    :math:`\mathbf{P}_f(\mathbf{P}_f + \mathbf{R}/m)^{-1}\mathbf{P}_f = \mathbf{Q}` and
    :math:`\mathbf{P}_a = \mathbf{P}_f - \mathbf{Q}`, both symmetrised.
    """
    q = np.asarray(q, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64) / nobs_times
    eye = np.eye(q.shape[0])
    pf = scipy.linalg.solve_discrete_are(eye, eye, q, r)
    pf = 0.5 * (pf + pf.T)
    pa = pf - q
    return pf, 0.5 * (pa + pa.T)


def exact_covariance_members(mean: np.ndarray, covariance: np.ndarray, members: int,
                             rng: np.random.Generator) -> np.ndarray:
    r"""``members`` states with sample mean ``mean`` and sample covariance exactly ``covariance``.

    Requires :math:`N - 1 \ge n`: perturbations :math:`\mathbf{X} = \sqrt{N-1}\,\mathbf{V}\mathbf{L}^\mathrm{T}`
    with :math:`\mathbf{L}\mathbf{L}^\mathrm{T}` = ``covariance`` and :math:`\mathbf{V}`
    (:math:`N \times n`) orthonormal columns orthogonal to :math:`\mathbf{1}` (QR of a
    centred Gaussian matrix), so :math:`\mathbf{X}^\mathrm{T}\mathbf{X}/(N-1)` is the covariance
    and :math:`\mathbf{1}^\mathrm{T}\mathbf{X} = 0` up to round-off.
    """
    n = mean.size
    if members - 1 < n:
        raise ValueError(f"an exact sample covariance of {n} values needs at least {n + 1} members, got {members}")
    g = rng.standard_normal((members, n))
    g -= g.mean(axis=0)
    v, _ = np.linalg.qr(g)
    chol = np.linalg.cholesky(covariance)
    return mean + np.sqrt(members - 1) * v @ chol.T


@dataclass
class LinearGaussianTwin:
    r"""The random-walk twin of this module on ``geometry`` (every variable, every grid point).

    Parameters
    ----------
    geometry:
        A model plugin's geometry; the state vector :math:`x` concatenates its variables'
        raveled fields (size :math:`n`).
    start:
        :math:`T_0` (``cycling.start``); the first analysis is at :math:`a_0 = T_0 + L`.
    window:
        The window length :math:`L` (``cycling.window length``).
    cycles:
        Number of cycles :math:`K`.
    process_noise:
        :math:`\mathbf{Q}` (:math:`n \times n`, symmetric positive definite).
    obs_error:
        :math:`\sigma_o` of the observations (:math:`\mathbf{R} = \sigma_o^2\mathbf{I}`).
    obs_offsets:
        Observation times relative to :math:`a_k`, each in :math:`(-L, 0]`.
    seed:
        Seed of the truth, observation and initial-state streams.
    """

    geometry: "Geometry"
    start: DateTime
    window: Duration
    cycles: int
    process_noise: np.ndarray
    obs_error: float
    obs_offsets: Sequence[Duration] = (Duration(0),)
    seed: int = 0
    _truth: np.ndarray | None = field(default=None, init=False, repr=False)
    _covariances: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.process_noise = np.asarray(self.process_noise, dtype=np.float64)
        n = self.size
        if self.process_noise.shape != (n, n):
            raise ValueError(f"process_noise must be {n} x {n} (the geometry's state size), "
                             f"got {self.process_noise.shape}")
        for tau in self.obs_offsets:
            if not (-self.window < tau <= Duration(0)):
                raise ValueError(f"observation offset {tau} is not in (-{self.window}, 0]")

    # Sizes and covariances -------------------------------------------------------------------
    @property
    def variables(self) -> list[str]:
        return list(self.geometry.variables)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(self.geometry.field_shape(v)) for v in self.variables]

    @property
    def size(self) -> int:
        return int(sum(np.prod(s) for s in self.shapes))

    @property
    def obs_covariance(self) -> np.ndarray:
        return self.obs_error ** 2 * np.eye(self.size)

    def covariances(self) -> tuple[np.ndarray, np.ndarray]:
        r"""The steady-state :math:`(\mathbf{P}_f, \mathbf{P}_a)` (:func:`steady_state_covariances`; solved once)."""
        if self._covariances is None:
            self._covariances = steady_state_covariances(self.process_noise, self.obs_covariance,
                                                         len(self.obs_offsets))
        return self._covariances

    def expected_statistics(self, assumed_b: np.ndarray, assumed_obs_error: float | None = None) -> dict[str, float]:
        r"""Exact expectations of the innovation statistics of a system assuming ``assumed_b`` and
        :math:`\sigma_o'` = ``assumed_obs_error`` (default: the true :math:`\sigma_o`), at its steady state.

        The gain :math:`\mathbf{K} = \mathbf{B}'\mathbf{H}^\mathrm{T}\mathbf{S}'^{-1}`,
        :math:`\mathbf{S}' = \mathbf{H}\mathbf{B}'\mathbf{H}^\mathrm{T} + \mathbf{R}'`
        (:math:`\mathbf{H}` = :math:`m` stacked identities) gives the actual forecast-error
        covariance :math:`\mathbf{P}` of the discrete Lyapunov equation
        :math:`\mathbf{P} = (\mathbf{I}-\mathbf{KH})\mathbf{P}(\mathbf{I}-\mathbf{KH})^\mathrm{T}
        + \mathbf{KRK}^\mathrm{T} + \mathbf{Q}` and the innovation covariance
        :math:`\mathbf{S} = \mathbf{HPH}^\mathrm{T} + \mathbf{R}`.  With
        :math:`d^a = \mathbf{R}'\mathbf{S}'^{-1}d` and :math:`\delta = \mathbf{HB}'\mathbf{H}^\mathrm{T}\mathbf{S}'^{-1}d`:

        * ``obs error variance ratio`` :math:`\mathrm{tr}(\mathbf{R}'\mathbf{S}'^{-1}\mathbf{S})/\mathrm{tr}\,\mathbf{R}'`;
        * ``background error variance ratio``
          :math:`\mathrm{tr}(\mathbf{HB}'\mathbf{H}^\mathrm{T}\mathbf{S}'^{-1}\mathbf{S})/\mathrm{tr}(\mathbf{HB}'\mathbf{H}^\mathrm{T})`;
        * ``chi2`` :math:`\frac1p\sum_i S_{ii}/S'_{ii}`; ``2J/p`` :math:`\mathrm{tr}(\mathbf{S}'^{-1}\mathbf{S})/p`
          (:math:`2J(x_a) = d^\mathrm{T}\mathbf{S}'^{-1}d` for the exact minimum).

        All equal 1 when ``assumed_b`` is :math:`\mathbf{P}_f` and :math:`\sigma_o' = \sigma_o`.
        """
        n, m = self.size, len(self.obs_offsets)
        sigma = self.obs_error if assumed_obs_error is None else assumed_obs_error
        h = np.vstack([np.eye(n)] * m)
        r_true, r_assumed = self.obs_error ** 2 * np.eye(n * m), sigma ** 2 * np.eye(n * m)
        hbh = h @ assumed_b @ h.T
        s_assumed = hbh + r_assumed
        gain = assumed_b @ h.T @ np.linalg.inv(s_assumed)
        a = np.eye(n) - gain @ h
        p = scipy.linalg.solve_discrete_lyapunov(a, gain @ r_true @ gain.T + self.process_noise)
        s_true = h @ p @ h.T + r_true
        w = np.linalg.solve(s_assumed, s_true)               # S'^-1 S
        return {"obs error variance ratio": float(np.trace(r_assumed @ w) / np.trace(r_assumed)),
                "background error variance ratio": float(np.trace(hbh @ w) / np.trace(hbh)),
                "chi2": float(np.mean(np.diag(s_true) / np.diag(s_assumed))),
                "2J/p": float(np.trace(w) / (n * m))}

    def analysis_time(self, k: int) -> DateTime:
        return self.start + self.window * (k + 1)

    # The data -----------------------------------------------------------------------------------
    def truth(self) -> np.ndarray:
        r"""The truth :math:`x^t_k` of every window, shape :math:`(K, n)`; :math:`x^t_{-1} = 0`."""
        if self._truth is None:
            chol = np.linalg.cholesky(self.process_noise)
            eta = generator(self.seed, "truth").standard_normal((self.cycles, self.size))
            self._truth = np.cumsum(eta @ chol.T, axis=0)
        return self._truth

    def observations(self, k: int) -> np.ndarray:
        """The observations of cycle ``k``, shape ``(m, n)`` (one row per observation time)."""
        eps = generator(self.seed, "observations", k).standard_normal((len(self.obs_offsets), self.size))
        return self.truth()[k] + self.obs_error * eps

    def background(self) -> np.ndarray:
        r"""The first background: :math:`x^t_0 + \mathbf{P}_f^{1/2}\xi`."""
        pf, _ = self.covariances()
        xi = generator(self.seed, "background").standard_normal(self.size)
        return self.truth()[0] + np.linalg.cholesky(pf) @ xi

    def ensemble(self, members: int, covariance: np.ndarray) -> np.ndarray:
        r"""``members`` states with sample mean :meth:`background` and covariance ``covariance``.

        Exactly that sample covariance when :math:`N - 1 \ge n`
        (:func:`exact_covariance_members`); otherwise draws of :math:`N(0,` ``covariance``
        :math:`)` re-centred on the background (covariance right in expectation only).
        """
        rng = generator(self.seed, "ensemble")
        if members - 1 >= self.size:
            return exact_covariance_members(self.background(), covariance, members, rng)
        draws = rng.standard_normal((members, self.size)) @ np.linalg.cholesky(covariance).T
        return self.background() + draws - draws.mean(axis=0)

    # Files --------------------------------------------------------------------------------------
    def _fields(self, flat: np.ndarray) -> FieldSet:
        """Split state vectors (``(..., n)``) into the geometry's fields."""
        out, i = {}, 0
        for var, shape in zip(self.variables, self.shapes):
            size = int(np.prod(shape))
            out[var] = flat[..., i:i + size].reshape(flat.shape[:-1] + shape)
            i += size
        return FieldSet(out)

    def write_state(self, filename: "str | os.PathLike[str]", flat: np.ndarray, time: DateTime) -> None:
        """A state (``(n,)``) or an ensemble (``(N, n)``) valid at ``time`` in the geometry's file format."""
        write_fields(filename, self.geometry, self._fields(np.asarray(flat, dtype=np.float64)), time)

    def write_obs(self, filename: "str | os.PathLike[str]", k: int, assumed_obs_error: float | None = None) -> None:
        """Cycle ``k``'s observations (IODA-like; ``ObsError`` = the assumed :math:`\\sigma_o`)."""
        import netCDF4

        y = self.observations(k)
        locs = self.geometry.grid_locations()
        a_k = self.analysis_time(k)
        times = np.repeat([(a_k + tau).seconds_since_epoch() for tau in self.obs_offsets], locs.nlocs)
        sigma = self.obs_error if assumed_obs_error is None else assumed_obs_error
        nlocs = times.size
        with atomic_output(filename, ".nc") as tmp, netCDF4.Dataset(tmp, "w", format="NETCDF4") as ds:
            ds.createDimension(LOCATION_DIM, nlocs)
            meta, value, error = ds.createGroup("MetaData"), ds.createGroup("ObsValue"), ds.createGroup("ObsError")
            dt = meta.createVariable("dateTime", "i8", (LOCATION_DIM,))
            dt.units = DATETIME_UNITS
            dt[:] = np.round(times).astype(np.int64)
            for name, coord in locs.coords.items():
                meta.createVariable(name, "f8", (LOCATION_DIM,))[:] = np.tile(coord, len(self.obs_offsets))
            fields = self._fields(y)
            for var in self.variables:
                value.createVariable(var, "f8", (LOCATION_DIM,))[:] = fields[var].ravel()
                error.createVariable(var, "f8", (LOCATION_DIM,))[:] = np.full(nlocs, sigma)

    def write(self, directory: "str | os.PathLike[str]", *, four_d: bool = False,
              assumed_obs_error: float | None = None, members: int | None = None,
              ensemble_covariance: np.ndarray | None = None, control: bool = True) -> dict[str, Any]:
        r"""Write observations, truth, first background(s) and :math:`\mathbf{P}_f` under ``directory``.

        ``four_d``: the first background is valid at :math:`T_0` (window begin of 4-D
        methods) instead of :math:`a_0`.  ``members``: also an initial ensemble with sample
        covariance ``ensemble_covariance`` (default :math:`\mathbf{P}_f`); ``control``: write the
        control's background (not for ensemble filters, which have none).  Returns the
        ``pyoops cycle`` YAML fragments (``observations.obsdatain``, ``truth``,
        ``cycling``) and the matrix file of :math:`\mathbf{P}_f`.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for k in range(self.cycles):
            a_k = self.analysis_time(k)
            self.write_obs(out / f"obs.{a_k}.nc", k, assumed_obs_error)
            self.write_state(out / f"truth.{a_k}.nc", self.truth()[k], a_k)
        first = self.start if four_d else self.analysis_time(0)
        pf, _ = self.covariances()
        write_matrix(str(out / "forecast_covariance.nc"), pf)
        cycling: dict[str, Any] = {"start": str(self.start), "cycles": self.cycles, "window length": str(self.window)}
        if control:
            self.write_state(out / "background.nc", self.background(), first)
            cycling["initial background"] = {"filename": str(out / "background.nc")}
        if members:
            cov = pf if ensemble_covariance is None else ensemble_covariance
            self.write_state(out / "ensemble.nc", self.ensemble(members, cov), first)
            cycling["initial ensemble"] = {"filename": str(out / "ensemble.nc")}
            cycling["members"] = members
        return {"obsdatain": {"filename": str(out / "obs.%date%.nc")},
                "truth": {"filename": str(out / "truth.%date%.nc")},
                "cycling": cycling, "forecast covariance": str(out / "forecast_covariance.nc")}


# Cycling experiments on the twin ----------------------------------------------------------------
#: Methods :func:`desroziers_experiment` configures (the variational ones with a correlated
#: :math:`\mathbf{Q}`, the ensemble ones with a white one, see the module docstring).
EXPERIMENT_METHODS = ("3D-Var", "4D-Var", "LETKF", "EDA-hybrid")


def periodic_gaussian_correlation(n: int, length: float) -> np.ndarray:
    r"""The circulant correlation :math:`c_{ij} = \exp(-d_{ij}^2 / 2\ell^2)`, :math:`d_{ij}` the periodic
    grid distance; positive definite (its spectrum is a sum of positive Gaussians)."""
    d = np.minimum(np.arange(n), n - np.arange(n)).astype(np.float64)
    row = np.exp(-0.5 * (d / length) ** 2)
    return np.array([np.roll(row, i) for i in range(n)])


def desroziers_experiment(method: str, directory: "str | os.PathLike[str]", *, model_plugin: str,
                          geometry_config: dict[str, Any], cycles: int, misspecified: bool = False,
                          members: int | None = None, hybrid_weight: float = 0.5, seed: int = 1,
                          correlated_noise: float = 0.25, correlation_length: float = 3.0,
                          white_noise: float = 0.1, obs_error: float = 1.0, b_scale: float | None = None,
                          r_scale: float | None = None) -> tuple[dict[str, Any], dict[str, float]]:
    r"""Write a linear-Gaussian twin under ``directory``; return the ``pyoops cycle`` configuration and
    the exact expectations of its innovation statistics (:meth:`LinearGaussianTwin.expected_statistics`;
    for EDA-hybrid those of a system whose hybrid :math:`\mathbf{B}` is exactly its static part,
    which its sampled ensemble matches in expectation only).

    ``method``: one of :data:`EXPERIMENT_METHODS`.  3D-Var and 4D-Var (two observation
    times per 6-hour window, :math:`\tau \in \{-3\,\mathrm{h}, 0\}`) assimilate a random
    walk with :math:`\mathbf{Q}` = ``correlated_noise`` :math:`\times` a periodic Gaussian
    correlation of ``correlation_length`` grid points (plus :math:`10^{-3}\mathbf{I}`) with
    :math:`\mathbf{B} = \mathbf{P}_f` (``explicit covariance``); LETKF (:math:`N` =
    ``members``, default :math:`n + 8`, no localization, prior inflation
    :math:`\lambda = p_f/p_a`) and EDA-hybrid (default :math:`N = 20`, static part
    :math:`p_f\mathbf{I}`, weight ``hybrid_weight`` on the unlocalized ensemble of its own
    perturbed members, posterior inflation :math:`\lambda`) a random walk with
    :math:`\mathbf{Q}` = ``white_noise`` :math:`\mathbf{I}`, where the ensemble can carry
    the steady state exactly.  ``obs_error``: :math:`\sigma_o`.

    ``misspecified``: the system assumes :math:`\mathbf{R} \times 2` (``ObsError`` =
    :math:`\sqrt2\sigma_o` in the observation files) and :math:`\mathbf{B} \times 0.5`: the
    static matrix halved; for the ensembles, the inflation
    :math:`\lambda' = 1 + b/r'` and an initial ensemble that keep the ensemble variance at
    :math:`b = p_f/2` with the assumed :math:`r' = 2\sigma_o^2` (the stationary point of
    :math:`b = \lambda' \, b r'/(b + r')`).  ``b_scale``, ``r_scale``: any other factors on
    :math:`\mathbf B` and :math:`\mathbf R` (they override ``misspecified``).
    """
    from pyoops.registry import get_registry

    if method not in EXPERIMENT_METHODS:
        raise ValueError(f"method must be one of {EXPERIMENT_METHODS}, got {method!r}")
    geometry = get_registry().model_plugin(model_plugin).make_geometry(geometry_config)
    n = int(sum(np.prod(geometry.field_shape(v)) for v in geometry.variables))
    four_d = method == "4D-Var"
    ensemble = method in ("LETKF", "EDA-hybrid")
    window = Duration("PT6H")
    tstep = Duration("PT3H") if four_d else window
    offsets = (Duration("-PT3H"), Duration(0)) if four_d else (Duration(0),)
    if ensemble:
        q = white_noise * np.eye(n)
    else:
        q = correlated_noise * periodic_gaussian_correlation(n, correlation_length) + 1e-3 * np.eye(n)
    twin = LinearGaussianTwin(geometry, DateTime("2010-01-01T00:00:00Z"), window, cycles, q, obs_error,
                              offsets, seed=seed)
    pf, _ = twin.covariances()
    if r_scale is None:
        r_scale = 2.0 if misspecified else 1.0
    if b_scale is None:
        b_scale = 0.5 if misspecified else 1.0
    r_assumed = obs_error ** 2 * r_scale
    out = Path(directory)
    nmembers = None
    ens_cov = None
    inflation = 1.0
    if ensemble:
        nmembers = members or (n + 8 if method == "LETKF" else 20)
        b = b_scale * pf[0, 0]                      # the white steady state: pf = pf[0, 0] I
        inflation = 1.0 + b / r_assumed             # lambda' = b / p_a' with p_a' = b r' / (b + r')
        p_analysis = b * r_assumed / (b + r_assumed)
        # LETKF inflates the prior: its first ensemble is an analysis ensemble; the EDA inflates
        # the posterior: its first ensemble is a background ensemble.
        ens_cov = (p_analysis if method == "LETKF" else b) * np.eye(n)
    files = twin.write(out / "data", four_d=four_d, assumed_obs_error=np.sqrt(r_assumed), members=nmembers,
                       ensemble_covariance=ens_cov, control=method != "LETKF")
    cfg: dict[str, Any] = {
        "model plugin": model_plugin, "geometry": geometry_config,
        "model": {"name": "Identity", "tstep": str(tstep)},
        "observations": {"name": "random walk", "obsdatain": files["obsdatain"], "obs operator": {"name": "Identity"}},
        "truth": files["truth"],
        "cycling": {**files["cycling"], "method": method, "spin-up cycles": 0, "seed": seed},
        "output": {"directory": str(out / "run"), "plots": False, "archive": True},
        "resume": False,
    }
    iterations = {"ninner": 2 * n, "gradient norm reduction": 1e-10}
    if not ensemble:
        matrix = out / "data" / "assumed_b.nc"
        write_matrix(str(matrix), b_scale * pf)
        cfg["cost function"] = {"background error": {"covariance model": "SABER", "saber central block": {
            "saber block name": "explicit covariance", "read": {"filename": str(matrix)}}}}
        if four_d:
            cfg["cost function"].update({"cost type": "4D-Var", "linear model": {"name": "Identity",
                                                                                "tstep": str(tstep)}})
        cfg["variational"] = {"minimizer": {"algorithm": "DRPCG"}, "iterations": [iterations]}
    elif method == "LETKF":
        cfg["local ensemble DA"] = {"inflation": {"mult": inflation}}
    else:
        static = {"saber central block": {"saber block name": "ID"},
                  "saber outer blocks": [{"saber block name": "StdDev",
                                          "read": {"value": float(np.sqrt(b_scale * pf[0, 0]))}}]}
        cfg["cost function"] = {"background error": {"covariance model": "SABER", "saber central block": {
            "saber block name": "Hybrid", "components": [
                {"covariance": static, "weight": {"value": 1.0 - hybrid_weight}},
                {"covariance": {"saber central block": {"saber block name": "Ensemble", "localization": {
                    "saber central block": {"saber block name": "ID"}}}},
                 "weight": {"value": hybrid_weight}}]}}}
        cfg["variational"] = {"minimizer": {"algorithm": "DRPCG"}, "iterations": [iterations]}
        cfg["eda"] = {"seed": seed, "inflation": {"mult": inflation}}
    return cfg, twin.expected_statistics(b_scale * pf, np.sqrt(r_assumed))
