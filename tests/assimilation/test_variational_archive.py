"""``pyoops variational`` with ``output archive``: the innovation archive of one analysis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyoops

DATE = "2010-01-02T00:00:00Z"


def test_variational_archive(tmp_path: Path) -> None:
    import xarray as xr

    from pyoops.fields.fieldset import FieldSet
    from pyoops.generic.obs_space import ObsSpace, ObsSpaceParameters
    from pyoops.util.datetime import TimeWindow
    from pyoops_lorenz96 import Lorenz96Geometry, Lorenz96State

    geometry = Lorenz96Geometry({"resol": 40})
    rng = np.random.default_rng(1)
    truth = 8.0 + 3.0 * np.sin(2 * np.pi * np.arange(40) / 40)
    xb = truth + 0.5 * rng.standard_normal(40)
    Lorenz96State(geometry, FieldSet({"x": xb}), DATE).write(str(tmp_path / "bg.nc"))
    window = TimeWindow("2010-01-01T21:00:00Z", "PT6H")
    gen = {"name": "grid", "simulated variables": ["x"],
           "generate": {"begin": "PT3H", "obs frequency": "PT6H", "obs density": 40, "obs error": 1.0}}
    space = ObsSpace(ObsSpaceParameters.model_validate(gen), window, geometry)
    y = truth + rng.standard_normal(40)
    y[7] = np.nan                                     # a missing observation: not archived
    space.put_db("ObsValue", "x", y)
    space.save(str(tmp_path / "obs.nc"))
    cfg = {"model plugin": "lorenz96",
           "cost function": {
               "cost type": "3D-Var", "time window": {"begin": "2010-01-01T21:00:00Z", "length": "PT6H"},
               "geometry": {"resol": 40}, "background": {"date": DATE, "filename": str(tmp_path / "bg.nc")},
               "background error": {"covariance model": "SABER", "saber central block": {
                   "saber block name": "spectral correlation", "length scale": 0.03},
                   "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": 0.5}}]},
               "observations": {"observers": [{
                   "obs space": {"name": "grid", "simulated variables": ["x"],
                                 "obsdatain": {"filename": str(tmp_path / "obs.nc")}},
                   "obs operator": {"name": "Identity"}}]}},
           "variational": {"minimizer": {"algorithm": "DRPCG"},
                           "iterations": [{"ninner": 40, "gradient norm reduction": 1e-10}]},
           "output archive": {"filename": str(tmp_path / "innovations.nc"),
                              "regions": [{"name": "first quarter", "bounds": {"x": [0.0, 0.25]}}]}}
    summary = pyoops.run("variational", cfg)
    path = tmp_path / "innovations.nc"
    assert str(path) in summary["outputs"]
    used = np.isfinite(y)
    np.testing.assert_allclose(xr.open_dataset(path, group="ombg")["value"].values, (y - xb)[used], atol=1e-12)
    np.testing.assert_allclose(xr.open_dataset(path, group="BackgroundErrorVariance")["value"].values, 0.25,
                               rtol=1e-9)
    cycles = xr.open_dataset(path, group="Cycle")
    assert cycles["nobs"].values.tolist() == [39]
    assert cycles["costAtAnalysis"].values[0] == summary["final J"]
    meta = xr.open_dataset(path, group="MetaData")
    assert set(meta["obsGroup"].values) == {"grid"}
    # Region labels from the coordinates: [0, 0.25) is the first 10 of the 40 points (one missing).
    first = meta["x"].values < 0.25
    assert first.sum() == 9 and set(meta["region"].values[first]) == {"first quarter"}
    assert set(meta["region"].values[~first]) == {""}
    # Randomized diag(HBH^T): unbiased, relative noise sqrt(2/K).
    cfg["output archive"] = {"filename": str(tmp_path / "random.nc"),
                             "background error variance": {"exact limit": 0, "samples": 64, "seed": 2}}
    pyoops.run("variational", cfg)
    ratio = xr.open_dataset(tmp_path / "random.nc", group="BackgroundErrorVariance")["value"].values / 0.25
    assert abs(ratio.mean() - 1) < 0.3 and 0.5 * np.sqrt(2 / 64) < ratio.std() < 2 * np.sqrt(2 / 64)
