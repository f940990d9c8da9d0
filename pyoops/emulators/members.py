r"""Emulated EDA members: what the real members tell, the linear emulator and the bridge sampler (numpy).

Setting
-------
An EDA (or an ETKF) turns :math:`N` backgrounds :math:`x^{b,(n)}` into :math:`N` analyses
:math:`x^{a,(n)}`.  A hybrid ensemble analyses only the :math:`M = N_s` *real* members
:math:`S` and *emulates* the analyses of the others from their backgrounds, conditioned on
the real pairs :math:`\{(x^{b,(i)}, x^{a,(i)})\}_{i\in S}` and on all :math:`N` backgrounds.

Coordinates
-----------
Everything is expressed per cycle and per point in units of the backgrounds' spread:
with :math:`\bar x^b` and :math:`\sigma^b` the mean and standard deviation
(:math:`N-1` normalisation) of *all* :math:`N` backgrounds,
:math:`u = (x - \bar x^b)/\sigma^b`.  The emulated member starts at
:math:`u_0 = u^{b}_j` and must end at a draw of :math:`u_1 = u^a_j`.

Context of the real members (:func:`member_context`, permutation invariant)
---------------------------------------------------------------------------
At every point, from the :math:`M` real pairs (:math:`\delta_i = u^a_i - u^b_i`):

``real background mean``
    :math:`\bar u^b_S`;
``real mean increment``
    :math:`\bar\delta_S`;
``log spread ratio``
    :math:`\log(\mathrm{sd}_S(u^a) / \mathrm{sd}_S(u^b))`;
``covariance slope``
    :math:`\kappa_S = \mathrm{cov}_S(\delta, q) / \mathrm{var}_S(q)` with
    :math:`q_i = \mathbf P^b (u^b_i - \bar u^b_S)` (not clipped: it scales with the backgrounds'
    spread and the number of values, and a clip biases the filter);
``log background stddev``, ``background mean``
    :math:`\log\sigma^b` and :math:`\bar x^b` (the flow; both normalised with climatological
    constants from training).

Here :math:`\mathbf P^b v = \frac{1}{(N-1)D}\sum_{n=1}^N u^b_n\,\langle u^b_n, v\rangle` is the
covariance of *all* :math:`N` backgrounds (:math:`D` values per member), applied by
:func:`covariance_apply` without forming it.  A square-root filter moves every member's
deviation by :math:`\mathbf T\delta = (\mathbf I + \mathbf P^b\boldsymbol\Gamma)^{-1/2}\delta
\approx \delta - \tfrac12\mathbf P^b\boldsymbol\Gamma\delta` (:math:`\boldsymbol\Gamma =
\mathbf H^\mathsf T\mathbf R^{-1}\mathbf H`): the correction of a member is the *full* background
covariance applied to its deviation, which a regression on the :math:`M` real backgrounds alone
cannot represent outside their span (a pointwise or span-restricted regression makes the
emulated members' own directions decay or grow cycle after cycle and the hybrid filter
diverges).  The real pairs tell how strongly the observations act, point by point: the slope
:math:`\kappa_S` estimates :math:`-\tfrac12\boldsymbol\Gamma` (and the inflation) locally.

The **covariance-regression emulator** (:func:`linear_endpoint`, the non-learned baseline and
the learned generator's starting point) is
:math:`\hat u_1 = u_0 + \bar\delta_S + \kappa_S \odot \mathbf P^b (u_0 - \bar u^b_S)`.

Its correction of a member grows with the cube of the member's deviation (the member is part
of :math:`\mathbf P^b`): a member that strays gets a correction out of proportion, which a
square-root filter's bounded :math:`(\mathbf I + \mathbf P^b\boldsymbol\Gamma)^{-1/2}` never
gives.  In an EDA, whose members share one gain :math:`\mathbf K` (one B for all), the analysis
deviation is linear in the member's own deviation,
:math:`x^a_j - \bar x^a = (\mathbf I - \mathbf K\mathbf H)(x^b_j - \bar x^b) + \mathbf K(\varepsilon_j -
\bar\varepsilon)`, and the **spread-ratio emulator** (:func:`ratio_endpoint`) keeps that form:
the member's deviation from the real backgrounds' mean, scaled point by point by the real
members' ratio of analysis to background spread :math:`r_S = \mathrm{sd}_S(u^a)/\mathrm{sd}_S(u^b)`,
around the real analyses' mean (relaxation to the prior spread as in Whitaker & Hamill 2012,
with the ratio measured on the real members),
:math:`\hat u_1 = \bar u^b_S + \bar\delta_S + r_S \odot (u_0 - \bar u^b_S)`.  Measured on
the QG EDA of 4D-Vars (``benchmarks/emulated_members_qg.py``): the covariance regression's
emulated members drift away from the real ones within 10-20 cycles and the model stops, the
spread ratio's stay with them; offline both explain the same share of the increments.
:data:`BASELINES` names the two (``baseline`` of a generator).

Bridge sampler (:func:`bridge_sample`)
--------------------------------------
The generator is a stochastic flow from the background to the analysis: a Brownian bridge
:math:`U_t = (1-t)u_0 + t u_1 + \sigma\sqrt{t(1-t)}\,\xi` between the two ends of every
training pair, whose drift is learned by regressing the endpoint,
:math:`D_\theta(U_t, t\mid u_0, C) \approx \mathbb E[u_1 \mid U_t, u_0, C]` (bridge matching:
the minimiser of the squared error is that conditional mean).  Sampling runs the bridge's
exact Gaussian transition from :math:`t` to :math:`s > t` with the endpoint replaced by
its estimate,

.. math::

    U_s = U_t + \frac{s-t}{1-t}\big(D_\theta(U_t, t) - U_t\big)
          + \sigma\sqrt{\frac{(s-t)(1-s)}{1-t}}\;\xi, \qquad \xi\sim\mathcal N(0, \mathbf I),

on :math:`t_k = k/K`, :math:`k = 0..K-1` (the last step lands on :math:`D_\theta` without
noise).  With the exact conditional mean this is the Markovian projection of the mixture of
bridges, whose law at :math:`t = 1` is :math:`p(u_1 \mid u_0, C)`: the noise gives distinct
draws from one background, the learned drift carries the observations' information.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BASELINES", "CONTEXT_FEATURES", "HEADS", "STDDEV_FLOOR", "EmulationCycle", "baseline_endpoint",
           "bridge_sample", "covariance_apply", "drift_inputs", "emulation_cycle", "gain_endpoint", "gain_inputs",
           "linear_endpoint", "member_context", "member_covariance_term", "normalise", "normalised_cycle",
           "ratio_endpoint", "take_members"]

CONTEXT_FEATURES = ("real background mean", "real mean increment", "log spread ratio", "covariance slope",
                    "log background stddev", "background mean")
#: Floor of the standard deviations divided by (a member copy gives zero spread).
STDDEV_FLOOR = 1e-12
#: The non-learned endpoints a generator starts from (:func:`linear_endpoint` and :func:`ratio_endpoint`).
BASELINES = ("covariance regression", "spread ratio")
#: How the network corrects the baseline, ``additive`` (a correction that may depend on everything) or
#: ``linear gain`` (:func:`gain_endpoint`, linear in the member's own deviation; spread-ratio baseline only).
HEADS = ("additive", "linear gain")


def normalise(backgrounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r""":math:`(\bar x^b, \sigma^b)` over the member axis of all backgrounds ``(B, N, C, *h)``, each
    ``(B, C, *h)`` (:math:`\sigma^b` with :math:`N-1` normalisation, floored at :data:`STDDEV_FLOOR`)."""
    xb = np.asarray(backgrounds, dtype=np.float64)
    centre = xb.mean(axis=1)
    scale = np.maximum(xb.std(axis=1, ddof=1), STDDEV_FLOOR)
    return centre, scale


def normalised_cycle(layout: Any, backgrounds: Mapping[str, np.ndarray], real_analyses: Mapping[str, np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r"""One cycle in the generator's coordinates: :math:`(\bar x^b, \sigma^b)` ``(1, C, *h)``, all normalised
    backgrounds ``(1, N, C, *h)`` and the normalised real analyses ``(1, M, C, *h)``, from ``{variable:
    (N, *grid)}`` backgrounds and ``(M, *grid)`` real analyses in the channels of ``layout``
    (a :class:`~pyoops.emulators.features.GridLayout`)."""
    xb = layout.to_channels(backgrounds)[None]
    centre, scale = normalise(xb)
    ub = (xb - centre[:, None]) / scale[:, None]
    ua_real = (layout.to_channels(real_analyses)[None] - centre[:, None]) / scale[:, None]
    return centre, scale, ub, ua_real


@dataclass(frozen=True)
class EmulationCycle:
    r"""One cycle in the generator's coordinates (:func:`emulation_cycle`), batch axis of length 1.

    ``centre``, ``scale``: :math:`(\bar x^b, \sigma^b)` ``(1, C, *h)``; ``ub``: all normalised backgrounds
    ``(1, N, C, *h)``; ``ub_real``, ``ua_real``: the real members' normalised backgrounds and analyses
    ``(1, M, C, *h)``; ``context`` ``(1, 6C, *h)``; ``u0``: the emulated members' normalised backgrounds and
    ``q`` their :func:`member_covariance_term` ``(1, K, C, *h)``; ``linear``: the baseline's endpoint
    (:func:`baseline_endpoint`)."""

    centre: np.ndarray
    scale: np.ndarray
    ub: np.ndarray
    ub_real: np.ndarray
    ua_real: np.ndarray
    context: np.ndarray
    u0: np.ndarray
    q: np.ndarray
    linear: np.ndarray

    def physical(self, layout: Any, u1: np.ndarray) -> dict[str, np.ndarray]:
        """The normalised endpoints ``u1`` ``(1, K, C, *h)`` back in the variables of ``layout``, ``(K, *grid)``."""
        return layout.from_channels(self.centre[0] + self.scale[0] * u1[0])


def emulation_cycle(layout: Any, backgrounds: Mapping[str, np.ndarray], real_analyses: Mapping[str, np.ndarray],
                    real: Sequence[int], emulated: Sequence[int],
                    climate: tuple[np.ndarray, np.ndarray] | None = None,
                    baseline: str = "covariance regression") -> EmulationCycle:
    r"""The generator's inputs for one cycle, from ``{variable: (N, *grid)}`` backgrounds and the ``(M, *grid)``
    analyses of the members ``real`` (in that order), in the channels of ``layout`` (a
    :class:`~pyoops.emulators.features.GridLayout`); ``emulated``: the members to emulate; ``climate``: as in
    :func:`member_context`; ``baseline``: one of :data:`BASELINES`."""
    real, emulated = list(real), list(emulated)
    centre, scale, ub, ua_real = normalised_cycle(layout, backgrounds, real_analyses)
    context = member_context(ub, real, ua_real, centre, scale, climate)
    u0 = ub[:, emulated]
    q = member_covariance_term(ub, u0, context, layout.channels)
    return EmulationCycle(centre, scale, ub, ub[:, real], ua_real, context, u0, q,
                          baseline_endpoint(baseline, u0, q, context, layout.channels))


def covariance_apply(ub: np.ndarray, v: np.ndarray) -> np.ndarray:
    r""":math:`\mathbf P^b v` for every ``v`` ``(B, K, C, *h)`` with the covariance of all normalised backgrounds
    ``ub`` ``(B, N, C, *h)`` (mean zero by construction), without forming it."""
    b, n = ub.shape[:2]
    flat = ub.reshape(b, n, -1)
    inner = np.einsum("bnf,bkf->bkn", flat, v.reshape(b, v.shape[1], -1)) / flat.shape[2]
    return np.einsum("bkn,bnf->bkf", inner, flat).reshape(v.shape) / (n - 1)


def member_context(ub: np.ndarray, real: Any, ua_real: np.ndarray, centre: np.ndarray, scale: np.ndarray,
                   climate: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    r"""The context ``(B, 6C, *h)`` of the module docstring.

    ``ub``: all normalised backgrounds ``(B, N, C, *h)``; ``real``: the real members' indices
    (a sequence, or ``(B, M)`` per example); ``ua_real``: their normalised analyses ``(B, M, C, *h)``;
    ``climate``: ``(mean, std)`` ``(2C,)`` of :math:`(\log\sigma^b, \bar x^b)`, which normalise the last
    two features (None: left raw)."""
    ua = np.asarray(ua_real, dtype=np.float64)
    ub_r = take_members(ub, real)
    delta = ua - ub_r
    mb = ub_r.mean(axis=1)
    dev = ub_r - mb[:, None]
    q = covariance_apply(ub, dev)
    q = q - q.mean(axis=1, keepdims=True)
    var_q = np.maximum((q ** 2).mean(axis=1), STDDEV_FLOOR ** 2)
    slope = (q * (delta - delta.mean(axis=1, keepdims=True))).mean(axis=1) / var_q
    var_b = np.maximum((dev ** 2).mean(axis=1), STDDEV_FLOOR ** 2)
    ratio = np.log(np.maximum(ua.std(axis=1), STDDEV_FLOOR) / np.sqrt(var_b))
    flow = np.concatenate([np.log(scale), centre], axis=1)
    if climate is not None:
        mean, std = (np.asarray(a, dtype=np.float64) for a in climate)
        shape = (1, -1) + (1,) * (flow.ndim - 2)
        flow = (flow - mean.reshape(shape)) / std.reshape(shape)
    return np.concatenate([mb, delta.mean(axis=1), ratio, slope, flow], axis=1)


def take_members(members: np.ndarray, index: Any) -> np.ndarray:
    """Members ``index`` (a sequence, or ``(B, K)`` per example) of ``(B, N, C, *h)``."""
    idx = np.asarray(index)
    if idx.ndim == 1:
        return members[:, idx]
    return np.take_along_axis(members, idx.reshape(idx.shape + (1,) * (members.ndim - 2)), axis=1)


def member_covariance_term(ub: np.ndarray, u0: np.ndarray, context: np.ndarray, channels: int) -> np.ndarray:
    r""":math:`q = \mathbf P^b (u_0 - \bar u^b_S)` for the emulated backgrounds ``u0`` ``(B, K, C, *h)``."""
    c = int(channels)
    return covariance_apply(ub, u0 - context[:, None, :c])


def linear_endpoint(u0: np.ndarray, q: np.ndarray, context: np.ndarray, channels: int) -> Any:
    r""":math:`\hat u_1 = u_0 + \bar\delta_S + \kappa_S \odot q` for ``u0`` and :math:`q` ``(B, K, C, *h)``
    (:func:`member_covariance_term`) and ``context`` ``(B, 6C, *h)`` (numpy arrays or tensors)."""
    c = int(channels)
    dbar, slope = (context[:, None, k * c:(k + 1) * c] for k in (1, 3))
    return u0 + dbar + slope * q


def ratio_endpoint(u0: np.ndarray, context: np.ndarray, channels: int) -> Any:
    r""":math:`\hat u_1 = u_0 + \bar\delta_S + (r_S - 1) \odot (u_0 - \bar u^b_S)` (the module docstring's
    spread-ratio emulator) for ``u0`` ``(B, K, C, *h)`` and ``context`` ``(B, 6C, *h)`` (numpy arrays or
    tensors)."""
    c = int(channels)
    mean_b, dbar, log_ratio = (context[:, None, k * c:(k + 1) * c] for k in (0, 1, 2))
    ratio = log_ratio.exp() if hasattr(log_ratio, "exp") else np.exp(log_ratio)
    return u0 + dbar + (ratio - 1.0) * (u0 - mean_b)


def baseline_endpoint(baseline: str, u0: Any, q: Any, context: Any, channels: int) -> Any:
    """The endpoint of the non-learned emulator ``baseline`` (one of :data:`BASELINES`)."""
    if baseline == "covariance regression":
        return linear_endpoint(u0, q, context, channels)
    if baseline == "spread ratio":
        return ratio_endpoint(u0, context, channels)
    raise ValueError(f"unknown baseline {baseline!r} (known: {', '.join(BASELINES)})")


def gain_inputs(t: Any, context: Any, pooled: Any, members: int) -> Any:
    r"""The linear-gain head's trunk input ``(B K, 1 + 6C + E, *h)``: the bridge time ``t`` (a float, or ``(B, K)``
    per member), ``context`` ``(B, 6C, *h)`` and ``pooled`` ``(B, E, *h)`` for ``members`` = K members (numpy
    arrays or tensors).  No input depends on a member's own state."""
    b = context.shape[0]
    spatial = tuple(context.shape[2:])
    torch_like = not isinstance(context, np.ndarray)
    if torch_like:
        import torch

        tt = torch.as_tensor(t, dtype=context.dtype).reshape(-1)
        tfield = (tt.reshape(b, members, 1, *([1] * len(spatial))) if tt.numel() > 1 else
                  tt.reshape(1, 1, 1, *([1] * len(spatial)))).expand(b, members, 1, *spatial)
        x = torch.cat([tfield, context[:, None].expand(b, members, *context.shape[1:]),
                       pooled[:, None].expand(b, members, *pooled.shape[1:])], 2)
        return x.reshape(b * members, x.shape[2], *spatial)
    tt = np.asarray(t, dtype=np.float64)
    tfield = np.broadcast_to(tt.reshape(tt.shape + (1,) * (2 + len(spatial) - tt.ndim)) if tt.ndim else tt,
                             (b, members, 1, *spatial))
    parts = [tfield, np.broadcast_to(context[:, None], (b, members, *context.shape[1:])),
             np.broadcast_to(pooled[:, None], (b, members, *pooled.shape[1:]))]
    return np.concatenate(parts, axis=2).reshape(b * members, -1, *spatial)


def gain_endpoint(u: Any, u0: Any, t: Any, context: Any, out: Any, channels: int) -> Any:
    r"""The linear-gain head's endpoint for bridge states ``u`` and backgrounds ``u0`` ``(B, K, C, *h)``:

    .. math::

        \mu = \bar u^b_S + \bar\delta_S + m + \rho\, r_S \odot (u_0 - \bar u^b_S), \qquad
        D_\theta = \mu + w \odot \frac{U_t - (1 - t) u_0 - t\mu}{t},

    with :math:`\rho = e^{\min(\tanh o_1, 0)}`, :math:`m = \tanh o_2`, :math:`w = \mathrm{sigmoid}(o_3)` from
    the trunk's output ``out`` ``(B, K, 3C, *h)`` = :math:`(o_1, o_2, o_3)` (functions of the real members and the
    time only).  The emulated analysis is linear in the member's own deviation; its gain is the real members' spread
    ratio times :math:`\rho \in [e^{-1}, 1]`, the correlation of a member's analysis with its background at the
    point: the regression gain of the analysis on the background is :math:`\mathrm{corr}\cdot r \le r` (Cauchy-Schwarz),
    the rest of the analysis spread being the perturbed observations' part.  A gain above :math:`r_S` would keep the
    emulated members from contracting as the real ones do; where the observations contract the spread by a few per
    cent a cycle, that many per cent too much gain makes the emulated members drift from the real ones (measured on
    the QG EDA, docs/emulated_members.rst).  The shift is at most one background spread, and
    :math:`w \in (0, 1)` is the shrinkage of the bridge state's estimate of the part no input predicts (the
    perturbed observations' :math:`\mathbf K\varepsilon_j`; for a Gaussian residual of variance :math:`v` the
    bridge's conditional mean has :math:`w = t v/(t v + \sigma^2(1-t))`), so the sampler draws a spread around
    :math:`\mu`.  The bounds keep an input never seen in training from making a gain that inflates the members,
    or a sampler step that amplifies its own noise, cycle after cycle.  Without bridge noise the sampler stays on
    the straight path and returns :math:`\mu` (zero output: the spread-ratio emulator).  ``t``: a float or
    ``(B, K)``."""
    c = int(channels)
    mean_b, dbar, log_ratio = (context[:, None, k * c:(k + 1) * c] for k in (0, 1, 2))
    raw_gain, raw_shift, raw_weight = out[:, :, :c], out[:, :, c:2 * c], out[:, :, 2 * c:3 * c]
    if isinstance(raw_gain, np.ndarray):
        ell, shift = np.minimum(np.tanh(raw_gain), 0.0), np.tanh(raw_shift)
        weight = 0.5 * (1.0 + np.tanh(0.5 * raw_weight))
        gain = np.exp(log_ratio + ell)
    else:
        ell, shift, weight = raw_gain.tanh().clamp(max=0.0), raw_shift.tanh(), raw_weight.sigmoid()
        gain = (log_ratio + ell).exp()
    mu = mean_b + dbar + shift + gain * (u0 - mean_b)
    if isinstance(t, (int, float)):
        tt: Any = float(t)
        floor: Any = max(tt, 1e-12)
    else:
        tt = t.reshape(tuple(t.shape) + (1,) * (u.ndim - 2))
        floor = tt.clamp(min=1e-12)
    return mu + weight * (u - (1.0 - tt) * u0 - tt * mu) / floor   # at t = 0 the bridge state is u0: no term


def drift_inputs(u: np.ndarray, u0: np.ndarray, q: np.ndarray, t: float, context: np.ndarray, pooled: np.ndarray
                 ) -> np.ndarray:
    r"""The drift trunk's input ``(B K, 3C + 1 + 6C + E, *h)``: ``u, u0, q`` ``(B, K, C, *h)`` at time ``t``,
    ``context`` ``(B, 6C, *h)`` and the set encoding ``pooled`` ``(B, E, *h)`` repeated for the ``K`` members."""
    b, k = u.shape[:2]
    spatial = u.shape[3:]
    parts = [u, u0, q, np.full((b, k, 1, *spatial), float(t)),
             np.broadcast_to(context[:, None], (b, k, *context.shape[1:])),
             np.broadcast_to(pooled[:, None], (b, k, *pooled.shape[1:]))]
    return np.concatenate(parts, axis=2).reshape(b * k, -1, *spatial)


def bridge_sample(endpoint: Callable[[np.ndarray, float], np.ndarray], u0: np.ndarray, sigma: float, steps: int,
                  rng: np.random.Generator) -> np.ndarray:
    r"""Run the bridge sampler of the module docstring from ``u0`` with ``steps`` steps.

    ``endpoint(U, t)`` returns :math:`D_\theta(U_t, t)` with the shape of ``U``; the noise is drawn
    from ``rng`` (one ``standard_normal(u0.shape)`` per step but the last)."""
    if steps < 1:
        raise ValueError(f"the sampler needs at least one step, got {steps}")
    u = np.array(u0, dtype=np.float64)
    for k in range(steps):
        t, s = k / steps, (k + 1) / steps
        target = endpoint(u, t)
        if k + 1 == steps:
            return np.array(target, dtype=np.float64)      # the bridge's last step lands on the endpoint
        u = u + (s - t) / (1.0 - t) * (target - u)
        if sigma > 0:
            u = u + sigma * np.sqrt((s - t) * (1.0 - s) / (1.0 - t)) * rng.standard_normal(u.shape)
    return u
