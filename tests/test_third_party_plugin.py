"""A third-party plugin installed into a temporary environment is found through its entry point.

``tests/fixtures/thirdparty_plugin`` is a minimal plugin distribution that
registers the obs operator ``ScaledIdentity`` (H(g) = scale · g).  The test
builds a wheel from it (by hand with :mod:`zipfile`: no build backend, no
network, no ``wheel`` package needed), creates a virtual environment that sees
the current environment's packages (pyoops, pyoops-lorenz96), installs the
wheel there with ``pip --no-deps --no-index``, and then, in that environment:
``pyoops plugins`` lists ``ScaledIdentity``, and ``pyoops hofx`` with
``obs operator: {name: ScaledIdentity, scale: 2.0}`` writes twice the Identity
H(x).  The plugin stays invisible to the environment running the tests.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import shutil
import site
import subprocess
import venv
import zipfile
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest
import yaml

from pyoops.cli import main
from pyoops.registry import get_registry

FIXTURE = Path(__file__).parent / "fixtures" / "thirdparty_plugin"
#: The worked example of docs/writing_a_block.rst: a SABER block in its own distribution.
SOAR = Path(__file__).parents[1] / "tutorials" / "saber" / "soar_plugin"
T0 = "2010-01-01T00:00:00Z"
N = 40

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors a TOML reader
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]


# Building and installing the fixture -----------------------------------------------------------
def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(project: Path, dest: Path) -> Path:
    """A pure-Python wheel of ``project`` (src layout) with its ``pyoops`` entry points."""
    meta = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    dist = meta["name"].replace("-", "_")
    version = meta["version"]
    info = f"{dist}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for path in sorted((project / "src").rglob("*.py")):
        files[path.relative_to(project / "src").as_posix()] = path.read_bytes()
    metadata = ["Metadata-Version: 2.1", f"Name: {meta['name']}", f"Version: {version}",
                f"Summary: {meta.get('description', '')}", f"Requires-Python: {meta.get('requires-python', '')}"]
    metadata += [f"Requires-Dist: {dep}" for dep in meta.get("dependencies", [])]
    files[f"{info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: pyoops-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    entry_points = ""
    for group, entries in meta.get("entry-points", {}).items():
        entry_points += f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) + "\n"
    files[f"{info}/entry_points.txt"] = entry_points.encode()
    top_level = sorted({name.split("/")[0] for name in files if not name.startswith(info)})
    files[f"{info}/top_level.txt"] = "".join(f"{name}\n" for name in top_level).encode()
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    wheel = dest / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


def _python_in(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def make_environment(root: Path, project: Path = FIXTURE) -> Path:
    """A venv that sees this environment's packages, with the plugin ``project`` installed; its python."""
    env_dir = root / "venv"
    try:
        venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    except Exception as exc:  # pragma: no cover - a broken Python installation
        pytest.fail(f"cannot create a virtual environment for the third-party plugin test: {exc}")
    python = _python_in(env_dir)
    # When the tests themselves run in a venv, --system-site-packages exposes the *base*
    # interpreter's packages, not this venv's: add this environment's site directories
    # (processing their .pth files, e.g. editable installs) to the new one.
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    parents = [p for p in site.getsitepackages() if os.path.isdir(p)]
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        parents.append(site.getusersitepackages())
    Path(purelib, "_pyoops_parent_environment.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in parents))
    wheel = build_wheel(project, root)
    result = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index",
                             "--disable-pip-version-check", str(wheel)], capture_output=True, text=True)
    assert result.returncode == 0, f"pip install of the fixture failed:\n{result.stdout}\n{result.stderr}"
    return python


# Inputs --------------------------------------------------------------------------------------------
def _write_inputs(directory: Path) -> np.ndarray:
    x = 8.0 + 2.0 * np.sin(2 * np.pi * np.arange(N) / N) + np.random.default_rng(1).standard_normal(N)
    with netCDF4.Dataset(directory / "bg.nc", "w") as ds:
        ds.date = T0
        ds.createDimension("position", N)
        ds.createVariable("position", "f8", ("position",))[:] = np.arange(N) / N
        ds.createVariable("x", "f8", ("position",))[:] = x
    positions = np.random.default_rng(2).uniform(0.0, 1.0, 30)
    with netCDF4.Dataset(directory / "obs.nc", "w") as ds:
        ds.createDimension("Location", positions.size)
        meta = ds.createGroup("MetaData")
        dt = meta.createVariable("dateTime", "i8", ("Location",))
        dt.units = "seconds since 1970-01-01T00:00:00Z"
        dt[:] = np.full(positions.size, 1262304000, dtype=np.int64)  # 2010-01-01T00:00:00Z
        meta.createVariable("x", "f8", ("Location",))[:] = positions
        ds.createGroup("ObsValue").createVariable("x", "f8", ("Location",))[:] = np.zeros(positions.size)
        ds.createGroup("ObsError").createVariable("x", "f8", ("Location",))[:] = np.ones(positions.size)
    return x


def _hofx_config(operator: dict[str, Any], out: str) -> dict[str, Any]:
    return {
        "model plugin": "lorenz96",
        "time window": {"begin": "2009-12-31T21:00:00Z", "length": "PT6H"},
        "geometry": {"resol": N},
        "state": {"date": T0, "filename": "bg.nc"},
        "observations": {"observers": [{
            "obs space": {"name": "scaled", "simulated variables": ["x"], "obsdatain": {"filename": "obs.nc"},
                          "obsdataout": {"filename": out}},
            "obs operator": operator,
        }]},
    }


def _write_yaml(path: Path, data: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path.name


def _hofx(path: Path) -> np.ndarray:
    with netCDF4.Dataset(path) as ds:
        return np.array(ds.groups["hofx"].variables["x"][:], dtype=np.float64)


# The test --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_third_party_plugin_is_discovered_through_its_entry_point_and_used_by_yaml(tmp_path, monkeypatch):
    python = make_environment(tmp_path)
    work = tmp_path / "run"
    work.mkdir()
    _write_inputs(work)
    scaled = _write_yaml(work / "scaled.yaml", _hofx_config({"name": "ScaledIdentity", "scale": 2.0}, "scaled.nc"))
    identity = _write_yaml(work / "identity.yaml", _hofx_config({"name": "Identity"}, "identity.nc"))
    bad = _write_yaml(work / "bad.yaml", _hofx_config({"name": "ScaledIdentity", "scael": 2.0}, "bad.nc"))

    commands = {
        "plugins": ["plugins"],
        "scaled": ["hofx", scaled, "--quiet"],
        "identity": ["hofx", identity, "--quiet"],
        "bad": ["hofx", bad, "--validate-only"],
    }
    where = ("import importlib.metadata as m, pyoops_thirdparty_fixture as p; print(p.__file__); "
             "print(m.distribution('pyoops-thirdparty-fixture').locate_file(''))")
    procs = {name: subprocess.Popen([str(python), "-m", "pyoops.cli", *args], cwd=work, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, args in commands.items()}
    procs["where"] = subprocess.Popen([str(python), "-c", where], cwd=work, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
    results = {name: (proc.communicate(timeout=300), proc.returncode) for name, proc in procs.items()}

    # Installed into the temporary environment, not imported from the source tree.
    (out, err), code = results["where"]
    assert code == 0, err
    module_file, dist_root = (Path(line).resolve() for line in out.splitlines())
    env_dir = (tmp_path / "venv").resolve()
    assert env_dir in module_file.parents and env_dir in dist_root.parents, out
    assert FIXTURE.resolve() not in module_file.parents

    (out, err), code = results["plugins"]
    assert code == 0, err
    listing = out.splitlines()
    obs_ops = listing[listing.index("obs operator:") + 1:listing.index("linear obs operator:")]
    assert any(line.split()[0] == "ScaledIdentity" and "[thirdparty]" in line for line in obs_ops), out
    assert any(line.split()[0] == "Identity" for line in obs_ops), out
    linear = listing[listing.index("linear obs operator:") + 1:]
    assert any(line.strip().startswith("ScaledIdentity") for line in linear), out
    assert any(line.split()[:3] == ["thirdparty", "pyoops-thirdparty-fixture", "0.1.0"] for line in listing), out
    assert "lorenz96" in out  # the environment still sees the other plugins

    for name in ("scaled", "identity"):
        (out, err), code = results[name]
        assert code == 0, f"{name}: {err}"
    hofx_scaled = _hofx(work / "scaled.nc")
    hofx_identity = _hofx(work / "identity.nc")
    assert np.ptp(hofx_identity) > 1.0  # a real signal, not a constant
    np.testing.assert_array_equal(hofx_scaled, 2.0 * hofx_identity)

    # The plugin's Parameters class validates its YAML section like a built-in one.
    (out, err), code = results["bad"]
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "obs operator.scael" in err and "did you mean 'scale'" in err, err

    # The environment running the tests never saw the fixture.
    assert importlib.util.find_spec("pyoops_thirdparty_fixture") is None
    registry = get_registry()
    assert "ScaledIdentity" not in registry.obs_operator
    assert "thirdparty" not in registry.distributions
    monkeypatch.chdir(work)
    assert main(["hofx", scaled, "--validate-only"]) == 2


def test_unknown_operator_in_the_main_environment_names_the_installed_ones(tmp_path, monkeypatch, capsys):
    """Without the plugin, the same YAML fails with the list of known obs operators."""
    monkeypatch.chdir(tmp_path)
    _write_inputs(tmp_path)
    cfg = _write_yaml(tmp_path / "scaled.yaml", _hofx_config({"name": "ScaledIdentity", "scale": 2.0}, "o.nc"))
    assert main(["hofx", cfg]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "observations.observers[0].obs operator.name" in err
    assert "'ScaledIdentity' does not exist in the obs operator factory" in err
    assert "Identity" in err
    assert not (tmp_path / "o.nc").exists()


def test_fixture_wheel_is_well_formed(tmp_path):
    """The hand-built wheel has the entry point and a RECORD whose hashes match."""
    wheel = build_wheel(FIXTURE, tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = "pyoops_thirdparty_fixture-0.1.0.dist-info"
        assert {f"{info}/METADATA", f"{info}/WHEEL", f"{info}/entry_points.txt", f"{info}/RECORD",
                "pyoops_thirdparty_fixture/plugin.py", "pyoops_thirdparty_fixture/__init__.py"} <= names
        assert zf.read(f"{info}/entry_points.txt").decode().startswith(
            "[pyoops]\nthirdparty = pyoops_thirdparty_fixture.plugin\n")
        for line in zf.read(f"{info}/RECORD").decode().splitlines():
            name, digest, size = line.split(",")
            if name.endswith("RECORD"):
                continue
            data = zf.read(name)
            assert digest == _record_hash(data) and int(size) == len(data)


# The block of the guide (docs/writing_a_block.rst), installed like any third-party plugin ---------------
def _soar_configs(work: Path) -> dict[str, str]:
    soar = {"covariance model": "SABER",
            "saber central block": {"saber block name": "SOAR correlation", "length scale": 0.05},
            "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": 0.6}}]}
    covariance_app = {"model plugin": "lorenz96", "geometry": {"resol": N},
                      "background": {"date": T0, "filename": "bg.nc"}, "background error": soar}
    variational = {
        "model plugin": "lorenz96",
        "cost function": {
            "cost type": "3D-Var", "time window": {"begin": "2009-12-31T21:00:00Z", "length": "PT6H"},
            "geometry": {"resol": N}, "analysis variables": ["x"], "background": {"date": T0, "filename": "bg.nc"},
            "background error": soar,
            "observations": {"observers": [{
                "obs space": {"name": "x", "simulated variables": ["x"], "obsdatain": {"filename": "obs.nc"},
                              "obsdataout": {"filename": "obs_out.nc"}},
                "obs operator": {"name": "Identity"}, "obs error": {"covariance model": "diagonal"}}]}},
        "variational": {"minimizer": {"algorithm": "DRPCG"},
                        "iterations": [{"ninner": 40, "gradient norm reduction": 1e-10}]},
        "output": {"filename": "analysis.nc"},
    }
    return {
        "dirac": _write_yaml(work / "dirac.yaml", {**covariance_app, "dirac": {"ixdir": [10]},
                                                   "output dirac": {"filename": "dirac.nc"}}),
        "toolbox": _write_yaml(work / "toolbox.yaml", {**covariance_app, "block tests": True}),
        "variational": _write_yaml(work / "3dvar.yaml", variational),
    }


@pytest.mark.slow
def test_block_from_the_guide_passes_block_tests_and_runs_in_dirac_toolbox_and_3dvar(tmp_path):
    """The SOAR block package: installed from a wheel, found through its entry point, its BlockTests pass
    (run from a copy of its tests, against the installed package), and dirac, the toolbox and 3D-Var use it."""
    python = make_environment(tmp_path, SOAR)
    work = tmp_path / "run"
    work.mkdir()
    x = _write_inputs(work)
    configs = _soar_configs(work)
    tests = tmp_path / "soar_tests"
    shutil.copytree(SOAR / "tests", tests)
    commands = {
        "plugins": [str(python), "-m", "pyoops.cli", "plugins"],
        **{name: [str(python), "-m", "pyoops.cli", "dirac" if name == "dirac" else
                  "error-covariance-toolbox" if name == "toolbox" else "variational", cfg, "--quiet"]
           for name, cfg in configs.items()},
        "block tests": [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tests),
                        str(tests)],
    }
    procs = {name: subprocess.Popen(args, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, args in commands.items()}
    results = {name: (*proc.communicate(timeout=600), proc.returncode) for name, proc in procs.items()}
    for name, (out, err, code) in results.items():
        assert code == 0, f"{name}: {out}\n{err}"

    assert any(line.split()[:2] == ["SOAR", "correlation"] and "[soar]" in line
               for line in results["plugins"][0].splitlines())
    assert "16 passed" in results["block tests"][0] and "failed" not in results["block tests"][0]
    with netCDF4.Dataset(work / "dirac.nc") as ds:
        response = np.asarray(ds["x"][:])
    assert response[10] == pytest.approx(0.36, rel=1e-12)  # sigma^2 times a unit diagonal
    assert 0 < response[11] < response[10] and response[30] < 0.01 * response[10]
    toolbox = results["toolbox"][0]
    assert "block tests background error.saber central block square root: verdict passed" in toolbox
    assert "block tests B randomization mean: verdict passed" in toolbox
    with netCDF4.Dataset(work / "analysis.nc") as ds:
        analysis = np.asarray(ds["x"][:])
    # Observations of 0 with sigma_o = 1 against sigma_b = 0.6: the analysis moves towards 0.
    assert np.abs(analysis).mean() < np.abs(x).mean()
