r"""Ensembles of data assimilations (EDA): perturbed variational analyses.

An EDA runs :math:`N` variational analyses (any cost type: 3D-Var, 3D/4D-FGAT, 4D-Var,
4D-Ens-Var) side by side, as ECMWF's EDA does with 4D-Var.  Member :math:`k`

* starts from its *own* background :math:`x_b^k` (its forecast from its previous
  analysis when cycling: the background perturbation);
* assimilates *perturbed observations* :math:`y + \varepsilon_k`,
  :math:`\varepsilon_k \sim \mathcal{N}(0, \mathbf{R})`, drawn from the stream
  ``pyoops.util.random.generator(seed, "eda", k, *labels)`` (``labels`` names the
  cycle when cycling), so every member's draw is the same whichever process
  computes it and in whatever order;
* uses the same :math:`\mathbf{B}`.  When :math:`\mathbf{B}` contains an ``Ensemble``
  block (alone, or in a ``Hybrid``) that reads no file, its ensemble is the members'
  own backgrounds: the EDA feeds its flow-dependent covariance (ECMWF's EDA-hybrid).
  So does a ``StdDev`` block with ``calibration`` (σ_b the members' standard deviation)
  or ``emulated stddev`` (σ_b emulated from the first members).

An optional *control* member (number 0) runs the unperturbed analysis from the
control background; members :math:`1..N` are the perturbed ones.  The members'
analyses, their mean and spread are the EDA's output.

The work is split into chunks of members (:mod:`pyoops.ensemble.executors`): one
:class:`EDASetup` holds what every member shares, :func:`analyse_members` runs one
chunk, and :func:`run_eda` maps the chunks through an executor.  Everything crosses
process boundaries as plain dictionaries and NumPy arrays.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from pyoops.assimilation.letkf import InflationParameters
from pyoops.config.parameters import Parameters, validate
from pyoops.fields.fieldset import FieldSet
from pyoops.util.datetime import DateTime
from pyoops.util.random import generator

__all__ = [
    "EDAParameters",
    "EDAResult",
    "EDASetup",
    "analyse_members",
    "covariance_needs_ensemble",
    "covariance_uses_members",
    "eda_stream",
    "inflate_perturbations",
    "perturb_observers",
    "perturbed_obs_enkf_analysis",
    "run_eda",
]

logger = logging.getLogger("pyoops")


class EDAParameters(Parameters):
    """The ``eda`` section."""

    seed: int = Field(0, ge=0, description="Seed of the observation perturbations: member k draws from "
                                     "generator(seed, 'eda', k, ...).")
    control_member: bool = Field(True, description="Also run the unperturbed control analysis (member 0).")
    perturb_observations: bool = Field(True, description="Add a draw from N(0, R) to the observations of each "
                                                         "perturbed member.")
    ensemble_covariance_from_members: bool = Field(
        True, description="Feed Ensemble blocks that read no file with the members' backgrounds.")
    obs_error_inflation: float = Field(
        1.0, description="Factor on the standard deviation of the observation perturbations (>= 1).")
    inflation: InflationParameters = Field(
        default_factory=InflationParameters,
        description="Posterior inflation of the perturbed members around their mean: RTPP, RTPS, then mult.")

    @field_validator("obs_error_inflation")
    @classmethod
    def _at_least_one(cls, value: float) -> float:
        if not (np.isfinite(value) and value >= 1.0):
            raise ValueError(f"must be >= 1 (observation perturbations cannot be deflated), got {value}")
        return value


def eda_stream(seed: int, member: int, *labels: "str | int") -> np.random.Generator:
    """The random stream of EDA member ``member`` (``labels``: e.g. ``("cycle", 12)``)."""
    return generator(seed, "eda", int(member), *labels)


def perturb_observers(observers: Any, rng: np.random.Generator, factor: float = 1.0) -> None:
    """Add :math:`\\varepsilon \\sim \\mathcal{N}(0, \\mathbf{R})` (times ``factor``) to every observer's ObsValue."""
    for ob in observers:
        space = ob.obs_space
        values = space.obs_values().values + factor * ob.obs_error.randomize(rng).values
        for var, row in zip(space.simulated_variables, values):
            space.put_db("ObsValue", var, row)


def covariance_needs_ensemble(config: Any) -> bool:
    """True when a covariance section has an Ensemble block that reads no ensemble file."""
    if isinstance(config, dict):
        if config.get("ensemble") is not None or config.get("ensemble pert") is not None:
            return False
        if config.get("saber block name") == "Ensemble":
            return True
        return any(covariance_needs_ensemble(v) for k, v in config.items() if k != "localization")
    if isinstance(config, list):
        return any(covariance_needs_ensemble(v) for v in config)
    return False


def covariance_uses_members(config: Any) -> bool:
    """True when a covariance section reads no ensemble file but has a block that uses the members: an Ensemble
    block, or a StdDev with ``calibration`` (σ̂ of the members) or ``emulated stddev`` (σ emulated from them)."""
    if covariance_needs_ensemble(config):
        return True

    def stddev_from_members(c: Any) -> bool:
        if isinstance(c, dict):
            if c.get("ensemble") is not None or c.get("ensemble pert") is not None:
                return False
            if c.get("saber block name") == "StdDev" and (c.get("calibration") is not None
                                                         or c.get("emulated stddev") is not None):
                return True
            return any(stddev_from_members(v) for k, v in c.items() if k != "localization")
        if isinstance(c, list):
            return any(stddev_from_members(v) for v in c)
        return False

    return stddev_from_members(config)


@dataclass
class EDASetup:
    r"""What every member of one EDA analysis shares (picklable).

    Attributes
    ----------
    model_plugin:
        Name of the model plugin.
    cost_function:
        The complete ``cost function`` section for this analysis (its ``background``
        names only the date(s) when ``backgrounds`` are given in memory).
    variational:
        The ``variational`` section.
    backgrounds:
        Background of each member number: ``{member: {variable: array}}`` with arrays of
        shape ``grid`` (one state) or ``(ntimes, *grid)`` (4D-Ens-Var); None: read the
        control background from the configuration (control member only).
    obs_values:
        ObsValue of each observer ``(nvars, nlocs)``; None: as read by the observers.
    ensemble:
        In-memory ensemble for Ensemble blocks (``{variable: (N, [T,] *grid)}``), or None.
    seed, labels:
        Random stream of member ``k``: ``generator(seed, "eda", k, *labels)``.
    perturb_observations, obs_error_factor:
        Whether (and how much) the observations of members ``k >= 1`` are perturbed.
    record_hofx:
        Also return each member's :math:`H(x_b)` and :math:`H(x_a)` (flat, observers
        concatenated, each ``(nvars, nlocs)`` raveled) in its diagnostics
        (``"hofx background"``, ``"hofx analysis"``) — for the innovation archive.
    hbht, hbht_member:
        :class:`~pyoops.diagnostics.hbht.BackgroundVarianceParameters`: member
        ``hbht_member`` also returns :math:`\mathrm{diag}(\mathbf{HBH}^\mathrm{T})`
        (``"background error variance"``), randomized with the stream labels ``labels``.
    observers:
        In-process only (the serial engine): the :class:`~pyoops.generic.observers.Observers`
        the caller already built from exactly the ``observations`` section and time window of
        ``cost_function`` (e.g. the cycle's observer, which read the same file), used instead of
        building them again.  Their ObsValue is reset for every member, as for built ones.  Not
        pickled: a worker process builds its own.
    """

    model_plugin: str
    cost_function: dict[str, Any]
    variational: dict[str, Any]
    backgrounds: dict[int, dict[str, np.ndarray]] | None = None
    obs_values: list[np.ndarray] | None = None
    ensemble: dict[str, np.ndarray] | None = None
    seed: int = 0
    labels: tuple[Any, ...] = ()
    perturb_observations: bool = True
    obs_error_factor: float = 1.0
    record_hofx: bool = False
    hbht: Any = None
    hbht_member: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    #: The application run this belongs to. A B built from configuration alone is reused by the
    #: analyses of the same run (every cycle, every worker process), never by another run,
    #: whose files (a matrix, a standard-deviation field) may have changed on disk.
    run_token: str = field(default_factory=lambda: uuid.uuid4().hex)
    observers: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "observers": None}    # built again where it is unpickled


@dataclass
class EDAResult:
    """Analyses of a set of members: ``{member: [fields per analysis time]}`` and per-member diagnostics."""

    analyses: dict[int, list[dict[str, np.ndarray]]]
    times: list[DateTime]
    diagnostics: dict[int, dict[str, Any]]

    def stacked(self, members: list[int], time_index: int = -1) -> dict[str, np.ndarray]:
        """``{variable: (len(members), *grid)}`` of the analyses at one analysis time."""
        first = self.analyses[members[0]][time_index]
        return {v: np.stack([self.analyses[m][time_index][v] for m in members]) for v in first}


_static_covariances: dict[str, tuple[Any, Any]] = {}
#: Per run (:attr:`EDASetup.run_token`) and process: the cost-function memo
#: (:class:`~pyoops.assimilation.costfunction.CostFunction`'s ``memo``: the outer geometry and the
#: validated observation and background-error sections, by their configuration), so that the
#: analyses of every cycle of a run validate each configuration once.  A new run starts afresh
#: (its registry may hold other plugins).
_cost_memos: dict[str, dict[str, Any]] = {}


def _cost_memo(run_token: str) -> dict[str, Any]:
    if run_token not in _cost_memos and len(_cost_memos) >= 8:
        _cost_memos.clear()
    return _cost_memos.setdefault(run_token, {})


def _registry() -> Any:
    from pyoops.registry import get_registry

    return get_registry()


def analyse_members(setup: EDASetup, members: Any) -> EDAResult:
    """Run the variational analyses of ``members`` (member 0 = control, unperturbed).

    B is built once per inner geometry and shared by the members of the chunk.
    """
    from pyoops.assimilation.costfunction import CostFunction, CostFunctionParameters, _config_key
    from pyoops.assimilation.driver import VariationalSection, run_incremental

    registry = _registry()
    plugin = registry.model_plugin(setup.model_plugin)
    params = validate(CostFunctionParameters, setup.cost_function, "cost function")
    memo = _cost_memo(setup.run_token)
    cost = CostFunction(params, registry, plugin, memo=memo)
    section_key = _config_key(["variational", setup.variational])   # the cost function's exact memo key
    section = memo.get(section_key) if section_key is not None else None
    if section is None:      # the same section every cycle of a run: validated once
        section = validate(VariationalSection, setup.variational, "variational")
        if section_key is not None:
            memo[section_key] = section
    ensemble = FieldSet(setup.ensemble, copy=False) if setup.ensemble is not None else None
    covariances: list[tuple[Any, Any]] = []
    # A B without in-memory ensemble depends only on its configuration and the files it reads: built
    # once per run and process (the run token: another run may read changed files).
    static_key = None if ensemble is not None else json.dumps(
        [setup.run_token, setup.model_plugin, setup.cost_function.get("background error"),
         setup.cost_function.get("geometry"),
         setup.cost_function.get("analysis variables"), setup.cost_function.get("cost type")],
        sort_keys=True, default=str)

    def make_covariance(inner: Any) -> Any:
        for geometry, cov in covariances:
            if geometry.same_as(inner):
                return cov
        cached = _static_covariances.get(static_key) if static_key is not None else None
        if cached is not None and cached[0].same_as(inner):
            cov = cached[1]
        else:
            cov = cost.covariance(inner, ensemble=ensemble)
            if static_key is not None:
                if len(_static_covariances) > 8:
                    _static_covariances.clear()
                _static_covariances[static_key] = (inner, cov)
        covariances.append((inner, cov))
        return cov

    times = _background_dates(cost)
    analyses: dict[int, list[dict[str, np.ndarray]]] = {}
    diagnostics: dict[int, dict[str, Any]] = {}
    # Shared by the members: only ObsValue changes, and it is reset each time.
    observers = setup.observers if setup.observers is not None else cost.observers()
    values = setup.obs_values if setup.obs_values is not None else [ob.obs_space.obs_values().values.copy()
                                                                    for ob in observers]
    if len(values) != len(observers):
        raise ValueError(f"{len(values)} ObsValue arrays for {len(observers)} observers")
    for m in members:
        m = int(m)
        for ob, obs_values in zip(observers, values):
            for var, row in zip(ob.obs_space.simulated_variables, np.asarray(obs_values)):
                ob.obs_space.put_db("ObsValue", var, row)
        if m > 0 and setup.perturb_observations:
            perturb_observers(observers, eda_stream(setup.seed, m, *setup.labels), setup.obs_error_factor)
        background = None
        if setup.backgrounds is not None:
            if m not in setup.backgrounds:
                raise ValueError(f"no background for member {m}")
            fields = setup.backgrounds[m]
            if len(times) > 1:
                background = [plugin.state(cost.geometry, FieldSet({v: a[t] for v, a in fields.items()}), time)
                              for t, time in enumerate(times)]
            else:
                background = [plugin.state(cost.geometry, FieldSet(fields), _background_dates(cost)[0])]
        hbht = (setup.hbht, setup.labels) if setup.hbht is not None and m == setup.hbht_member else None
        result = run_incremental(cost, section, background=background, observers=observers,
                                 covariance=make_covariance, hbht=hbht, final_hofx=setup.record_hofx)
        analyses[m] = [{v: np.array(a.fields[v]) for v in a.fields} for a in result.analysis]
        diagnostics[m] = {"initial J": result.trace[0]["J"], "final J": result.trace[-1]["J"],
                          "inner iterations": len(result.trace) - len(section.iterations)}
        if setup.record_hofx:
            diagnostics[m]["hofx background"] = np.concatenate([h.values.ravel() for h in result.hofx_background])
            diagnostics[m]["hofx analysis"] = np.concatenate([h.values.ravel() for h in result.hofx_analysis])
        if result.background_error_variance is not None:
            diagnostics[m]["background error variance"] = result.background_error_variance
    return EDAResult(analyses, _background_dates(cost), diagnostics)


def _background_dates(cost: Any) -> list[DateTime]:
    return [b.date for b in cost._background_params()]


def run_eda(setup: EDASetup, members: list[int], executor: Any = None) -> EDAResult:
    """All ``members`` through ``executor`` (a :class:`~pyoops.ensemble.executors.MemberExecutor`;
    None: serially), chunked; the merged result in member order."""
    from pyoops.ensemble.executors import MemberExecutor, member_chunks

    executor = executor or MemberExecutor()
    chunks = member_chunks(len(members), executor.ntasks)
    parts = executor.map(_ChunkTask(setup), [[members[i] for i in c] for c in chunks])
    analyses: dict[int, Any] = {}
    diagnostics: dict[int, Any] = {}
    for part in parts:
        analyses.update(part.analyses)
        diagnostics.update(part.diagnostics)
    return EDAResult({m: analyses[m] for m in members}, parts[0].times if parts else [],
                     {m: diagnostics[m] for m in members})


class _ChunkTask:
    def __init__(self, setup: EDASetup):
        self.setup = setup

    def __call__(self, members: list[int]) -> EDAResult:
        return analyse_members(self.setup, members)


def inflate_perturbations(xa: dict[str, np.ndarray], xb: dict[str, np.ndarray], inflation: Any
                          ) -> dict[str, np.ndarray]:
    """Posterior inflation of analysis members around their mean: RTPP, RTPS, then ``mult``.

    ``xa``/``xb``: analysis and background members ``{variable: (N, ...)}``; ``inflation``:
    :class:`~pyoops.assimilation.letkf.InflationParameters` (``mult`` multiplies the
    covariance, i.e. the perturbations by :math:`\\sqrt{\\text{mult}}`).
    """
    from pyoops.assimilation.letkf import relax_to_prior_perturbations, relax_to_prior_spread

    if inflation.rtpp == 0 and inflation.rtps == 0 and inflation.mult == 1:
        return xa
    out = {}
    for v in xa:
        ma, mb = xa[v].mean(axis=0), xb[v].mean(axis=0)
        pa, pb = xa[v] - ma, xb[v] - mb
        pa = relax_to_prior_perturbations(pa, pb, inflation.rtpp)
        pa = relax_to_prior_spread(pa, pb, inflation.rtps, axis=0)
        out[v] = ma + np.sqrt(inflation.mult) * pa
    return out


def perturbed_obs_enkf_analysis(members: dict[str, np.ndarray], hofx: np.ndarray, y: np.ndarray,
                                obs_variance: np.ndarray, perturbations: np.ndarray) -> dict[str, np.ndarray]:
    r"""Stochastic (perturbed-observation) EnKF analysis of every member, in closed form.

    .. math::

        x^a_k = x^b_k + \mathbf{X}'\mathbf{Y}'^\mathsf{T}
                \big(\mathbf{Y}'\mathbf{Y}'^\mathsf{T} + (N-1)\mathbf{R}\big)^{-1}
                \big(y + \varepsilon_k - \mathcal{H}(x^b_k)\big),

    with the raw perturbations :math:`\mathbf{X}'` of the members and :math:`\mathbf{Y}'` of
    :math:`\mathcal{H}(x^b_k)`.  It is the minimum of the 3D-Var cost function of member
    :math:`k` with :math:`\mathbf{B}` the (unlocalized) sample covariance of the members and
    observations :math:`y + \varepsilon_k`: an EDA of 3D-Vars with a pure ensemble B, solved
    exactly.  Solved in ensemble space (Woodbury), :math:`O(N^2 p)` for diagonal
    :math:`\mathbf{R}`.

    Parameters
    ----------
    members:
        ``{variable: (N, *grid)}`` backgrounds.
    hofx:
        :math:`\mathcal{H}(x^b_k)`, shape ``(N, ...)`` (flattened to ``(N, p)``).
    y, obs_variance:
        Observations and their error variances (``p`` values each).
    perturbations:
        :math:`\varepsilon_k`, shape ``(N, ...)`` (flattened to ``(N, p)``).
    """
    hx = np.asarray(hofx, dtype=np.float64)
    n = hx.shape[0]
    hx = hx.reshape(n, -1)
    y = np.asarray(y, dtype=np.float64).ravel()
    var = np.asarray(obs_variance, dtype=np.float64)
    var = var.ravel() if var.size == y.size else np.broadcast_to(var, y.shape)
    eps = np.asarray(perturbations, dtype=np.float64).reshape(n, -1)
    yp = (hx - hx.mean(axis=0)) / np.sqrt(n - 1)                  # (N, p): Y'/sqrt(N-1)
    d = y[None, :] + eps - hx                                      # (N, p) innovations of each member
    # K d = X' Y'^T (Y'Y'^T + R)^-1 d = X' (I + Y' R^-1 Y'^T)^-1 Y' R^-1 d  (Woodbury, ensemble space)
    rinv = 1.0 / var
    s = (yp * rinv) @ yp.T                                         # (N, N)
    w = np.linalg.solve(np.eye(n) + s, (yp * rinv) @ d.T)         # (N, N): weights of member k in column k
    out = {}
    for v, a in members.items():
        a = np.asarray(a, dtype=np.float64)
        xp = (a - a.mean(axis=0)) / np.sqrt(n - 1)
        flat = xp.reshape(n, -1)
        out[v] = a + (w.T @ flat).reshape(a.shape)
    return out
