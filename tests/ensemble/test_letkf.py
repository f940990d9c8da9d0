"""LETKF / GETKF maths on stacked arrays, against dense Kalman-filter algebra written here.

Tolerances: the dense references are computed with explicit inverses of small
matrices, so agreement is to round-off: 1e-10 relative on means and covariances.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from pyoops.assimilation.letkf import (
    InflationParameters,
    LocalEnsembleDAParameters,
    ModulationParameters,
    ObsLocalization,
    apply_weights,
    ensemble_transform,
    getkf_analysis,
    getkf_weights,
    letkf_analysis,
    letkf_weights,
    local_obs_selection,
    localization_function,
    modulate,
    modulate_obs,
    modulation_modes,
    relax_to_prior_perturbations,
    relax_to_prior_spread,
)
from pyoops.config.parameters import validate
from pyoops.fields.fieldset import FieldSet
from pyoops.generic.grid import StructuredGrid
from pyoops.interface.geometry import Locations
from pyoops.util.errors import ConfigError

TOL = 1e-10


def close(a, b, tol=TOL):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.abs(a).max(), np.abs(b).max(), 1e-300)
    return np.abs(a - b).max() <= tol * scale


def problem(n=16, nmem=6, positions=(0.0, 0.13, 0.25, 0.5, 0.56, 0.9), seed=1):
    """A ring of n points, nmem members, observations between grid points (linear interpolation H)."""
    rng = np.random.default_rng(seed)
    geom = StructuredGrid.periodic_1d(n)
    xb = rng.standard_normal((nmem, n)) + 2 * np.sin(2 * np.pi * np.arange(n) / n)
    locs = Locations({"x": np.array(positions)})
    h = geom.interpolation_matrix(locs).toarray()
    y = rng.standard_normal(len(positions))
    r = rng.uniform(0.3, 2.0, len(positions))
    return SimpleNamespace(geom=geom, xb=xb, locs=locs, h=h, y=y, r=r, n=n, nmem=nmem)


def kalman(xb, h, y, r, p):
    """Dense Kalman-filter mean and analysis covariance with prior covariance p."""
    xm = xb.mean(axis=0)
    k = p @ h.T @ np.linalg.inv(h @ p @ h.T + np.diag(r))
    return xm + k @ (y - h @ xm), (np.eye(p.shape[0]) - k @ h) @ p, k


def sample_cov(x):
    xp = x - x.mean(axis=0)
    return xp.T @ xp / (x.shape[0] - 1)


# Global ETKF ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("space", ["ensemble", "observation"])
@pytest.mark.parametrize("mult", [1.0, 1.2])
def test_without_localization_letkf_is_the_global_etkf(space, mult):
    p = problem()
    sel = local_obs_selection(p.geom, p.locs, None)
    assert sel.nrows == 1  # every point has the same observations: one local problem
    xa = apply_weights(letkf_weights(sel, p.xb @ p.h.T, p.y, p.r, mult, space=space), p.xb)
    mean, cov, _ = kalman(p.xb, p.h, p.y, p.r, mult * sample_cov(p.xb))
    assert close(xa.mean(axis=0), mean)
    assert close(sample_cov(xa), cov)


@pytest.mark.parametrize("method", ["Gaspari-Cohn", "Box Car"])
def test_huge_lengthscale_equals_no_localization(method):
    p = problem()
    hx = p.xb @ p.h.T
    glob = letkf_analysis(p.xb, hx, p.y, p.r, local_obs_selection(p.geom, p.locs, None), mult=1.1)
    sel = local_obs_selection(p.geom, p.locs, [ObsLocalization(localization_method=method, lengthscale=1e8)])
    assert close(letkf_analysis(p.xb, hx, p.y, p.r, sel, mult=1.1), glob, 1e-12)


def test_mean_is_the_blue_with_the_sample_covariance():
    """Linear H, Gaussian: the mean minimises J(w) = (N-1)/2 |w|^2 + 1/2 |y - H(x + X'w)|^2_R (solved by lstsq)."""
    p = problem(n=20, nmem=8)
    xm = p.xb.mean(axis=0)
    xp = (p.xb - xm).T
    sel = local_obs_selection(p.geom, p.locs, None)
    xa = letkf_analysis(p.xb, p.xb @ p.h.T, p.y, p.r, sel)
    # Stacked least squares [sqrt(N-1) I; R^-1/2 H X'] w = [0; R^-1/2 (y - H x)].
    a = np.vstack([np.sqrt(p.nmem - 1) * np.eye(p.nmem), (p.h @ xp) / np.sqrt(p.r)[:, None]])
    b = np.concatenate([np.zeros(p.nmem), (p.y - p.h @ xm) / np.sqrt(p.r)])
    w = np.linalg.lstsq(a, b, rcond=None)[0]
    assert close(xa.mean(axis=0), xm + xp @ w)


def test_ensemble_and_observation_space_forms_agree():
    for nobs, nmem in ((4, 10), (12, 5)):
        rng = np.random.default_rng(nobs)
        s = rng.standard_normal((3, nobs, nmem))
        d = rng.standard_normal((3, nobs))
        sb = rng.standard_normal((3, nobs, 7))
        for extra in ((), (sb,)):
            m1, p1 = ensemble_transform(s, d, *extra, space="ensemble")
            m2, p2 = ensemble_transform(s, d, *extra, space="observation")
            assert close(m1, m2) and close(p1, p2)


def test_perturbations_are_centred_and_the_transform_symmetric():
    p = problem()
    sel = local_obs_selection(p.geom, p.locs, [ObsLocalization(lengthscale=0.3)])
    w = letkf_weights(sel, p.xb @ p.h.T, p.y, p.r, mult=1.3)
    assert close(w.pert, np.swapaxes(w.pert, -1, -2), 1e-13)
    xa = apply_weights(w, p.xb)
    xa_pert = xa - xa.mean(axis=0)
    assert np.abs(xa_pert.sum(axis=0)).max() <= 1e-12 * np.abs(xa_pert).max()
    # The analysis mean is the background mean plus X' times the mean weights.
    xp = p.xb - p.xb.mean(axis=0)
    expected = p.xb.mean(axis=0) + np.einsum("kq,qk->q", xp, w.mean[w.point_row])
    assert close(xa.mean(axis=0), expected)


# Inflation ------------------------------------------------------------------------------------------
def test_rtpp_and_rtps_formulas():
    p = problem()
    sel = local_obs_selection(p.geom, p.locs, [ObsLocalization(lengthscale=0.4)])
    hx = p.xb @ p.h.T
    base = letkf_analysis(p.xb, hx, p.y, p.r, sel, mult=1.1)
    xb_pert = p.xb - p.xb.mean(axis=0)
    xa_pert = base - base.mean(axis=0)
    alpha = 0.6
    rtpp = letkf_analysis(p.xb, hx, p.y, p.r, sel, mult=1.1, rtpp=alpha)
    assert close(rtpp.mean(axis=0), base.mean(axis=0), 1e-14)
    assert close(rtpp - rtpp.mean(axis=0), (1 - alpha) * xa_pert + alpha * xb_pert)
    rtps = letkf_analysis(p.xb, hx, p.y, p.r, sel, mult=1.1, rtps=alpha)
    assert close(rtps.mean(axis=0), base.mean(axis=0), 1e-14)
    sa, sb = base.std(axis=0, ddof=1), p.xb.std(axis=0, ddof=1)
    # RTPS: the new spread is (1 - alpha) sigma_a + alpha sigma_b, pointwise, with the same structure.
    assert close(rtps.std(axis=0, ddof=1), (1 - alpha) * sa + alpha * sb)
    assert close(rtps - rtps.mean(axis=0), xa_pert * ((1 - alpha) * sa + alpha * sb) / sa)
    # The functions alone.
    assert close(relax_to_prior_perturbations(xa_pert, xb_pert, 1.0), xb_pert, 0)
    assert close(relax_to_prior_spread(xa_pert, xb_pert, 1.0).std(axis=0, ddof=1), sb)


def test_posterior_inflation_scales_the_analysis_perturbations_last():
    """posterior mult = rho_a: the mean is unchanged, the perturbations after RTPS are times sqrt(rho_a)."""
    p = problem()
    sel = local_obs_selection(p.geom, p.locs, [ObsLocalization(lengthscale=0.4)])
    hx = p.xb @ p.h.T
    base = letkf_analysis(p.xb, hx, p.y, p.r, sel, mult=1.1, rtps=0.5)
    post = letkf_analysis(p.xb, hx, p.y, p.r, sel, mult=1.1, rtps=0.5, posterior_mult=1.0404)
    assert close(post.mean(axis=0), base.mean(axis=0), 1e-14)
    assert close(post - post.mean(axis=0), 1.02 * (base - base.mean(axis=0)))
    with pytest.raises(ConfigError, match="must be >= 1"):
        validate(InflationParameters, {"posterior mult": 0.9}, "local ensemble DA.inflation")


def test_multiplicative_inflation_inflates_the_prior():
    """mult = rho is the same as inflating the background perturbations by sqrt(rho), for the mean."""
    p = problem()
    sel = local_obs_selection(p.geom, p.locs, None)
    rho = 1.5
    xm = p.xb.mean(axis=0)
    inflated = xm + np.sqrt(rho) * (p.xb - xm)
    a = letkf_analysis(p.xb, p.xb @ p.h.T, p.y, p.r, sel, mult=rho)
    b = letkf_analysis(inflated, inflated @ p.h.T, p.y, p.r, sel)
    assert close(a.mean(axis=0), b.mean(axis=0))
    assert close(sample_cov(a), sample_cov(b))


# Localization -------------------------------------------------------------------------------------
def test_gaspari_cohn_and_box_car():
    length = 0.4
    r = np.linspace(0, 0.6, 61)
    gc = localization_function(r, "Gaspari-Cohn", length)
    # REFERENCES section 5, with the support 2c = lengthscale.
    z = r / (length / 2)
    ref = np.where(z <= 1, -z**5 / 4 + z**4 / 2 + 5 * z**3 / 8 - 5 * z**2 / 3 + 1,
                   np.where(z < 2, z**5 / 12 - z**4 / 2 + 5 * z**3 / 8 + 5 * z**2 / 3 - 5 * z + 4
                            - 2 / (3 * np.maximum(z, 1e-300)), 0.0))
    assert np.allclose(gc, ref, rtol=0, atol=1e-14)
    assert gc[0] == 1.0 and gc[r >= length].max() == 0.0 and gc[r < length].min() > 0
    box = localization_function(r, "Box Car", length)
    assert np.array_equal(box, (r <= length).astype(float))
    assert np.array_equal(localization_function(r, "Horizontal Gaspari-Cohn", length), gc)


def test_distant_observations_have_no_effect():
    n, nmem = 40, 8
    rng = np.random.default_rng(3)
    geom = StructuredGrid.periodic_1d(n)
    xb = rng.standard_normal((nmem, n))
    pos = np.arange(n) / n
    locs = Locations({"x": pos})
    length = 0.2
    sel = local_obs_selection(geom, locs, [ObsLocalization(lengthscale=length)])
    y = rng.standard_normal(n)
    a = letkf_analysis(xb, xb, y, 1.0, sel, mult=1.05)
    # Change the observation at x = 0.5 (value and its H(x)): only points closer than 0.2 may change.
    y2, hx2 = y.copy(), xb.copy()
    y2[20] += 10.0
    hx2[:, 20] += rng.standard_normal(nmem)
    b = letkf_analysis(xb, hx2, y2, 1.0, sel, mult=1.05)
    dist = np.abs(pos - 0.5)
    far, near = dist >= length - 1e-9, dist < length - 1e-9
    assert far.sum() == 40 - 15
    assert np.array_equal(a[:, far], b[:, far])  # bitwise
    assert (np.abs(a[:, near] - b[:, near]).max(axis=0) > 1e-8).all()
    # A point whose localization radius holds no observation keeps its background, without inflation.
    sparse = Locations({"x": np.array([0.1])})
    sel = local_obs_selection(geom, sparse, [ObsLocalization(lengthscale=0.1)])
    xa = letkf_analysis(xb, xb[:, [4]], [0.3], 1.0, sel, mult=1.5)
    untouched = np.abs(pos - 0.1) >= 0.1 - 1e-12
    assert np.array_equal(xa[:, untouched], xb[:, untouched])
    assert not np.allclose(xa[:, 4], xb[:, 4])


def test_selection_merges_identical_points_and_reaches_the_cutoff():
    geom = StructuredGrid.channel_2d(6, 4, 1.0, 1.0, variables=("u", "v"), levels=[1.0, 2.0, 3.0])
    rng = np.random.default_rng(0)
    locs = Locations({"x": rng.random(15), "y": rng.random(15), "z": np.ones(15)})
    sel = local_obs_selection(geom, locs, [ObsLocalization(lengthscale=0.35)])
    assert sel.npoints == 3 * 4 * 6
    assert sel.nrows <= 4 * 6  # the levels of a column share their observations
    pts = geom.grid_locations()
    d = geom.distance({k: v[:, None] for k, v in pts.coords.items()}, {k: v[None, :] for k, v in locs.coords.items()})
    assert np.array_equal(sel.counts(), (d < 0.35).sum(axis=1))
    # Several variables on a grid with levels: FieldSets in, FieldSets out, each column updated alike.
    xb = FieldSet({"u": rng.standard_normal((5, 3, 4, 6)), "v": rng.standard_normal((5, 3, 4, 6))})
    hx = rng.standard_normal((5, 15))
    xa = letkf_analysis(xb, hx, rng.standard_normal(15), 0.5, sel, mult=1.1)
    assert isinstance(xa, FieldSet) and xa["u"].shape == (5, 3, 4, 6)
    w = letkf_weights(sel, hx, np.zeros(15), 0.5, 1.1).at_points()
    u = xb["u"].reshape(5, -1)
    up = u - u.mean(axis=0)
    assert close(xa["u"].reshape(5, -1) - xa["u"].reshape(5, -1).mean(axis=0),
                 np.einsum("kq,qkl->lq", up, w.pert))


def test_unusable_observations_are_ignored():
    p = problem()
    hx = p.xb @ p.h.T
    sel_all = local_obs_selection(p.geom, p.locs, [ObsLocalization(lengthscale=0.3)])
    y = p.y.copy()
    y[2] = np.nan
    r = p.r.copy()
    r[4] = np.inf
    a = letkf_analysis(p.xb, hx, y, r, sel_all, mult=1.1)
    keep = [0, 1, 3, 5]
    sel = local_obs_selection(p.geom, p.locs.subset(keep), [ObsLocalization(lengthscale=0.3)])
    b = letkf_analysis(p.xb, hx[:, keep], p.y[keep], p.r[keep], sel, mult=1.1)
    assert close(a, b, 1e-12)


# GETKF ------------------------------------------------------------------------------------------
def modulation(lengthscale, fraction=1.0, nmodes=None, method="Gaspari-Cohn"):
    return ModulationParameters(localization_method=method, lengthscale=lengthscale,
                                fraction_of_retained_variance=fraction, number_of_modes=nmodes)


def test_getkf_without_localization_equals_letkf():
    p = problem()
    hx = p.xb @ p.h.T
    # A box car wider than the domain: L = 1 1^T, one constant mode.
    modes = modulation_modes(p.geom, modulation(10.0, method="Box Car"))
    assert modes.shape == (p.n, 1) and np.allclose(modes, 1.0)
    for locz in (None, [ObsLocalization(lengthscale=0.3)]):
        sel = local_obs_selection(p.geom, p.locs, locz)
        lk = letkf_analysis(p.xb, hx, p.y, p.r, sel, mult=1.2)
        hz = modulate(p.xb, modes) @ p.h.T
        gk = getkf_analysis(p.xb, hx, hz.reshape(p.nmem, 1, -1), p.y, p.r, sel, modes, mult=1.2)
        assert close(gk, lk)


def test_getkf_is_the_kalman_filter_with_the_localized_covariance():
    """Observations at grid points, every mode kept: mean = KF with rho L o P_e; X'_a = sqrt(rho) (I - K~H) X'."""
    n, nmem, rho = 24, 5, 1.1
    rng = np.random.default_rng(7)
    geom = StructuredGrid.periodic_1d(n)
    xb = rng.standard_normal((nmem, n))
    idx = np.array([0, 3, 4, 9, 15, 20])
    locs = Locations({"x": idx / n})
    h = np.eye(n)[idx]
    y, r = rng.standard_normal(idx.size), rng.uniform(0.5, 2.0, idx.size)
    modes = modulation_modes(geom, modulation(0.3))
    assert modes.shape == (n, n)
    lmat = modes @ modes.T
    lref = localization_function(np.abs(((np.arange(n)[:, None] - np.arange(n)) + n / 2) % n - n / 2) / n,
                                 "Gaspari-Cohn", 0.3)
    assert close(lmat, lref, 1e-12)  # every mode kept: L itself
    sel = local_obs_selection(geom, locs, None)
    hx = xb @ h.T
    hz_model = modulate(xb, modes) @ h.T
    hz_obs = modulate_obs(hx, modes[idx])
    assert close(hz_model.reshape(nmem, n, -1) - hz_model.mean(axis=0), hz_obs - hz_obs.mean(axis=(0, 1)))
    for space in ("ensemble", "observation"):
        w = getkf_weights(sel, hx, hz_obs, y, r, rho, space=space)
        xa = apply_weights(w, xb, modes)
        p = rho * lmat * sample_cov(xb)
        mean, cov, _ = kalman(xb, h, y, r, p)
        assert close(xa.mean(axis=0), mean)
        # The modified gain of the modulated ensemble, dense.
        g = np.diag(r**-0.5) @ h @ p @ h.T @ np.diag(r**-0.5)
        gam, u = np.linalg.eigh(g)
        ktilde = p @ h.T @ np.diag(r**-0.5) @ u @ np.diag(1 / (1 + gam + np.sqrt(1 + gam))) @ u.T @ np.diag(r**-0.5)
        ikh = np.eye(n) - ktilde @ h
        xp = (xb - xb.mean(axis=0)).T
        assert close((xa - xa.mean(axis=0)).T, np.sqrt(rho) * ikh @ xp)
        assert close(ikh @ p @ ikh.T, cov)  # the gain form gives the KF analysis covariance


def test_modulation_modes():
    geom = StructuredGrid.periodic_1d(40)
    modes = modulation_modes(geom, modulation(0.2, fraction=0.95))
    assert 1 < modes.shape[1] < 40
    assert np.allclose((modes**2).sum(axis=1), 1.0)
    lmat = modes @ modes.T
    # Homogeneous on the ring: the truncation kept whole pairs of Fourier modes.
    assert np.allclose(np.diag(np.roll(lmat, 5, axis=1)), lmat[0, 5])
    assert modulation_modes(geom, modulation(0.2, nmodes=3)).shape == (40, 3)
    # Vertical modulation on a grid with levels: one value per level, shared by the columns.
    grid3 = StructuredGrid.channel_2d(5, 4, variables=("t",), levels=[0.0, 1.0, 2.0, 3.0])
    vm = modulation_modes(grid3, modulation(2.5), "vertical")
    assert vm.shape == (4 * 4 * 5, 4)
    per_level = vm.reshape(4, 20, 4)
    assert np.allclose(per_level, per_level[:, :1, :])
    with pytest.raises(ConfigError, match="level axis"):
        modulation_modes(geom, modulation(0.2), "vertical")


# Parameters -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("config, message", [
    ({"solver": "LETKF", "inflation": {"mult": 0.9}}, "multiplicative inflation must be >= 1"),
    ({"inflation": {"rtpp": 1.5}}, "rtpp must lie in"),
    ({"inflation": {"rtps": -0.1}}, "rtps must lie in"),
    ({"solver": "GETKF"}, "GETKF needs exactly one of"),
    ({"solver": "LETKF", "horizontal localization": {"lengthscale": 0.2}}, "only applies to the GETKF"),
    ({"solver": "GETKF", "horizontal localization": {"lengthscale": 0.0}}, "lengthscale must be a positive"),
    ({"solver": "EnKF"}, "solver"),
])
def test_bad_local_ensemble_da_sections(config, message):
    with pytest.raises(ConfigError, match=message):
        validate(LocalEnsembleDAParameters, config, "local ensemble DA")


@pytest.mark.parametrize("length", [0.0, -1.0, float("nan")])
def test_bad_lengthscale(length):
    with pytest.raises(ConfigError, match="lengthscale"):
        validate(ObsLocalization, {"localization method": "Gaspari-Cohn", "lengthscale": length}, "obs localizations")


def test_defaults_and_one_member():
    params = validate(LocalEnsembleDAParameters, {}, "local ensemble DA")
    assert params.solver == "LETKF" and params.inflation == InflationParameters()
    p = problem()
    sel = local_obs_selection(p.geom, p.locs, None)
    with pytest.raises(ValueError, match="at least 2 members"):
        letkf_analysis(p.xb[:1], p.xb[:1] @ p.h.T, p.y, p.r, sel)


def test_no_observation_leaves_the_ensemble_unchanged():
    p = problem()
    sel = local_obs_selection(p.geom, Locations({"x": np.zeros(0)}), [ObsLocalization(lengthscale=0.3)])
    assert sel.width == 0
    xa = letkf_analysis(p.xb, np.zeros((p.nmem, 0)), np.zeros(0), np.zeros(0), sel, mult=1.3, rtps=0.5)
    assert np.array_equal(xa, p.xb)
    modes = np.ones((p.n, 1))
    xg = getkf_analysis(p.xb, np.zeros((p.nmem, 0)), np.zeros((p.nmem, 1, 0)), np.zeros(0), np.zeros(0), sel,
                        modes, mult=1.3)
    assert np.array_equal(xg, p.xb)


def test_getkf_vertical_modulation_on_a_grid_with_levels():
    """Every mode of the level localization kept, linear H: the mean is the KF with L_v o P_e (model-space H(Z))."""
    levels = [0.0, 1.0, 2.0]
    geom = StructuredGrid.channel_2d(5, 4, variables=("t",), levels=levels)
    rng = np.random.default_rng(5)
    nmem, npts, rho = 6, 3 * 4 * 5, 1.2
    xb = rng.standard_normal((nmem, 3, 4, 5))
    locs = Locations({"x": rng.random(9), "y": rng.uniform(0.2, 0.8, 9), "z": rng.choice(levels, 9)})
    h = geom.interpolation_matrix(locs).toarray()
    y, r = rng.standard_normal(9), rng.uniform(0.5, 1.5, 9)
    modes = modulation_modes(geom, modulation(2.5), "vertical")
    lev = np.repeat(np.arange(3), 20)
    lv = localization_function(np.subtract.outer(np.array(levels), levels), "Gaspari-Cohn", 2.5)
    assert close(modes @ modes.T, lv[np.ix_(lev, lev)], 1e-12)
    flat = xb.reshape(nmem, npts)
    hz = (modulate(flat, modes) @ h.T).reshape(nmem, modes.shape[1], -1)
    sel = local_obs_selection(geom, locs, None)
    xa = getkf_analysis(xb, flat @ h.T, hz, y, r, sel, modes, mult=rho)
    p = rho * lv[np.ix_(lev, lev)] * sample_cov(flat)
    mean, _, _ = kalman(flat, h, y, r, p)
    assert xa.shape == xb.shape
    assert close(xa.reshape(nmem, npts).mean(axis=0), mean)


def test_number_of_modes_is_raised_to_a_whole_group_of_equal_eigenvalues(caplog):
    """On a 26-point ring the Gaspari-Cohn (cutoff 0.3) eigenvalues come in equal pairs after the constant mode: 6 modes
    would keep half of the pair (6, 7) in a LAPACK-chosen basis and make L uneven; 7 are kept, with a warning,
    and the kept localization is homogeneous (every lag-2 value equal)."""
    geom = StructuredGrid.periodic_1d(26)
    with caplog.at_level("WARNING", logger="pyoops"):
        modes = modulation_modes(geom, modulation(0.3, nmodes=6))
    assert modes.shape == (26, 7)
    assert "'number of modes' 6 splits a group of equal eigenvalues" in caplog.text
    lmat = modes @ modes.T
    lag2 = lmat[np.arange(26), (np.arange(26) + 2) % 26]
    assert np.ptp(lag2) <= 1e-12 * np.abs(lag2).max()
    caplog.clear()
    with caplog.at_level("WARNING", logger="pyoops"):
        assert modulation_modes(geom, modulation(0.3, nmodes=7)).shape == (26, 7)  # a whole group: no warning
    assert "splits" not in caplog.text


def test_fraction_of_retained_variance_is_of_the_nonnegative_eigenvalues():
    """The documented rule: the fewest modes whose eigenvalues reach the fraction of sum(max(lambda, 0))."""
    geom = StructuredGrid.periodic_1d(40)
    params = modulation(0.8, fraction=0.995)
    pts = geom.grid_locations().coords["x"]
    dist = np.abs(((pts[:, None] - pts[None, :]) + 0.5) % 1.0 - 0.5)
    lam = np.sort(np.linalg.eigvalsh(localization_function(dist, "Gaspari-Cohn", 0.8)))[::-1]
    assert lam.min() < 0  # the case where the two rules differ
    positive = np.maximum(lam, 0.0)
    expected = int(np.searchsorted(np.cumsum(positive) / positive.sum(), 0.995 * (1 - 1e-12)) + 1)
    while expected < lam.size and abs(lam[expected] - lam[expected - 1]) <= 1e-8 * lam[0]:
        expected += 1
    assert modulation_modes(geom, params).shape[1] == expected
