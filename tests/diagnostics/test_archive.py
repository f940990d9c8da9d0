"""The innovation archive: round trip, plain-xarray reading, kill + resume, bad archives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from pyoops.diagnostics import InnovationArchiveWriter, read_archive
from pyoops.diagnostics.archive import log_path
from pyoops.util.atomic import OutputSession
from pyoops.util.errors import InputFileError

T0 = 1262304000  # 2010-01-01T00:00:00Z

# Deterministic data of cycle k, shared with the child process of the SIGKILL test.
CYCLE_DATA = textwrap.dedent('''
    import numpy as np

    MEMBERS = 3

    def cycle_data(k):
        rng = np.random.default_rng(1000 + k)
        n = 2 + k % 4  # ragged: 2 to 5 observations per cycle
        y = rng.standard_normal(n)
        return dict(obs_value=y, obs_error=0.5 + rng.random(n), hofx_background=y + rng.standard_normal(n),
                    hofx_analysis=y + 0.5 * rng.standard_normal(n), background_error_variance=rng.random(n),
                    date_time=1262304000 + 21600 * k + rng.integers(-3600, 3600, n),
                    coordinates={"x": rng.random(n), "y": rng.random(n), "z": rng.random(n)},
                    variable=np.where(rng.random(n) < 0.5, "u", "v"), obs_group="sonde" if k % 2 else "aircraft",
                    region=np.where(rng.random(n) < 0.5, "north", "south"),
                    ensemble_perturbations=rng.standard_normal((n, MEMBERS)),
                    cost_at_analysis=float(rng.random()) if k % 3 else float("nan"))

    def writer(filename, cls):
        return cls(filename, ["x", "y", "z"], MEMBERS, geometry={"type": "test", "n": 8},
                   application="cycle", method="LETKF", attributes={"experiment": "resume test"})
''')
namespace: dict = {}
exec(CYCLE_DATA, namespace)
cycle_data, make_writer, MEMBERS = namespace["cycle_data"], namespace["writer"], namespace["MEMBERS"]


def write_cycles(filename, cycles, writer=None):
    writer = writer or make_writer(filename, InnovationArchiveWriter)
    for k in cycles:
        writer.append_cycle(k, T0 + 21600 * k, **cycle_data(k))
    return writer


def test_round_trip(tmp_path):
    target = tmp_path / "innov.nc"
    writer = write_cycles(target, range(6))
    state = writer.checkpoint_state()
    assert state["cycles"] == 6 and state["last cycle"] == 5 and state["bytes"] == log_path(target).stat().st_size
    json.dumps(state)  # the cycle checkpoint stores it as JSON
    assert writer.close() == target
    data = read_archive(target)
    expected = [cycle_data(k) for k in range(6)]
    assert data.ncycles == 6 and data.nobs == sum(len(e["obs_value"]) for e in expected)
    np.testing.assert_array_equal(data.cycle_nobs, [len(e["obs_value"]) for e in expected])
    np.testing.assert_array_equal(data.cycle_index, np.arange(6))
    np.testing.assert_array_equal(data.analysis_time, T0 + 21600 * np.arange(6))
    np.testing.assert_array_equal(data.cycle, np.repeat(np.arange(6), data.cycle_nobs))
    for key in ("obs_value", "obs_error", "hofx_background", "hofx_analysis", "background_error_variance",
                "date_time"):
        np.testing.assert_array_equal(getattr(data, key), np.concatenate([e[key] for e in expected]))
    for c in "xyz":
        np.testing.assert_array_equal(data.coordinates[c], np.concatenate([e["coordinates"][c] for e in expected]))
    np.testing.assert_array_equal(data.variable, np.concatenate([e["variable"] for e in expected]))
    np.testing.assert_array_equal(data.obs_group, np.concatenate(
        [[e["obs_group"]] * len(e["obs_value"]) for e in expected]))
    np.testing.assert_array_equal(data.region, np.concatenate([e["region"] for e in expected]))
    np.testing.assert_array_equal(data.ensemble_perturbations,
                                  np.concatenate([e["ensemble_perturbations"] for e in expected]))
    np.testing.assert_array_equal(data.cost_at_analysis, [e["cost_at_analysis"] for e in expected])
    assert data.members == MEMBERS and data.geometry == {"type": "test", "n": 8}
    assert data.attributes["method"] == "LETKF" and data.attributes["experiment"] == "resume test"
    np.testing.assert_allclose(data.members_hofx().mean(axis=1) - data.hofx_background,
                               data.ensemble_perturbations.mean(axis=1), atol=1e-15)


def test_xarray_reads_every_group_without_pyoops(tmp_path):
    """A user without pyoops opens each group with xarray (pyoops is made unimportable)."""
    target = tmp_path / "innov.nc"
    write_cycles(target, range(4)).close()
    expected = [cycle_data(k) for k in range(4)]
    np.savez(tmp_path / "expected.npz", y=np.concatenate([e["obs_value"] for e in expected]),
             hxb=np.concatenate([e["hofx_background"] for e in expected]),
             hxa=np.concatenate([e["hofx_analysis"] for e in expected]),
             pert=np.concatenate([e["ensemble_perturbations"] for e in expected]),
             variable=np.concatenate([e["variable"] for e in expected]))
    script = textwrap.dedent(f'''
        import sys
        sys.modules["pyoops"] = None  # any "import pyoops" now fails
        import json
        import numpy as np
        import xarray as xr
        path = {str(target)!r}
        e = np.load({str(tmp_path / "expected.npz")!r})
        root = xr.open_dataset(path)
        assert root.attrs["format"] == "pyoops innovation archive" and int(root.attrs["format_version"]) == 1
        assert json.loads(root.attrs["geometry"]) == {{"type": "test", "n": 8}}
        meta = xr.open_dataset(path, group="MetaData")
        assert meta["dateTime"].dtype.kind == "M" and meta.sizes["Location"] == e["y"].size
        assert list(meta["variableName"].values) == list(e["variable"])
        assert set(meta["obsGroup"].values) == {{"aircraft", "sonde"}}
        assert set(meta.data_vars) == {{"dateTime", "cycle", "x", "y", "z", "variableName", "obsGroup", "region"}}
        group = lambda g: xr.open_dataset(path, group=g)["value"].values
        assert np.array_equal(group("ObsValue"), e["y"])
        assert np.array_equal(group("HofXBackground"), e["hxb"])
        assert np.array_equal(group("HofXAnalysis"), e["hxa"])
        assert np.array_equal(group("ombg"), e["y"] - e["hxb"])
        assert np.array_equal(group("oman"), e["y"] - e["hxa"])
        for g in ("ObsError", "BackgroundErrorVariance"):
            assert group(g).shape == e["y"].shape
        pert = xr.open_dataset(path, group="EnsembleHofXPerturbations")["value"]
        assert pert.dims == ("Location", "Member") and np.array_equal(pert.values, e["pert"])
        cyc = xr.open_dataset(path, group="Cycle")
        assert list(cyc["cycle"].values) == [0, 1, 2, 3] and int(cyc["nobs"].sum()) == e["y"].size
        assert str(cyc["analysisTime"].values[0])[:19] == "2010-01-01T00:00:00"
        assert np.isnan(cyc["costAtAnalysis"].values[0])
        print("ok")
    ''')
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_simulated_kill_and_resume_is_bitwise(tmp_path):
    """Checkpoint after cycle 3, two more cycles and a torn record appended, then the run dies;
    the resumed run truncates back and ends with the same log and archive bytes."""
    reference = tmp_path / "reference.nc"
    write_cycles(reference, range(10)).close()
    target = tmp_path / "resumed.nc"
    writer = write_cycles(target, range(4))
    state = json.loads(json.dumps(writer.checkpoint_state()))
    write_cycles(target, range(4, 6), writer)
    with open(log_path(target), "ab") as fh:  # what a killed run's torn write leaves
        fh.write(b"CYC1 torn record of a killed run")
    del writer  # killed: never closed
    resumed = make_writer(target, InnovationArchiveWriter)
    resumed.resume(state)
    assert resumed.ncycles == 4 and resumed.last_cycle == 3
    assert log_path(target).stat().st_size == state["bytes"]
    write_cycles(target, range(4, 10), resumed).close()
    assert log_path(target).read_bytes() == log_path(reference).read_bytes()
    assert target.read_bytes() == reference.read_bytes()


def test_sigkill_and_resume_is_bitwise(tmp_path):
    """A real SIGKILL: a child process appends cycles and saves the checkpoint state every
    second cycle; it is killed mid-run; the resumed archive equals an uninterrupted one."""
    reference = tmp_path / "reference.nc"
    write_cycles(reference, range(12)).close()
    target, statefile = tmp_path / "killed.nc", tmp_path / "state.json"
    child = CYCLE_DATA + textwrap.dedent(f'''
        import json, time
        from pyoops.diagnostics import InnovationArchiveWriter
        from pyoops.util.atomic import atomic_output
        w = writer({str(target)!r}, InnovationArchiveWriter)
        for k in range(12):
            w.append_cycle(k, 1262304000 + 21600 * k, **cycle_data(k))
            if k % 2 == 1:
                with atomic_output({str(statefile)!r}, commit="now") as tmp:
                    tmp.write_text(json.dumps(w.checkpoint_state()))
            time.sleep(0.2)
        w.close()
    ''')
    proc = subprocess.Popen([sys.executable, "-c", child], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if statefile.exists() and json.loads(statefile.read_text())["cycles"] >= 4:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.02)
        time.sleep(0.1)  # past the checkpoint: the log holds cycles the checkpoint does not
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()  # the archive is only assembled at close
    state = json.loads(statefile.read_text())
    assert 4 <= state["cycles"] < 12
    resumed = make_writer(target, InnovationArchiveWriter)
    resumed.resume(state)
    write_cycles(target, range(state["cycles"], 12), resumed).close()
    assert target.read_bytes() == reference.read_bytes()


def test_resume_refuses_a_log_that_is_not_the_checkpointed_one(tmp_path):
    target = tmp_path / "innov.nc"
    writer = write_cycles(target, range(3))
    state = writer.checkpoint_state()
    writer.close()
    other = tmp_path / "other.nc"
    write_cycles(other, [0, 1, 5]).close()
    os.replace(log_path(other), log_path(target))  # same length or longer, other contents
    with pytest.raises(InputFileError, match=r"innov\.nc\.log: .*(does not match|fewer)"):
        make_writer(target, InnovationArchiveWriter).resume(state)
    log_path(target).write_bytes(log_path(target).read_bytes()[:100])
    with pytest.raises(InputFileError, match="fewer than"):
        make_writer(target, InnovationArchiveWriter).resume(state)
    log_path(target).unlink()
    with pytest.raises(InputFileError, match="missing"):
        make_writer(target, InnovationArchiveWriter).resume(state)
    # A log of the same run but another writer configuration (members) is refused too.
    write_cycles(target, range(3)).close()
    other_writer = InnovationArchiveWriter(target, ["x", "y", "z"], 4, geometry={"type": "test", "n": 8})
    with pytest.raises(InputFileError, match="other coordinates, members or attributes"):
        other_writer.resume(state)


def test_in_memory_writer_gives_the_same_archive(tmp_path):
    on_disk, in_memory = tmp_path / "a.nc", tmp_path / "b.nc"
    write_cycles(on_disk, range(5)).close()
    writer = InnovationArchiveWriter(in_memory, ["x", "y", "z"], MEMBERS, geometry={"type": "test", "n": 8},
                                     application="cycle", method="LETKF", attributes={"experiment": "resume test"},
                                     resumable=False)
    write_cycles(in_memory, range(5), writer).close()
    assert not log_path(in_memory).exists()
    assert in_memory.read_bytes() == on_disk.read_bytes()


def test_archive_is_committed_with_the_run_and_the_log_at_once(tmp_path):
    target = tmp_path / "innov.nc"
    with pytest.raises(RuntimeError, match="run failed"):
        with OutputSession():
            writer = write_cycles(target, range(2))
            assert log_path(target).exists()  # committed at once: a resumed run needs it
            writer.close()
            assert not target.exists()  # staged until the run succeeds
            raise RuntimeError("run failed")
    assert not target.exists() and log_path(target).exists()
    with OutputSession():
        write_cycles(target, range(2)).close()
    assert read_archive(target).ncycles == 2


def test_writer_refuses_inconsistent_input(tmp_path):
    writer = make_writer(tmp_path / "a.nc", InnovationArchiveWriter)
    good = cycle_data(0)
    writer.append_cycle(3, T0, **good)
    with pytest.raises(ValueError, match="must increase"):
        writer.append_cycle(3, T0, **good)
    with pytest.raises(ValueError, match="shape"):
        writer.append_cycle(4, T0, **{**good, "hofx_background": np.zeros(7)})
    with pytest.raises(ValueError, match="positive"):
        writer.append_cycle(4, T0, **{**good, "obs_error": 0.0})
    with pytest.raises(ValueError, match="non-finite"):
        writer.append_cycle(4, T0, **{**good, "obs_value": np.full(2, np.nan)})
    with pytest.raises(ValueError, match="ensemble_perturbations has shape"):
        writer.append_cycle(4, T0, **{**good, "ensemble_perturbations": np.zeros((2, 5))})
    with pytest.raises(ValueError, match="coordinates"):
        writer.append_cycle(4, T0, **{**good, "coordinates": {"x": 0.0}})
    with pytest.raises(RuntimeError, match="before any append"):
        writer.resume(writer.checkpoint_state())
    # Refused cycles left no trace: the archive holds exactly the good one.
    writer.close()
    assert read_archive(tmp_path / "a.nc").cycle_index.tolist() == [3]
    with pytest.raises(ValueError, match="coordinate names"):
        InnovationArchiveWriter(tmp_path / "b.nc", ["x", "cycle"])


# Bad archives -----------------------------------------------------------------------------------
@pytest.fixture
def archive(tmp_path):
    target = tmp_path / "good.nc"
    write_cycles(target, range(4)).close()
    return target


def _modified(archive, tmp_path, edit, name="bad.nc"):
    bad = tmp_path / name
    bad.write_bytes(archive.read_bytes())
    with netCDF4.Dataset(bad, "a") as ds:
        edit(ds)
    return bad


def _one_line(exc_info, filename):
    text = str(exc_info.value)
    assert "\n" not in text and text.startswith(str(filename))
    return text


def test_not_an_archive(tmp_path):
    plain = tmp_path / "plain.nc"
    with netCDF4.Dataset(plain, "w") as ds:
        ds.createDimension("Location", 2)
    with pytest.raises(InputFileError, match="is not a pyoops innovation archive") as exc:
        read_archive(plain)
    _one_line(exc, plain)
    text = tmp_path / "text.nc"
    text.write_text("not netCDF")
    with pytest.raises(InputFileError, match="not a readable netCDF"):
        read_archive(text)
    with pytest.raises(InputFileError, match="not found"):
        read_archive(tmp_path / "missing.nc")


@pytest.mark.parametrize("edit, message", [
    (lambda ds: ds.renameGroup("HofXAnalysis", "Other"), "has no group HofXAnalysis"),
    (lambda ds: ds.renameGroup("Cycle", "Cycles"), "has no group Cycle"),
        (lambda ds: ds["Cycle"]["nobs"].__setitem__(0, 99), "Cycle/nobs sums to"),
    (lambda ds: ds["MetaData"]["cycle"].__setitem__(0, 7), "MetaData/cycle does not match"),
    (lambda ds: ds["Cycle"]["cycle"].__setitem__(slice(None), [0, 2, 1, 3]), "not strictly increasing"),
    (lambda ds: ds.setncattr("format_version", 99), "format version 99"),
    (lambda ds: ds["ObsError"]["value"].__setitem__(0, -1.0), "ObsError/value has values that are not positive"),
    (lambda ds: ds["BackgroundErrorVariance"]["value"].__setitem__(0, np.inf), "infinite values"),
], ids=["missing group", "missing cycle table", "lengths", "cycles", "order", "version",
        "obs error", "infinite variance"])
def test_bad_archive_is_one_line_naming_the_file(archive, tmp_path, edit, message):
    bad = _modified(archive, tmp_path, edit)
    with pytest.raises(InputFileError, match=message) as exc:
        read_archive(bad)
    _one_line(exc, bad)


def _copy_without(src, dst, group_name, variable_name):
    """Copy a netCDF4 file leaving one variable out (netCDF4 cannot rename or delete in place)."""
    with netCDF4.Dataset(src) as a, netCDF4.Dataset(dst, "w") as b:
        def copy(g_in, g_out):
            g_out.setncatts({k: g_in.getncattr(k) for k in g_in.ncattrs()})
            for name, dim in g_in.dimensions.items():
                g_out.createDimension(name, len(dim))
            for name, var in g_in.variables.items():
                if (g_in.name, name) == (group_name, variable_name):
                    continue
                out = g_out.createVariable(name, var.datatype, var.dimensions)
                out[...] = var[...]
            for name, sub in g_in.groups.items():
                copy(sub, g_out.createGroup(name))
        copy(a, b)


def test_missing_variable(archive, tmp_path):
    bad = tmp_path / "bad.nc"
    _copy_without(archive, bad, "MetaData", "x")
    with pytest.raises(InputFileError, match="has no variable MetaData/x") as exc:
        read_archive(bad)
    _one_line(exc, bad)


def test_archives_are_pooled_in_cycle_order_and_checked(tmp_path):
    early, late = tmp_path / "early.nc", tmp_path / "late.nc"
    write_cycles(early, range(3)).close()
    write_cycles(late, range(3, 6)).close()
    pooled = read_archive([late, early])
    assert pooled.cycle_index.tolist() == list(range(6)) and pooled.sources == (str(early), str(late))
    whole = tmp_path / "whole.nc"
    write_cycles(whole, range(6)).close()
    single = read_archive(whole)
    for key in ("obs_value", "cycle", "date_time", "region", "cost_at_analysis"):
        np.testing.assert_array_equal(getattr(pooled, key), getattr(single, key))
    # Overlapping cycles.
    overlap = tmp_path / "overlap.nc"
    write_cycles(overlap, range(2, 4)).close()
    with pytest.raises(InputFileError, match="overlap") as exc:
        read_archive([early, overlap])
    assert "early.nc" in str(exc.value) and "\n" not in str(exc.value)
    # Another geometry, another ensemble size.
    other = tmp_path / "other.nc"
    w = InnovationArchiveWriter(other, ["x", "y", "z"], MEMBERS, geometry={"type": "test", "n": 16},
                                application="cycle", method="LETKF")
    write_cycles(other, range(10, 12), w).close()
    with pytest.raises(InputFileError, match="geometry") as exc:
        read_archive([early, other])
    _one_line(exc, other)
    with pytest.raises(InputFileError, match="another geometry"):
        read_archive(early, geometry={"type": "test", "n": 16})
    small = tmp_path / "small.nc"
    w = InnovationArchiveWriter(small, ["x", "y", "z"], 2, geometry={"type": "test", "n": 8}, method="LETKF")
    data = cycle_data(20)
    data["ensemble_perturbations"] = data["ensemble_perturbations"][:, :2]
    w.append_cycle(20, T0, **data)
    w.close()
    with pytest.raises(InputFileError, match="members"):
        read_archive([early, small])


def test_empty_archive_is_valid(tmp_path):
    target = tmp_path / "empty.nc"
    InnovationArchiveWriter(target, ["x"]).close()
    data = read_archive(target)
    assert data.nobs == 0 and data.ncycles == 0 and data.ensemble_perturbations is None
    assert Path(log_path(target)).exists()
