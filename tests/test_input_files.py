"""Every data file every application reads is checked the same way.

Each case writes one bad input file with plain netCDF4 code (the layouts of
``docs/file_formats.rst``), runs a real application through :func:`pyoops.cli.main`
and checks the pyoops contract: exit status 2, one ``pyoops: error:`` line naming the
file and what differs, and no output written.  The checks live in the one reader every
application uses (:func:`pyoops.fields.netcdf.read_fields` for fields,
:class:`pyoops.generic.obs_space.ObsSpace` for observations), so one application per
rule is enough; a few cases run a second application to show that.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest
import yaml

import pyoops
from pyoops.cli import main
from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import read_fields, write_fields
from pyoops.generic.grid import Axis, StructuredGrid
from pyoops.util import DateTime, InputFileError

DATE = "2010-01-01T00:00:00Z"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
SECONDS = int((datetime.datetime(2010, 1, 1, tzinfo=datetime.timezone.utc) - EPOCH).total_seconds())
N = 8


# Plain-netCDF4 writers of the documented layouts -------------------------------------------------
def x0() -> np.ndarray:
    return 8.0 + np.sin(2 * np.pi * np.arange(N) / N)


def write_state(path: str, x: Any = None, coordinates: Any = "default", dtype: Any = "f8",
                dims: tuple[str, ...] = ("position",), **attrs: Any) -> str:
    """A Lorenz-96 state: attribute ``date``, dimension and coordinate ``position``, variable ``x``.

    ``coordinates=None`` leaves the coordinate variable out; ``dtype``/``dims`` make ``x`` malformed.
    """
    x = x0() if x is None else np.asarray(x)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.date = DATE
        for key, value in attrs.items():
            ds.setncattr(key, value)
        ds.createDimension("position", N)
        if coordinates is not None:
            pos = np.arange(N) / N if isinstance(coordinates, str) else coordinates
            ds.createVariable("position", "f8", ("position",))[:] = pos
        for extra in dims:
            if extra not in ds.dimensions:
                ds.createDimension(extra, 3)
        var = ds.createVariable("x", dtype, dims)
        if dtype == "f8" and dims == ("position",):
            var[:] = x
        elif dtype is str:
            var[:] = np.array([f"{v:.3f}" for v in x], dtype=object)
    return path


def write_obs(path: str, positions: Any = None, times: Any = None, values: Any = None, errors: Any = 0.4,
              time_type: str = "i8", value_dim: int | None = None) -> str:
    """An observation file: dimension ``Location``, ``MetaData/{dateTime,x}``, ``ObsValue/x``, ``ObsError/x``.

    ``value_dim`` puts ``ObsValue/x`` on a dimension of that length instead of ``Location``.
    """
    positions = np.arange(N) / N if positions is None else np.asarray(positions, dtype=float)
    n = positions.size
    times = np.full(n, SECONDS) if times is None else np.asarray(times)
    values = x0() + 0.5 if values is None else np.asarray(values, dtype=float)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.createDimension("Location", n)
        meta = ds.createGroup("MetaData")
        t = meta.createVariable("dateTime", time_type, ("Location",))
        t.units = "seconds since 1970-01-01T00:00:00Z"
        t[:] = times
        meta.createVariable("x", "f8", ("Location",))[:] = positions
        if value_dim is not None:
            ds.createDimension("Other", value_dim)
        dim = "Other" if value_dim is not None else "Location"
        ds.createGroup("ObsValue").createVariable("x", "f8", (dim,))[:] = values
        ds.createGroup("ObsError").createVariable("x", "f8", ("Location",))[:] = np.broadcast_to(errors, (n,))
    return path


def forecast_config() -> dict[str, Any]:
    return {"model plugin": "lorenz96", "geometry": {"resol": N},
            "model": {"name": "Lorenz96", "f": 8.0, "tstep": "PT6H"},
            "initial condition": {"date": DATE, "filename": "bg.nc"},
            "forecast length": "PT6H", "output": {"filename": "out/fc.nc"}}


def hofx_config() -> dict[str, Any]:
    return {"model plugin": "lorenz96", "time window": {"begin": "2009-12-31T21:00:00Z", "length": "PT6H"},
            "geometry": {"resol": N}, "state": {"date": DATE, "filename": "bg.nc"},
            "observations": {"observers": [{
                "obs space": {"name": "grid points", "simulated variables": ["x"],
                              "obsdatain": {"filename": "obs.nc"}, "obsdataout": {"filename": "out/hofx.nc"}},
                "obs operator": {"name": "Identity"}}]}}


def ensemble_forecast_config() -> dict[str, Any]:
    return {"model plugin": "lorenz96", "geometry": {"resol": N},
            "model": {"name": "Lorenz96", "f": 8.0, "tstep": "PT6H"},
            "initial condition": {"members from template": {"template": {"date": DATE, "filename": "ens.%mem%.nc"},
                                                            "pattern": "%mem%", "nmembers": 2}},
            "forecast length": "PT6H", "output": {"filename": "out/fc.%mem%.nc"}}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the current directory, holding a good state and a good observation file."""
    monkeypatch.chdir(tmp_path)
    write_state("bg.nc")
    write_obs("obs.nc")
    return tmp_path


@pytest.fixture
def fails(capsys: pytest.CaptureFixture[str]) -> Callable[..., str]:
    """Run ``pyoops <app> cfg.yaml`` on ``config``; assert the contract; return the one error line."""

    def run(app: str, config: dict[str, Any], filename: str) -> str:
        Path("cfg.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        capsys.readouterr()
        code = main([app, "cfg.yaml"])
        err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("pyoops INFO: ")]
        assert code == 2, err
        assert len(err) == 1, err
        assert err[0].startswith("pyoops: error: ") and filename in err[0], err[0]
        assert not Path("out").exists() or not any(Path("out").iterdir()), "an output was written"
        assert not [p for p in Path(".").rglob(".*") if p.is_file()], "a temporary file was left"
        return err[0]

    return run


# 1. Geometry identity of field files ---------------------------------------------------------------
SW_MODEL = {"name": "ShallowWater", "tstep": "PT15M"}


def _sw_state(path: str, geometry_config: dict[str, Any]) -> None:
    from pyoops_shallow_water import ShallowWaterGeometry

    geometry = ShallowWaterGeometry(geometry_config)
    write_fields(path, geometry, geometry.zeros(geometry.variables), DateTime(DATE))


def test_shallow_water_state_on_another_spacing(workdir, fails):
    """Same nx, ny, another dx: the spacing is named, with units and the geometry key."""
    _sw_state("sw.nc", {"nx": 8, "ny": 8, "dx": 100_000.0})
    config = {"model plugin": "shallow_water", "geometry": {"nx": 8, "ny": 8}, "model": SW_MODEL,
              "initial condition": {"date": DATE, "filename": "sw.nc"},
              "forecast length": "PT15M", "output": {"filename": "out/fc.nc"}}
    line = fails("forecast", config, "sw.nc")
    assert "written on another geometry: x spacing 100000 m in the file, 118750 m in the geometry (geometry.dx)" \
        in line


def test_shallow_water_state_on_an_equal_grid_is_read(workdir):
    """An explicit dx equal to the default one describes the same grid."""
    _sw_state("sw.nc", {"nx": 8, "ny": 8})
    config = {"model plugin": "shallow_water", "geometry": {"nx": 8, "ny": 8, "dx": 118750.0},
              "model": SW_MODEL, "initial condition": {"date": DATE, "filename": "sw.nc"},
              "forecast length": "PT15M", "output": {"filename": "out/fc.nc"}}
    pyoops.run("forecast", config)
    assert Path("out/fc.nc").is_file()


def test_coordinates_in_other_units(workdir, fails):
    from pyoops_shallow_water import ShallowWaterGeometry

    geometry = ShallowWaterGeometry({"nx": 8, "ny": 8})
    _sw_state("sw.nc", {"nx": 8, "ny": 8})
    with netCDF4.Dataset("sw.nc", "a") as ds:
        ds["x"].units = "km"
        ds["x"][:] = geometry.coordinates["x"] / 1000
    config = {"model plugin": "shallow_water", "geometry": {"nx": 8, "ny": 8}, "model": SW_MODEL,
              "initial condition": {"date": DATE, "filename": "sw.nc"},
              "forecast length": "PT15M", "output": {"filename": "out/fc.nc"}}
    assert "coordinate 'x' is in 'km' in the file, 'm' in the geometry" in fails("forecast", config, "sw.nc")


def test_shifted_coordinates(workdir, fails):
    write_state("bg.nc", coordinates=(np.arange(N) + 0.5) / N)
    line = fails("forecast", forecast_config(), "bg.nc")
    assert "written on another geometry: coordinate position[0] = 0.0625 in the file, 0 in the geometry" in line


def test_other_spacing_of_a_plain_file_in_hofx(workdir, fails):
    """The same reader serves every application: hofx refuses what forecast refuses."""
    write_state("bg.nc", coordinates=np.arange(N) / (2 * N))
    line = fails("hofx", hofx_config(), "bg.nc")
    assert "position spacing 0.0625 in the file, 0.125 in the geometry (geometry.resol)" in line


def test_coordinates_computed_another_way_are_accepted(workdir):
    """Coordinates equal to the geometry's within 1e-9 of the spacing (other rounding) are the same grid."""
    write_state("bg.nc", coordinates=np.linspace(0.0, 1.0, N, endpoint=False) * (1 + 1e-15))
    pyoops.run("forecast", forecast_config())
    assert Path("out/fc.nc").is_file()


def test_missing_coordinate_variable(workdir, fails):
    write_state("bg.nc", coordinates=None)
    line = fails("forecast", forecast_config(), "bg.nc")
    assert "has no coordinate variable 'position'" in line


def test_geometry_attribute_of_another_grid(workdir, fails):
    """Same points, another domain (the file's ``geometry`` attribute): named by its item."""
    other = StructuredGrid([Axis("x", np.arange(N) / N, 0.0, 2.0, True, dim="position")], ["x"])
    write_fields("bg.nc", other, FieldSet({"x": x0()}), DateTime(DATE))
    line = fails("forecast", forecast_config(), "bg.nc")
    assert "written on another geometry: axes[x].upper = 2 in the file, 1 in the geometry" in line


def test_geometry_attribute_that_is_not_json(workdir, fails):
    write_state("bg.nc", geometry="a 40-point ring")
    assert "global attribute 'geometry' is not the JSON description" in fails("forecast", forecast_config(), "bg.nc")


def test_geometry_attribute_of_a_generic_grid_is_accepted(workdir):
    """A file written through another geometry class on the same grid is read ("type" is not identity)."""
    write_fields("bg.nc", StructuredGrid.periodic_1d(N), FieldSet({"x": x0()}), DateTime(DATE))
    pyoops.run("forecast", forecast_config())
    assert Path("out/fc.nc").is_file()


def test_state_of_another_geometry_read_on_request(workdir, caplog):
    """``allow other geometry: true`` reads a file of the same shape point by point, with a warning."""
    write_state("bg.nc", coordinates=(np.arange(N) + 0.5) / N)
    config = forecast_config()
    config["initial condition"]["allow other geometry"] = True
    pyoops.run("forecast", config)
    assert Path("out/fc.nc").is_file()
    assert any("bg.nc: written on another geometry (coordinate position[0]" in r.getMessage() and
               r.levelname == "WARNING" for r in caplog.records)


def test_ensemble_member_on_another_grid(workdir, fails):
    write_state("ens.1.nc")
    write_state("ens.2.nc", coordinates=(np.arange(N) + 0.25) / N)
    line = fails("ensemble-forecast", ensemble_forecast_config(), "ens.2.nc")
    assert "written on another geometry: coordinate position[0]" in line


def test_ensemble_file_with_members_on_another_grid(workdir, fails):
    other = StructuredGrid([Axis("x", np.arange(N) / N, 0.0, 2.0, True, dim="position")], ["x"])
    write_fields("ens.nc", other, FieldSet({"x": np.stack([x0(), x0() + 1])}), DateTime(DATE), kind="ensemble")
    config = ensemble_forecast_config()
    config["initial condition"] = {"filename": "ens.nc", "date": DATE}
    assert "axes[x].upper = 2 in the file, 1 in the geometry" in fails("ensemble-forecast", config, "ens.nc")


# 2. Malformed field files --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["S1", str], ids=["char", "string"])
def test_field_of_text_type(workdir, fails, dtype):
    write_state("bg.nc", dtype=dtype)
    line = fails("forecast", forecast_config(), "bg.nc")
    assert "variable 'x' is of type text (char or string), expected float64 numbers" in line


def test_field_with_wrong_dimensions(workdir, fails):
    write_state("bg.nc", dims=("position", "level"))
    line = fails("forecast", forecast_config(), "bg.nc")
    assert "variable 'x' has dimensions ('position', 'level'), expected ('position',)" in line


def test_coordinate_of_text_type(workdir, fails):
    with netCDF4.Dataset("bg.nc", "w") as ds:
        ds.date = DATE
        ds.createDimension("position", N)
        ds.createVariable("position", str, ("position",))[:] = np.array([str(i) for i in range(N)], dtype=object)
        ds.createVariable("x", "f8", ("position",))[:] = x0()
    line = fails("forecast", forecast_config(), "bg.nc")
    assert "coordinate variable 'position' is of type text" in line


def test_non_finite_state_values_are_counted(workdir, fails):
    x = x0()
    x[[1, 4]] = np.nan
    x[6] = -np.inf
    write_state("bg.nc", x)
    line = fails("forecast", forecast_config(), "bg.nc")
    assert "variable 'x' has 3 non-finite value(s) of 8 (2 NaN or fill value, 1 infinite)" in line


def test_non_finite_ensemble_member(workdir, fails):
    x = x0()
    x[2] = np.nan
    write_state("ens.1.nc")
    write_state("ens.2.nc", x)
    assert "1 non-finite value(s)" in fails("ensemble-forecast", ensemble_forecast_config(), "ens.2.nc")


def test_inflation_field_with_negative_values(workdir, fails):
    """The Ensemble block's inflation field is a field file like any other: read, then refused."""
    write_fields("infl.nc", StructuredGrid.periodic_1d(N), FieldSet({"x": np.full(N, -1.0)}), DateTime(DATE))
    write_state("ens.1.nc")
    write_state("ens.2.nc", x0() + 1)
    config = {"model plugin": "lorenz96", "geometry": {"resol": N},
              "background": {"date": DATE, "filename": "bg.nc"},
              "background error": {
                  "covariance model": "SABER",
                  "ensemble": {"members from template": {"template": {"filename": "ens.%mem%.nc"},
                                                         "pattern": "%mem%", "nmembers": 2}},
                  "saber central block": {"saber block name": "Ensemble",
                                          "inflation field": {"filename": "infl.nc"}}},
              "dirac": {"ixdir": [0]}, "output dirac": {"filename": "out/dirac.nc"}}
    assert "inflation field 'x' has 8 negative value(s) of 8" in fails("dirac", config, "infl.nc")


# 3. Observation files ------------------------------------------------------------------------------
def test_non_finite_observation_time(workdir, fails):
    times = np.full(N, float(SECONDS))
    times[3] = np.nan
    write_obs("obs.nc", times=times, time_type="f8")
    line = fails("hofx", hofx_config(), "obs.nc")
    assert "MetaData/dateTime has 1 non-finite value(s) of 8" in line and "every observation needs a time" in line


def test_observation_time_beyond_any_date(workdir, fails):
    times = np.full(N, float(SECONDS))
    times[0] = 1e20
    write_obs("obs.nc", times=times, time_type="f8")
    line = fails("hofx", hofx_config(), "obs.nc")
    assert "1 observation(s) outside the time window" in line and "1e+20 seconds since" in line


def test_non_finite_location(workdir, fails):
    positions = np.arange(N) / N
    positions[[0, 5]] = [np.inf, np.nan]
    write_obs("obs.nc", positions=positions)
    line = fails("hofx", hofx_config(), "obs.nc")
    assert "MetaData/x has 2 non-finite value(s) of 8 (1 NaN or fill value, 1 infinite)" in line


def test_location_outside_the_domain(workdir, fails):
    positions = np.arange(N) / N
    positions[2] = 1.5
    write_obs("obs.nc", positions=positions)
    line = fails("hofx", hofx_config(), "obs.nc")
    assert "1 observation(s) outside the domain: x[2] = " in line and "1.5" in line


def test_obs_value_on_another_dimension(workdir, fails):
    write_obs("obs.nc", values=np.zeros(N + 1), value_dim=N + 1)
    assert "ObsValue/x has dimensions ('Other',), expected ('Location',)" in fails("hofx", hofx_config(), "obs.nc")


def test_obs_value_of_text_type(workdir, fails):
    write_obs("obs.nc")
    with netCDF4.Dataset("obs.nc", "a") as ds:
        ds["ObsValue"].createVariable("y", "S1", ("Location",))
    assert "ObsValue/y is of type text" in fails("hofx", hofx_config(), "obs.nc")


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_obs_value(workdir, fails, bad):
    values = x0()
    values[[2, 3]] = bad
    write_obs("obs.nc", values=values)
    line = fails("hofx", hofx_config(), "obs.nc")
    assert "ObsValue/x has 2 infinite value(s) of 8 (a missing observation is NaN or the fill value)" in line


@pytest.mark.parametrize("bad", [0.0, -1.0, np.inf, np.nan])
def test_bad_obs_error_where_obs_value_is_present(workdir, fails, bad):
    errors = np.full(N, 0.4)
    errors[5] = bad
    write_obs("obs.nc", errors=errors)
    line = fails("hofx", hofx_config(), "obs.nc")
    assert f"ObsError/x must be positive and finite where ObsValue is present; 1 value(s) are not (first: " \
           f"ObsError/x[5] = {bad:g})" in line


def test_missing_obs_values_are_excluded_counted_and_logged(workdir, capsys):
    """NaN and the fill value mark missing observations: not used, logged, and no statistic is NaN or inf."""
    values = x0() + 0.5
    values[1] = np.nan
    errors = np.full(N, 0.4)
    errors[1] = np.nan  # no error needed where the value is missing
    write_obs("obs.nc", values=values, errors=errors)
    with netCDF4.Dataset("obs.nc", "a") as ds:  # location 6 left at the fill value
        ds["ObsValue/x"][6] = np.ma.masked
    summary = pyoops.run("hofx", hofx_config())
    stats = summary["observers"]["grid points"]
    assert all(np.isfinite(v) for v in stats.values())
    assert stats["y - H(x) rms"] == pytest.approx(0.5)
    assert "2 of 8 ObsValue/x missing" in capsys.readouterr().err
    with netCDF4.Dataset("out/hofx.nc") as ds:
        assert ds["EffectiveQC/x"][:].tolist() == [0, 1, 0, 0, 0, 0, 1, 0]


def test_missing_obs_values_do_not_reach_variational_statistics(workdir):
    """3D-Var: ombg/oman statistics over the used observations only, whatever EffectiveQC says."""
    values = x0() + 0.5
    values[[0, 7]] = np.nan
    write_obs("obs.nc", values=values)
    with netCDF4.Dataset("obs.nc", "a") as ds:  # an input flag 'used' on a missing value does not make it used
        ds.createGroup("EffectiveQC").createVariable("x", "i4", ("Location",))[:] = np.zeros(N, dtype=np.int32)
    config = {"model plugin": "lorenz96",
              "cost function": {"cost type": "3D-Var",
                                "time window": {"begin": "2009-12-31T21:00:00Z", "length": "PT6H"},
                                "geometry": {"resol": N}, "analysis variables": ["x"],
                                "background": {"date": DATE, "filename": "bg.nc"},
                                "background error": {"covariance model": "SABER",
                                                     "saber central block": {"saber block name": "ID"}},
                                "observations": hofx_config()["observations"]},
              "variational": {"minimizer": {"algorithm": "DRPCG"},
                              "iterations": [{"ninner": 5, "gradient norm reduction": 1e-10}]},
              "output": {"filename": "out/an.nc"}}
    summary = pyoops.run("variational", config)
    stats = summary["observers"]["grid points"]
    assert stats["nobs"] == N - 2
    assert stats["ombg rms"] == pytest.approx(0.5) and np.isfinite(stats["oman rms"])


def test_read_fields_directly_names_the_file(tmp_path):
    """The library call raises InputFileError (what the CLI prints as one line)."""
    path = write_state(str(tmp_path / "bg.nc"), coordinates=np.arange(N) / (2 * N))
    with pytest.raises(InputFileError) as err:
        read_fields(path, StructuredGrid.periodic_1d(N), ["x"], DateTime(DATE))
    assert err.value.filename == path and err.value.message.startswith("written on another geometry: position spacing")
