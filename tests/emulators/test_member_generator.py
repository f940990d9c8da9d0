"""Generator of emulated EDA members: covariance term, context, linear emulator, bridge sampler (numpy), the
network and its numpy forward, reproducible training and the saved file pair (PyTorch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyoops.emulators.features import GridLayout
from pyoops.emulators.members import (
    BASELINES,
    CONTEXT_FEATURES,
    baseline_endpoint,
    bridge_sample,
    covariance_apply,
    drift_inputs,
    linear_endpoint,
    member_context,
    member_covariance_term,
    normalise,
    normalised_cycle,
    ratio_endpoint,
)
from pyoops.generic.grid import StructuredGrid

EPS = np.finfo(np.float64).eps
TINY = {"width": 8, "depth": 1, "kernel": 5, "set width": 8, "set channels": 4}


def _torch() -> Any:
    """PyTorch, or skip (the optional extra ``pyoops[ml]``); the numpy tests of this module run without it."""
    return pytest.importorskip("torch")


def normalised_members(rng: np.random.Generator, b: int, n: int, c: int, spatial: tuple[int, ...]) -> np.ndarray:
    """``(b, n, c, *spatial)`` backgrounds in the generator's coordinates (mean 0, unit spread over members)."""
    xb = 3.0 + 2.0 * rng.standard_normal((b, n, c, *spatial))
    centre, scale = normalise(xb)
    return (xb - centre[:, None]) / scale[:, None]


def linear_analyses(ub: np.ndarray, real: list[int], d: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    r"""Analyses of every member, exactly :math:`u^a = u^b + d + \kappa\odot\mathbf P^b(u^b - \bar u^b_S)`."""
    mean_s = ub[:, real].mean(axis=1, keepdims=True)
    return ub + d + kappa * covariance_apply(ub, ub - mean_s)


# covariance_apply ------------------------------------------------------------------------------
@pytest.mark.parametrize("spatial", [(7,), (3, 4)])
def test_covariance_apply_is_the_dense_covariance_and_symmetric(spatial: tuple[int, ...]) -> None:
    """P^b v = (1/((N-1) D)) Ub^T Ub v with D = C * prod(spatial) values per member (random data, seed 0)."""
    rng = np.random.default_rng(0)
    b, n, c, k = 2, 5, 2, 3
    ub = rng.standard_normal((b, n, c, *spatial))
    v = rng.standard_normal((b, k, c, *spatial))
    d = c * int(np.prod(spatial))
    got = covariance_apply(ub, v)
    assert got.shape == v.shape
    for i in range(b):
        u = ub[i].reshape(n, d)
        dense = u.T @ u / ((n - 1) * d)
        expected = (v[i].reshape(k, d) @ dense.T).reshape(v[i].shape)
        # Two float64 sums of <= N*D = 120 O(1) products each: 1e-12 relative is ~100x the rounding.
        np.testing.assert_allclose(got[i], expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    # Dot-product test <P a, b> = <a, P b> per example (same float64 sums: 1e-12 relative).
    a_, b_ = rng.standard_normal((b, 1, c, *spatial)), rng.standard_normal((b, 1, c, *spatial))
    lhs = np.sum(covariance_apply(ub, a_) * b_, axis=tuple(range(1, a_.ndim)))
    rhs = np.sum(a_ * covariance_apply(ub, b_), axis=tuple(range(1, a_.ndim)))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)
    # It can fail: a non-symmetric operator (P followed by a shift along the first axis) is caught.
    shifted = np.sum(np.roll(covariance_apply(ub, a_), 1, axis=3) * b_, axis=tuple(range(1, a_.ndim)))
    assert np.all(np.abs(shifted - rhs) > 1e-6 * np.abs(rhs))


# bridge_sample ---------------------------------------------------------------------------------
def _constant(c: np.ndarray, calls: list[float] | None = None) -> Any:
    def endpoint(u: np.ndarray, t: float) -> np.ndarray:
        assert u.shape == c.shape
        if calls is not None:
            calls.append(t)
        return c

    return endpoint


def _last_step_tolerance(c: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The last step is fl(u + fl(c - u)) with the factor (s-t)/(1-t) exactly 1: two roundings of O(|c|+|u|)."""
    return 2 * EPS * (np.abs(c) + np.abs(u))


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_bridge_without_noise_lands_on_a_constant_endpoint(steps: int) -> None:
    rng = np.random.default_rng(1)
    u0, c = rng.standard_normal((2, 3, 1, 10)), rng.standard_normal((2, 3, 1, 10))
    calls: list[float] = []
    out = bridge_sample(_constant(c, calls), u0, 0.0, steps, np.random.default_rng(0))
    np.testing.assert_array_less(np.abs(out - c), _last_step_tolerance(c, u0) + 1e-300)
    assert calls == [k / steps for k in range(steps)]   # the drift is evaluated at t_k = k/K, k = 0..K-1


def test_bridge_with_noise_lands_on_the_endpoint_and_follows_the_bridge_transition() -> None:
    """sigma > 0 and a constant endpoint c: no noise at t = 1, so the draw is c (to rounding); the intermediate
    states are the bridge's Gaussian transitions with the generator's draws (replayed from the same seed)."""
    rng = np.random.default_rng(2)
    u0, c = rng.standard_normal((1, 4, 2, 8)), rng.standard_normal((1, 4, 2, 8))
    sigma, steps = 0.7, 4
    seen: list[np.ndarray] = []

    def endpoint(u: np.ndarray, t: float) -> np.ndarray:
        seen.append(u.copy())
        return c

    out = bridge_sample(endpoint, u0, sigma, steps, np.random.default_rng(11))
    np.testing.assert_array_less(np.abs(out - c), _last_step_tolerance(c, seen[-1]) + 1e-300)
    # Replay: U_s = U_t + (s-t)/(1-t) (c - U_t) + sigma sqrt((s-t)(1-s)/(1-t)) xi, one draw per step but the last.
    replay = np.random.default_rng(11)
    u = u0.copy()
    for k in range(steps - 1):
        t, s = k / steps, (k + 1) / steps
        noise = sigma * np.sqrt((s - t) * (1 - s) / (1 - t)) * replay.standard_normal(u.shape)
        u = u + (s - t) / (1 - t) * (c - u) + noise
        # Same operations in the same order: 1e-14 absolute on O(1) values allows for a reassociation only.
        np.testing.assert_allclose(seen[k + 1], u, rtol=0, atol=1e-14)
    assert np.abs(seen[1] - (u0 + 0.25 * (c - u0))).max() > 0.1   # the noise is really there at t = 1/4


def test_bridge_is_deterministic_for_a_seed_and_draws_steps_minus_one_normals() -> None:
    rng = np.random.default_rng(3)
    u0 = rng.standard_normal((1, 3, 1, 16))
    w = 0.5 * rng.standard_normal(u0.shape)

    def endpoint(u: np.ndarray, t: float) -> np.ndarray:   # depends on U_t: the noise propagates to the draw
        return np.tanh(u) + w * (1.0 + t)

    a = bridge_sample(endpoint, u0, 0.8, 5, np.random.default_rng(42))
    b = bridge_sample(endpoint, u0, 0.8, 5, np.random.default_rng(42))
    other = bridge_sample(endpoint, u0, 0.8, 5, np.random.default_rng(43))
    assert a.tobytes() == b.tobytes()
    assert np.abs(a - other).max() > 1e-3
    # The sampler uses exactly steps - 1 standard_normal(u0.shape) draws of the caller's generator.
    used, fresh = np.random.default_rng(42), np.random.default_rng(42)
    bridge_sample(endpoint, u0, 0.8, 5, used)
    for _ in range(4):
        fresh.standard_normal(u0.shape)
    assert used.random() == fresh.random()
    with pytest.raises(ValueError, match="at least one step"):
        bridge_sample(endpoint, u0, 0.8, 0, np.random.default_rng(0))


# member_context and the linear emulator --------------------------------------------------------
def test_member_context_is_invariant_to_the_order_of_the_real_members() -> None:
    rng = np.random.default_rng(4)
    b, n, c, spatial = 2, 7, 2, (12,)
    ub = normalised_members(rng, b, n, c, spatial)
    centre, scale = rng.standard_normal((b, c, *spatial)), np.exp(rng.standard_normal((b, c, *spatial)))
    real = [4, 1, 6]
    ua_real = ub[:, real] + 0.3 * rng.standard_normal((b, len(real), c, *spatial))
    ctx = member_context(ub, real, ua_real, centre, scale)
    assert ctx.shape == (b, len(CONTEXT_FEATURES) * c, *spatial)
    perm = [2, 0, 1]
    permuted = member_context(ub, [real[i] for i in perm], ua_real[:, perm], centre, scale)
    # Means over 3 members taken in another order: 1e-12 is ~1000x the rounding of O(1) features.
    np.testing.assert_allclose(permuted, ctx, rtol=0, atol=1e-12)
    # Per-example indices (B, M) with a different order in each example give the same context.
    per_example = np.array([[1, 6, 4], [6, 4, 1]])
    order = [[1, 2, 0], [2, 0, 1]]
    ua_pe = np.stack([ua_real[i, order[i]] for i in range(b)])
    np.testing.assert_allclose(member_context(ub, per_example, ua_pe, centre, scale), ctx, rtol=0, atol=1e-12)
    # It can fail: pairing the analyses with other members' backgrounds changes the context.
    swapped = member_context(ub, [real[i] for i in perm], ua_real, centre, scale)
    assert np.abs(swapped - ctx).max() > 1e-3
    # The climate normalises only the last two features (log sigma^b and the background mean).
    climate = (np.full(2 * c, 0.5), np.full(2 * c, 2.0))
    normed = member_context(ub, real, ua_real, centre, scale, climate)
    np.testing.assert_array_equal(normed[:, :4 * c], ctx[:, :4 * c])
    np.testing.assert_allclose(normed[:, 4 * c:], (ctx[:, 4 * c:] - 0.5) / 2.0, rtol=1e-15)
    np.testing.assert_array_equal(ctx[:, 4 * c:5 * c], np.log(scale))
    np.testing.assert_array_equal(ctx[:, 5 * c:], centre)


def _random_walk_cycle(rng: np.random.Generator, n: int, real: list[int], npts: int
                       ) -> tuple[GridLayout, dict, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A periodic 1-D cycle of ``n`` random-walk backgrounds (values ~1-10): the layout, the backgrounds, their
    normalisation (centre, scale, ub) and a mean increment ``d`` ``(1, 1, 1, npts)`` drawn after them from ``rng``."""
    layout = GridLayout.from_geometry(StructuredGrid.periodic_1d(npts), ["x"])
    xb = {"x": 5.0 + np.cumsum(rng.standard_normal((n, npts)), axis=1)}
    centre, scale, ub, _ = normalised_cycle(layout, xb, {"x": xb["x"][real]})
    return layout, xb, centre, scale, ub, 0.3 * rng.standard_normal((1, 1, 1, npts))


def test_linear_endpoint_reproduces_covariance_regression_analyses() -> None:
    r"""Every member's analysis is :math:`x_b + d + \kappa\odot\mathbf P^b(x_b - \bar x^b_S)` (in the
    generator's coordinates, d constant over members, kappa pointwise): the real members' regression
    recovers d and kappa and the emulated members' analyses are reproduced, through the physical fields."""
    rng = np.random.default_rng(5)
    n, real, npts = 8, [0, 3, 5], 40
    layout, xb, centre, scale, ub, d = _random_walk_cycle(rng, n, real, npts)
    kappa = -rng.uniform(0.2, 2.0, (1, 1, 1, npts))
    ua = linear_analyses(ub, real, d, kappa)
    xa = layout.from_channels(centre + scale * ua[0])
    # The cycle as EmulatedMembers 'linear' sees it: backgrounds and the real analyses in physical units.
    centre2, scale2, ub2, ua_real = normalised_cycle(layout, xb, {"x": xa["x"][real]})
    ctx = member_context(ub2, real, ua_real, centre2, scale2)
    # Regression on 3 members of values ~0.1-10: the slope's division costs ~1e-13; 1e-10 leaves margin.
    np.testing.assert_allclose(ctx[:, 3:4], kappa[:, 0], rtol=0, atol=1e-10)    # covariance slope = kappa
    np.testing.assert_allclose(ctx[:, 1:2], d[:, 0], rtol=0, atol=1e-10)        # mean increment = d
    emulated = [i for i in range(n) if i not in real]
    u0 = ub2[:, emulated]
    u1 = linear_endpoint(u0, member_covariance_term(ub2, u0, ctx, 1), ctx, 1)
    got = layout.from_channels(centre2[0] + scale2[0] * u1[0])["x"]
    # Physical values ~10 with ~1e-13 error from the normalisation round trip: 1e-10 absolute.
    np.testing.assert_allclose(got, xa["x"][emulated], rtol=0, atol=1e-10)
    # It can fail: with a kappa halved at one point the emulated analyses differ there.
    ua_bad = linear_analyses(ub, real, d, kappa * np.where(np.arange(npts) == 7, 0.5, 1.0))
    assert np.abs(ua_bad[0, emulated] - u1[0]).max() > 1e-3


def test_ratio_endpoint_reproduces_analyses_with_a_pointwise_gain() -> None:
    r"""Every member's analysis is :math:`d + r\odot u^b` in the generator's coordinates (an EDA whose shared gain
    acts point by point, r > 0): the real members' spread ratio is r and their mean increment
    :math:`d + (r-1)\bar u^b_S`, so the spread-ratio emulator reproduces the emulated members' analyses, through
    the physical fields; it is linear in the member's deviation (twice the deviation, twice the change)."""
    rng = np.random.default_rng(15)
    n, real, npts = 8, [1, 2, 6], 40
    layout, xb, centre, scale, ub, d = _random_walk_cycle(rng, n, real, npts)
    r = rng.uniform(0.3, 1.0, (1, 1, 1, npts))
    xa = layout.from_channels(centre + scale * (d + r * ub)[0])
    centre2, scale2, ub2, ua_real = normalised_cycle(layout, xb, {"x": xa["x"][real]})
    ctx = member_context(ub2, real, ua_real, centre2, scale2)
    # Values ~1-10 through a log, an exp and the normalisation: ~1e-14; 1e-10 leaves margin.
    np.testing.assert_allclose(np.exp(ctx[:, 2:3]), r[:, 0], rtol=0, atol=1e-10)
    emulated = [i for i in range(n) if i not in real]
    u0 = ub2[:, emulated]
    u1 = ratio_endpoint(u0, ctx, 1)
    np.testing.assert_array_equal(u1, baseline_endpoint("spread ratio", u0, None, ctx, 1))
    got = layout.from_channels(centre2[0] + scale2[0] * u1[0])["x"]
    np.testing.assert_allclose(got, xa["x"][emulated], rtol=0, atol=1e-10)
    mean_b = ctx[:, None, 0:1]
    change = ratio_endpoint(mean_b + 2.0 * (u0 - mean_b), ctx, 1) - ratio_endpoint(mean_b, ctx, 1)
    np.testing.assert_allclose(change, 2.0 * (u1 - ratio_endpoint(mean_b, ctx, 1)), rtol=1e-12, atol=1e-12)
    # The covariance regression does not reproduce these analyses (it can fail), and an unknown name is refused.
    assert np.abs(linear_endpoint(u0, member_covariance_term(ub2, u0, ctx, 1), ctx, 1) - u1).max() > 1e-3
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_endpoint("nonesuch", u0, None, ctx, 1)


def test_drift_inputs_layout() -> None:
    rng = np.random.default_rng(6)
    b, k, c, e, spatial = 2, 3, 2, 4, (5,)
    u, u0, q = (rng.standard_normal((b, k, c, *spatial)) for _ in range(3))
    ctx, pooled = rng.standard_normal((b, 6 * c, *spatial)), rng.standard_normal((b, e, *spatial))
    x = drift_inputs(u, u0, q, 0.25, ctx, pooled)
    assert x.shape == (b * k, 3 * c + 1 + 6 * c + e, *spatial)
    j = 1 * k + 2                 # example 1, member 2
    np.testing.assert_array_equal(x[j, :c], u[1, 2])
    np.testing.assert_array_equal(x[j, c:2 * c], u0[1, 2])
    np.testing.assert_array_equal(x[j, 2 * c:3 * c], q[1, 2])
    np.testing.assert_array_equal(x[j, 3 * c], 0.25)
    np.testing.assert_array_equal(x[j, 3 * c + 1:9 * c + 1], ctx[1])
    np.testing.assert_array_equal(x[j, 9 * c + 1:], pooled[1])


# The network (PyTorch) -------------------------------------------------------------------------
def _layout(kind: str) -> GridLayout:
    if kind == "1d":
        return GridLayout.from_geometry(StructuredGrid.periodic_1d(40), ["x"])
    g = StructuredGrid.channel_2d(8, 6, levels=[0.0, 1.0], variables=("q", "p"))
    return GridLayout.from_geometry(g, ["q", "p"])


def _cycle_fields(layout: GridLayout, n: int, real: list[int], seed: int) -> tuple[dict, dict]:
    """Backgrounds ``{v: (N, *shape)}`` and the real members' analyses (a noisy contraction towards 1)."""
    rng = np.random.default_rng(seed)
    xb = {v: 2.0 + rng.standard_normal((n, *layout.shape)) for v in layout.variables}
    xa = {v: 0.6 * a[real] + 0.4 + 0.1 * rng.standard_normal((len(real), *layout.shape)) for v, a in xb.items()}
    return xb, xa


def _generator(layout: GridLayout, real: int, members: int, sigma: float, steps: int,
               baseline: str = "covariance regression") -> Any:
    from pyoops.emulators.member_model import MemberGenerator

    c = layout.channels
    return MemberGenerator(layout, real, members, TINY, sigma, steps, (np.zeros(2 * c), np.ones(2 * c)),
                           baseline=baseline)


@pytest.mark.parametrize("sigma,steps", [(0.0, 1), (0.7, 4)])
def test_untrained_generator_is_the_linear_emulator(sigma: float, steps: int) -> None:
    """The head starts at zero: the drift is the covariance regression whatever U_t, so the sampler lands on it
    (with noise too: no noise at t = 1), in torch and in the numpy forward of ``sample``."""
    torch = _torch()
    layout = _layout("1d")
    n, real = 6, [0, 1, 2]
    xb, xa_real = _cycle_fields(layout, n, real, seed=7)
    torch.manual_seed(0)
    gen = _generator(layout, 3, n, sigma, steps)
    centre, scale, ub, ua_real = normalised_cycle(layout, xb, xa_real)
    ctx = member_context(ub, real, ua_real, centre, scale, gen.climate)
    u0 = ub[:, 3:]
    q = member_covariance_term(ub, u0, ctx, 1)
    linear = linear_endpoint(u0, q, ctx, 1)
    expected = centre[0] + scale[0] * linear[0]
    got = gen.sample(xb, xa_real, real, [3, 4, 5], np.random.default_rng(0))["x"]
    # numpy float64 forward, the zero head adds exact zeros; the last step rounds u + (D - u): 1e-12 on values ~2.
    np.testing.assert_allclose(got, expected[:, 0], rtol=0, atol=1e-12)
    def as_t(a: np.ndarray) -> Any:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    with torch.no_grad():
        pooled = gen.net.encode(as_t(ub[:, real]), as_t(ua_real))
        out = gen.net(as_t(u0), as_t(u0), as_t(q), torch.full((1, 3), 0.3), as_t(ctx), pooled)
    # float32 inputs ~1 and a 3-term sum: 1e-6 relative (a few float32 ulps).
    np.testing.assert_allclose(out.numpy(), linear, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind,baseline", [("1d", "covariance regression"), ("2d", "covariance regression"),
                                           ("2d", "spread ratio")])
def test_numpy_forward_equals_the_torch_network(kind: str, baseline: str) -> None:
    """Perturbed weights (every parameter, the zero head included): the sampler's numpy endpoint and pooled set
    encoding equal the torch network's (float32: ~1e-7 relative per operation over ~30 operations -> 1e-5)."""
    torch = _torch()
    layout = _layout(kind)
    c, n, real = layout.channels, 5, [0, 2]
    xb, xa_real = _cycle_fields(layout, n, real, seed=8)
    torch.manual_seed(1)
    gen = _generator(layout, 2, n, 0.5, 3, baseline)
    assert BASELINES == ("covariance regression", "spread ratio")
    with torch.no_grad():
        for p in gen.net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    gen._numpy = None
    centre, scale, ub, ua_real = normalised_cycle(layout, xb, xa_real)
    ctx = member_context(ub, real, ua_real, centre, scale, gen.climate)
    u0 = ub[:, [1, 3, 4]]
    q = member_covariance_term(ub, u0, ctx, c)
    u = u0 + 0.4 * np.random.default_rng(9).standard_normal(u0.shape)
    encoder, drift = gen.numpy_network()
    pairs = np.concatenate([ub[:, real], ua_real - ub[:, real]], axis=2).reshape(len(real), 2 * c, *ub.shape[3:])
    pooled_np = encoder.trunk(pairs).mean(axis=0)[None]
    ref_np = baseline_endpoint(baseline, u0, q, ctx, c) + \
        drift.trunk(drift_inputs(u, u0, q, 0.4, ctx, pooled_np)).reshape(u.shape)
    def as_t(a: np.ndarray) -> Any:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    with torch.no_grad():
        pooled = gen.net.encode(as_t(ub[:, real]), as_t(ua_real))
        out = gen.net(as_t(u), as_t(u0), as_t(q), torch.full((1, 3), 0.4), as_t(ctx), pooled).numpy()
    scale_p = np.abs(pooled_np).max()
    np.testing.assert_allclose(pooled.numpy(), pooled_np, rtol=1e-5, atol=1e-5 * scale_p)
    drift_part = out - baseline_endpoint(baseline, u0, q, ctx, c)
    assert np.abs(drift_part).max() > 0.05          # the perturbed head really contributes
    np.testing.assert_allclose(out, ref_np, rtol=1e-5, atol=1e-5 * np.abs(ref_np).max())
    # MemberGenerator.sample with one step is D(u0, 0) of its numpy forward: equal to the torch network's.
    drawn = gen.sample(xb, xa_real, real, [1, 3, 4], np.random.default_rng(0), steps=1)
    with torch.no_grad():
        d0 = gen.net(as_t(u0), as_t(u0), as_t(q), torch.zeros((1, 3)), as_t(ctx), pooled).numpy()
    expected = layout.from_channels(centre[0] + scale[0] * d0[0])
    for v in layout.variables:
        np.testing.assert_allclose(drawn[v], expected[v], rtol=1e-5, atol=1e-5 * np.abs(expected[v]).max())


def test_linear_gain_head_starts_at_the_spread_ratio_and_its_numpy_forward_equals_torch() -> None:
    """The linear-gain head: untrained and without bridge noise, the sampler returns the spread-ratio emulator;
    with perturbed weights the numpy endpoint equals the torch network's (float32 -> 1e-5), is linear in the
    member's own deviation with a gain between r_S/e and r_S; it refuses the covariance regression as its
    baseline."""
    torch = _torch()
    from pyoops.emulators.member_model import MemberGenerator
    from pyoops.emulators.members import gain_endpoint, gain_inputs

    layout = _layout("2d")
    c, n, real, emulated = layout.channels, 5, [0, 2], [1, 3, 4]
    xb, xa_real = _cycle_fields(layout, n, real, seed=18)
    net = {**TINY, "head": "linear gain"}
    gen = MemberGenerator(layout, 2, n, net, 0.0, 4, (np.zeros(2 * c), np.ones(2 * c)), baseline="spread ratio")
    centre, scale, ub, ua_real = normalised_cycle(layout, xb, xa_real)
    ctx = member_context(ub, real, ua_real, centre, scale, gen.climate)
    u0 = ub[:, emulated]
    drawn = gen.sample(xb, xa_real, real, emulated, np.random.default_rng(3))
    expected = layout.from_channels(centre[0] + scale[0] * ratio_endpoint(u0, ctx, c)[0])
    for v in layout.variables:     # physical values ~1-10 through the normalisation: 1e-12 relative
        np.testing.assert_allclose(drawn[v], expected[v], rtol=1e-12, atol=1e-12 * np.abs(expected[v]).max())
    torch.manual_seed(2)
    with torch.no_grad():
        for p in gen.net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    gen._numpy = None
    q = member_covariance_term(ub, u0, ctx, c)
    u = u0 + 0.4 * np.random.default_rng(9).standard_normal(u0.shape)
    encoder, drift = gen.numpy_network()
    pairs = np.concatenate([ub[:, real], ua_real - ub[:, real]], axis=2).reshape(len(real), 2 * c, *ub.shape[3:])
    pooled_np = encoder.trunk(pairs).mean(axis=0)[None]
    out_np = drift.trunk(gain_inputs(0.4, ctx, pooled_np, 1)).reshape(1, 1, 3 * c, *ub.shape[3:])
    ref = gain_endpoint(u, u0, 0.4, ctx, out_np, c)

    def as_t(a: np.ndarray) -> Any:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    with torch.no_grad():
        pooled = gen.net.encode(as_t(ub[:, real]), as_t(ua_real))
        out = gen.net(as_t(u), as_t(u0), as_t(q), torch.full((1, 3), 0.4), as_t(ctx), pooled).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    assert np.abs(ref - ratio_endpoint(u0, ctx, c)).max() > 0.05       # the perturbed head really contributes
    mean_b = ctx[:, None, 0:c]
    def at(dev_scale: float) -> np.ndarray:
        x0 = mean_b + dev_scale * (u0 - mean_b)
        return gain_endpoint(x0, x0, 0.4, ctx, out_np, c)
    np.testing.assert_allclose(at(2.0) - at(0.0), 2.0 * (at(1.0) - at(0.0)), rtol=1e-12, atol=1e-12)
    # At t = 0 the endpoint is mu: its gain on the member's deviation is rho * r_S with rho in [1/e, 1] (the
    # perturbed trunk's raw gain outputs take both signs, so the clamp at 1 is exercised).
    assert (out_np[:, :, :c] > 0.1).any() and (out_np[:, :, :c] < -0.1).any()
    dev = u0 - mean_b
    x1 = mean_b + 2.0 * dev
    gain = (gain_endpoint(x1, x1, 0.0, ctx, out_np, c) - gain_endpoint(u0, u0, 0.0, ctx, out_np, c)) / dev
    ratio = np.exp(ctx[:, None, 2 * c:3 * c])
    rel = gain / ratio                       # points where dev is tiny lose digits: keep |dev| > 1e-3
    ok = np.abs(dev) > 1e-3
    assert ok.sum() > 0.9 * dev.size
    assert rel[ok].max() <= 1.0 + 1e-9 and rel[ok].min() >= np.exp(-1.0) - 1e-9
    assert np.isclose(rel[ok].max(), 1.0, atol=1e-9) and rel[ok].min() < 0.95
    with pytest.raises(ValueError, match="linear-gain head corrects the spread ratio"):
        MemberGenerator(layout, 2, n, net, 0.5, 4, (np.zeros(2 * c), np.ones(2 * c)))


# Training and the file pair (PyTorch) ----------------------------------------------------------
def synthetic_pairs(ncycles: int, n: int, npts: int = 40, seed: int = 0) -> tuple[dict, dict]:
    r"""Backgrounds and analyses ``(ncycles, N, npts)`` with, per cycle in the generator's coordinates,
    :math:`u^a = u^b + d + \kappa\odot\mathbf P^b u^b` (the full ensemble's mean is 0): for every subset
    :math:`S` this is the covariance regression's model, so the linear emulator is exact."""
    rng = np.random.default_rng(seed)
    xb = 5.0 + np.cumsum(rng.standard_normal((ncycles, n, npts)), axis=2)
    centre, scale = normalise(xb[:, :, None])
    ub = (xb[:, :, None] - centre[:, None]) / scale[:, None]
    d = 0.2 * rng.standard_normal((ncycles, 1, 1, npts))
    kappa = -rng.uniform(0.5, 1.5, (ncycles, 1, 1, npts))
    ua = ub + d + kappa * covariance_apply(ub, ub)
    xa = (centre[:, None] + scale[:, None] * ua)[:, :, 0]
    return {"x": xb}, {"x": xa}


def _fit(seed: int, epochs: int = 2) -> tuple[Any, list[dict[str, float]]]:
    from pyoops.emulators.member_training import MemberTrainingOptions, fit_member_generator, member_pairs

    layout = _layout("1d")
    xb, xa = synthetic_pairs(60, 6)
    pairs = member_pairs(xb, xa, layout)
    train, val = pairs.select(np.arange(48)), pairs.select(np.arange(48, 60))
    return fit_member_generator(layout, 3, TINY, 0.5, 3, train, val,
                                MemberTrainingOptions(epochs=epochs, batch_size=16, learning_rate=1e-2, seed=seed),
                                geometry={"resol": 40}, show_progress=False)


def test_training_is_bitwise_reproducible_and_learns_from_the_linear_start() -> None:
    _torch()
    from pyoops.emulators.member_training import MemberTrainingOptions, fit_member_generator, member_pairs
    from pyoops.emulators.model import state_bytes

    a, hist_a = _fit(seed=3)
    b, hist_b = _fit(seed=3)
    other, _ = _fit(seed=4)
    assert state_bytes(a.net) == state_bytes(b.net)
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in hist_a] == \
           [{k: v for k, v in h.items() if k != "seconds"} for h in hist_b]
    assert state_bytes(a.net) != state_bytes(other.net)
    assert len(hist_a) == 2 and a.training["epochs run"] == 2 and a.training["seed"] == 3
    # The data follow the covariance regression exactly for every real subset: the untrained network's
    # (zero head) validation loss is float32 rounding only (values ~1, squared errors ~1e-13; bound 1e-9).
    assert a.training["baseline validation loss"] < 1e-9
    layout = _layout("1d")
    pairs = member_pairs(*synthetic_pairs(4, 3), layout)
    with pytest.raises(ValueError, match="2 <= real members < members"):
        fit_member_generator(layout, 3, TINY, 0.5, 3, pairs, pairs, MemberTrainingOptions(epochs=1))


def test_saved_generator_round_trip_and_corrupted_weights(tmp_path: Path) -> None:
    _torch()
    import yaml

    from pyoops.emulators.member_model import load_member_generator
    from pyoops.emulators.model import state_bytes
    from pyoops.util.errors import InputFileError

    gen, _ = _fit(seed=5, epochs=1)
    written = gen.save(tmp_path / "gen.pt")
    assert sorted(Path(p).name for p in written) == ["gen.pt", "gen.yaml"]
    spec = yaml.safe_load((tmp_path / "gen.yaml").read_text())
    assert spec["format"] == "pyoops EDA member generator" and spec["real members"] == 3 and spec["members"] == 6
    assert spec["bridge"] == {"sigma": 0.5, "steps": 3}
    loaded = load_member_generator(tmp_path / "gen.yaml")
    assert state_bytes(loaded.net) == state_bytes(gen.net)
    np.testing.assert_array_equal(loaded.climate[0], gen.climate[0])
    np.testing.assert_array_equal(loaded.climate[1], gen.climate[1])
    layout = _layout("1d")
    xb, xa_real = _cycle_fields(layout, 6, [0, 1, 2], seed=10)
    draws = [g.sample(xb, xa_real, [0, 1, 2], [3, 4, 5], np.random.default_rng(77)) for g in (gen, loaded)]
    assert draws[0]["x"].shape == (3, 40)
    assert draws[0]["x"].tobytes() == draws[1]["x"].tobytes()
    again = loaded.sample(xb, xa_real, [0, 1, 2], [3, 4, 5], np.random.default_rng(78))
    assert np.abs(again["x"] - draws[0]["x"]).max() > 1e-6        # sigma = 0.5: another seed, other draws
    with pytest.raises(ValueError, match="trained with 3 real members"):
        loaded.sample(xb, {"x": xa_real["x"][:2]}, [0, 1], [2, 3, 4, 5], np.random.default_rng(0))
    assert spec["baseline"] == "covariance regression" == loaded.baseline
    # A description written before generators had a baseline reads as the covariance regression; a spread-ratio
    # generator keeps its baseline through the files; an unknown one is refused with the file named.
    (tmp_path / "old.yaml").write_text(yaml.safe_dump({k: v for k, v in spec.items() if k != "baseline"}))
    assert load_member_generator(tmp_path / "old.yaml").baseline == "covariance regression"
    ratio = _generator(layout, 3, 6, 0.5, 3, "spread ratio")
    ratio.save(tmp_path / "ratio.pt")
    assert load_member_generator(tmp_path / "ratio.yaml").baseline == "spread ratio"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**spec, "baseline": "nonesuch"}))
    with pytest.raises(InputFileError, match="unknown baseline"):
        load_member_generator(tmp_path / "bad.yaml")
    # A corrupted weights file: the sha256 in the description does not match.
    data = bytearray((tmp_path / "gen.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "gen.pt").write_bytes(bytes(data))
    with pytest.raises(InputFileError, match="sha256"):
        load_member_generator(tmp_path / "gen.pt")
    # A description of another format.
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({**spec, "format": "pyoops EDA stddev emulator"}))
    with pytest.raises(InputFileError, match="format is not"):
        load_member_generator(tmp_path / "other.yaml")
