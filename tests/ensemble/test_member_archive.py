"""Member archives (``output.member archive`` of ``cycle``, ``output member archive`` of ``eda``)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

import pyoops
from pyoops.ensemble.member_archive import MemberArchiveWriter, read_member_archive, sample_stddev
from pyoops.generic.grid import StructuredGrid
from pyoops.util.appendlog import log_path
from pyoops.util.errors import ConfigError, InputFileError

from .test_cycle import l96_cycle
from .test_eda import NMEM, _eda_config, eda_files  # noqa: F401 - the fixture is used by name


def _eda_cycle(directory: Path, cycles: int, members: int = 4) -> dict:
    cfg = l96_cycle("EDA", directory, cycles=cycles, members=members)
    cfg["output"]["member archive"] = True
    cfg["eda"] = {"seed": 2}
    return cfg


def test_cycle_archives_the_backgrounds_each_cycle_starts_from(tmp_path: Path) -> None:
    from pyoops.apps import make_application
    from pyoops.config.yaml_io import load_config

    cfg = _eda_cycle(tmp_path / "a", cycles=4)
    app = make_application("cycle")
    app.validate(load_config(cfg))
    state = app.experiment.run(tmp_path / "a", stop_after=3)
    after_three = {v: a.copy() for v, a in state["members"].items()}   # the backgrounds of cycle 3
    summary = pyoops.run("cycle", cfg)
    path = tmp_path / "a" / "members.nc"
    assert str(path) in summary["outputs"]
    archive = read_member_archive(path)
    assert archive.ncycles == 4 and archive.nmembers == 4
    np.testing.assert_array_equal(archive.cycle, [0, 1, 2, 3])
    np.testing.assert_array_equal(archive.members["x"][3], after_three["x"])
    # Valid at each analysis time (3D-Var: the background time is the analysis time, PT6H apart).
    assert np.all(np.diff(archive.time) == 6 * 3600)

    import xarray as xr

    with xr.open_dataset(path) as ds:
        assert ds["x"].dims == ("cycle", "member", "position")
        np.testing.assert_array_equal(ds["x_stddev"].values, sample_stddev(archive.members["x"], axis=1))
        np.testing.assert_array_equal(ds["x_mean"].values, archive.members["x"].mean(axis=1))
        assert ds["x"].encoding["chunksizes"] == (1, 4, 40)


def test_cycle_member_archive_resumes_bitwise(tmp_path: Path) -> None:
    from pyoops.apps import make_application
    from pyoops.config.yaml_io import load_config

    cfg = _eda_cycle(tmp_path / "a", cycles=6)
    app = make_application("cycle")
    app.validate(load_config(cfg))
    app.experiment.run(tmp_path / "a", stop_after=3)
    # A killed run's torn write after the checkpoint is truncated away on resume.
    with open(tmp_path / "a" / "members.nc.log", "ab") as fh:
        fh.write(b"MEM1 torn")
    pyoops.run("cycle", cfg)
    ref = copy.deepcopy(cfg)
    ref["output"]["directory"] = str(tmp_path / "b")
    pyoops.run("cycle", ref)
    assert (tmp_path / "a" / "members.nc").read_bytes() == (tmp_path / "b" / "members.nc").read_bytes()
    assert (tmp_path / "a" / "members.nc.log").read_bytes() == (tmp_path / "b" / "members.nc.log").read_bytes()


def test_member_archive_needs_an_ensemble_and_cannot_start_mid_run(tmp_path: Path) -> None:
    cfg = l96_cycle("3D-Var", tmp_path / "d", cycles=2)
    cfg["output"]["member archive"] = True
    with pytest.raises(ConfigError, match="output.member archive"):
        pyoops.run("cycle", cfg)
    plain = l96_cycle("EDA", tmp_path / "e", cycles=2, members=3)
    pyoops.run("cycle", plain)
    plain["cycling"]["cycles"] = 3
    plain["output"]["member archive"] = True
    with pytest.raises(ConfigError, match="output.member archive.*written without the member archive"):
        pyoops.run("cycle", plain)


def test_writer_checks_and_subsets(tmp_path: Path) -> None:
    geometry = StructuredGrid.periodic_1d(8)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((5, 6, 8))
    with MemberArchiveWriter(tmp_path / "m.nc", geometry, ["x"], 6, method="test") as w:
        with pytest.raises(ValueError, match="shape"):
            w.append_cycle(0, 0, {"x": data[0, :5]})
        with pytest.raises(ValueError, match="non-finite"):
            w.append_cycle(0, 0, {"x": np.full((6, 8), np.nan)})
        for k in range(5):
            w.append_cycle(k, 3600 * k, {"x": data[k]})
        with pytest.raises(ValueError, match="must increase"):
            w.append_cycle(4, 0, {"x": data[0]})
    a = read_member_archive(tmp_path / "m.nc", geometry=geometry)
    np.testing.assert_array_equal(a.members["x"], data)
    np.testing.assert_allclose(a.stddev()["x"], data.std(axis=1, ddof=1), rtol=1e-14)
    np.testing.assert_allclose(a.stddev([1, 3, 4])["x"], data[:, [1, 3, 4]].std(axis=1, ddof=1), rtol=1e-14)
    per_cycle = np.array([[0, 1], [2, 3], [4, 5], [0, 5], [1, 2]])
    expected = np.stack([data[k, per_cycle[k]].std(axis=0, ddof=1) for k in range(5)])
    np.testing.assert_allclose(a.stddev(per_cycle)["x"], expected, rtol=1e-14)
    with pytest.raises(InputFileError, match="another geometry"):
        read_member_archive(tmp_path / "m.nc", geometry=StructuredGrid.periodic_1d(9))
    with pytest.raises(InputFileError, match="not a pyoops member archive"):
        read_member_archive(_not_an_archive(tmp_path))
    # A log that is not this run's is refused on resume.
    other = MemberArchiveWriter(tmp_path / "n.nc", geometry, ["x"], 5)
    other.append_cycle(0, 0, {"x": data[0, :5]})
    state = other.checkpoint_state()
    other.close()
    log_path(tmp_path / "m.nc").write_bytes(log_path(tmp_path / "n.nc").read_bytes())
    with pytest.raises(InputFileError, match="other variables, members"):
        MemberArchiveWriter(tmp_path / "m.nc", geometry, ["x"], 6).resume(state)


def _not_an_archive(tmp_path: Path) -> Path:
    import netCDF4

    path = tmp_path / "plain.nc"
    with netCDF4.Dataset(path, "w") as ds:
        ds.setncattr("format", "something else")
    return path


def test_eda_app_writes_the_member_archive(eda_files: dict) -> None:  # noqa: F811 - pytest fixture
    d = eda_files["dir"]
    cfg = _eda_config(d, output=None, **{"output control": None, "output mean": None, "output spread": None,
                                        "output member archive": {"filename": str(d / "out" / "members.nc")}})
    summary = pyoops.run("eda", cfg)
    archive = read_member_archive(d / "out" / "members.nc")
    assert str(d / "out" / "members.nc") in summary["outputs"]
    assert archive.ncycles == 1 and archive.nmembers == NMEM
    import netCDF4

    for k in range(NMEM):
        with netCDF4.Dataset(d / f"ens.{k + 1}.nc") as ds:
            np.testing.assert_array_equal(archive.members["x"][0, k], np.asarray(ds["x"][:]))
