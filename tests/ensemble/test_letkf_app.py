"""``pyoops letkf`` through files: 3-D and 4-D H(x), LETKF and GETKF, outputs and bad configurations.

The references are written here: a per-grid-point LETKF loop (Hunt et al. 2007 with
dense matrices) and a dense 4D-ETKF in ensemble space, on Lorenz-96 members
forecast with an independent RK4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pyoops
from pyoops.util.errors import ConfigError

N, RESOL = 8, 40
BEGIN, T0, END = "2009-12-31T21:00:00Z", "2010-01-01T00:00:00Z", "2010-01-01T03:00:00Z"


def gc(r, length):
    """Gaspari-Cohn reaching 0 at ``length`` (REFERENCES section 5 with c = length / 2)."""
    z = np.abs(r) / (length / 2)
    inner = -z**5 / 4 + z**4 / 2 + 5 * z**3 / 8 - 5 * z**2 / 3 + 1
    outer = z**5 / 12 - z**4 / 2 + 5 * z**3 / 8 + 5 * z**2 / 3 - 5 * z + 4 - 2 / (3 * np.maximum(z, 1e-300))
    return np.where(z <= 1, inner, np.where(z < 2, outer, 0.0))


def ring_distance(a, b):
    d = np.abs(np.asarray(a) - np.asarray(b)) % 1.0
    return np.minimum(d, 1.0 - d)


def loop_letkf(xb, hx, y, r, obs_pos, length, mult):
    """Per-grid-point LETKF (Hunt et al. 2007), dense, one point at a time."""
    nmem, n = xb.shape
    xm, ym = xb.mean(axis=0), hx.mean(axis=0)
    xp, yp = xb - xm, hx - ym
    out = np.empty_like(xb)
    for j in range(n):
        w = gc(ring_distance(j / n, obs_pos), length)
        use = w > 1e-12
        if not use.any():
            out[:, j] = xb[:, j]
            continue
        yl = yp[:, use].T                       # (m, N)
        rinv = np.diag(w[use] / r[use])
        pa = np.linalg.inv((nmem - 1) / mult * np.eye(nmem) + yl.T @ rinv @ yl)
        lam, vec = np.linalg.eigh((nmem - 1) * pa)
        wa = vec @ np.diag(np.sqrt(lam)) @ vec.T
        wbar = pa @ yl.T @ rinv @ (y[use] - ym[use])
        out[:, j] = xm[j] + xp[:, j] @ (wbar[:, None] + wa)
    return out


def interp(x, pos):
    """Linear interpolation on the ring of the last axis to positions ``pos``."""
    n = x.shape[-1]
    t = np.asarray(pos) * n
    i0 = np.floor(t).astype(int) % n
    f = t - np.floor(t)
    return x[..., i0] * (1 - f) + x[..., (i0 + 1) % n] * f


def setup_3d(io, nmem=N, positions=None, seed=2):
    rng = np.random.default_rng(seed)
    truth = io.attractor_state(RESOL)
    xb = truth + rng.standard_normal((nmem, RESOL))
    for k in range(nmem):
        io.write_state(f"bg/mem{k + 1:02d}.nc", xb[k], T0)
    pos = np.arange(0, RESOL, 2) / RESOL + 0.3 / RESOL if positions is None else positions
    err = rng.uniform(0.5, 1.5, pos.size)
    y = interp(truth, pos) + err * rng.standard_normal(pos.size)
    io.write_obs("obs.nc", pos, [T0] * pos.size, y, err)
    return xb, pos, y, err


def config(**extra):
    cfg = {
        "model plugin": "lorenz96",
        "geometry": {"resol": RESOL},
        "time window": {"begin": BEGIN, "length": "PT6H"},
        "background": {"members from template": {"template": {"date": T0, "filename": "bg/mem%mem%.nc"},
                                                 "pattern": "%mem%", "nmembers": N, "zero padding": 2}},
        "observations": {"observers": [{
            "obs space": {"name": "ring", "simulated variables": ["x"], "obsdatain": {"filename": "obs.nc"},
                          "obsdataout": {"filename": "out/obs.nc"}},
            "obs operator": {"name": "Identity"},
            "obs localizations": [{"localization method": "Gaspari-Cohn", "lengthscale": 0.25}]}]},
        "local ensemble DA": {"solver": "LETKF", "inflation": {"mult": 1.1}},
        "output": {"filename": "out/an.%mem%.nc"},
        "output mean": {"filename": "out/an.mean.nc"},
        "output spread": {"filename": "out/an.spread.nc"},
    }
    cfg.update(extra)
    return cfg


def read_members(io, template, nmem=N):
    return np.array([io.read_state(template.format(k=k + 1))[0] for k in range(nmem)])


def test_3d_letkf_equals_a_per_point_loop_and_writes_statistics(workdir, io):
    xb, pos, y, err = setup_3d(io)
    summary = pyoops.run("letkf", config())
    xa = read_members(io, "out/an.{k:02d}.nc")
    hx = interp(xb, pos)
    expected = loop_letkf(xb, hx, y, err**2, pos, 0.25, 1.1)
    np.testing.assert_allclose(xa, expected, rtol=1e-10, atol=1e-10)
    mean, date = io.read_state("out/an.mean.nc")
    assert date == T0
    np.testing.assert_allclose(mean, expected.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(io.read_state("out/an.spread.nc")[0], expected.std(axis=0, ddof=1), rtol=1e-10)
    obs = io.read_obs("out/obs.nc")
    hxa = interp(expected, pos)
    np.testing.assert_allclose(obs["hofx0/x"], hx.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(obs["hofx1/x"], hxa.mean(axis=0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(obs["ombg/x"], y - hx.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(obs["oman/x"], y - hxa.mean(axis=0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(obs["hofx0_variance/x"], hx.var(axis=0, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(obs["hofx1_variance/x"], hxa.var(axis=0, ddof=1), rtol=1e-9)
    np.testing.assert_allclose(obs["EffectiveError/x"], err, rtol=1e-12)
    np.testing.assert_array_equal(obs["ObsValue/x"], y)
    stats = summary["observers"]["ring"]
    assert stats["nobs"] == pos.size
    assert stats["oman rms"] < stats["ombg rms"] and stats["hofx1 spread"] < stats["hofx0 spread"]
    assert summary["grid points with observations"] == RESOL
    assert not list(workdir.rglob(".pyoops-*"))


def test_4d_letkf_applies_the_window_weights_along_the_trajectory(workdir, io):
    """Background at the window begin, obs every 6 h through a 1-day window, no localization (4D-ETKF)."""
    rng = np.random.default_rng(4)
    truth0 = io.attractor_state(RESOL, seed=9)
    x0 = truth0 + 0.5 * rng.standard_normal((N, RESOL))
    for k in range(N):
        io.write_state(f"bg/mem{k + 1:02d}.nc", x0[k], T0)
    times = ["2010-01-01T06:00:00Z", "2010-01-01T12:00:00Z", "2010-01-01T18:00:00Z", "2010-01-02T00:00:00Z"]
    pos = (np.arange(0, RESOL, 3) + 0.5) / RESOL
    truth = [io.l96_rk4(truth0, s) for s in range(5)]
    y = np.concatenate([interp(truth[s + 1], pos) for s in range(4)]) + 0.4 * rng.standard_normal(4 * pos.size)
    io.write_obs("obs.nc", np.tile(pos, 4), [t for t in times for _ in pos], y, 0.4)
    cfg = config(**{"time window": {"begin": T0, "length": "P1D"},
                    "model": {"name": "Lorenz96", "tstep": "PT6H"},
                    "analysis times": [T0, "2010-01-01T12:00:00Z", "2010-01-02T00:00:00Z"],
                    "output": {"filename": "out/an.%mem%.%date%.nc"},
                    "output mean": {"filename": "out/mean.%date%.nc"},
                    "output spread": None})
    del cfg["observations"]["observers"][0]["obs localizations"]
    summary = pyoops.run("letkf", cfg)
    assert summary["analysis times"] == [T0, "2010-01-01T12:00:00Z", "2010-01-02T00:00:00Z"]
    # Dense 4D-ETKF in ensemble space.
    traj = [io.l96_rk4(x0, s) for s in range(5)]         # (N, n) at 0, 6, 12, 18, 24 h
    hx = np.concatenate([interp(traj[s + 1], pos) for s in range(4)], axis=1)
    yp, ym = hx - hx.mean(axis=0), hx.mean(axis=0)
    rinv = np.eye(y.size) / 0.16
    pa = np.linalg.inv((N - 1) / 1.1 * np.eye(N) + yp @ rinv @ yp.T)
    lam, vec = np.linalg.eigh((N - 1) * pa)
    weights = vec @ np.diag(np.sqrt(lam)) @ vec.T + (pa @ yp @ rinv @ (y - ym))[:, None]
    for step, t in ((0, T0), (2, "2010-01-01T12:00:00Z"), (4, "2010-01-02T00:00:00Z")):
        xf = traj[step]
        expected = xf.mean(axis=0)[:, None] + (xf - xf.mean(axis=0)).T @ weights   # (n, N)
        got = read_members(io, "out/an.{k:02d}." + t + ".nc")
        np.testing.assert_allclose(got, expected.T, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(io.read_state(f"out/mean.{t}.nc")[0], expected.mean(axis=1), rtol=1e-9,
                                   atol=1e-9)
    obs = io.read_obs("out/obs.nc")
    np.testing.assert_allclose(obs["hofx0/x"], ym, rtol=1e-11)
    hxa = np.concatenate([interp((traj[s + 1].mean(axis=0)[:, None] + (traj[s + 1] - traj[s + 1].mean(axis=0)).T
                                  @ weights).T, pos) for s in range(4)], axis=1)
    np.testing.assert_allclose(obs["hofx1/x"], hxa.mean(axis=0), rtol=1e-9, atol=1e-9)
    assert summary["observers"]["ring"]["oman rms"] < summary["observers"]["ring"]["ombg rms"]


def test_getkf_app(workdir, io):
    positions = np.arange(RESOL) / RESOL  # at grid points: H of the modulated members is exact in obs space
    xb, pos, y, err = setup_3d(io, positions=positions)
    base = config()
    del base["observations"]["observers"][0]["obs localizations"]
    letkf = pyoops.run("letkf", base)
    # A box-car modulation wider than the domain: one constant mode, the GETKF is the LETKF.
    wide = config(**{"local ensemble DA": {"solver": "GETKF", "inflation": {"mult": 1.1},
                                           "horizontal localization": {"localization method": "Box Car",
                                                                       "lengthscale": 5.0}},
                     "output": {"filename": "out/gwide.%mem%.nc"}})
    del wide["observations"]["observers"][0]["obs localizations"]
    summary = pyoops.run("letkf", wide)
    assert summary["modes"] == 1
    np.testing.assert_allclose(read_members(io, "out/gwide.{k:02d}.nc"), letkf["analysis"].fields["x"],
                               rtol=1e-10, atol=1e-10)
    # Model-space localization by modulation: the mean is the Kalman filter with L o P_e.
    cfg = config(**{"local ensemble DA": {"solver": "GETKF", "inflation": {"mult": 1.1, "rtps": 0.5},
                                          "horizontal localization": {"lengthscale": 0.3,
                                                                      "fraction of retained variance": 1.0}},
                    "output": {"filename": "out/g.%mem%.nc"}})
    del cfg["observations"]["observers"][0]["obs localizations"]
    summary = pyoops.run("letkf", cfg)
    assert summary["modes"] == RESOL
    xa = read_members(io, "out/g.{k:02d}.nc")
    dist = ring_distance(np.arange(RESOL)[:, None] / RESOL, np.arange(RESOL)[None, :] / RESOL)
    xp = xb - xb.mean(axis=0)
    p = 1.1 * gc(dist, 0.3) * (xp.T @ xp) / (N - 1)
    k = p @ np.linalg.inv(p + np.diag(err**2))
    np.testing.assert_allclose(xa.mean(axis=0), xb.mean(axis=0) + k @ (y - xb.mean(axis=0)), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case, message", [
    ("lengthscale zero", "lengthscale must be a positive distance"),
    ("negative lengthscale", "lengthscale must be a positive distance"),
    ("deflation", "multiplicative inflation must be >= 1"),
    ("rtpp above one", "rtpp must lie in [0, 1]"),
    ("one member", "an ensemble needs at least 2 members"),
    ("members on another geometry", "has grid shape (20,), but the geometry has (40,)"),
    ("GETKF without modulation", "GETKF needs exactly one of"),
    ("vertical localization without levels", "needs a grid with one level axis"),
    ("background outside the window", "outside the time window"),
    ("4-D background not at the window begin", "must be valid at the window begin"),
    ("analysis times in 3-D", "only with 'model'"),
    ("unknown localization", "localization method"),
])
def test_bad_configs_fail_with_one_line(case, message, workdir, io, cli):
    setup_3d(io)
    io.write_state("small.nc", np.ones(20), T0)
    cfg = config()
    da = cfg["local ensemble DA"]
    loc = cfg["observations"]["observers"][0]["obs localizations"][0]
    if case == "lengthscale zero":
        loc["lengthscale"] = 0
    elif case == "negative lengthscale":
        loc["lengthscale"] = -0.1
    elif case == "deflation":
        da["inflation"]["mult"] = 0.95
    elif case == "rtpp above one":
        da["inflation"]["rtpp"] = 1.2
    elif case == "one member":
        cfg["background"]["members from template"]["nmembers"] = 1
    elif case == "members on another geometry":
        cfg["background"] = {"members": [{"date": T0, "filename": "bg/mem01.nc"}, {"date": T0, "filename": "small.nc"}]}
    elif case == "GETKF without modulation":
        da["solver"] = "GETKF"
    elif case == "vertical localization without levels":
        da.update(solver="GETKF", **{"vertical localization": {"lengthscale": 2.0}})
    elif case == "background outside the window":
        cfg["time window"]["begin"] = "2010-01-01T03:00:00Z"
    elif case == "4-D background not at the window begin":
        cfg["model"] = {"name": "Lorenz96", "tstep": "PT6H"}
    elif case == "analysis times in 3-D":
        cfg["analysis times"] = [T0]
    else:
        loc["localization method"] = "Gaussian"
    io.write_yaml("bad.yaml", cfg)
    code, out, err = cli("letkf", "bad.yaml")
    assert code == 2 and len(err) == 1, err
    assert message in err[0], err[0]
    assert not Path("out").exists()
    if case != "members on another geometry":
        with pytest.raises(ConfigError):
            pyoops.run("letkf", cfg, validate_only=True)


def test_json_schema_lists_the_localization_keys(workdir, cli):
    code, out, err = cli("letkf", "--output-json-schema=schema.json")
    assert code == 0, err
    text = Path("schema.json").read_text()
    for key in ("obs localizations", "local ensemble DA", "lengthscale", "rtps", "horizontal localization"):
        assert key in text


@pytest.mark.parametrize("name", ["letkf.yaml", "letkf4d.yaml"])
def test_tutorial_configs_are_valid(name):
    path = Path(__file__).resolve().parents[2] / "tutorials" / "lorenz96" / name
    assert pyoops.run("letkf", str(path), validate_only=True) == {"valid": True}


def test_letkf_app_writes_the_innovation_archive(workdir, io):
    """``output archive``: one cycle; members' mean H(x), ensemble variance of H(x_b), perturbations."""
    import xarray as xr

    xb, pos, y, err = setup_3d(io)
    cfg = config(**{"output archive": {"filename": "out/innovations.nc"}})
    summary = pyoops.run("letkf", cfg)
    assert "out/innovations.nc" in summary["outputs"]
    hx = interp(xb, pos)
    xa = read_members(io, "out/an.{k:02d}.nc")

    def group(name):
        return xr.open_dataset("out/innovations.nc", group=name)["value"].values

    np.testing.assert_array_equal(group("ObsValue"), y)
    np.testing.assert_allclose(group("ObsError"), err, rtol=1e-15)
    np.testing.assert_allclose(group("ombg"), y - hx.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(group("oman"), y - interp(xa, pos).mean(axis=0), rtol=1e-10, atol=1e-10)
    # What the analysis assumed: the background covariance after the prior inflation mult = 1.1.
    np.testing.assert_allclose(group("BackgroundErrorVariance"), 1.1 * hx.var(axis=0, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(group("EnsembleHofXPerturbations"), np.sqrt(1.1) * (hx - hx.mean(axis=0)).T,
                               atol=1e-12)
    cycles = xr.open_dataset("out/innovations.nc", group="Cycle")
    assert cycles["nobs"].values.tolist() == [pos.size] and np.isnan(cycles["costAtAnalysis"].values).all()


@pytest.mark.parametrize("solver", ["LETKF", "GETKF"])
def test_adaptive_inflation_files_chain_analyses(solver, workdir, io):
    """Two analyses chained through inflation files: the second reads the first's state; the LETKF analysis is the
    per-point loop with each point's inflation from the file (1e-10: dense loop against the batched solver)."""
    from pyoops.assimilation.adaptive_inflation import (
        AdaptiveInflation,
        AdaptiveInflationParameters,
        read_inflation_file,
    )
    from pyoops.config.parameters import validate

    xb, pos, y, err = setup_3d(io)
    da = {"solver": solver, "inflation": {"mult": 1.0}}
    if solver == "GETKF":
        da["horizontal localization"] = {"lengthscale": 0.3, "fraction of retained variance": 1.0}
    adaptive = {"scheme": "likelihood", "spatial": "local", "output file": "out/infl1.nc"}
    first = config(**{"local ensemble DA": da, "adaptive inflation": adaptive})
    if solver == "GETKF":
        del first["observations"]["observers"][0]["obs localizations"]
    s1 = pyoops.run("letkf", first)
    assert "out/infl1.nc" in s1["outputs"] and s1["inflation mean"] > 0
    second = dict(first, **{"adaptive inflation": dict(adaptive, **{"input file": "out/infl1.nc",
                                                                    "output file": "out/infl2.nc"}),
                            "output": {"filename": "out/an2.%mem%.nc"}})
    s2 = pyoops.run("letkf", second)
    params = validate(AdaptiveInflationParameters, {"scheme": "likelihood", "spatial": "local"}, "x")
    one, two = AdaptiveInflation(params, RESOL), AdaptiveInflation(params, RESOL)
    read_inflation_file(str(workdir / "out/infl1.nc"), one, "x")
    read_inflation_file(str(workdir / "out/infl2.nc"), two, "x")
    # The same innovations twice: the information accumulates (rho I + F > I since F > I / memory here); without
    # reading the first file the second analysis would have written the first's state again.
    assert np.all(two.information > one.information)
    assert s2["inflation mean"] == pytest.approx(float(two.field().mean()))
    if solver == "LETKF":
        field = two.field()
        hx = interp(xb, pos)
        expected = np.stack([loop_letkf(xb, hx, y, err**2, pos, 0.25, field[j])[:, j] for j in range(RESOL)], axis=1)
        np.testing.assert_allclose(read_members(io, "out/an2.{k:02d}.nc"), expected, rtol=1e-10, atol=1e-10)


def test_adaptive_inflation_marginal_per_cycle_in_one_analysis(workdir, io):
    """The letkf application takes the likelihood's options: the analysis equals the per-point loop with the file's
    'inflation' field at each point (so that field is the one used: the cycle's posterior mode, 1e-10 as the chained
    test), the file's state is the running estimate, which differs from it, and the marginal form changes the
    field against the joint one."""
    import netCDF4

    xb, pos, y, err = setup_3d(io)
    fields = {}
    for form in ("marginal", "joint"):
        adaptive = {"scheme": "likelihood", "spatial": "local", "likelihood form": form, "per cycle": 2,
                    "initial": 1.5, "output file": f"out/infl_{form}.nc"}
        cfg = config(**{"adaptive inflation": adaptive, "output": {"filename": f"out/an_{form}.%mem%.nc"},
                        "local ensemble DA": {"solver": "LETKF", "inflation": {"mult": 1.0}}})
        summary = pyoops.run("letkf", cfg)
        with netCDF4.Dataset(workdir / f"out/infl_{form}.nc") as ds:
            fields[form], running = np.array(ds["inflation"][:]), np.array(ds["mean"][:])
        assert summary["inflation mean"] == pytest.approx(float(fields[form].mean()))
        assert fields[form].shape == running.shape and not np.array_equal(fields[form], running)
    hx = interp(xb, pos)
    field = fields["marginal"]
    expected = np.stack([loop_letkf(xb, hx, y, err**2, pos, 0.25, field[j])[:, j] for j in range(RESOL)], axis=1)
    np.testing.assert_allclose(read_members(io, "out/an_marginal.{k:02d}.nc"), expected, rtol=1e-10, atol=1e-10)
    assert not np.allclose(fields["marginal"], fields["joint"])


def test_adaptive_inflation_file_mismatch_is_one_line(workdir, io, cli):
    import yaml

    setup_3d(io)
    cfg = config(**{"adaptive inflation": {"scheme": "miyoshi", "spatial": "local", "output file": "out/i.nc"}})
    pyoops.run("letkf", cfg)
    cfg["adaptive inflation"] = {"scheme": "likelihood", "input file": "out/i.nc", "output file": "out/j.nc"}
    (workdir / "bad.yaml").write_text(yaml.safe_dump(cfg))
    code, _, err = cli("letkf", "bad.yaml")
    assert code == 2 and len(err) == 1
    assert "out/i.nc" in err[0] and "scheme 'miyoshi', expected 'likelihood'" in err[0]
