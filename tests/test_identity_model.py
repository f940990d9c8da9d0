"""The generic persistence model ``Identity``: forecasts, TL/AD, and 4D-Var with it equals the BLUE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

import pyoops
from pyoops.fields.fieldset import FieldSet
from pyoops.generic.identity_model import IdentityLinearModel, IdentityModel
from pyoops.registry import get_registry
from pyoops.saber.generic.explicit import read_matrix
from pyoops.testing.linear_gaussian import desroziers_experiment


def test_step_tl_and_ad_are_the_identity() -> None:
    registry = get_registry()
    geometry = registry.model_plugin("lorenz96").make_geometry({"resol": 8})
    model = IdentityModel(IdentityModel.Parameters(tstep="PT3H"), geometry)
    linear = IdentityLinearModel(IdentityLinearModel.Parameters(tstep="PT3H"), geometry)
    x = np.random.default_rng(0).standard_normal((3, 8))
    fields = FieldSet({"x": x})
    out = model.step(fields)
    np.testing.assert_array_equal(out["x"], x)
    out["x"][0, 0] = 99.0                        # the step returns a copy
    assert fields["x"][0, 0] == x[0, 0]
    dx, dy = FieldSet({"x": x[0]}), FieldSet({"x": x[1]})
    # <M dx, dy> = <dx, M^T dy> (exactly: both are the same dot product).
    assert np.dot(linear.step_tl(dx, FieldSet({}))["x"], dy["x"]) == np.dot(dx["x"], linear.step_ad(dy, FieldSet({}))["x"])
    assert str(model.time_resolution) == "PT3H"


def test_4dvar_with_persistence_is_the_blue_of_the_stacked_observations(tmp_path: Path) -> None:
    """One 4D-Var cycle of the twin (obs at -3 h and 0 of a 6 h window, persistence, explicit B):
    x_a = x_b + B H^T (H B H^T + R)^-1 (y - H x_b) with H = [I; I], R = I."""
    cfg, _ = desroziers_experiment("4D-Var", tmp_path, model_plugin="lorenz96", geometry_config={"resol": 40},
                                   cycles=1)
    pyoops.run("cycle", cfg)
    b = read_matrix(str(tmp_path / "data" / "assumed_b.nc"))
    archive = tmp_path / "run" / "innovations.nc"
    y = xr.open_dataset(archive, group="ObsValue")["value"].values
    hxb = xr.open_dataset(archive, group="HofXBackground")["value"].values
    hxa = xr.open_dataset(archive, group="HofXAnalysis")["value"].values
    h = np.vstack([np.eye(40), np.eye(40)])
    xb = hxb[:40]
    np.testing.assert_array_equal(hxb[40:], xb)        # persistence: the same state at both times
    xa = xb + b @ h.T @ np.linalg.solve(h @ b @ h.T + np.eye(80), y - h @ xb)
    # Measured 3e-13 (DRPCG to gradient reduction 1e-10; values O(1)); 1e-10 leaves room for other BLAS
    # kernels and stays far below any modelling error (a wrong H or window would give O(0.1)).
    np.testing.assert_allclose(hxa, h @ xa, rtol=0, atol=1e-10)
