r"""Parameters of the hybrid innovation covariance and their internal (log/logit) scale.

Model, per cycle :math:`k`:

.. math::

    \mathbf S_k(\theta) = c_s\,\mathbf C_{s,k} + c_e\,(L_\ell\circ\mathbf C_{e,k})
    + \mathrm{diag}\big(r_{g(i)}\,\sigma_{o,i}^2\big)

with, for ``form="hybrid"``, :math:`c_s = \lambda(1-\beta)a_s`, :math:`c_e = \lambda\beta a_e`, and
for ``form="weights"`` (two independent weights that need not sum to one)
:math:`c_s = \lambda w_s a_s`, :math:`c_e = \lambda w_e a_e`; :math:`r_g = a_o` or the obs group's
own :math:`a_{o,g}`.

============== =============================== =============== ==================== =========================
name           meaning                         internal scale  default (fixed)      default bounds
============== =============================== =============== ==================== =========================
``beta``       hybrid weight :math:`\beta`     logit           0.5 (0 without ens.) :math:`[10^{-4}, 1-10^{-4}]`
``inflation``  multiplicative :math:`\lambda`  log             1                    :math:`[10^{-3}, 10^3]`
``length``     GC half-width :math:`\ell`      log             :math:`\infty`       from the data
``a_s``        static amplitude                log             1                    :math:`[10^{-3}, 10^3]`
``a_e``        ensemble amplitude              log             1                    :math:`[10^{-3}, 10^3]`
``a_o``        :math:`\mathbf R` amplitude     log             1                    :math:`[10^{-3}, 10^3]`
``a_o[g]``     :math:`\mathbf R` amplitude of  log             ``a_o``              :math:`[10^{-3}, 10^3]`
               obs group ``g``
``w_s``        static weight (``weights``)     log             1                    :math:`[10^{-3}, 10^3]`
``w_e``        ensemble weight (``weights``)   log             0 without ensemble,  :math:`[10^{-3}, 10^3]`
                                                               else 1
============== =============================== =============== ==================== =========================

Internally :math:`\phi = \log\theta` or :math:`\mathrm{logit}\,\beta = \log(\beta/(1-\beta))`, so
every estimate respects its range and intervals are symmetric on the scale where the
likelihood is closest to quadratic; users see natural values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Parametrization", "is_group_amplitude", "transform_of"]

_SCALE_NAMES = ("inflation", "length", "a_s", "a_e", "a_o", "w_s", "w_e")
_AMPLITUDE_BOUNDS = (1e-3, 1e3)
_BETA_BOUNDS = (1e-4, 1.0 - 1e-4)


def is_group_amplitude(name: str) -> bool:
    """Whether ``name`` is ``a_o[<group>]``."""
    return name.startswith("a_o[") and name.endswith("]")


def transform_of(name: str) -> str:
    """``"logit"`` for ``beta``, ``"log"`` for the others; unknown names raise ValueError."""
    if name == "beta":
        return "logit"
    if name in _SCALE_NAMES or is_group_amplitude(name):
        return "log"
    raise ValueError(f"unknown tuning parameter {name!r} (known: beta, {', '.join(_SCALE_NAMES)}, a_o[<group>])")


def to_internal(name: str, value: float) -> float:
    r""":math:`\phi(\theta)`: log, or logit for ``beta``."""
    if transform_of(name) == "logit":
        return math.log(value) - math.log1p(-value)
    return math.log(value)


def to_natural(name: str, phi: float) -> float:
    r""":math:`\theta(\phi)`: exp, or the logistic function for ``beta``."""
    if transform_of(name) == "logit":
        return 1.0 / (1.0 + math.exp(-phi)) if phi >= 0 else math.exp(phi) / (1.0 + math.exp(phi))
    return math.exp(phi)


def natural_derivative(name: str, value: float) -> float:
    r""":math:`d\theta/d\phi`: :math:`\theta` (log) or :math:`\beta(1-\beta)` (logit)."""
    return value * (1.0 - value) if transform_of(name) == "logit" else value


@dataclass(frozen=True)
class Parametrization:
    r"""Which parameters are free (in order), the fixed values of the others, bounds and form.

    Built by :meth:`create`, which fills the defaults of the module table and checks the
    combination (``beta`` only in the ``hybrid`` form, ``w_s``/``w_e`` only in ``weights``,
    not ``a_o`` and ``a_o[g]`` both free, groups that exist).
    """

    free: tuple[str, ...]
    fixed: Mapping[str, float]
    bounds: Mapping[str, tuple[float, float]]
    form: str
    groups: tuple[str, ...]

    @classmethod
    def create(cls, free: Sequence[str], fixed: Mapping[str, float] | None, *, form: str, groups: Sequence[str],
               has_ensemble: bool, bounds: Mapping[str, tuple[float, float]] | None = None,
               length_bounds: tuple[float, float] = (1e-3, 1e3)) -> Parametrization:
        """Check the names and fill defaults (see the module table)."""
        if form not in ("hybrid", "weights"):
            raise ValueError(f"form must be 'hybrid' or 'weights', got {form!r}")
        free = tuple(free)
        fixed = dict(fixed or {})
        if len(set(free)) != len(free):
            raise ValueError(f"parameters listed twice: {free}")
        both = set(free) & set(fixed)
        if both:
            raise ValueError(f"parameters both free and fixed: {sorted(both)}")
        for name in (*free, *fixed):
            transform_of(name)
            if form == "hybrid" and name in ("w_s", "w_e"):
                raise ValueError(f"{name!r} belongs to form='weights'; the hybrid form uses 'beta'")
            if form == "weights" and name == "beta":
                raise ValueError("'beta' belongs to form='hybrid'; the weights form uses 'w_s' and 'w_e'")
            if is_group_amplitude(name) and name[4:-1] not in groups:
                raise ValueError(f"{name!r}: no obs group {name[4:-1]!r} in the data (groups: {list(groups)})")
        if "a_o" in free and any(is_group_amplitude(n) for n in free):
            raise ValueError("'a_o' and per-group 'a_o[g]' cannot both be free")
        defaults = {"inflation": 1.0, "length": math.inf, "a_s": 1.0, "a_e": 1.0, "a_o": 1.0}
        if form == "hybrid":
            defaults["beta"] = 0.5 if has_ensemble else 0.0
        else:
            defaults.update(w_s=1.0, w_e=1.0 if has_ensemble else 0.0)
        for name, value in defaults.items():
            if name not in free:
                fixed.setdefault(name, value)
        all_bounds: dict[str, tuple[float, float]] = {}
        for name in free:
            if name == "beta":
                b = _BETA_BOUNDS
            elif name == "length":
                b = length_bounds
            else:
                b = _AMPLITUDE_BOUNDS
            if bounds and name in bounds:
                b = (float(bounds[name][0]), float(bounds[name][1]))
            lo, hi = b
            if not (lo < hi) or lo <= 0 or (name == "beta" and hi >= 1):
                raise ValueError(f"bounds of {name!r} must satisfy 0 < lower < upper{' < 1' if name == 'beta' else ''}, "
                                 f"got {b}")
            all_bounds[name] = (lo, hi)
        return cls(free, {k: float(v) for k, v in fixed.items()}, all_bounds, form, tuple(groups))

    @property
    def size(self) -> int:
        """Number of free parameters."""
        return len(self.free)

    def natural(self, phi: np.ndarray) -> dict[str, float]:
        """All parameter values (fixed and free) from the internal vector of the free ones."""
        values = dict(self.fixed)
        for name, x in zip(self.free, np.asarray(phi, dtype=np.float64)):
            values[name] = to_natural(name, float(x))
        return values

    def internal(self, values: Mapping[str, float]) -> np.ndarray:
        """Internal vector of the free parameters from natural values (missing ones: a central default)."""
        out = []
        for name in self.free:
            v = values.get(name)
            if v is None:
                lo, hi = self.bounds[name]
                v = 0.5 if name == "beta" else (1.0 if lo < 1.0 < hi else math.sqrt(lo * hi))
            lo, hi = self.bounds[name]
            out.append(to_internal(name, min(max(float(v), lo), hi)))
        return np.array(out)

    def internal_bounds(self) -> list[tuple[float, float]]:
        """Bounds of the internal vector (for L-BFGS-B)."""
        return [(to_internal(n, self.bounds[n][0]), to_internal(n, self.bounds[n][1])) for n in self.free]

    def jacobian(self, phi: np.ndarray) -> np.ndarray:
        r""":math:`d\theta_i/d\phi_i` of the free parameters (the transformation is diagonal)."""
        values = self.natural(phi)
        return np.array([natural_derivative(n, values[n]) for n in self.free])

    def amplitude(self, values: Mapping[str, float], group: str) -> float:
        """:math:`r_g`: ``a_o[g]`` if given, else ``a_o``."""
        return float(values.get(f"a_o[{group}]", values["a_o"]))
