"""``spectral correlation``: symmetry, square root, exact normalisation, Dirac responses, batches, errors.

Tolerances and why:

* symmetry / adjoint / square root: 1e-12 (SABER's defaults); the operator is
  F^-1 diag(s) F with a real even spectrum, so only FFT round-off (~1e-16) remains.
* diag(C) = 1: 1e-12 — the spectrum is divided by its mean, which *is* the diagonal.
* Gaussian Dirac response vs exp(-r^2/(2L^2)): the spectrum is the DFT of the
  periodised Gaussian, so the response is exact up to round-off plus the periodic
  images, bounded by exp(-(P/2)^2/(2L^2)) for separations up to half a period P.
* Matérn Dirac response vs the periodised analytic Matérn: the continuous spectrum
  is truncated at the Nyquist wavenumber; the relative error is of order
  (l k_N)^(d - 2p) = (l k_N)^-3 for nu = 3/2.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from pyoops.config.parameters import validate
from pyoops.generic.grid import Axis, StructuredGrid
from pyoops.registry import get_registry
from pyoops.saber import BlockContext, ErrorCovariance
from pyoops.saber.generic.spectral import (
    SpectralCorrelation,
    gaussian_correlation,
    matern_correlation,
)
from pyoops.util.errors import ConfigError
from pyoops.util.variables import Variables
from pyoops.testing.operators import dense_matrix, random_fields

NAME = "spectral correlation"


def make_block(geometry, config, variables=None, path="B"):
    params = validate(SpectralCorrelation.Parameters, {"saber block name": NAME, **config}, path)
    return SpectralCorrelation(params, BlockContext(geometry, Variables(variables or geometry.variables), path=path))




def levels_grid(nx=12, ny=8, levels=(0.0, 1.0, 2.0), variables=("t", "q")):
    return StructuredGrid([Axis.level_axis("z", list(levels)), Axis.periodic_axis("y", ny, 0.75),
                           Axis.periodic_axis("x", nx, 1.0)], variables)


GRIDS = {
    "1d": lambda: StructuredGrid.periodic_1d(40),
    "2d": lambda: StructuredGrid.periodic_2d(16, 12, variables=("a", "b")),
    "levels": levels_grid,
}
CONFIGS = {
    "gaussian": {"length scale": 0.1},
    "matern": {"length scale": 0.08, "spectrum": "matern", "smoothness": 1.5},
    "matern-rough": {"length scale": {"x": 0.05, "a": 0.05, "b": 0.15, "t": 0.1, "q": 0.2},
                     "spectrum": "matern", "smoothness": 0.5},
}


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("cfg", sorted(CONFIGS))
def test_chain_construction_tests_pass(grid, cfg):
    """The chain's adjoint and square-root tests (1e-12) pass through ErrorCovariance."""
    geometry = GRIDS[grid]()
    config = {"saber central block": {"saber block name": NAME, "adjoint test": True, "square-root test": True,
                                      **CONFIGS[cfg]}}
    cov = ErrorCovariance(config, geometry, geometry.variables, None, get_registry())
    assert isinstance(cov.chain.central, SpectralCorrelation)


def test_chain_square_root_test_can_fail(monkeypatch):
    """A square root that is off by 1e-9 is caught by the construction-time test."""
    geometry = StructuredGrid.periodic_1d(40)
    original = SpectralCorrelation.multiply_sqrt_ad
    monkeypatch.setattr(SpectralCorrelation, "multiply_sqrt_ad", lambda self, f: original(self, f) * (1 + 1e-9))
    config = {"saber central block": {"saber block name": NAME, "length scale": 0.1, "square-root test": True}}
    with pytest.raises(ConfigError, match="square root test failed"):
        ErrorCovariance(config, geometry, geometry.variables, None, get_registry())


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("cfg", sorted(CONFIGS))
def test_dense_symmetric_unit_diagonal_and_square_root(grid, cfg):
    geometry = GRIDS[grid]()
    block = make_block(geometry, CONFIGS[cfg])
    c = dense_matrix(block.multiply, geometry, block.variables)
    scale = np.abs(c).max()
    assert np.abs(c - c.T).max() <= 1e-12 * scale
    np.testing.assert_allclose(np.diag(c), 1.0, rtol=0, atol=1e-12)
    assert np.linalg.eigvalsh(0.5 * (c + c.T)).min() >= -1e-12
    # C^1/2 as a matrix: column j = multiply_sqrt(e_j); its adjoint is the transpose.
    n = block.ctl_vec_size
    s = block.multiply_sqrt(np.eye(n))
    smat = np.concatenate([s[v].reshape(n, -1) for v in block.variables], axis=1).T
    np.testing.assert_allclose(smat @ smat.T, c, rtol=0, atol=1e-12)
    st = block.multiply_sqrt_ad(block.multiply_sqrt(np.eye(n)))  # rows: (S^T S e_j)^T
    np.testing.assert_allclose(st, (smat.T @ smat).T, rtol=0, atol=1e-12)
    assert np.abs(smat - smat.T).max() <= 1e-12  # the symmetric square root


def test_no_vertical_or_cross_variable_correlation():
    geometry = levels_grid()
    block = make_block(geometry, {"length scale": 0.1})
    x = geometry.zeros(block.variables)
    x["t"][1, 3, 5] = 1.0
    out = block.multiply(x)
    assert np.abs(out["q"]).max() == 0.0
    assert np.abs(out["t"][[0, 2]]).max() == 0.0
    assert out["t"][1, 3, 5] == pytest.approx(1.0, abs=1e-12)


def test_level_axis_between_horizontal_axes():
    """Axes [y, z, x] (level axis in the middle) give the same operator as [z, y, x], transposed."""
    y, x = Axis.periodic_axis("y", 8, 0.75), Axis.periodic_axis("x", 12, 1.0)
    z = Axis.level_axis("z", [0.0, 1.0, 2.0])
    odd = StructuredGrid([y, z, x], ["t"])
    usual = StructuredGrid([z, y, x], ["t"])
    cfg = {"length scale": 0.1, "spectrum": "matern"}
    a, b = make_block(odd, cfg), make_block(usual, cfg)
    rng = np.random.default_rng(0)
    f = random_fields(usual, ["t"], rng, (2,))
    g = f.map(lambda arr: arr.transpose(0, 2, 1, 3))
    np.testing.assert_allclose(a.multiply(g)["t"], b.multiply(f)["t"].transpose(0, 2, 1, 3), rtol=0, atol=1e-14)


def test_gaussian_dirac_response_1d():
    n, ell = 400, 0.05
    geometry = StructuredGrid.periodic_1d(n)
    block = make_block(geometry, {"length scale": ell})
    x = geometry.zeros(block.variables)
    x["x"][123] = 1.0
    c = block.multiply(x)["x"]
    r = np.abs(geometry.axis("x").separation(geometry.axis("x").points[123], geometry.axis("x").points))
    # Images at distance >= P/2 = 0.5: exp(-0.5^2/(2 * 0.05^2)) = exp(-50) ~ 2e-22: round-off only.
    np.testing.assert_allclose(c, gaussian_correlation(r, ell), rtol=0, atol=1e-13)


def test_gaussian_dirac_response_2d_anisotropic_domain():
    """Isotropic in physical distance on a 1 x 0.5 domain with 128 x 64 points."""
    geometry = StructuredGrid.periodic_2d(128, 64, 1.0, 0.5)
    ell = 0.05
    block = make_block(geometry, {"length scale": ell})
    x = geometry.zeros(block.variables)
    x["h"][10, 20] = 1.0
    c = block.multiply(x)["h"]
    mesh = geometry.mesh()
    r = geometry.distance({"x": geometry.axis("x").points[20], "y": geometry.axis("y").points[10]}, mesh)
    # Nearest periodic image in y at 0.25 = P_y/2: exp(-0.25^2/(2 ell^2)) = exp(-12.5) = 3.7e-6.
    bound = np.exp(-0.25 ** 2 / (2 * ell ** 2))
    err = np.abs(c - gaussian_correlation(r, ell)).max()
    assert err <= 1.01 * bound
    # ... and these images are all there is: against the periodised Gaussian it is round-off.
    dx = geometry.axis("x").separation(geometry.axis("x").points[20], mesh["x"])
    dy = geometry.axis("y").separation(geometry.axis("y").points[10], mesh["y"])
    per = sum(gaussian_correlation(np.hypot(dx, dy + j * 0.5), ell) for j in (-1, 0, 1))
    np.testing.assert_allclose(c, per, rtol=0, atol=1e-13)


def _periodised(f, r, period=1.0, images=6):
    total = sum(f(np.abs(r + m * period)) for m in range(-images, images + 1))
    return total / sum(f(np.abs(np.array(m * period))) for m in range(-images, images + 1))


@pytest.mark.parametrize("n", [200, 400])
def test_matern_dirac_response_1d(n):
    """nu = 3/2 in 1-D: (1 + r/l) exp(-r/l); error ~ (l k_N)^-3 = (0.05 pi n)^-3 from spectral truncation."""
    ell = 0.05
    geometry = StructuredGrid.periodic_1d(n)
    block = make_block(geometry, {"length scale": ell, "spectrum": "matern"})  # default nu = 3/2
    x = geometry.zeros(block.variables)
    x["x"][0] = 1.0
    c = block.multiply(x)["x"]
    r = np.abs(geometry.axis("x").separation(0.0, geometry.axis("x").points))
    soar = (1 + r / ell) * np.exp(-r / ell)
    np.testing.assert_allclose(matern_correlation(r, ell, 1.5), soar, rtol=0, atol=1e-14)
    tol = (ell * np.pi * n) ** -3  # 3.2e-5 (n = 200) and 4.0e-6 (n = 400); observed 1.9e-5 and 2.4e-6
    err = np.abs(c - _periodised(lambda d: matern_correlation(d, ell, 1.5), r)).max()
    assert err <= tol
    # Against the plain (non-periodic) SOAR, the periodic images add (1 + P/(2l)) exp(-P/(2l)) = 5.0e-4.
    image = (1 + 0.5 / ell) * np.exp(-0.5 / ell)
    assert np.abs(c - soar).max() <= 1.05 * image + tol


def test_matern_dirac_response_2d():
    """nu = 3/2 has the same (1 + r/l) e^(-r/l) in 2-D (spectral exponent p = 5/2)."""
    ell, n = 0.05, 128
    geometry = StructuredGrid.periodic_2d(n, n)
    block = make_block(geometry, {"length scale": ell, "spectrum": "matern", "smoothness": 1.5})
    assert block.exponent == 2.5
    x = geometry.zeros(block.variables)
    x["h"][0, 0] = 1.0
    c = block.multiply(x)["h"]
    mesh = geometry.mesh()
    per = sum(matern_correlation(np.hypot(mesh["x"] + i, mesh["y"] + j), ell, 1.5)
              for i in range(-2, 3) for j in range(-2, 3))
    per /= sum(matern_correlation(np.hypot(i, j), ell, 1.5) for i in range(-2, 3) for j in range(-2, 3))
    assert np.abs(c - per).max() <= 2 * (ell * np.pi * n) ** -3  # 1.0e-4 observed, estimate 1.2e-4


def test_batch_axes_match_loop():
    geometry = levels_grid()
    block = make_block(geometry, CONFIGS["matern-rough"])
    rng = np.random.default_rng(3)
    x = random_fields(geometry, block.variables, rng, (3, 2))
    out = block.multiply(x)
    for i in range(3):
        for j in range(2):
            single = block.multiply(x.map(lambda a, i=i, j=j: a[i, j]))
            for v in block.variables:
                np.testing.assert_allclose(out[v][i, j], single[v], rtol=0, atol=1e-14)
    ctl = rng.standard_normal((4, block.ctl_vec_size))
    s = block.multiply_sqrt(ctl)
    for i in range(4):
        one = block.multiply_sqrt(ctl[i])
        for v in block.variables:
            np.testing.assert_allclose(s[v][i], one[v], rtol=0, atol=1e-14)
    back = block.multiply_sqrt_ad(s)
    assert back.shape == (4, block.ctl_vec_size)


def test_randomize_draws_have_unit_variance():
    """Sample variance of K draws: relative error sqrt(2/K) per point; the grid mean is tested at 4 sigma."""
    geometry = StructuredGrid.periodic_2d(64, 64)
    block = make_block(geometry, {"length scale": 0.03})
    from pyoops.util.random import generator

    k = 400
    draws = block.randomize(generator(11, "test"), (k,))["h"]
    var = (draws ** 2).mean(axis=0)
    # ~ (1/(2L))^2 ~ 280 independent areas: the mean of var has sd <= sqrt(2/K) / sqrt(280) ~ 4e-3.
    assert abs(var.mean() - 1) <= 4 * np.sqrt(2 / k) / np.sqrt(280)
    assert np.sqrt(((var - 1) ** 2).mean()) == pytest.approx(np.sqrt(2 / k), rel=0.25)


def test_application_1024_squared_is_fast():
    geometry = StructuredGrid.periodic_2d(1024, 1024)
    block = make_block(geometry, {"length scale": 0.05})
    x = random_fields(geometry, block.variables, np.random.default_rng(0))
    block.multiply(x)
    start = time.perf_counter()
    block.multiply(x)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"spectral correlation on 1024^2 took {elapsed:.3f} s"


# Bad configurations -------------------------------------------------------------------------
def _error(geometry, config):
    cfg = {"saber central block": {"saber block name": NAME, **config}}
    with pytest.raises(ConfigError) as info:
        ErrorCovariance(cfg, geometry, geometry.variables, None, get_registry())
    message = str(info.value)
    assert "\n" not in message
    return message


def test_negative_length_scale():
    msg = _error(StructuredGrid.periodic_1d(20), {"length scale": -0.1})
    assert "saber central block.length scale" in msg and "positive" in msg and "-0.1" in msg
    msg = _error(StructuredGrid.periodic_1d(20), {"length scale": {"x": 0.0}})
    assert "saber central block.length scale" in msg


def test_missing_variable_in_length_scale_mapping():
    msg = _error(StructuredGrid.periodic_2d(8, 8, variables=("a", "b")), {"length scale": {"a": 0.1}})
    assert "length scale" in msg and "'b'" in msg


def test_rejected_on_channel():
    geometry = StructuredGrid.channel_2d(nx=24, ny=13, levels=[0, 1])
    msg = _error(geometry, {"length scale": 0.1})
    assert "saber central block" in msg and "'y' is bounded" in msg and "diffusion" in msg


def test_smoothness_needs_matern_and_unknown_spectrum():
    assert "smoothness" in _error(StructuredGrid.periodic_1d(20), {"length scale": 0.1, "smoothness": 1.5})
    msg = _error(StructuredGrid.periodic_1d(20), {"length scale": 0.1, "spectrum": "cauchy"})
    assert "spectrum" in msg
    assert "smoothness" in _error(StructuredGrid.periodic_1d(20),
                                  {"length scale": 0.1, "spectrum": "matern", "smoothness": -1})


@pytest.mark.parametrize("length", [0.5, 1.0000001, 2.0, 5.0])
def test_periodised_gaussian_spectrum_poisson_form_equals_the_image_sum(length):
    """For L > P the spectrum is evaluated by Poisson summation; both forms are one function.
    Reference: 401 images summed directly (the tail is below e^-40 for these L). Agreement to
    1e-14 of the largest coefficient: round-off of the 64-point sums and FFT (measured 2e-16)."""
    from pyoops.generic.grid import Axis
    from pyoops.saber.generic.spectral import periodised_gaussian_spectrum

    axis = Axis.periodic_axis("x", 64, 1.0)
    sep = np.fft.fftfreq(64) * 64 * axis.spacing
    j = np.arange(-200, 201)
    ref = np.clip(np.fft.fft(np.exp(-0.5 * ((sep[:, None] + j[None, :]) / length) ** 2).sum(axis=1)).real, 0, None)
    got = periodised_gaussian_spectrum(axis, length)
    assert np.max(np.abs(got - ref)) <= 1e-14 * np.max(ref)
    assert np.all(np.isfinite(periodised_gaussian_spectrum(axis, 1e300)))
