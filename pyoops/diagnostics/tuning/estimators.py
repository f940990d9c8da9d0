r"""The estimators behind one interface, :func:`estimate`.

``method``:

* ``"ml"`` — maximum likelihood: minimise :math:`f(\phi) = -\log L` (exact, Cholesky;
  :mod:`~pyoops.diagnostics.tuning.model`) with L-BFGS-B, analytic gradient, bounds on the
  internal scale; uncertainty from the Fisher information at :math:`\hat\phi`, profile
  intervals optional.
* ``"map"`` — the same with :math:`f = -\log L - \sum_i\log p_i(\phi_i)` (priors of
  :mod:`~pyoops.diagnostics.tuning.priors`; defaults :func:`~pyoops.diagnostics.tuning.priors.default_priors`);
  the regularisation.  Information = Fisher + the priors' curvature (Laplace approximation).
* ``"desroziers"`` — the fixed point of Desroziers et al. (2005) for the amplitude of
  :math:`\mathbf{HBH}^\mathrm{T}` (``inflation``, the :math:`a_b` of the literature) and of
  :math:`\mathbf R` (``a_o`` or per obs group ``a_o[g]``):
  with the current :math:`\mathbf S = \mathbf B' + \mathbf R'` (:math:`\mathbf B' = \mathbf{HB_hH}^\mathrm{T}`
  scaled, :math:`\mathbf R'` scaled) the analysis in observation space gives
  :math:`d^o_a = \mathbf R'\mathbf S^{-1}d` and :math:`d^a_b = \mathbf B'\mathbf S^{-1}d`, and

  .. math::

      s_{o,g}^2 = \frac{\sum_k (d^o_a)_g^\mathrm{T} d_g}{\sum_k\mathrm{tr}\,\mathbf R'_g},\qquad
      s_b^2 = \frac{\sum_k (d^a_b)^\mathrm{T} d}{\sum_k\mathrm{tr}\,\mathbf B'},\qquad
      a_{o,g} \leftarrow s_{o,g}^2\,a_{o,g},\quad \lambda \leftarrow s_b^2\,\lambda,

  iterated until every :math:`|\log s^2| <` ``tolerance``; the number of iterations is
  reported.  This is the fixed point *on a fixed set of innovations*: in a cycled system the
  background error itself changes with the assumed :math:`\mathbf B`, so the cycled fixed
  point needs the cycle re-run with each update.  Its uncertainty is the sandwich
  (Godambe) covariance of the estimating equations
  :math:`\psi_j = \sum_k[d_k^\mathrm{T}\mathbf S_k^{-1}\mathbf X_j d_k - \mathrm{tr}\,\mathbf X_j]`
  (:math:`\mathbf X_j \in \{\mathbf B', \mathbf R'_g\}`): under the model
  :math:`\partial E[\psi_j]/\partial\phi_l = -\sum_k\mathrm{tr}(\mathbf X_l\mathbf S^{-1}\mathbf X_j)` and
  :math:`\mathrm{Cov}(\psi_j,\psi_l) = \sum_k[\mathrm{tr}(\mathbf X_j\mathbf X_l) + \mathrm{tr}(\mathbf S^{-1}\mathbf X_j\mathbf S\mathbf X_l)]`.
* ``"moments"`` — method of moments: least squares between the empirical and modelled
  second moments, whitened by :math:`\mathbf R^{-1/2}`,

  .. math::

      Q(\theta) = \sum_k\sum_{(i,j)} \frac{(d_{k,i}d_{k,j} - S_{k,ij}(\theta))^2}{\sigma_{o,i}^2\sigma_{o,j}^2}

  over all components (``components="all"``) or the variances only (``"variances"``).
  :math:`\mathbf S` is linear in the basis coefficients :math:`c = (c_s, c_e, r_g)`, so
  :math:`Q = c^\mathrm{T}\mathbf Gc - 2h^\mathrm{T}c + \mathrm{const}` with the Gram matrix
  :math:`\mathbf G` of the bases and :math:`h_a = \sum_k d_k^\mathrm{T}\tilde{\mathbf A}_a d_k` computed once
  (the 2×2 normal equations of SABER/BUMP's hybrid weights when the free parameters are
  :math:`(\beta, \lambda)`); ``length`` cannot be free (it enters non-linearly).  Sandwich
  covariance with :math:`\mathbf A = \mathbf J\mathbf G\mathbf J^\mathrm{T}` and
  :math:`\mathrm{Cov}(h_a, h_b) = 2\sum_k\mathrm{tr}(\tilde{\mathbf A}_a\mathbf S\tilde{\mathbf A}_b\mathbf S)`.

For the two estimating-equation methods the intervals rely on the Gaussian model at the
estimate (the plug-in :math:`\mathbf S(\hat\theta)`) and no profile is available.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize

from pyoops.diagnostics.tuning.data import TuningData
from pyoops.diagnostics.tuning.model import HybridCovarianceModel
from pyoops.diagnostics.tuning.parameters import Parametrization, is_group_amplitude
from pyoops.diagnostics.tuning.priors import Prior, default_priors, prior_terms
from pyoops.diagnostics.tuning.uncertainty import (
    ParameterEstimate,
    correlation_matrix,
    covariance_from_information,
    explain,
    parameter_estimates,
    profile_interval,
)

__all__ = ["METHODS", "TuningResult", "build_model", "estimate", "negative_log_likelihood"]

METHODS = ("ml", "map", "desroziers", "moments")


@dataclass
class TuningResult:
    """An estimate with its uncertainty and identifiability (see :func:`estimate`).

    ``values`` holds every parameter of the model (free and fixed, natural scale);
    ``estimates`` the free ones with intervals and verdicts; ``information`` the information
    matrix of the free internal parameters (kind in ``information_kind``), ``correlation``
    their correlation, ``eigenvalues``/``eigenvectors`` its spectrum (ascending); ``notes``
    the identifiability explanations; ``nll`` :math:`-\\log L` at the estimate.
    """

    method: str
    form: str
    free: tuple[str, ...]
    values: dict[str, float]
    estimates: dict[str, ParameterEstimate]
    information: np.ndarray
    information_kind: str
    correlation: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    notes: list[str]
    nll: float
    nobs: int
    ncycles: int
    level: float
    converged: bool
    iterations: int
    message: str
    seconds: float
    priors: dict[str, str] = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    @property
    def internal(self) -> np.ndarray:
        """Internal (log/logit) values of the free parameters."""
        from pyoops.diagnostics.tuning.parameters import to_internal

        return np.array([to_internal(n, self.values[n]) for n in self.free])

    def natural_covariance(self) -> np.ndarray:
        r"""Covariance of the free parameters on the natural scale (delta method,
        :math:`\mathbf D\mathcal I^{-1}\mathbf D`, :math:`\mathbf D = \mathrm{diag}(d\theta/d\phi)`)."""
        from pyoops.diagnostics.tuning.uncertainty import transform_covariance

        return transform_covariance(self.free, self.internal, covariance_from_information(self.information)[0])

    def natural_information(self) -> np.ndarray:
        r"""Information of the natural parameters, :math:`\mathbf D^{-1}\mathcal I\mathbf D^{-1}`."""
        from pyoops.diagnostics.tuning.parameters import natural_derivative

        d = np.array([natural_derivative(n, self.values[n]) for n in self.free])
        return self.information / d[:, None] / d[None, :]

    def verdict(self, name: str) -> str:
        """The verdict of a free parameter."""
        return self.estimates[name].verdict

    def to_dict(self) -> dict:
        """JSON-compatible summary."""
        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {"method": self.method, "form": self.form, "level": self.level,
                "values": {k: num(v) for k, v in self.values.items()},
                "estimates": {k: e.to_dict() for k, e in self.estimates.items()},
                "information kind": self.information_kind,
                "information": self.information.tolist(), "correlation": self.correlation.tolist(),
                "eigenvalues": self.eigenvalues.tolist(), "eigenvectors": self.eigenvectors.tolist(),
                "notes": list(self.notes), "negative log-likelihood": num(self.nll), "observations": self.nobs,
                "cycles": self.ncycles, "converged": self.converged, "iterations": self.iterations,
                "message": self.message, "seconds": self.seconds, "priors": dict(self.priors),
                "details": self.details}

    def summary(self) -> str:
        """A printable table, one line per free parameter, then the notes."""
        head = (f"{self.method} ({self.form} form): {self.nobs} observations in {self.ncycles} cycles, "
                f"{100 * self.level:g} % intervals ({self.information_kind}); -log L = {self.nll:.6g}; "
                f"{'converged' if self.converged else 'NOT converged'} in {self.iterations} iterations")
        lines = [head]
        for name, e in self.estimates.items():
            lo, hi = e.interval
            kind = "profile" if e.profile_interval is not None else "Wald"
            lines.append(f"  {name:<12} {e.value:10.4g}  [{lo:.4g}, {hi:.4g}] ({kind})  {e.verdict}: {e.reason}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _length_scales(data: TuningData, max_cycles: int = 20) -> tuple[float, float, float]:
    """(smallest positive, median positive, largest) observation separation over the first cycles."""
    pos = []
    for c in data.cycles[:max_cycles]:
        r = data.distances(c)
        r = r[np.triu_indices(c.nobs, 1)]
        pos.append(r[r > 0])
    allr = np.concatenate(pos) if pos else np.zeros(0)
    if allr.size == 0:
        raise ValueError("no pair of distinct observation locations: the localization length has nothing to act on")
    return float(allr.min()), float(np.median(allr)), float(allr.max())


def build_model(data: TuningData, parameters: Sequence[str] = (), fixed: Mapping[str, float] | None = None, *,
                form: str = "hybrid", bounds: Mapping[str, tuple[float, float]] | None = None
                ) -> tuple[HybridCovarianceModel, Parametrization]:
    """The model and parametrization used by :func:`estimate` (default length bounds from the data:
    a quarter of the smallest to ten times the largest observation separation)."""
    length_bounds = (1e-3, 1e3)
    if "length" in parameters:
        dmin, _, dmax = _length_scales(data)
        length_bounds = (0.25 * dmin, 10.0 * dmax)
    par = Parametrization.create(parameters, fixed, form=form, groups=data.obs_groups(),
                                 has_ensemble=data.has_ensemble, bounds=bounds, length_bounds=length_bounds)
    return HybridCovarianceModel(data, par), par


def negative_log_likelihood(data: TuningData, values: Mapping[str, float], form: str = "hybrid") -> float:
    """:math:`-\\log L` of ``data`` at natural ``values`` (every other parameter at its default)."""
    groups = data.obs_groups()
    vals = {k: v for k, v in values.items() if not is_group_amplitude(k) or k[4:-1] in groups}
    model, _ = build_model(data, (), vals, form=form)
    return model.evaluate(np.zeros(0), gradient=False).nll


def estimate(data: TuningData, method: str = "ml", parameters: Sequence[str] = ("beta", "inflation"),
             fixed: Mapping[str, float] | None = None, prior: Mapping[str, Prior] | None = None, *,
             form: str = "hybrid", bounds: Mapping[str, tuple[float, float]] | None = None,
             start: Mapping[str, float] | None = None, level: float = 0.95, profile: bool = False,
             components: str = "all", tolerance: float = 1e-6, max_iterations: int = 200) -> TuningResult:
    """Estimate ``parameters`` (natural names, see :mod:`~pyoops.diagnostics.tuning.parameters`) from ``data``.

    Parameters
    ----------
    method:
        ``"ml"``, ``"map"``, ``"desroziers"`` or ``"moments"`` (module docstring).
    fixed:
        Natural values of parameters held fixed (others take the defaults).
    prior:
        For ``"map"``: name → prior; missing names get :func:`~pyoops.diagnostics.tuning.priors.default_priors`.
    form:
        ``"hybrid"`` (β) or ``"weights"`` (:math:`w_s, w_e`).
    bounds:
        Natural bounds per parameter (defaults in :mod:`~pyoops.diagnostics.tuning.parameters`).
    start:
        Natural starting values (ML/MAP/moments/Desroziers); default 1 for scale parameters,
        0.5 for β and the median observation separation for ℓ.
    profile:
        Compute profile-likelihood intervals (ML and MAP only); they replace Wald intervals in
        the verdicts.
    components:
        ``"all"`` or ``"variances"`` (method of moments).
    tolerance, max_iterations:
        Desroziers: stop when every :math:`|\\log s^2| <` ``tolerance``; ML/MAP: L-BFGS-B iterations.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if profile and method not in ("ml", "map"):
        raise ValueError(f"profile intervals need a likelihood (method 'ml' or 'map'), not {method!r}")
    t0 = time.perf_counter()
    parameters = tuple(parameters)
    model, par = build_model(data, parameters, fixed, form=form, bounds=bounds)
    start_values = dict(start or {})
    if "length" in par.free and "length" not in start_values:
        start_values["length"] = _length_scales(data)[1]
    phi0 = par.internal(start_values)
    ibounds = par.internal_bounds()
    priors: dict[str, Prior] = {}
    if method == "map":
        typical = _length_scales(data)[1] if "length" in par.free else None
        priors = {**default_priors([n for n in par.free if n not in (prior or {})], typical), **dict(prior or {})}
        unknown = set(priors) - set(par.free)
        if unknown:
            raise ValueError(f"priors given for parameters that are not free: {sorted(unknown)}")
    elif prior:
        raise ValueError("priors are used by method='map' only")

    details: dict = {}
    profiles = None
    if method in ("ml", "map"):
        def objective(phi: np.ndarray) -> tuple[float, np.ndarray]:
            ev = model.evaluate(phi)
            if not math.isfinite(ev.nll):
                return 1e300, np.zeros_like(phi)
            lp, g, _ = prior_terms(priors, par.free, phi)
            return ev.nll - lp, ev.gradient - np.asarray(g)

        if par.size:
            res = scipy.optimize.minimize(objective, phi0, jac=True, method="L-BFGS-B", bounds=ibounds,
                                          options={"maxiter": max_iterations})
            phi_hat, converged, iterations, message = res.x, bool(res.success), int(res.nit), str(res.message)
        else:
            phi_hat, converged, iterations, message = phi0, True, 0, "nothing to estimate"
        ev = model.evaluate(phi_hat, gradient=False, fisher=True)
        info = ev.fisher
        kind = "Fisher information"
        if priors:
            _, _, curv = prior_terms(priors, par.free, phi_hat)
            info = info + np.diag(curv)
            kind = "Laplace: Fisher information + prior curvature"
        nll = ev.nll
        f_hat = objective(phi_hat)[0]
        if profile and par.size:
            cov0, _, _ = covariance_from_information(info)
            profiles = {}
            for i, name in enumerate(par.free):
                profiles[name] = profile_interval(objective, phi_hat, f_hat, i, ibounds,
                                                  math.sqrt(max(cov0[i, i], 0.0)), level)
            kind += "; profile intervals"
    elif method == "desroziers":
        phi_hat, info, converged, iterations, history = _desroziers(model, par, phi0, ibounds, tolerance,
                                                                    max_iterations)
        details["ratios"] = history
        message = "converged" if converged else f"not converged after {iterations} iterations"
        kind = "Godambe (sandwich) information of the Desroziers equations"
        nll = model.evaluate(phi_hat, gradient=False).nll
    else:
        phi_hat, info, converged, iterations, message = _moments(model, par, phi0, ibounds, components)
        kind = f"Godambe (sandwich) information of the moment equations ({components})"
        nll = model.evaluate(phi_hat, gradient=False).nll

    cov, mu, vec = covariance_from_information(info) if par.size else (np.zeros((0, 0)), np.zeros(0), np.zeros((0, 0)))
    estimates = parameter_estimates(par.free, phi_hat, cov, ibounds, level, profiles)
    values = par.natural(phi_hat)
    notes = explain(par.free, values, mu, vec, estimates, model.whitened_cosines(values), form) if par.size else []
    return TuningResult(method, form, par.free, values, estimates, info, kind,
                        correlation_matrix(cov) if par.size else cov, mu, vec, notes, float(nll), data.nobs,
                        len(data.cycles), level, converged, iterations, message, time.perf_counter() - t0,
                        {k: p.describe() for k, p in priors.items()}, details)


# -- Desroziers -------------------------------------------------------------------------------------
def _components(model: HybridCovarianceModel, par: Parametrization, values: Mapping[str, float], states) -> list:
    """Per block, the matrices X_j (K, p, p) of the free amplitudes: B' for inflation, R'_g for a_o."""
    c_s, c_e, r, _ = model.coefficients(values)
    out = []
    for st in states:
        blk = st.block
        k, p = blk.d.shape
        mats = []
        for name in par.free:
            if name == "inflation":
                x = c_s * blk.cs + (c_e * st.cel if st.cel is not None else 0.0)
            else:
                if name == "a_o":
                    use = np.array([f"a_o[{g}]" not in values for g in model.groups])
                else:
                    use = np.array([g == name[4:-1] for g in model.groups])
                diag = np.where(use[blk.gcode], r[blk.gcode] * blk.sig2, 0.0)
                x = np.zeros((k, p, p))
                x[:, np.arange(p), np.arange(p)] = diag
            mats.append(np.broadcast_to(x, (k, p, p)))
        out.append(mats)
    return out


def _desroziers(model: HybridCovarianceModel, par: Parametrization, phi0: np.ndarray, ibounds, tolerance: float,
                max_iterations: int):
    allowed = [n for n in par.free if n not in ("inflation", "a_o") and not is_group_amplitude(n)]
    if allowed:
        raise ValueError(f"the Desroziers fixed point estimates amplitudes only (inflation = the B scale, a_o, "
                         f"a_o[g]); not {allowed}")
    phi = phi0.copy()
    lo = np.array([b[0] for b in ibounds])
    hi = np.array([b[1] for b in ibounds])
    history = []
    converged = False
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        values = par.natural(phi)
        states = model.states(values)
        comps = _components(model, par, values, states)
        num = np.zeros(par.size)
        den = np.zeros(par.size)
        for st, mats in zip(states, comps):
            for j, x in enumerate(mats):
                num[j] += float(np.einsum("kij,kj,ki->", x, st.alpha, st.block.d))   # (X S^-1 d)^T d
                den[j] += float(np.trace(x, axis1=1, axis2=2).sum())
        ratio = num / den
        history.append({n: float(v) for n, v in zip(par.free, ratio)})
        step = np.log(np.clip(ratio, 1e-12, None))
        phi = np.clip(phi + step, lo, hi)
        if np.all(np.abs(step) < tolerance):
            converged = True
            break
    values = par.natural(phi)
    states = model.states(values)
    comps = _components(model, par, values, states)
    m = par.size
    jac = np.zeros((m, m))
    var = np.zeros((m, m))
    for st, mats in zip(states, comps):
        sx = [st.sinv @ x for x in mats]
        ssx = [st.s @ x for x in mats]
        for j in range(m):
            for k in range(m):
                jac[j, k] -= float(np.einsum("kij,kji->", mats[k], sx[j]))          # tr(X_l S^-1 X_j)
                var[j, k] += float(np.einsum("kij,kji->", mats[j], mats[k])
                                   + np.einsum("kij,kji->", sx[j], ssx[k]))
    info = jac.T @ np.linalg.pinv(var) @ jac
    return phi, info, converged, iterations, history


# -- method of moments ----------------------------------------------------------------------------
def _moments(model: HybridCovarianceModel, par: Parametrization, phi0: np.ndarray, ibounds, components: str):
    if "length" in par.free:
        raise ValueError("the method of moments does not estimate 'length' (it enters non-linearly); use ml or map")
    if components not in ("all", "variances"):
        raise ValueError(f"components must be 'all' or 'variances', got {components!r}")
    cols = [0, 1] + list(range(3, model.nbases))           # bases C_s, L o C_e, D_g (no dL)
    values0 = par.natural(phi0)
    states = model.states(values0)
    nb = len(cols)
    gram = np.zeros((nb, nb))
    h = np.zeros(nb)
    tilde_all = []
    for st in states:
        blk = st.block
        k, p = blk.d.shape
        w = 1.0 / blk.sig2
        bases = [blk.cs, st.cel if st.cel is not None else np.zeros_like(blk.cs)]
        for g in range(len(model.groups)):
            x = np.zeros((k, p, p))
            x[:, np.arange(p), np.arange(p)] = np.where(blk.gcode == g, blk.sig2, 0.0)
            bases.append(x)
        if components == "all":
            tilde = [b * w[:, :, None] * w[:, None, :] for b in bases]
        else:
            tilde = [np.diagonal(b, axis1=1, axis2=2) * w * w for b in bases]        # (K, p) diagonals
        for a in range(nb):
            if components == "all":
                h[a] += float(np.einsum("ki,kij,kj->", blk.d, tilde[a], blk.d))
                for b in range(a, nb):
                    gram[a, b] = gram[b, a] = gram[a, b] + float((tilde[a] * bases[b]).sum())
            else:
                h[a] += float((tilde[a] * blk.d ** 2).sum())
                for b in range(a, nb):
                    gram[a, b] = gram[b, a] = gram[a, b] + float(
                        (tilde[a] * np.diagonal(bases[b], axis1=1, axis2=2)).sum())
        tilde_all.append((st, tilde))

    def coefs(phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = par.natural(phi)
        c_s, c_e, r, _ = model.coefficients(values)
        return np.concatenate([[c_s, c_e], r]), model.coefficient_jacobian(values)[:, cols]

    def objective(phi: np.ndarray) -> tuple[float, np.ndarray]:
        c, jac = coefs(phi)
        return float(c @ gram @ c - 2 * h @ c), jac @ (2 * gram @ c - 2 * h)

    scale = max(abs(float(h.sum())), 1.0)
    res = scipy.optimize.minimize(lambda x: tuple(v / scale for v in objective(x)), phi0, jac=True,
                                  method="L-BFGS-B", bounds=ibounds, options={"maxiter": 500, "ftol": 1e-14,
                                                                              "gtol": 1e-10})
    phi_hat = res.x
    _, jac = coefs(phi_hat)
    # sandwich with the plug-in S(theta_hat)
    values = par.natural(phi_hat)
    states_hat = model.states(values)
    vh = np.zeros((nb, nb))
    for (st0, tilde), st in zip(tilde_all, states_hat):
        s = st.s
        if components == "all":
            ts = [t @ s for t in tilde]
            for a in range(nb):
                for b in range(a, nb):
                    vh[a, b] = vh[b, a] = vh[a, b] + 2.0 * float(np.einsum("kij,kji->", ts[a], ts[b]))
        else:
            s2 = s * s
            for a in range(nb):
                for b in range(a, nb):
                    vh[a, b] = vh[b, a] = vh[a, b] + 2.0 * float(np.einsum("ki,kij,kj->", tilde[a], s2, tilde[b]))
    a_mat = jac @ gram @ jac.T
    v_mat = jac @ vh @ jac.T
    info = a_mat @ np.linalg.pinv(v_mat) @ a_mat
    return phi_hat, info, bool(res.success), int(res.nit), str(res.message)
