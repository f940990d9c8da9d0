"""The ``pyoops`` command line: bad input, ``--debug``, ``--validate-only``, JSON schemas, ``plugins``.

Every bad-input case runs twice: in-process through :func:`pyoops.cli.main`
(fast, with capsys) and in a fresh interpreter (``python -m pyoops.cli``, all
cases in parallel), where the exit code is 2, standard error holds one
``pyoops: error:`` line naming the key or file and what was expected, and no
traceback.  Nothing half-written is left: no output of a run that failed
before writing, no partial file, no ``.*.tmp`` file of an atomic write.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest
import yaml

from pyoops.cli import main


# Helpers (self-contained: plain-netCDF4 writers following the documented layouts) ---------------
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def write_yaml(path: "str | os.PathLike[str]", data: dict[str, Any]) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(dict(data), sort_keys=False), encoding="utf-8")
    return str(path)


def write_lorenz96_state(path: "str | os.PathLike[str]", x: Any, date: str | None) -> str:
    """Layout of ``pyoops.fields.netcdf``: attribute ``date``, dimension and coordinate ``position``, ``x``."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        if date is not None:
            ds.date = date
        ds.createDimension("position", n)
        ds.createVariable("position", "f8", ("position",))[:] = np.arange(n) / n
        ds.createVariable("x", "f8", ("position",))[:] = x
    return str(path)


def write_obs_file(path: "str | os.PathLike[str]", positions: Any, times: list[str], values: Any = None,
                   errors: Any = 1.0, skip_groups: tuple[str, ...] = ()) -> str:
    """IODA-like layout of ``pyoops.generic.obs_space``; ``skip_groups`` makes broken files."""
    positions = np.asarray(positions, dtype=np.float64)
    n = positions.size
    values = np.zeros(n) if values is None else np.asarray(values, dtype=np.float64)
    errors = np.broadcast_to(np.asarray(errors, dtype=np.float64), (n,))
    seconds = [round((datetime.datetime.fromisoformat(t.replace("Z", "+00:00")) - EPOCH).total_seconds())
               for t in times]
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.createDimension("Location", n)
        if "MetaData" not in skip_groups:
            meta = ds.createGroup("MetaData")
            dt = meta.createVariable("dateTime", "i8", ("Location",))
            dt.units = "seconds since 1970-01-01T00:00:00Z"
            dt[:] = np.array(seconds, dtype=np.int64)
            meta.createVariable("x", "f8", ("Location",))[:] = positions
        for group, data in (("ObsValue", values), ("ObsError", errors)):
            if group not in skip_groups:
                ds.createGroup(group).createVariable("x", "f8", ("Location",))[:] = data
    return str(path)


def read_state_file(path: "str | os.PathLike[str]") -> tuple[np.ndarray, str]:
    with netCDF4.Dataset(path, "r") as ds:
        return np.asarray(ds.variables["x"][...], dtype=np.float64), str(ds.getncattr("date"))


def run_pyoops(args: list[str], cwd: "str | os.PathLike[str]") -> subprocess.CompletedProcess:
    """``python -m pyoops.cli ARGS`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "pyoops.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def tmp_files(directory: "str | os.PathLike[str]") -> list[str]:
    """Temporary files of atomic writes (``.pyoops-HOST-PID-N...``) left anywhere below ``directory``."""
    return sorted(str(p) for p in Path(directory).rglob(".pyoops-*"))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the current directory: relative file names in configs are relative to it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``pyoops.cli.main(args)`` in-process: ``(exit code, stdout, stderr)``."""

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


DATE = "2010-01-01T00:00:00Z"
N = 8


def _x0() -> np.ndarray:
    return 8.0 + np.sin(2 * np.pi * np.arange(N) / N)


def forecast_config() -> dict[str, Any]:
    return {
        "model plugin": "lorenz96",
        "geometry": {"resol": N},
        "model": {"name": "Lorenz96", "f": 8.0, "tstep": "PT6H"},
        "initial condition": {"date": DATE, "filename": "bg.nc"},
        "forecast length": "PT12H",
        "output": {"filename": "out/fc.%date%.nc", "frequency": "PT6H"},
    }


def hofx_config() -> dict[str, Any]:
    return {
        "model plugin": "lorenz96",
        "time window": {"begin": "2009-12-31T21:00:00Z", "length": "PT6H"},
        "geometry": {"resol": N},
        "state": {"date": DATE, "filename": "bg.nc"},
        "observations": {"observers": [{
            "obs space": {"name": "grid points", "simulated variables": ["x"],
                          "obsdatain": {"filename": "obs.nc"}, "obsdataout": {"filename": "out/hofx.nc"}},
            "obs operator": {"name": "Identity"},
        }]},
    }


def _write_inputs(directory: Path) -> None:
    write_lorenz96_state(directory / "bg.nc", _x0(), DATE)
    write_obs_file(directory / "obs.nc", np.arange(N) / N, [DATE] * N, values=_x0() + 0.5, errors=0.4)


# Bad input cases -------------------------------------------------------------------------------
@dataclass
class Case:
    """A broken run: ``edit`` changes the config (or the files), ``expect`` must all be in the message."""

    app: str
    edit: Callable[[dict[str, Any], Path], Any]
    expect: tuple[str, ...]
    extra_args: tuple[str, ...] = ()
    config_name: str = "cfg.yaml"
    #: Files the failed run may leave in out/ (complete ones, written before the failure).
    allowed_outputs: tuple[str, ...] = ()


def _set(path: str, value: Any) -> Callable[[dict[str, Any], Path], None]:
    keys = path.split("/")

    def edit(cfg: dict[str, Any], directory: Path) -> None:
        node = cfg
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        node[keys[-1]] = value

    return edit


def _delete(path: str) -> Callable[[dict[str, Any], Path], None]:
    keys = path.split("/")

    def edit(cfg: dict[str, Any], directory: Path) -> None:
        node = cfg
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]

    return edit


def _rename(path: str, new: str) -> Callable[[dict[str, Any], Path], None]:
    keys = path.split("/")

    def edit(cfg: dict[str, Any], directory: Path) -> None:
        node = cfg
        for k in keys[:-1]:
            node = node[k]
        node[new] = node.pop(keys[-1])

    return edit


def _corrupt_state(cfg: dict[str, Any], directory: Path) -> None:
    (directory / "bg.nc").write_bytes(b"this is not a netCDF file\n" * 20)


def _truncated_state(cfg: dict[str, Any], directory: Path) -> None:
    data = (directory / "bg.nc").read_bytes()
    (directory / "bg.nc").write_bytes(data[: len(data) // 2])


def _nan_background(cfg: dict[str, Any], directory: Path) -> None:
    x = _x0()
    x[3] = np.nan
    write_lorenz96_state(directory / "bg.nc", x, DATE)


def _obs_without(group: str) -> Callable[[dict[str, Any], Path], None]:
    def edit(cfg: dict[str, Any], directory: Path) -> None:
        write_obs_file(directory / "obs.nc", np.arange(N) / N, [DATE] * N, values=_x0(), errors=0.4,
                             skip_groups=(group,))

    return edit


def _invalid_yaml(cfg: dict[str, Any], directory: Path) -> str:
    (directory / "broken.yaml").write_text("model plugin: lorenz96\ngeometry: {resol: 8\nmodel: {name: Lorenz96}\n")
    return "broken.yaml"


def _no_config(cfg: dict[str, Any], directory: Path) -> str:
    return "missing-config.yaml"


def _blow_up(cfg: dict[str, Any], directory: Path) -> None:
    # RK4 with h = 1 model time unit (PT120H) is unstable: the state overflows to inf/NaN
    # at the third step; with only a final output, nothing may be written.
    cfg["model"]["tstep"] = "PT120H"
    cfg["forecast length"] = "P50D"
    cfg["output"] = {"filename": "out/fc.nc"}


def _second_output_fails(cfg: dict[str, Any], directory: Path) -> None:
    # The second output file name is taken by a directory: the first output is written,
    # the second cannot be, and the run stops there.
    (directory / "out" / "fc.2010-01-01T06:00:00Z.nc").mkdir(parents=True)


CASES: dict[str, Case] = {
    "misspelt key": Case("forecast", _rename("forecast length", "forecast lenght"),
                         ("forecast lenght", "unknown key", "did you mean 'forecast length'")),
    "misspelt nested key": Case("forecast", _rename("initial condition/filename", "filname"),
                                ("initial condition.filname", "did you mean 'filename'")),
    "misspelt key in a plugin section": Case("forecast", _rename("model/tstep", "time step"),
                                             ("model.time step", "unknown key", "tstep")),
    "wrong type (integer)": Case("forecast", _set("geometry/resol", "eight"), ("geometry.resol", "integer", "'eight'")),
    "wrong type (duration)": Case("forecast", _set("forecast length", 12),
                                  ("forecast length", "ISO-8601 duration", "PT6H", "got 12")),
    "wrong type (mapping)": Case("forecast", _set("initial condition", "bg.nc"),
                                 ("initial condition", "valid dictionary", "got 'bg.nc'")),
    "missing required key": Case("forecast", _delete("forecast length"),
                                 ("forecast length: required key is missing",)),
    "missing required nested key": Case("forecast", _delete("initial condition/date"),
                                        ("initial condition.date: required key is missing",)),
    "missing required key (hofx)": Case("hofx", _delete("time window"), ("time window: required key is missing",)),
    "missing state file": Case("forecast", _set("initial condition/filename", "nowhere/bg.nc"),
                               ("nowhere/bg.nc", "not found")),
    "corrupt state file": Case("forecast", _corrupt_state, ("bg.nc", "not a readable netCDF file")),
    "truncated state file": Case("forecast", _truncated_state, ("bg.nc", "not a readable netCDF file")),
    "missing obs file": Case("hofx", _set("observations/observers/0/obs space/obsdatain/filename", "nothere.nc"),
                             ("nothere.nc", "not found")),
    "missing config file": Case("forecast", _no_config, ("missing-config.yaml", "not found")),
    "invalid YAML": Case("forecast", _invalid_yaml, ("broken.yaml", "not valid YAML", "line 3")),
    "unknown model plugin": Case("forecast", _set("model plugin", "lorenz69"),
                                 ("model plugin", "'lorenz69' is not installed", "did you mean 'lorenz96'")),
    "unknown model": Case("forecast", _set("model/name", "Lorenz69"),
                          ("model.name", "'Lorenz69' does not exist in the model factory", "Lorenz96",
                           "cfg.yaml:5")),
    "unknown obs operator": Case("hofx", _set("observations/observers/0/obs operator/name", "Identiti"),
                                 ("observations.observers[0].obs operator.name", "'Identiti' does not exist",
                                  "did you mean 'Identity'")),
    "unknown obs error": Case("hofx", _set("observations/observers/0/obs error", {"covariance model": "diagonl"}),
                              ("obs error.covariance model", "'diagonl' does not exist", "diagonal")),
    "obs file without ObsError": Case("hofx", _obs_without("ObsError"), ("obs.nc", "has no group 'ObsError'")),
    "obs file without MetaData": Case("hofx", _obs_without("MetaData"), ("obs.nc", "has no group 'MetaData'")),
    "obs file without ObsValue": Case("hofx", _obs_without("ObsValue"), ("obs.nc", "has no group 'ObsValue'")),
    "NaN in background (forecast)": Case("forecast", _nan_background, ("bg.nc", "'x'", "1 non-finite value")),
    "NaN in background (hofx)": Case("hofx", _nan_background, ("bg.nc", "'x'", "1 non-finite value")),
    "state date differs from file": Case("forecast", _set("initial condition/date", "2010-01-02T00:00:00Z"),
                                         ("bg.nc", "valid at 2010-01-01T00:00:00Z", "2010-01-02T00:00:00Z")),
    "state on another grid": Case("forecast", _set("geometry/resol", 10), ("bg.nc", "grid shape (8,)", "(10,)")),
    "length not a multiple of the step": Case("forecast", _set("forecast length", "PT7H"),
                                              ("forecast length", "PT7H", "multiple", "PT6H")),
    "model blows up": Case("forecast", _blow_up, ("non-finite", "2010-01-16T00:00:00Z", "blew up")),
    "second output fails": Case("forecast", _second_output_fails, ("out/fc.2010-01-01T06:00:00Z.nc",),
                                allowed_outputs=("fc.2010-01-01T00:00:00Z.nc", "fc.2010-01-01T06:00:00Z.nc")),
}


def _prepare(case: Case, directory: Path) -> str:
    """Write the inputs and the broken config of ``case`` into ``directory``; return the config name."""
    directory.mkdir(parents=True, exist_ok=True)
    _write_inputs(directory)
    cfg = forecast_config() if case.app == "forecast" else hofx_config()
    name = case.edit(cfg, directory)
    if isinstance(name, str):
        return name
    write_yaml(directory / case.config_name, cfg)
    return case.config_name


def _check_message(line: str, case: Case) -> None:
    assert line.startswith("pyoops: error: "), line
    for text in case.expect:
        assert text in line, f"{text!r} not in {line!r}"


def _check_nothing_half_written(directory: Path, case: Case) -> None:
    assert tmp_files(directory) == []
    out = directory / "out"
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert set(left) <= set(case.allowed_outputs), left
    for name in left:
        if (out / name).is_file():  # what is there is complete and readable
            x, date = read_state_file(out / name)
            assert x.shape == (N,) and np.isfinite(x).all()
            assert name == f"fc.{date}.nc"


def _stderr_error_lines(stderr: str) -> list[str]:
    """Standard error without the INFO log lines of the run."""
    return [line for line in stderr.splitlines() if not line.startswith("pyoops INFO: ")]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_in_process(name, workdir, cli):
    case = CASES[name]
    config = _prepare(case, workdir)
    code, out, err = cli(case.app, config, *case.extra_args)
    assert code == 2, err
    lines = _stderr_error_lines(err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    _check_message(lines[0], case)
    _check_nothing_half_written(workdir, case)


#: One case per kind of bad input of the acceptance list, also run in a fresh interpreter.
SUBPROCESS_CASES = [
    "misspelt key",
    "wrong type (integer)",
    "missing required key",
    "missing state file",
    "corrupt state file",
    "unknown model plugin",
    "unknown obs operator",
    "obs file without ObsError",
    "NaN in background (forecast)",
    "model blows up",
    "second output fails",
]


@pytest.fixture(scope="module")
def subprocess_results(tmp_path_factory):
    """The :data:`SUBPROCESS_CASES` run by ``python -m pyoops.cli`` in parallel, each in its own directory."""
    root = tmp_path_factory.mktemp("bad-input")
    procs = {}
    for i, name in enumerate(SUBPROCESS_CASES):
        case = CASES[name]
        directory = root / f"case{i:02d}"
        config = _prepare(case, directory)
        procs[name] = (directory, subprocess.Popen(
            [sys.executable, "-m", "pyoops.cli", case.app, config, *case.extra_args],
            cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = {}
    for name, (directory, proc) in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (directory, proc.returncode, out, err)
    return results


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_subprocess(name, subprocess_results):
    case = CASES[name]
    directory, code, out, err = subprocess_results[name]
    assert code == 2, err
    assert "Traceback" not in err and "Warning" not in err, err
    lines = _stderr_error_lines(err)
    assert len(lines) == 1, err
    _check_message(lines[0], case)
    _check_nothing_half_written(directory, case)


def test_model_blow_up_quiet_is_exactly_one_line(workdir):
    config = _prepare(CASES["model blows up"], workdir)
    result = run_pyoops(["forecast", config, "--quiet"], workdir)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    _check_message(result.stderr.strip(), CASES["model blows up"])
    assert not (workdir / "out").exists()
    assert tmp_files(workdir) == []


def test_failed_output_writes_nothing_and_says_so(workdir, cli):
    """All outputs of a run or none: the first output (complete before the second failed) is not
    committed either, no temporary is left, and the message says that nothing was written."""
    config = _prepare(CASES["second output fails"], workdir)
    code, _, err = cli("forecast", config, "--quiet")
    assert code == 2, err
    assert "no output was written" in err
    assert (workdir / "out" / "fc.2010-01-01T06:00:00Z.nc").is_dir()
    assert not (workdir / "out" / "fc.2010-01-01T00:00:00Z.nc").exists()
    assert not (workdir / "out" / "fc.2010-01-01T12:00:00Z.nc").exists()
    assert tmp_files(workdir) == []


def test_failed_rerun_does_not_touch_previous_output(workdir, cli):
    """A run that fails does not truncate or replace the file a previous run wrote."""
    _write_inputs(workdir)
    cfg = forecast_config()
    cfg["output"] = {"filename": "out/fc.nc"}
    write_yaml("good.yaml", cfg)
    assert cli("forecast", "good.yaml", "--quiet")[0] == 0
    before = (workdir / "out" / "fc.nc").read_bytes()
    _blow_up(cfg, workdir)
    write_yaml("bad.yaml", cfg)
    code, _, err = cli("forecast", "bad.yaml", "--quiet")
    assert code == 2 and "blew up" in err
    assert (workdir / "out" / "fc.nc").read_bytes() == before
    assert tmp_files(workdir) == []


def test_debug_shows_the_traceback(workdir):
    config = _prepare(CASES["unknown model"], workdir)
    result = run_pyoops(["forecast", config, "--debug"], workdir)
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "UnknownNameError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("pyoops: error: model.name:")


def test_debug_in_process(workdir, cli):
    config = _prepare(CASES["NaN in background (forecast)"], workdir)
    code, _, err = cli("forecast", config, "--debug")
    assert code == 2
    assert "Traceback" in err and "InputFileError" in err and "non-finite" in err


def test_unknown_command_exits_2(workdir):
    result = run_pyoops(["forecst", "cfg.yaml"], workdir)
    assert result.returncode == 2
    assert "invalid choice: 'forecst'" in result.stderr
    assert "Traceback" not in result.stderr


def test_application_without_config(cli):
    code, _, err = cli("forecast")
    assert code == 2
    assert err.strip() == "pyoops: error: 'pyoops forecast' needs a YAML configuration file"


# --validate-only ------------------------------------------------------------------------------
def test_validate_only_accepts_a_good_config_without_running(workdir, cli):
    _write_inputs(workdir)
    write_yaml("fc.yaml", forecast_config())
    write_yaml("hofx.yaml", hofx_config())
    for app, config in (("forecast", "fc.yaml"), ("hofx", "hofx.yaml")):
        code, out, err = cli(app, config, "--validate-only")
        assert code == 0, err
        assert out.strip() == f"{config}: valid {app} configuration"
    assert not (workdir / "out").exists()
    assert tmp_files(workdir) == []


def test_validate_only_rejects_a_bad_config(workdir, cli):
    cfg = forecast_config()
    cfg["model"]["tstep"] = "PT5H"  # plugin section: only the model knows its time step
    write_yaml("fc.yaml", cfg)
    code, out, err = cli("forecast", "fc.yaml", "--validate-only")
    assert code == 2
    assert out == ""
    assert err.startswith("pyoops: error: forecast length:") and "PT5H" in err
    cfg = forecast_config()
    cfg["model"]["f"] = "eight"
    write_yaml("fc.yaml", cfg)
    code, _, err = cli("forecast", "fc.yaml", "--validate-only")
    assert code == 2 and "model.f" in err
    assert not (workdir / "out").exists()


def test_validate_only_subprocess(workdir):
    _write_inputs(workdir)
    write_yaml("fc.yaml", forecast_config())
    result = run_pyoops(["forecast", "fc.yaml", "--validate-only"], workdir)
    assert result.returncode == 0, result.stderr
    assert "valid forecast configuration" in result.stdout
    assert not (workdir / "out").exists()


# --output-json-schema --------------------------------------------------------------------------
def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` (and a single-entry ``allOf``/``anyOf`` without null) to the object schema."""
    while True:
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].split("/")[-1]]
        elif "allOf" in node and len(node["allOf"]) == 1:
            node = node["allOf"][0]
        elif "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            if len(options) != 1:
                return node
            node = options[0]
        else:
            return node


def _options(schema: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    """The object schemas a node allows: one, or one per installed plugin's maker (``anyOf``)."""
    node = _resolve(schema, node)
    if "anyOf" in node:
        return [_resolve(schema, o) for o in node["anyOf"] if o.get("type") != "null"]
    return [node]


def test_json_schema_of_forecast(workdir, cli):
    code, out, err = cli("forecast", "--output-json-schema", "schema/forecast.json")
    assert code == 0, err
    assert "schema/forecast.json" in out
    schema = json.loads((workdir / "schema" / "forecast.json").read_text())
    props = schema["properties"]
    for key in ("model plugin", "geometry", "model", "initial condition", "forecast length", "output"):
        assert key in props
    assert set(schema["required"]) >= {"model plugin", "geometry", "model", "initial condition", "forecast length"}
    assert props["forecast length"]["format"] == "duration"
    initial = _resolve(schema, props["initial condition"])
    assert {"date", "filename", "analytic init"} <= set(initial["properties"])
    models = _options(schema, props["model"])
    assert any({"name", "f", "tstep"} <= set(m["properties"]) for m in models)
    assert tmp_files(workdir) == []


def test_json_schema_with_config_has_the_plugin_geometry(workdir, cli):
    write_yaml("fc.yaml", forecast_config())
    code, _, err = cli("forecast", "fc.yaml", "--output-json-schema", "forecast.json")
    assert code == 0, err
    schema = json.loads((workdir / "forecast.json").read_text())
    geometry = _resolve(schema, schema["properties"]["geometry"])
    assert "resol" in geometry["properties"]
    assert geometry["properties"]["resol"]["minimum"] == 4
    assert not (workdir / "out").exists()  # nothing was run


def test_json_schema_of_hofx_subprocess(workdir):
    write_yaml("hofx.yaml", hofx_config())
    result = run_pyoops(["hofx", "hofx.yaml", "--output-json-schema", "hofx.json"], workdir)
    assert result.returncode == 0, result.stderr
    schema = json.loads((workdir / "hofx.json").read_text())
    props = schema["properties"]
    for key in ("time window", "geometry", "state", "initial condition", "model", "observations", "make obs",
                "obs perturbations", "obs perturbations seed"):
        assert key in props
    assert "resol" in _resolve(schema, props["geometry"])["properties"]
    observations = _resolve(schema, props["observations"])
    observer = _resolve(schema, observations["properties"]["observers"]["items"])
    assert {"obs space", "obs operator", "obs error"} <= set(observer["properties"])
    assert all("name" in o["properties"] for o in _options(schema, observer["properties"]["obs operator"]))
    # With a config naming the model plugin, only that plugin's models (and the generic persistence
    # model, which runs on any geometry) are offered.
    models = {o["properties"]["name"]["const"]: o for o in _options(schema, props["model"])}
    assert set(models) == {"Lorenz96", "Identity"}
    assert {"name", "f", "tstep"} <= set(models["Lorenz96"]["properties"])


def test_json_schema_with_bad_model_plugin(workdir, cli):
    cfg = forecast_config()
    cfg["model plugin"] = "nosuchmodel"
    write_yaml("fc.yaml", cfg)
    code, _, err = cli("forecast", "fc.yaml", "--output-json-schema", "forecast.json")
    assert code == 2 and "'nosuchmodel' is not installed" in err
    assert not (workdir / "forecast.json").exists()
    assert tmp_files(workdir) == []


# pyoops plugins --------------------------------------------------------------------------------
def parse_plugins_listing(text: str) -> dict[str, set[str]]:
    """``{kind: {names}}`` from the output of ``pyoops plugins``."""
    kinds: dict[str, set[str]] = {}
    current = None
    for line in text.splitlines():
        if not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
            kinds[current] = set()
        elif current is not None and line.startswith("  ") and line.strip() != "(none)":
            kinds[current].add(line.split()[0])
    return kinds


def test_plugins_lists_every_registered_name(cli):
    code, out, err = cli("plugins")
    assert code == 0, err
    kinds = parse_plugins_listing(out)
    assert "lorenz96" in kinds["model plugin"]
    assert "lorenz96" in kinds["geometry"]
    assert "Lorenz96" in kinds["model"]
    assert "Lorenz96TLM" in kinds["linear model"]
    assert "Identity" in kinds["obs operator"] and "Identity" in kinds["linear obs operator"]
    assert "diagonal" in kinds["obs error"]
    assert {"forecast", "hofx"} <= kinds["application"]
    installed = out.split("Installed plugins:")[1]
    assert "generic" in installed and "lorenz96" in installed
    assert "pyoops-lorenz96" in installed or "pyoops_lorenz96" in installed


def test_plugins_subprocess(tmp_path):
    result = run_pyoops(["plugins"], tmp_path)
    assert result.returncode == 0, result.stderr
    kinds = parse_plugins_listing(result.stdout)
    assert {"Lorenz96"} <= kinds["model"] and {"Identity"} <= kinds["obs operator"]
    assert result.stderr == ""


def test_version(capsys):
    from pyoops import __version__
    from pyoops.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pyoops {__version__}"


def test_good_run_in_process_and_summary(workdir, cli):
    _write_inputs(workdir)
    write_yaml("fc.yaml", forecast_config())
    code, out, err = cli("forecast", "fc.yaml")
    assert code == 0, err
    assert "final date: 2010-01-01T12:00:00Z" in out
    assert out.count("outputs: out/fc.") == 3
    assert "pyoops INFO: Initial state: 2010-01-01T00:00:00Z" in err
    code, out, err = cli("forecast", "fc.yaml", "--quiet")
    assert code == 0 and err == ""



def test_log_lines_follow_the_current_stderr(workdir, monkeypatch):
    """In-process runs (notebooks, tests) log to whatever ``sys.stderr`` is at the time of the run."""
    import io

    _write_inputs(workdir)
    write_yaml("fc.yaml", forecast_config())
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    assert main(["forecast", "fc.yaml"]) == 0
    monkeypatch.setattr(sys, "stderr", second)
    first.close()  # a stale reference to the first stream would now raise
    assert main(["forecast", "fc.yaml"]) == 0
    assert "pyoops INFO: Final state: 2010-01-01T12:00:00Z" in second.getvalue()
    assert "Logging error" not in second.getvalue()
