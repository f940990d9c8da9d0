r"""Priors of the MAP estimator, as log-densities of the *internal* parameter :math:`\phi`.

MAP here is the mode of the posterior density of :math:`\phi` (log or logit scale), so the
Jacobian of the transformation is part of each prior: a log-normal prior on :math:`\lambda`
is a normal density of :math:`\phi = \log\lambda`; a Beta(:math:`a, b`) prior on :math:`\beta`
becomes, for :math:`\phi = \mathrm{logit}\,\beta`, :math:`p(\phi) \propto \beta^a(1-\beta)^b`
(proper and log-concave for :math:`a, b > 0`).  Each prior returns the log-density (up to a
constant), its derivative and its negative second derivative (its contribution to the
information of the Laplace approximation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from pyoops.diagnostics.tuning.parameters import to_natural, transform_of

__all__ = ["BetaPrior", "HalfNormalLog", "LogNormal", "NormalInternal", "Prior", "default_priors"]


class Prior(Protocol):
    """A prior on one parameter: ``terms(phi) -> (log p, d log p / d phi, -d² log p / d phi²)``."""

    def terms(self, phi: float) -> tuple[float, float, float]: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class LogNormal:
    r""":math:`\log\theta \sim N(\log m, s^2)`: median ``median``, ``sigma`` = sd of :math:`\log\theta`."""

    median: float
    sigma: float

    def terms(self, phi: float) -> tuple[float, float, float]:
        z = (phi - math.log(self.median)) / self.sigma
        return -0.5 * z * z, -z / self.sigma, 1.0 / self.sigma**2

    def describe(self) -> str:
        return f"log-normal(median {self.median:g}, sd of log {self.sigma:g})"


@dataclass(frozen=True)
class NormalInternal:
    r"""A normal density on the internal scale, :math:`\phi \sim N(\mu, \tau^2)` (the shared prior of pooling)."""

    mean: float
    sd: float

    def terms(self, phi: float) -> tuple[float, float, float]:
        z = (phi - self.mean) / self.sd
        return -0.5 * z * z, -z / self.sd, 1.0 / self.sd**2

    def describe(self) -> str:
        return f"normal on the internal scale (mean {self.mean:g}, sd {self.sd:g})"


@dataclass(frozen=True)
class BetaPrior:
    r""":math:`\beta \sim \mathrm{Beta}(a, b)`; on :math:`\phi = \mathrm{logit}\,\beta`:
    :math:`\log p = a\log\beta + b\log(1-\beta)`, :math:`\partial_\phi = a(1-\beta) - b\beta`,
    :math:`-\partial^2_\phi = (a+b)\beta(1-\beta)`."""

    a: float
    b: float

    def terms(self, phi: float) -> tuple[float, float, float]:
        beta = to_natural("beta", phi)
        logb = -math.log1p(math.exp(-phi)) if phi > -30 else phi
        log1mb = -math.log1p(math.exp(phi)) if phi < 30 else -phi
        return (self.a * logb + self.b * log1mb, self.a * (1 - beta) - self.b * beta,
                (self.a + self.b) * beta * (1 - beta))

    def describe(self) -> str:
        return f"Beta({self.a:g}, {self.b:g})"


@dataclass(frozen=True)
class HalfNormalLog:
    r"""Half-normal on :math:`\log(\theta/\theta_0)` beyond a reference: for ``side="above"``
    :math:`\log p = -\tfrac12\big(\max(0, \log\theta - \log\theta_0)/s\big)^2` (flat below
    :math:`\theta_0`, the parameter's bounds close it), e.g. for :math:`\ell`, keeping a weakly
    identified localization from drifting to "no localization"; ``side="below"`` mirrors it."""

    reference: float
    scale: float
    side: str = "above"

    def terms(self, phi: float) -> tuple[float, float, float]:
        x = phi - math.log(self.reference)
        if self.side == "below":
            x = -x
        if x <= 0:
            return 0.0, 0.0, 0.0
        sign = -1.0 if self.side == "below" else 1.0
        return -0.5 * (x / self.scale) ** 2, -sign * x / self.scale**2, 1.0 / self.scale**2

    def describe(self) -> str:
        return f"half-normal on log(theta/{self.reference:g}) {self.side} 0, scale {self.scale:g}"


def default_priors(names: list[str] | tuple[str, ...], typical_distance: float | None = None) -> dict[str, Prior]:
    r"""Default priors: :math:`\beta\sim\mathrm{Beta}(2,2)`; :math:`\lambda`, amplitudes and weights
    log-normal with median 1 and sd of the log 0.5 (a factor 2.7 at 2 sd); :math:`\ell` log-normal
    with median ``typical_distance`` (the median observation separation) and sd of the log 1."""
    out: dict[str, Prior] = {}
    for name in names:
        if transform_of(name) == "logit":
            out[name] = BetaPrior(2.0, 2.0)
        elif name == "length":
            if typical_distance is None:
                raise ValueError("a default prior for 'length' needs a typical distance")
            out[name] = LogNormal(typical_distance, 1.0)
        else:
            out[name] = LogNormal(1.0, 0.5)
    return out


def prior_terms(priors: Mapping[str, Prior], free: tuple[str, ...], phi) -> tuple[float, list[float], list[float]]:
    """Sum of log-priors, gradient and diagonal negative Hessian over the free parameters."""
    total, grad, curv = 0.0, [], []
    for name, x in zip(free, phi):
        pr = priors.get(name)
        if pr is None:
            grad.append(0.0)
            curv.append(0.0)
            continue
        v, g, c = pr.terms(float(x))
        total += v
        grad.append(g)
        curv.append(c)
    return total, grad, curv
