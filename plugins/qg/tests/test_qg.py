"""QG-specific tests (the generic OOPS suites live in test_interface.py): grid and physics,
conservation, steady flow, baroclinic growth, numerics against independent references,
tangent linear and adjoint details, bad configurations."""

from __future__ import annotations

import numpy as np
import pytest

from pyoops.fields.fieldset import FieldSet
from pyoops.generic.forecast import TrajectorySaver, forecast, forecast_ad, forecast_tl
from pyoops.generic.state import GenericIncrement
from pyoops.interface.geometry import Locations
from pyoops.util.datetime import DateTime, Duration
from pyoops.util.errors import ConfigError, NumericalError
from pyoops.util.random import generator
from pyoops_qg import QgGeometry, QgModel, QgState, QgTLM
from pyoops_qg.diagnostics import eddy_energy, energy, pv_integrals
from pyoops_qg.model import max_time_step
from pyoops_qg.numerics import Departure, Linearisation, step

DATE = DateTime("2010-01-01T00:00:00Z")
OOPS_DEPTHS = [4500.0, 5500.0]


def geometry(nx: int = 40, ny: int = 20, flat: bool = False, depths=OOPS_DEPTHS) -> QgGeometry:
    cfg = {"nx": nx, "ny": ny, "depths": list(depths)}
    if flat:
        cfg["orography"] = {"height": 0.0}
    return QgGeometry(cfg)


def state(geom: QgGeometry, **init) -> QgState:
    return QgState.from_config(geom, {"date": str(DATE), "analytic init": init})


def run(geom: QgGeometry, x: QgState, length: str, tstep: str = "PT1H") -> QgState:
    return forecast(QgModel({"tstep": tstep}, geom), x.copy(), Duration(length), show_progress=False)


# ----------------------------------------------------------------------------------------------
# Geometry and physical constants
# ----------------------------------------------------------------------------------------------
def test_grid_and_constants():
    g = geometry()
    assert g.shape == (2, 20, 40) and g.dims == ("z", "yc", "xc")
    assert g.dx == pytest.approx(300e3) and g.dy == pytest.approx(6.3e6 / 19)
    y = g.axes[1].points
    assert y[0] == 0.0 and y[-1] == 6.3e6 and g.axes[1].spacing == pytest.approx(g.dy, rel=1e-15)
    np.testing.assert_allclose(g.heights, [2250.0, 7250.0])
    # F_i = f0^2 / (g dtheta D_i): 1e-8 / (1 * 4500) and 1e-8 / 5500; Rossby radius ~ 500 km.
    np.testing.assert_allclose(g.coupling, [1e-8 / 4500.0, 1e-8 / 5500.0], rtol=1e-14)
    assert 4.9e5 < g.rossby_radius < 5.0e5
    assert g.orography.max() == pytest.approx(1000.0, rel=0.05) and geometry(flat=True).orography.max() == 0.0
    assert not g.same_as(geometry(depths=[4000.0, 6000.0])) and g.same_as(geometry())


def test_time_step_limits():
    # U_max dt <= 2 min(dx, dy) with U_max = 150 m/s.
    assert max_time_step(geometry(), 150.0) == pytest.approx(4000.0)       # PT1H6M40S
    assert max_time_step(geometry(128, 64), 150.0) >= 1200.0                # PT20M
    assert max_time_step(geometry(512, 256), 150.0) >= 300.0                # PT5M
    QgModel({"tstep": "PT1H"}, geometry())
    with pytest.raises(ConfigError) as info:
        QgModel({"tstep": "PT2H"}, geometry())
    message = str(info.value)
    assert "model.tstep" in message and "PT1H6M40S" in message and "\n" not in message


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: QgGeometry({"nx": 40, "ny": 2, "depths": OOPS_DEPTHS}), "ny"),
        (lambda: QgGeometry({"nx": 3, "ny": 20, "depths": OOPS_DEPTHS}), "nx"),
        (lambda: QgGeometry({"nx": 40, "ny": 20, "depths": [0.0, 5500.0]}), "depths"),
        (lambda: QgGeometry({"nx": 40, "ny": 20, "depths": [-4500.0, 5500.0]}), "depths"),
        (lambda: QgGeometry({"nx": 40, "ny": 20, "depths": [4500.0]}), "depths"),
        (lambda: QgGeometry({"nx": 40, "ny": 20}), "depths"),
        (lambda: QgModel({"tstep": "PT3H"}, geometry()), "tstep"),
        (lambda: QgModel({"tstep": "PT0S"}, geometry()), "tstep"),
        (lambda: QgTLM({"tstep": "PT2H"}, geometry()), "tstep"),
        (lambda: state(geometry(), method="cyclone"), "method"),
        (lambda: state(geometry(), method="uniform field", **{"zonal wind": [1.0]}), "zonal wind"),
        (lambda: geometry().check_locations(Locations({"x": [1e6], "y": [7.0e6], "z": [100.0]})), "y"),
        (lambda: geometry().check_locations(Locations({"x": [1.3e7], "y": [1e6], "z": [100.0]})), "x"),
        (lambda: geometry().check_locations(Locations({"x": [1e6], "y": [1e6], "z": [-5.0]})), "z"),
        (lambda: geometry().check_locations(Locations({"x": [1e6], "y": [1e6]})), "z"),
    ],
)
def test_bad_configurations_fail_with_one_line(build, key):
    with pytest.raises(ConfigError) as info:
        build()
    assert key in str(info.value) and "\n" not in str(info.value)


def test_obs_outside_domain_in_a_file(tmp_path):
    """An observation file with a location beyond the north wall: one clear error, naming the file."""
    import netCDF4

    import pyoops

    name = tmp_path / "obs.nc"
    with netCDF4.Dataset(name, "w") as ds:
        ds.createDimension("Location", 2)
        meta = ds.createGroup("MetaData")
        meta.createVariable("dateTime", "i8", ("Location",))[:] = int(DATE.seconds_since_epoch())
        for var, values in (("x", [1e6, 2e6]), ("y", [1e6, 6.4e6]), ("z", [1000.0, 8000.0])):
            meta.createVariable(var, "f8", ("Location",))[:] = values
        ds.createGroup("ObsValue").createVariable("x", "f8", ("Location",))[:] = [0.0, 0.0]
        ds.createGroup("ObsError").createVariable("x", "f8", ("Location",))[:] = [1e6, 1e6]
    config = {"model plugin": "qg", "time window": {"begin": "2009-12-31T21:00:00Z", "length": "PT6H"},
              "geometry": {"nx": 40, "ny": 20, "depths": OOPS_DEPTHS},
              "state": {"date": str(DATE), "analytic init": {"method": "large-vortices"}},
              "observations": {"observers": [{"obs space": {"name": "psi", "simulated variables": ["x"],
                                                            "obsdatain": {"filename": str(name)}},
                                              "obs operator": {"name": "Identity"}}]}}
    with pytest.raises(ConfigError) as info:
        pyoops.run("hofx", config)
    message = str(info.value)
    assert "obs.nc" in message and "outside the QG domain" in message and "y[1]" in message and "\n" not in message


def test_displacement_check_at_run_time():
    # Winds of 200 m/s with a time step chosen for 100 m/s: 2.4 grid lengths per step.
    g = geometry(flat=True)
    model = QgModel({"tstep": "PT1H", "maximum wind speed": 100.0}, g)
    x = state(g, method="uniform field", **{"zonal wind": [200.0, 200.0]})
    with pytest.raises(NumericalError, match="2.40 grid lengths"):
        model.step(x.fields)


# ----------------------------------------------------------------------------------------------
# Analytic states
# ----------------------------------------------------------------------------------------------
def test_analytic_states():
    g = geometry()
    x = state(g, method="baroclinic-instability")
    # OOPS: u = -2 + 60 z / H at the layer middles, 11.5 and 41.5 m/s; no meridional wind.
    np.testing.assert_allclose(x.fields["u"][:, :, 0], [[11.5] * 20, [41.5] * 20], rtol=1e-12)
    assert np.abs(x.fields["v"]).max() < 1e-12
    x = state(g, method="large-vortices")
    assert np.abs(x.fields["u"][1]).max() == pytest.approx(np.pi * 41.5, rel=0.01)
    assert np.all(x.fields["x"][:, [0, -1], :] == 0.0)
    x = state(g, method="uniform field", uval=3.0e6)
    assert np.all(x.fields["x"] == 3.0e6) and not np.abs(x.fields["u"]).any()
    with pytest.raises(ConfigError) as info:
        state(g, method="vortex")
    assert all(m in str(info.value) for m in QgState.analytic_methods)


# ----------------------------------------------------------------------------------------------
# Physics: steady states, conservation, waves, instability
# ----------------------------------------------------------------------------------------------
def test_steady_zonal_flow_stays_steady():
    g = geometry(flat=True)
    x0 = state(g, method="uniform field", **{"zonal wind": [10.0, 30.0]})
    x1 = run(g, x0, "P10D")
    for var in ("x", "q", "u", "v"):
        scale = np.abs(x0.fields["u" if var == "v" else var]).max()   # v = 0: relative to the wind
        assert np.abs(x1.fields[var] - x0.fields[var]).max() <= 1e-12 * scale, var


def test_rest_over_orography_stays_at_rest():
    g = geometry()
    x0 = state(g, method="uniform field", uval=1.0e6)
    x1 = run(g, x0, "P2D")
    np.testing.assert_allclose(x1.fields["x"], x0.fields["x"], rtol=1e-12, atol=0)
    assert np.abs(x1.fields["u"]).max() < 1e-9 and np.abs(x1.fields["v"]).max() < 1e-9


def conservation_errors(g: QgGeometry, x0: QgState, days: int) -> tuple[float, float]:
    e0 = energy(g, x0.fields["x"])
    p0, a0 = pv_integrals(g, x0.fields["q"])
    x1 = run(g, x0, f"P{days}D")
    p1, _ = pv_integrals(g, x1.fields["q"])
    return abs(energy(g, x1.fields["x"]) - e0) / e0, float(np.max(np.abs(p1 - p0) / a0))


def test_conservation_baroclinic_waves():
    """No forcing, flat bottom, 10 days of growing baroclinic waves (eddy energy x 150).

    Measured: energy 1.5e-3, PV integrals 2e-4 (relative to the integral of |q|).
    """
    g = geometry(flat=True)
    x0 = state(g, method="baroclinic-instability", perturbation=1.0, **{"bottom wind": 0.0, "top wind": 30.0})
    de, dq = conservation_errors(g, x0, 10)
    assert de < 5e-3 and dq < 1e-3, (de, dq)


def test_conservation_barotropic_vortices():
    """Two barotropic vortex pairs (10 m/s, winds up to 31 m/s), flat bottom, 10 days.

    Measured: energy 7e-3 (the interpolation's damping), PV integrals 3e-15.
    """
    g = geometry(flat=True)
    x0 = state(g, method="large-vortices", **{"bottom wind": 10.0, "top wind": 10.0})
    de, dq = conservation_errors(g, x0, 10)
    assert de < 1e-2 and dq < 1e-12, (de, dq)


def test_rossby_wave_phase_speed():
    """A small barotropic wave moves west at the phase speed of the discrete dispersion relation."""
    g = geometry(flat=True)
    mesh = g.mesh()
    psi = 1.0e5 * np.sin(np.pi * mesh["y"] / g.ly) * np.cos(2 * np.pi * mesh["x"] / g.lx)
    psi[:, [0, -1], :] = 0.0
    fields = FieldSet({"x": psi})
    model = QgModel({"tstep": "PT1H"}, g)
    for _ in range(24):
        fields = model.step(fields)
    phase = np.angle(np.fft.rfft(fields["x"][0, 10])[1]) - np.angle(np.fft.rfft(psi[0, 10])[1])
    # omega = -beta kx / K^2 with the discrete wavenumbers of the centred differences and Laplacian.
    kx = np.sin(2 * np.pi * g.dx / g.lx) / g.dx
    k2 = (2 - 2 * np.cos(2 * np.pi * g.dx / g.lx)) / g.dx ** 2 + (2 - 2 * np.cos(np.pi * g.dy / g.ly)) / g.dy ** 2
    expected = 1.5e-11 * kx / k2 * 86400.0 * (2 * np.pi / g.lx) / kx
    assert phase == pytest.approx(expected, rel=0.01)


def test_baroclinic_instability_grows():
    """OOPS's sheared flow (11.5 / 41.5 m/s, flat bottom) with a 0.1 m/s wave: the eddy energy grows by
    more than 1000 in 10 days (measured: x 3e5, e-folding of the energy 0.57 day in the linear phase)."""
    g = geometry(flat=True)
    x = state(g, method="baroclinic-instability", perturbation=0.1)
    model = QgModel({"tstep": "PT1H"}, g)
    eddies = [eddy_energy(g, x.fields["x"])]
    for _ in range(10):
        x = forecast(model, x, Duration("P1D"), show_progress=False)
        eddies.append(eddy_energy(g, x.fields["x"]))
    assert eddies[10] / eddies[0] > 1e3
    assert eddies[4] / eddies[2] > 10.0          # exponential growth in the linear phase


# ----------------------------------------------------------------------------------------------
# Numerics against independent references
# ----------------------------------------------------------------------------------------------
def test_pv_inversion_against_a_dense_solve():
    """The FFT + tridiagonal inversion equals a dense solve of the five-point problem (small grid)."""
    g = geometry(8, 6)
    nx, ny, dx, dy = g.nx, g.ny, g.dx, g.dy
    f1, f2 = g.coupling
    nyi = ny - 2
    n = 2 * nyi * nx
    a = np.zeros((n, n))

    def idx(layer: int, j: int, i: int) -> int:
        return (layer * nyi + j) * nx + i % nx

    for layer, (fs, other) in enumerate(((f1, 1), (f2, 0))):
        for j in range(nyi):
            for i in range(nx):
                r = idx(layer, j, i)
                a[r, r] = -2 / dx ** 2 - 2 / dy ** 2 - fs
                a[r, idx(layer, j, i + 1)] += 1 / dx ** 2
                a[r, idx(layer, j, i - 1)] += 1 / dx ** 2
                if j > 0:
                    a[r, idx(layer, j - 1, i)] = 1 / dy ** 2
                if j < nyi - 1:
                    a[r, idx(layer, j + 1, i)] = 1 / dy ** 2
                a[r, idx(other, j, i)] = fs
    rng = generator(3, "dense")
    rhs = rng.standard_normal((2, nyi, nx)) * 1e-5
    walls = np.zeros((2, ny, nx))
    walls[:, 0, :], walls[:, -1, :] = rng.standard_normal((2, 1)) * 1e7, rng.standard_normal((2, 1)) * 1e7
    b = rhs.copy()
    b[:, 0, :] -= walls[:, 0, :] / dy ** 2
    b[:, -1, :] -= walls[:, -1, :] / dy ** 2
    expected = np.linalg.solve(a, b.ravel()).reshape(2, nyi, nx)
    got = g.operators.invert_linear(rhs, walls)
    np.testing.assert_allclose(got[:, 1:-1, :], expected, rtol=0, atol=1e-9 * np.abs(expected).max())
    assert np.array_equal(got[:, [0, -1], :], walls[:, [0, -1], :])
    # The model's PV of the result is the right-hand side.
    q = g.operators.pv_linear(got)[:, 1:-1, :]
    np.testing.assert_allclose(q, rhs, atol=1e-9 * np.abs(rhs).max())


def test_bicubic_interpolation_is_exact_for_cubics():
    g = geometry(12, 9)
    ops = g.operators
    rng = generator(4, "cubic")
    shape = (2, ops.nyi, ops.nx)
    xd = rng.uniform(3 * g.dx, 8 * g.dx, shape)
    yd = rng.uniform(0.0, g.ly, shape)
    mesh = g.mesh()

    def cubic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (1 + 2 * x / 1e6 - (x / 1e6) ** 3) * (3 - (y / 1e6) ** 2 + 0.5 * (y / 1e6) ** 3)

    values, gx, gy = Departure(ops, xd, yd, derivative=True).interpolate([cubic(mesh["x"], mesh["y"])],
                                                                         gradient=True)[0]
    np.testing.assert_allclose(values, cubic(xd, yd), rtol=1e-12)
    h = 1.0
    np.testing.assert_allclose(gx, (cubic(xd + h, yd) - cubic(xd - h, yd)) / (2 * h), rtol=1e-6)
    np.testing.assert_allclose(gy, (cubic(xd, yd + h) - cubic(xd, yd - h)) / (2 * h), rtol=1e-6, atol=1e-12)


def test_walls_and_circulation_are_kept():
    """Wall rows stay constant along the walls; the wall circulations of a step are unchanged."""
    g = geometry()
    x0 = state(g, method="baroclinic-instability", perturbation=2.0)
    x1 = run(g, x0, "P2D")
    ops = g.operators
    psi = x1.fields["x"]
    assert np.ptp(psi[:, 0, :], axis=-1).max() == 0.0 and np.ptp(psi[:, -1, :], axis=-1).max() == 0.0
    c0, c1 = ops.wall_constraints(x0.fields["x"]), ops.wall_constraints(psi)
    np.testing.assert_allclose(c1, c0, rtol=1e-9)


def test_batched_steps_equal_member_steps():
    g = geometry()
    ops = g.operators
    base = state(g, method="baroclinic-instability", perturbation=2.0).fields["x"]
    ens = base + 1e5 * generator(5, "ens").standard_normal((5,) + base.shape)
    batched = step(ops, ens, 3600.0)
    for m in range(5):
        single = step(ops, ens[m], 3600.0)
        # Not bitwise: the wall-circulation correction of the step's PV inversion (invert_step_linear in
        # numerics.py) is a (members, k) @ (k, 4) gemm for the batch and a gemv for one member, whose
        # summation orders differ and depend on the BLAS kernel and thread count.  The round-off
        # is relative to the field's scale (|psi| up to 1.3e8: measured max difference 1.5e-8, 1 ulp there),
        # not to each value (psi crosses zero, so an elementwise rtol=1e-15 used 99% of its budget under
        # OPENBLAS_CORETYPE=Haswell with 2 threads).  1e-14 * max|psi| (~45 eps) is round-off scale;
        # a batching error (members mixed or shifted) would be of the size of the 1e5 perturbations.
        np.testing.assert_allclose(batched[m], single, rtol=0, atol=1e-14 * np.abs(single).max())


# ----------------------------------------------------------------------------------------------
# Tangent linear and adjoint
# ----------------------------------------------------------------------------------------------
def linearised(g: QgGeometry, x0: QgState, length: str) -> tuple[QgModel, QgTLM]:
    model, tlm = QgModel({}, g), QgTLM({}, g)
    forecast(model, x0.copy(), Duration(length), post=[TrajectorySaver(tlm)], show_progress=False)
    return model, tlm


def smooth_increment(g: QgGeometry, seed: int) -> GenericIncrement:
    """A balanced increment drawn from a static B (as OOPS's LinearModel test draws its perturbation)."""
    from pyoops.registry import get_registry
    from pyoops.saber.chain import ErrorCovariance

    registry = get_registry()
    cfg = {"covariance model": "SABER",
           "saber central block": {"saber block name": "diffusion", "horizontal length scale": 1.0e6},
           "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": 1.0e6}},
                                  {"saber block name": "QG balance"}]}
    b = ErrorCovariance(cfg, g, ["x", "q", "u", "v"], DATE, registry, registry.model_plugin("qg"))
    return b.randomize(generator(seed, "smooth increment"))


def test_tangent_linear_with_smooth_perturbations():
    """24 h with a perturbation drawn from B (sigma 1e6 m^2/s, 1000 km), as OOPS's LinearModel test:
    the finite-difference error falls linearly with the perturbation size (truncation 0.11 alpha) down
    to 9.4e-8 at alpha = 1e-6, where round-off takes over."""
    g = geometry()
    x0 = state(g, method="baroclinic-instability", perturbation=2.0)
    model, tlm = linearised(g, x0, "P1D")
    dx = smooth_increment(g, 1)
    tl = forecast_tl(tlm, dx.copy(), Duration("P1D")).fields["x"]
    base = run(g, x0, "P1D").fields["x"]
    errors = []
    for alpha in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7):
        xp = x0.copy()
        xp.fields["x"] = xp.fields["x"] + alpha * dx.fields["x"]
        errors.append(np.linalg.norm((run(g, xp, "P1D").fields["x"] - base) / alpha - tl) / np.linalg.norm(tl))
    assert errors[1] < 0.2 * errors[0] and min(errors) < 2e-7, errors


def test_adjoint_over_a_day_with_batched_increments():
    g = geometry()
    x0 = state(g, method="baroclinic-instability", perturbation=2.0)
    _, tlm = linearised(g, x0, "P1D")
    rng = generator(6, "adjoint")
    dx = GenericIncrement(g, FieldSet({"x": rng.standard_normal((3, 2, 20, 40))}), DATE)
    dy = GenericIncrement(g, FieldSet({"x": rng.standard_normal((3, 2, 20, 40))}), DATE + Duration("P1D"))
    mdx = forecast_tl(tlm, dx.copy(), Duration("P1D"))
    mtdy = forecast_ad(tlm, dy.copy(), Duration("P1D"))
    for m in range(3):
        lhs = float(np.vdot(mdx.fields["x"][m], dy.fields["x"][m]))
        rhs = float(np.vdot(dx.fields["x"][m], mtdy.fields["x"][m]))
        # Round-off of an inner product scales with the norms (the products cancel for white noise).
        scale = np.linalg.norm(mdx.fields["x"][m]) * np.linalg.norm(dy.fields["x"][m])
        assert abs(lhs - rhs) <= 1e-14 * scale
    single = forecast_tl(tlm, GenericIncrement(g, FieldSet({"x": dx.fields["x"][1]}), DATE), Duration("P1D"))
    scale = np.abs(single.fields["x"]).max()
    np.testing.assert_allclose(mdx.fields["x"][1], single.fields["x"], rtol=0, atol=1e-12 * scale)


def test_batched_trajectory():
    """A linearisation about an ensemble of trajectories acts member by member."""
    g = geometry()
    ops = g.operators
    base = state(g, method="baroclinic-instability", perturbation=2.0).fields["x"]
    traj = base + 1e6 * generator(7, "traj").standard_normal((2,) + base.shape)
    dx = generator(8, "dx").standard_normal((2,) + base.shape)
    lin = Linearisation(ops, traj, 3600.0)
    tl, ad = lin.step_tl(dx), lin.step_ad(dx)
    for m in range(2):
        one = Linearisation(ops, traj[m], 3600.0)
        np.testing.assert_allclose(tl[m], one.step_tl(dx[m]), rtol=1e-13, atol=1e-13 * np.abs(tl).max())
        np.testing.assert_allclose(ad[m], one.step_ad(dx[m]), rtol=1e-13, atol=1e-13 * np.abs(ad).max())


@pytest.mark.parametrize("nx, ny", [(40, 20), (7, 3)])
def test_interpolation_applied_from_the_points_is_the_sparse_product_to_the_bit(nx, ny):
    """W and W^T applied from the departure points give the numbers of SciPy's CSR products with the
    matrices (and their transposes) that the linearisation stored before: the same products summed in
    the same order.  Departure points spread over [-3 dx, lx + 3 dx] so that the x stencils wrap around
    the periodic boundary both ways, and over [-dy, ly + dy] so that some are moved onto the walls."""
    g = geometry(nx, ny)
    ops = g.operators
    rng = generator(11, "departures")
    batch = (3,)
    shape = batch + (2, ops.nyi, ops.nx)
    dep = Departure(ops, rng.uniform(-3 * g.dx, g.lx + 3 * g.dx, shape), rng.uniform(-g.dy, g.ly + g.dy, shape))
    f = rng.standard_normal((2,) + batch + (2, ny, nx))
    a = rng.standard_normal((2,) + shape)
    mats = dep.matrices()
    wf = dep.apply([f])[0]
    wta = dep.apply_transpose([a])[0]
    for lead in range(2):
        for m, w in enumerate(mats):
            assert np.array_equal(wf[lead, m], (w @ f[lead, m].ravel()).reshape(shape[1:]))
            assert np.array_equal(wta[lead, m], (w.T.tocsr() @ a[lead, m].ravel()).reshape(2, ny, nx))
    with pytest.raises(ValueError, match="trajectory batch"):
        dep.apply([f[:, :2]])


def test_linearisation_storage_memory_and_rebuild():
    """What a built linearisation holds: the departure points and gradients of both stages (12 interior
    arrays), or the two interpolation matrices (16 nonzeros of 8 + 4 bytes per interior point and layer,
    row pointers) and the gradients, or after release() the state only; the numbers are the same to the bit."""
    g = geometry()
    ops = g.operators
    psi = state(g, method="baroclinic-instability", perturbation=2.0).fields["x"]
    dx = generator(12, "dx").standard_normal(psi.shape)
    interior = 2 * ops.nyi * ops.nx
    lin = Linearisation(ops, psi, 3600.0)
    tl, ad = lin.step_tl(dx), lin.step_ad(dx)
    assert lin.psi is None and lin.nbytes == 12 * 8 * interior
    mats = Linearisation(ops, psi, 3600.0, storage="matrices")
    assert np.array_equal(mats.step_tl(dx), tl) and np.array_equal(mats.step_ad(dx), ad)
    assert mats.nbytes == 8 * 8 * interior + 2 * (16 * 12 * interior + 4 * (interior + 1))
    kept = Linearisation(ops, psi, 3600.0, storage="state")
    kept.build()
    kept.release()
    assert not kept.built and kept.nbytes == psi.nbytes
    assert np.array_equal(kept.step_tl(dx), tl) and np.array_equal(kept.step_ad(dx), ad)
    with pytest.raises(RuntimeError, match="storage 'state'"):
        lin.release()
    with pytest.raises(ValueError, match="storage"):
        Linearisation(ops, psi, 3600.0, storage="sparse")


def test_trajectory_storage_state_gives_the_same_numbers():
    """``trajectory: state`` recomputes each step's linearisation from the stored streamfunction and keeps
    at most LINEARISATION_CACHE of them built; TL and AD over a day equal the default's (``departures``)
    and those of ``matrices`` to the bit."""
    from pyoops_qg.model import LINEARISATION_CACHE

    g = geometry()
    x0 = state(g, method="baroclinic-instability", perturbation=2.0)
    rng = generator(13, "storage")
    dx = GenericIncrement(g, FieldSet({"x": rng.standard_normal((2, 20, 40))}), DATE)
    dy = GenericIncrement(g, FieldSet({"x": rng.standard_normal((2, 20, 40))}), DATE + Duration("P1D"))
    out = {}
    for mode in ("departures", "state", "matrices"):
        tlm = QgTLM({"trajectory": mode}, g)
        forecast(QgModel({}, g), x0.copy(), Duration("P1D"), post=[TrajectorySaver(tlm)], show_progress=False)
        tl = forecast_tl(tlm, dx.copy(), Duration("P1D")).fields["x"]
        ad = forecast_ad(tlm, dy.copy(), Duration("P1D")).fields["x"]
        built = [lin.built for lin in tlm._trajectory.values()]
        out[mode] = (tl, ad, sum(built))
    assert out["departures"][2] == out["matrices"][2] == 24 and out["state"][2] == LINEARISATION_CACHE
    for mode in ("state", "matrices"):
        for a, b in zip(out["departures"][:2], out[mode][:2]):
            assert np.array_equal(a, b)


def test_linear_model_needs_the_streamfunction():
    g = geometry()
    tlm = QgTLM({}, g)
    with pytest.raises(ConfigError, match="'x'"):
        tlm.step_tl(FieldSet({"u": np.zeros(g.shape)}), None)


def test_entry_point_registration():
    from pyoops.registry import get_registry, reset_registry

    reset_registry()
    registry = get_registry()
    plugin = registry.model_plugin("qg")
    assert plugin.geometry is QgGeometry and plugin.state is QgState
    assert registry.model.get("QG") is QgModel and registry.linear_model.get("QgTLM") is QgTLM
    for kind, name in (("variable change", "QG"), ("linear variable change", "QG"), ("saber block", "QG balance"),
                       ("saber block", "QG walls"), ("saber block", "QG vertical correlation"),
                       ("obs operator", "WindSpeed"), ("linear obs operator", "WindSpeed")):
        assert name in registry.factory(kind), (kind, name)
