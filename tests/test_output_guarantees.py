"""The output guarantees of every application run (docs: "Errors and guarantees").

* all outputs of a run or none: a run that fails writes nothing and says so;
* an output that would replace an input of the same run is refused before the run;
* two runs writing the same output cannot interleave: the second one is refused;
* temporaries of a killed run are removed by the next run writing in that directory;
* a legal long output name works; errors name the user's path, never a temporary;
* an exception from a plugin's own bug is one line naming the plugin, exit 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from pyoops.apps.files import declared_files
from pyoops.cli import main
from pyoops.util import atomic


def _write_state(path: Path, n: int = 8) -> None:
    import netCDF4

    with netCDF4.Dataset(path, "w") as ds:
        ds.date = "2010-01-01T00:00:00Z"
        ds.createDimension("position", n)
        ds.createVariable("position", "f8", ("position",))[:] = np.arange(n) / n
        ds.createVariable("x", "f8", ("position",))[:] = 8.0 + np.sin(2 * np.pi * np.arange(n) / n)


def _forecast(tmp_path: Path, output: str, initial: str = "bg.nc", length: str = "PT12H") -> Path:
    config = {
        "model plugin": "lorenz96",
        "geometry": {"resol": 8},
        "model": {"name": "Lorenz96", "f": 8.0, "tstep": "PT6H"},
        "initial condition": {"date": "2010-01-01T00:00:00Z", "filename": initial},
        "forecast length": length,
        "output": {"filename": output, "frequency": "PT6H"} if "%date%" in output else {"filename": output},
    }
    path = tmp_path / "forecast.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    _write_state(tmp_path / "bg.nc")
    return tmp_path


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main([*args, "--quiet"])
    return code, capsys.readouterr().err.splitlines()


def _temporaries(directory: Path) -> list[Path]:
    return sorted(directory.rglob(".pyoops-*"))


# Inputs are never replaced ----------------------------------------------------------------------
def test_output_equal_to_the_initial_condition_is_refused_before_the_run(workdir, capsys):
    before = (workdir / "bg.nc").read_bytes()
    code, err = _run(capsys, "forecast", str(_forecast(workdir, "bg.nc", length="PT0S")))
    assert code == 2 and len(err) == 1, err
    assert "output.filename" in err[0] and "initial condition.filename" in err[0], err[0]
    assert (workdir / "bg.nc").read_bytes() == before


def test_output_equal_to_the_input_through_another_spelling_is_refused(workdir, capsys):
    (workdir / "sub").mkdir()
    code, err = _run(capsys, "forecast", str(_forecast(workdir, "sub/../bg.nc", length="PT0S")))
    assert code == 2 and "would replace the input" in err[0], err


def test_template_output_that_expands_to_an_input_writes_nothing(workdir, capsys):
    """The check before the run compares templates as written; the expanded name is caught when written."""
    _write_state(workdir / "fc.2010-01-01T00:00:00Z.nc")
    before = (workdir / "fc.2010-01-01T00:00:00Z.nc").read_bytes()
    code, err = _run(capsys, "forecast",
                     str(_forecast(workdir, "fc.%date%.nc", initial="fc.2010-01-01T00:00:00Z.nc")))
    assert code == 2 and len(err) == 1, err
    assert "an input of this run" in err[0] and "no output was written" in err[0], err[0]
    assert (workdir / "fc.2010-01-01T00:00:00Z.nc").read_bytes() == before
    assert not (workdir / "fc.2010-01-01T06:00:00Z.nc").exists()
    assert _temporaries(workdir) == []


def test_declared_files_know_direction_from_the_section():
    files = declared_files({"initial condition": {"filename": "a.nc"},
                            "output": {"filename": "b.nc"},
                            "observations": {"observers": [{"obs space": {"obsdatain": {"obsfile": "o.nc"},
                                                                          "obsdataout": {"obsfile": "p.nc"}}}]}})
    roles = {f.value: (f.role, f.path) for f in files}
    assert roles["a.nc"] == ("input", "initial condition.filename")
    assert roles["b.nc"] == ("output", "output.filename")
    assert roles["o.nc"][0] == "input" and roles["p.nc"][0] == "output"


# All or nothing ---------------------------------------------------------------------------------
def test_a_failing_run_commits_nothing_and_removes_its_directories(tmp_path):
    target = tmp_path / "new" / "deeper" / "a.txt"
    with pytest.raises(RuntimeError):
        with atomic.OutputSession():
            with atomic.atomic_output(target) as tmp:
                tmp.write_text("complete")
            raise RuntimeError("the run fails after its first output")
    assert not (tmp_path / "new").exists()


def test_a_checkpoint_committed_at_once_is_kept_and_reported(tmp_path):
    session = atomic.OutputSession()
    with pytest.raises(RuntimeError):
        with session:
            with atomic.atomic_output(tmp_path / "checkpoint.npz", commit="now") as tmp:
                tmp.write_bytes(b"state")
            with atomic.atomic_output(tmp_path / "stats.nc") as tmp:
                tmp.write_bytes(b"stats")
            raise RuntimeError("killed")
    assert (tmp_path / "checkpoint.npz").read_bytes() == b"state"
    assert not (tmp_path / "stats.nc").exists()
    assert "checkpoint.npz" in session.describe_failure()


def test_a_successful_run_commits_every_output(tmp_path):
    with atomic.OutputSession() as session:
        for name in ("a", "b"):
            with atomic.atomic_output(tmp_path / name) as tmp:
                tmp.write_text(name)
        assert not (tmp_path / "a").exists()  # deferred until the run ends
    assert session.committed == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert (tmp_path / "a").read_text() == "a" and (tmp_path / "b").read_text() == "b"


# Names and permissions -------------------------------------------------------------------------
def test_a_legal_250_character_output_name_works(workdir, capsys):
    name = "f" * (250 - len(".2010-01-01T12:00:00Z.nc")) + ".%date%.nc"
    expanded = name.replace("%date%", "2010-01-01T12:00:00Z")
    assert len(expanded) == 250
    code, err = _run(capsys, "forecast", str(_forecast(workdir, name)))
    assert code == 0, err
    assert (workdir / expanded).is_file()
    assert _temporaries(workdir) == []


def test_an_output_below_a_file_is_refused_before_the_run(workdir, capsys):
    (workdir / "plain").write_text("a file, not a directory")
    code, err = _run(capsys, "forecast", str(_forecast(workdir, "plain/fc.%date%.nc")))
    assert code == 2 and len(err) == 1, err
    assert "output.filename" in err[0] and "is a file, not a directory" in err[0], err[0]


def test_an_output_taken_by_a_directory_is_refused_before_the_run(workdir, capsys):
    (workdir / "fc.nc").mkdir()
    code, err = _run(capsys, "forecast", str(_forecast(workdir, "fc.nc", length="PT0S")))
    assert code == 2 and len(err) == 1 and "fc.nc" in err[0] and "directory" in err[0], err


# Concurrency and killed runs -------------------------------------------------------------------
def test_a_second_run_writing_the_same_output_is_refused_and_writes_nothing(workdir, capsys):
    """Another process holds the output (as a running pyoops would): this run fails cleanly."""
    holder = textwrap.dedent(f"""
        import sys, time
        from pyoops.util import atomic
        with atomic.OutputSession():
            with atomic.atomic_output({str(workdir / 'fc.2010-01-01T06:00:00Z.nc')!r}) as tmp:
                tmp.write_text("other run")
                print("holding", flush=True)
                sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        code, err = _run(capsys, "forecast", str(_forecast(workdir, "fc.%date%.nc")))
        assert code == 2 and len(err) == 1, err
        assert "another pyoops run is writing this output" in err[0] and "no output was written" in err[0], err
        assert not (workdir / "fc.2010-01-01T00:00:00Z.nc").exists()
    finally:
        proc.communicate("done\n", timeout=60)
    assert (workdir / "fc.2010-01-01T06:00:00Z.nc").read_text() == "other run"


def test_temporaries_of_a_killed_run_are_removed_by_the_next_run(workdir, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = workdir / "out" / f".pyoops-{atomic._HOST}-{pid}-0.nc"
    stale.parent.mkdir()
    stale.write_bytes(b"x" * 1000)
    live = workdir / "out" / f".pyoops-{atomic._HOST}-{os.getpid()}-999999.nc"  # a live process's: kept
    live.write_bytes(b"y")
    atomic._cleaned_directories.discard(atomic._key(workdir / "out"))
    code, err = _run(capsys, "forecast", str(_forecast(workdir, "out/fc.%date%.nc")))
    assert code == 0, err
    assert not stale.exists()
    assert live.exists()


# Plugin bugs -------------------------------------------------------------------------------------
def test_a_plugin_bug_is_one_line_naming_the_plugin_and_the_maker(workdir, capsys, monkeypatch):
    from pyoops_lorenz96.model import Lorenz96Model

    import types

    import pyoops_lorenz96.model as plugin_module

    def broken_step(self, *args, **kwargs):
        raise ZeroDivisionError("a bug in the plugin")

    # The broken method runs with the plugin module's globals, as a bug in the plugin's own code would.
    monkeypatch.setattr(Lorenz96Model, "step", types.FunctionType(broken_step.__code__, vars(plugin_module)))
    code, err = _run(capsys, "forecast", str(_forecast(workdir, "fc.%date%.nc")))
    assert code == 1 and len(err) == 1, err
    assert "plugin 'lorenz96'" in err[0] and "model 'Lorenz96'" in err[0], err[0]
    assert "ZeroDivisionError: a bug in the plugin" in err[0] and "--debug" in err[0], err[0]
    assert "no output was written" in err[0]
