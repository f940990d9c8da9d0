"""The bad-input corpus: every way a careful user could get a configuration wrong, on small Lorenz-96 runs.

Each case breaks one valid configuration of ``reliability_corpus.py`` (forecast, hofx, variational,
ensemble-forecast, gen-ens-pert-b, dirac, letkf, eda, cycle) and runs
``pyoops.cli.main([app, config, "--quiet"])`` in-process.  A bad input must give

* exit status 2 (never 1, never an exception, never a hang);
* exactly one line on standard error, ``pyoops: error: ...``, naming the YAML key (with
  ``file:line`` when it has one) or the file, and what was expected;
* nothing written: no new file or directory in the case directory, no ``.pyoops-*``
  temporary;

and a legal input (``ok=True``) exit status 0 with its outputs.  Cases that could hang
before their fix run in a subprocess with a timeout (``subprocess=True``); every case
is also bounded by :data:`MAX_SECONDS`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyoops.cli import main


# The shared valid configurations live beside this file (tests are collected in importlib mode,
# so the folder is put on the path for this one import).
sys.path.insert(0, str(Path(__file__).parent))
import reliability_corpus as corpus  # noqa: E402
N, DATE = corpus.N, corpus.DATE

#: Wall-clock bound of one in-process case (they take well under a second; the machine is shared).
MAX_SECONDS = 60.0
#: Bound of a subprocess case (interpreter start-up and imports included).
SUBPROCESS_TIMEOUT = 120.0


# Edits -------------------------------------------------------------------------------------------
Edit = Callable[[dict[str, Any], Path], Any]


def _walk(cfg: Any, keys: list[str]) -> Any:
    node = cfg
    for k in keys:
        node = node[int(k)] if isinstance(node, list) else node[k]
    return node


def set_(path: str, value: Any) -> Edit:
    keys = path.split("/")

    def edit(cfg: dict[str, Any], directory: Path) -> None:
        parent = _walk(cfg, keys[:-1])
        if isinstance(parent, list):
            parent[int(keys[-1])] = value
        else:
            parent[keys[-1]] = value

    return edit


def delete(path: str) -> Edit:
    keys = path.split("/")

    def edit(cfg: dict[str, Any], directory: Path) -> None:
        del _walk(cfg, keys[:-1])[keys[-1]]

    return edit


def rename(path: str, new: str) -> Edit:
    keys = path.split("/")

    def edit(cfg: dict[str, Any], directory: Path) -> None:
        parent = _walk(cfg, keys[:-1])
        parent[new] = parent.pop(keys[-1])

    return edit


def chain(*edits: Edit) -> Edit:
    def edit(cfg: dict[str, Any], directory: Path) -> Any:
        out = None
        for e in edits:
            out = e(cfg, directory) or out
        return out

    return edit


def raw(text: str) -> Edit:
    """Replace the whole configuration file by ``text`` (YAML syntax cases)."""

    def edit(cfg: dict[str, Any], directory: Path) -> str:
        (directory / "raw.yaml").write_text(text, encoding="utf-8")
        return "raw.yaml"

    return edit


def raw_bytes(data: bytes) -> Edit:
    def edit(cfg: dict[str, Any], directory: Path) -> str:
        (directory / "raw.yaml").write_bytes(data)
        return "raw.yaml"

    return edit


def make_file(name: str, content: bytes = b"x") -> Edit:
    def edit(cfg: dict[str, Any], directory: Path) -> None:
        (directory / name).write_bytes(content)

    return edit


GOOD_FORECAST = """\
model plugin: lorenz96
geometry: {resol: 8}
model: {name: Lorenz96, f: 8.0, tstep: PT6H}
initial condition: {date: 2010-01-01T00:00:00Z, filename: bg.nc}
forecast length: PT12H
"""

ALIAS_BOMB = "model plugin: lorenz96\n" + "\n".join(
    ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"] +
    [f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}, "
     f"*l{i - 1}, *l{i - 1}]" for i in range(1, 9)]) + "\n"

LONG_NAME = "f" * 247 + ".nc"  # 250 characters: legal on every usual file system (limit 255 bytes)


def _more_than_the_disk(cfg: dict[str, Any], directory: Path) -> None:
    """10000 members (the cap) of states twice as large, together, as the free disk space."""
    import shutil

    free = shutil.disk_usage(directory).free
    cfg["members"] = 10_000
    cfg["geometry"]["resol"] = max(10_000, int(2 * free / (8 * 10_000)))
    cfg["background"] = {"date": DATE, "analytic init": {"method": "sinusoid"}}


# Cases -------------------------------------------------------------------------------------------
@dataclass
class Case:
    base: str
    edit: Edit
    expect: tuple[str, ...] = ()
    ok: bool = False
    #: Run in a fresh interpreter with a timeout (hang risks).
    subprocess: bool = False
    #: For ``ok`` cases: files (relative to the case directory) the run must write.
    outputs: tuple[str, ...] = ()
    xfail: str = ""
    marks: list[Any] = field(default_factory=list)


def C(base: str, edit: Edit, *expect: str, **kw: Any) -> Case:
    return Case(base, edit, tuple(expect), **kw)


OBS0 = "observations/observers/0"
CF = "cost function"
BE = "cost function/background error"

CASES: dict[str, Case] = {
    # YAML syntax, aliases, tags, bad scalars ------------------------------------------------------
    "yaml: unclosed flow mapping": C("forecast", raw(GOOD_FORECAST.replace("{resol: 8}", "{resol: 8")),
                                     "raw.yaml", "not valid YAML", "line"),
    "yaml: tab indentation": C("forecast", raw(GOOD_FORECAST + "output:\n\tfilename: out/fc.nc\n"),
                               "raw.yaml", "not valid YAML", "line 7"),
    "yaml: duplicate key": C("forecast", raw(GOOD_FORECAST + "forecast length: PT6H\n"),
                             "raw.yaml", "duplicate key 'forecast length'", "line 6"),
    "yaml: alias bomb": C("forecast", raw(ALIAS_BOMB), "raw.yaml", "aliases"),
    "yaml: recursive alias": C("forecast", raw(GOOD_FORECAST + "loop: &a [1, *a]\n"), "raw.yaml", "recursive"),
    "yaml: python object tag": C("forecast", raw(GOOD_FORECAST + "x: !!python/object/apply:os.system ['true']\n"),
                                 "raw.yaml", "not valid YAML", "line 6"),
    "yaml: unknown local tag": C("forecast", raw(GOOD_FORECAST.replace("PT12H", "!duration PT12H")),
                                 "raw.yaml", "not valid YAML", "line 5"),
    "yaml: empty file": C("forecast", raw(""), "model plugin", "required key is missing"),
    "yaml: top-level list": C("forecast", raw("- model plugin: lorenz96\n"), "raw.yaml", "mapping"),
    "yaml: not UTF-8": C("forecast", raw_bytes(GOOD_FORECAST.encode() + b"# \xff\xfe\n"), "raw.yaml",
                         "cannot be read"),
    "yaml: impossible date scalar": C("forecast", raw(GOOD_FORECAST.replace("2010-01-01T00", "2010-02-30T00")),
                                      "raw.yaml", "line 4", "2010-02-30"),
    "yaml: non-string top-level key": C("forecast", raw(GOOD_FORECAST + "7: seven\n"), "raw.yaml", "keys"),
    "yaml: non-string nested key": C("forecast", raw(GOOD_FORECAST.replace("{resol: 8}", "{resol: 8, 3: x}")),
                                     "geometry", "string", "raw.yaml:2"),
    "yaml: config is a directory": C("forecast", lambda cfg, d: (d / "adir.yaml").mkdir() or "adir.yaml",
                                     "adir.yaml", "not found"),
    "yaml: deeply nested": C("forecast", raw(GOOD_FORECAST + "deep: " + "[" * 5000 + "]" * 5000 + "\n"),
                             "raw.yaml"),

    # Unknown, misspelt, missing keys ----------------------------------------------------------
    "key: misspelt top-level": C("forecast", rename("forecast length", "forecast lenght"),
                                 "forecast lenght", "did you mean 'forecast length'", "cfg.yaml:"),
    "key: unknown top-level": C("forecast", set_("colour", "blue"), "colour", "unknown key"),
    "key: misspelt nested (variational)": C("variational", rename(f"{CF}/background", "backgrund"),
                                            "cost function.backgrund", "did you mean 'background'"),
    "key: misspelt inflation (letkf)": C("letkf", rename("local ensemble DA/inflation/mult", "multt"),
                                         "local ensemble DA.inflation.multt", "did you mean 'mult'"),
    "key: unknown in obs localization": C("letkf", set_(f"{OBS0}/obs localizations/0/radius", 0.5),
                                          "observations.observers[0].obs localizations[0].radius", "unknown key"),
    "key: unknown in initial condition": C("ensemble-forecast",
                                           set_("initial condition/members from template/nmember", 3),
                                           "initial condition.members from template.nmember", "unknown key"),
    "key: unknown in model": C("forecast", set_("model/forcing", 8.0), "model.forcing", "unknown key"),
    "key: unknown in SABER block": C("variational", set_(f"{BE}/saber central block/lenght scale", 0.2),
                                     "saber central block", "lenght scale"),
    "key: missing cycles (cycle)": C("cycle", delete("cycling/cycles"), "cycling.cycles", "required key is missing"),
    "key: missing members (eda)": C("eda", delete("members"), "members", "required key is missing"),
    "key: missing observations (hofx)": C("hofx", delete("observations"), "observations", "required key is missing"),
    "key: missing output (gen-ens-pert-b)": C("gen-ens-pert-b", delete("output"), "output", "required key"),
    "key: missing dirac ixdir": C("dirac", delete("dirac/ixdir"), "dirac.ixdir", "required key is missing"),
    "key: missing model plugin": C("forecast", delete("model plugin"), "model plugin", "required key is missing"),
    "key: missing linear model (4D-Var)": C("4dvar", delete(f"{CF}/linear model"), "linear model"),

    # Wrong types ----------------------------------------------------------------------------------
    "type: resol a word": C("forecast", set_("geometry/resol", "eight"), "geometry.resol", "integer"),
    "type: forecast length a number": C("forecast", set_("forecast length", 12), "forecast length", "duration"),
    "type: inflation a word": C("letkf", set_("local ensemble DA/inflation/mult", "big"),
                                "local ensemble DA.inflation.mult", "number"),
    "type: iterations a mapping": C("variational", set_("variational/iterations", {"ninner": 5}),
                                    "variational.iterations", "list"),
    "type: members a word (cycle)": C("cycle-letkf", set_("cycling/members", "four"), "cycling.members", "integer"),
    "type: observers a string": C("hofx", set_("observations/observers", "grid"), "observations.observers"),
    "type: members a list (gen-ens-pert-b)": C("gen-ens-pert-b", set_("members", [3]), "members", "integer"),
    "type: seed fractional (eda)": C("eda", set_("eda/seed", 1.5), "eda.seed", "integer"),
    "type: forcing a word": C("forecast", set_("model/f", "eight"), "model.f", "number"),
    "type: lengthscale a mapping": C("letkf", set_(f"{OBS0}/obs localizations/0/lengthscale", {"x": 0.5}),
                                     "lengthscale"),
    "type: nmembers a boolean": C("ensemble-forecast", set_("initial condition/members from template/nmembers", True),
                                  "initial condition.members from template.nmembers"),
    "type: geometry a list": C("forecast", set_("geometry", [8]), "geometry", "dictionary"),
    "type: members a boolean (gen-ens-pert-b)": C("gen-ens-pert-b", set_("members", True), "members", "integer",
                                                 ),
    "type: ixdir strings": C("dirac", set_("dirac/ixdir", ["two"]), "dirac.ixdir", "integer"),
    "type: date a number": C("forecast", set_("initial condition/date", 20100101), "initial condition.date",
                             "ISO-8601"),

    # Non-finite values ------------------------------------------------------------------------------
    "inf: generated obs error": C("makeobs", set_(f"{OBS0}/obs space/generate/obs error", float("inf")),
                                  "obs error", "finite"),
    "nan: obs error inflation": C("hofx", set_(f"{OBS0}/obs error", {"covariance model": "diagonal",
                                                                     "inflation": float("nan")}),
                                  "obs error.inflation", "finite"),
    "inf: multiplicative inflation": C("letkf", set_("local ensemble DA/inflation/mult", float("inf")),
                                       "local ensemble DA.inflation.mult", "finite"),
    "nan: rtps": C("letkf", set_("local ensemble DA/inflation/rtps", float("nan")),
                   "local ensemble DA.inflation.rtps", "finite"),
    "inf: hybrid weight": C("hybrid", set_(f"{BE}/saber central block/components/0/weight/value", float("inf")),
                            "weight.value", "finite"),
    "inf: correlation length": C("variational", set_(f"{BE}/saber central block/length scale", float("inf")),
                                 "length scale"),
    "nan: StdDev value": C("variational", set_(f"{BE}/saber outer blocks/0/read/value", float("nan")),
                           "read.value", "finite"),
    "nan: gradient norm reduction": C("variational",
                                      set_("variational/iterations/0/gradient norm reduction", float("nan")),
                                      "variational.iterations[0].gradient norm reduction", "finite"),
    "inf: forcing F": C("forecast", set_("model/f", float("inf")), "model.f", "finite"),
    "nan: localization lengthscale": C("letkf", set_(f"{OBS0}/obs localizations/0/lengthscale", float("nan")),
                                       "lengthscale", "finite"),
    "inf: eda obs error inflation": C("eda", set_("eda/obs error inflation", float("inf")),
                                      "eda.obs error inflation", "finite"),
    "nan: cycle obs error": C("cycle", set_("observations/obs error", float("nan")), "observations.obs error",
                              "finite"),
    "inf: initial perturbation std": C("cycle", set_("cycling/initial perturbation", {"std": float("inf")}),
                                       "cycling.initial perturbation.std", "finite"),
    "inf: ensemble inflation value": C("hybrid", set_(f"{BE}/saber central block/components/1/covariance/"
                                                      "saber central block/inflation value", float("-inf")),
                                       "inflation value"),
    "nan: online test tolerance": C("variational", set_("variational/iterations/0/online diagnostics",
                                                         {"online adj test": True, "tolerance": float("nan")}),
                                    "tolerance", "finite"),
    "inf: Ensemble-block localization length": C(
        "hybrid", set_(f"{BE}/saber central block/components/1/covariance/saber central block/localization/"
                       "saber central block/length scale", float("inf")), "length scale"),

    # Out-of-range values ------------------------------------------------------------------------------
    "range: negative nmembers": C("ensemble-forecast", set_("initial condition/members from template/nmembers", -3),
                                  "initial condition.members from template.nmembers", "greater than 0"),
    "range: zero members (gen-ens-pert-b)": C("gen-ens-pert-b", set_("members", 0), "members", "greater than 0"),
    "range: negative members (gen-ens-pert-b)": C("gen-ens-pert-b", set_("members", -1), "members"),
    "range: zero tstep": C("forecast", set_("model/tstep", "PT0S"), "model.tstep", "positive"),
    "range: negative tstep": C("forecast", set_("model/tstep", "-PT6H"), "model.tstep"),
    "range: tstep not dividing the forecast": C("forecast", set_("model/tstep", "PT5H"), "forecast length",
                                                "multiple"),
    "range: tstep not dividing the window (4D-Var)": C("4dvar", chain(set_(f"{CF}/model/tstep", "PT5H"),
                                                                      set_(f"{CF}/linear model/tstep", "PT5H")),
                                                       "multiple"),
    "range: tstep not dividing the cycle": C("cycle", set_("cycling/window length", "PT9H"),
                                             "cycling.window length", "multiple"),
    "range: ninner 0": C("variational", set_("variational/iterations/0/ninner", 0),
                         "variational.iterations[0].ninner", "greater than 0"),
    "range: ninner 10**9": C("variational", set_("variational/iterations/0/ninner", 10**9),
                             "variational.iterations[0].ninner"),
    "range: localization radius 0": C("letkf", set_(f"{OBS0}/obs localizations/0/lengthscale", 0.0),
                                      "lengthscale", "positive"),
    "range: localization radius negative (cycle)": C("cycle-letkf",
                                                     set_("observations/obs localizations/0/lengthscale", -0.3),
                                                     "observations.obs localizations[0].lengthscale", "positive"),
    "range: rtps above 1": C("letkf", set_("local ensemble DA/inflation/rtps", 1.5), "rtps", "[0, 1]"),
    "range: deflation": C("letkf", set_("local ensemble DA/inflation/mult", 0.5), "mult", ">= 1"),
    "range: one member (eda)": C("eda", set_("members/members from template/nmembers", 1), "members",
                                 "at least 2"),
    "range: one member (cycle)": C("cycle-letkf", set_("cycling/members", 1), "cycling.members", "at least 2"),
    "range: zero cycles": C("cycle", set_("cycling/cycles", 0), "cycling.cycles", "greater than 0"),
    "range: obs density 0": C("makeobs", set_(f"{OBS0}/obs space/generate/obs density", 0), "obs density"),
    "range: negative obs error": C("makeobs", set_(f"{OBS0}/obs space/generate/obs error", -0.4), "obs error"),
    "range: dirac outside the grid": C("dirac", set_("dirac/ixdir", [99]), "dirac.ixdir", "99"),
    "range: dirac negative index": C("dirac", set_("dirac/ixdir", [-1]), "dirac.ixdir", "-1"),
    "range: negative zero padding": C("letkf", set_("background/members from template/zero padding", -1),
                                      "zero padding"),
    "range: zero correlation length": C("variational", set_(f"{BE}/saber central block/length scale", 0.0),
                                        "length scale"),
    "range: negative hybrid weight": C("hybrid", set_(f"{BE}/saber central block/components/0/weight/value", -0.5),
                                       "weight.value"),
    "range: negative StdDev": C("variational", set_(f"{BE}/saber outer blocks/0/read/value", -0.5),
                                "saber outer blocks[0].read", "positive"),
    "range: zero workers": C("eda", set_("parallel", {"engine": "processes", "workers": 0}), "parallel.workers"),
    "range: zero obs error inflation": C("hofx", set_(f"{OBS0}/obs error", {"covariance model": "diagonal",
                                                                            "inflation": 0.0}),
                                         "obs error.inflation"),
    "range: zero output frequency": C("forecast", set_("output/frequency", "PT0S"), "output", "positive"),
    "range: checkpoint every 0": C("cycle", set_("cycling/checkpoint every", 0), "cycling.checkpoint every"),
    "range: negative checkpoint seconds": C("cycle", set_("cycling/checkpoint seconds", -1.0),
                                            "cycling.checkpoint seconds"),
    "conflict: checkpoint every and seconds": C("cycle", chain(set_("cycling/checkpoint every", 5),
                                                               set_("cycling/checkpoint seconds", 2.0)),
                                                "cycling", "not both"),

    # Huge sizes (must fail before any work) ----------------------------------------------------------
    "huge: resol 3e9": C("forecast", set_("geometry/resol", 3e9), "geometry", "would need"),
    "huge: resol 3000000000": C("forecast", set_("geometry/resol", 3000000000), "geometry", "would need"),
    "huge: resol 10**30": C("forecast", set_("geometry/resol", 10**30), "geometry"),
    "huge: gen-ens-pert-b members 10**9": C("gen-ens-pert-b", set_("members", 10**9), "members", "10000",
                                            subprocess=True),
    "huge: gen-ens-pert-b members x file size": C("gen-ens-pert-b", _more_than_the_disk, "members", "free"),
    "huge: letkf nmembers 10**9": C("letkf", set_("background/members from template/nmembers", 10**9),
                                    "background", "nmembers", subprocess=True),
    "huge: ensemble-forecast nmembers 10**9": C(
        "ensemble-forecast", set_("initial condition/members from template/nmembers", 10**9),
        "initial condition", "nmembers", subprocess=True),
    "huge: eda nmembers 10**9": C("eda", set_("members/members from template/nmembers", 10**9), "members",
                                  subprocess=True),
    "huge: cycle members 10**9": C("cycle-letkf", set_("cycling/members", 10**9), "cycling.members",
                                   subprocess=True),
    "huge: cycles 10**12": C("cycle", set_("cycling/cycles", 10**12), "cycling.cycles", subprocess=True),
    "huge: generated nobs 10**10": C("makeobs", set_(f"{OBS0}/obs space/generate/obs density", 10**10),
                                     "obs density", subprocess=True),
    "huge: cycle obs density 10**10": C("cycle", set_("observations/obs density", 10**10),
                                        "observations.obs density", subprocess=True),
    "huge: forecast output files": C("forecast", chain(set_("forecast length", "P500000D"),
                                                       set_("output/frequency", "PT6H")), "output", "100000",
                                     subprocess=True),
    "huge: ensemble-forecast output files": C("ensemble-forecast",
                                              chain(set_("forecast length", "P10000D"),
                                                    set_("output/frequency", "PT6H")), "output",
                                              subprocess=True),
    "huge: Lanczos basis (ninner x control size)": C(
        "variational", chain(set_(f"{CF}/geometry/resol", 2_000_000),
                             set_(f"{CF}/background", {"date": DATE, "analytic init": {"method": "sinusoid"}}),
                             set_("variational/minimizer/algorithm", "DRPLanczos"),
                             set_("variational/iterations/0/ninner", 100_000)),
        "variational.iterations[0].ninner", "would need", subprocess=True),

    # Dates and durations ------------------------------------------------------------------------------
    "date: forecast length P99999999999D": C("forecast", set_("forecast length", "P99999999999D"),
                                             "forecast length"),
    "date: forecast past year 9999": C("forecast", set_("forecast length", "P3000000D"), "forecast length", "9999"),
    "date: forecast in years (no fixed length)": C("forecast", set_("forecast length", "P8000Y"), "forecast length",
                                                   "duration"),
    "date: initial date in year 9999": C("forecast", set_("initial condition", {
        "date": "9999-12-31T18:00:00Z", "analytic init": {"method": "sinusoid"}}), "forecast length", "9999"),
    "date: impossible month": C("forecast", set_("initial condition/date", "2010-13-45T00:00:00Z"),
                                "initial condition.date", "ISO-8601"),
    "date: a word": C("forecast", set_("initial condition/date", "yesterday"), "initial condition.date", "ISO-8601"),
    "date: state outside the hofx window": C("hofx", set_("state/date", "2010-01-02T00:00:00Z"), "state.date",
                                             "outside"),
    "date: background outside the letkf window": C("letkf", set_("time window/begin", "2010-01-05T00:00:00Z"),
                                                   "background", "outside"),
    "date: background outside the 3D-Var window": C("variational", set_(f"{CF}/time window/length", "PT1H"),
                                                    "cost function", "window"),
    "date: negative window length": C("hofx", set_("time window/length", "-PT6H"), "time window.length",
                                      "negative"),
    "date: zero window length": C("hofx", set_("time window/length", "PT0S"), "state.date", "outside"),
    "date: negative window length (variational)": C("variational", set_(f"{CF}/time window/length", "-PT6H"),
                                                    "cost function.time window.length", "negative"),
    "date: window ending after 9999": C("letkf", set_("time window/begin", "9999-12-31T23:00:00Z"),
                                        "time window", "9999"),
    "date: negative forecast length": C("forecast", set_("forecast length", "-PT6H"), "forecast length",
                                        "negative"),
    "date: duration P1M (month)": C("forecast", set_("forecast length", "P1M"), "forecast length"),
    "date: cycle spin-up P99999999999D": C("cycle", set_("truth/spin-up", "P99999999999D"), "truth.spin-up"),
    "date: cycles past year 9999": C("cycle", chain(set_("cycling/cycles", 10**7), set_("cycling/window length",
                                                                                       "P1D")),
                                     "cycling", "9999", subprocess=True),
    "date: duration garbage": C("forecast", set_("forecast length", "PTXH"), "forecast length", "duration"),

    # Outputs ------------------------------------------------------------------------------------------
    "output: equal to the input": C("forecast", set_("output", {"filename": "bg.nc"}), "output.filename",
                                    "initial condition.filename"),
    "output: equal to the input (letkf mean = member)": C("letkf", set_("output mean/filename", "ens.1.nc"),
                                                          "ens.1.nc", "replace"),
    "output: two outputs with the same name": C("variational", set_("output increment/filename", "out/an.nc"),
                                                "output increment.filename", "output.filename"),
    "output: mean and spread the same file": C("letkf", set_("output spread/filename", "out/an.mean.nc"),
                                               "output", "an.mean.nc"),
    "output: directory not writable": C("forecast", chain(make_file("blocker"),
                                                          set_("output/filename", "blocker/sub/fc.%date%.nc")),
                                        "output.filename", "blocker"),
    "output: name taken by a directory": C("forecast", chain(lambda cfg, d: (d / "taken.nc").mkdir(),
                                                             set_("output", {"filename": "taken.nc"})),
                                           "output.filename", "directory"),
    "output: cycle directory is a file": C("cycle", chain(make_file("outfile"), set_("output/directory", "outfile")),
                                           "output.directory", "file"),
    "output: file name too long": C("forecast", set_("output", {"filename": "g" * 300 + ".nc"}), "ggg"),
    "output: 250-character file name": C("forecast", set_("output", {"filename": f"out/{LONG_NAME}"}), ok=True,
                                         outputs=(f"out/{LONG_NAME}",)),
    "output: 250-character member names": C("ensemble-forecast",
                                            chain(set_("output", {"filename": "out/" + "m" * 244 + ".%mem%.nc"}),
                                                  delete("output mean")),
                                            ok=True, outputs=tuple(f"out/{'m' * 244}.{k}.nc" for k in range(1, 5))),
    "output: gen-ens-pert-b without %mem%": C("gen-ens-pert-b", set_("output/filename", "out/pert.nc"),
                                              "output.filename", "%mem%"),
    "output: eda output without %mem%": C("eda", set_("output/filename", "out/an.nc"), "output.filename", "%mem%"),
    "output: unicode file name": C("forecast", set_("output", {"filename": "out/prévision-é.nc"}), ok=True,
                                   outputs=("out/prévision-é.nc",)),

    # Parallel sections --------------------------------------------------------------------------------
    "parallel: unknown engine": C("eda", set_("parallel", {"engine": "mpi"}), "parallel.engine"),
    "parallel: scheduler with the serial engine": C("eda", set_("parallel", {"scheduler": "tcp://127.0.0.1:1"}),
                                                    "parallel", "dask"),
    "parallel: scheduler is not an address": C("eda", set_("parallel", {"engine": "dask", "scheduler": "::::"}),
                                               "parallel.scheduler", subprocess=True),
    "parallel: scheduler refuses connections": C("eda", lambda cfg, d: cfg.__setitem__(
        "parallel", {"engine": "dask", "scheduler": f"tcp://127.0.0.1:{_closed_port()}"}),
        "parallel.scheduler", subprocess=True),
    "parallel: scheduler unreachable": C("cycle-letkf", set_("parallel", {"engine": "dask",
                                                                          "scheduler": "tcp://10.255.255.1:8786"}),
                                         "parallel.scheduler", subprocess=True),
    "parallel: scheduler is a garbage TCP service": C("eda", lambda cfg, d: cfg.__setitem__(
        "parallel", {"engine": "dask", "scheduler": f"tcp://127.0.0.1:{_service('garbage').port}"}),
        "parallel.scheduler", subprocess=True),
    "parallel: scheduler is a silent TCP service": C("cycle-letkf", lambda cfg, d: cfg.__setitem__(
        "parallel", {"engine": "dask", "scheduler": f"tcp://127.0.0.1:{_service('silent').port}"}),
        "parallel.scheduler", subprocess=True),

    # Anything else ------------------------------------------------------------------------------------
    "other: make obs without an output": C("makeobs", delete(f"{OBS0}/obs space/obsdataout"), "obsdataout"),
    "other: unknown cost type": C("variational", set_(f"{CF}/cost type", "5D-Var"), "cost function.cost type"),
    "other: unknown minimizer": C("variational", set_("variational/minimizer/algorithm", "Newton"),
                                  "variational.minimizer.algorithm"),
    "other: unknown analytic init": C("cycle", set_("truth/initial condition/analytic init/method", "magic"),
                                      "analytic init"),
    "other: unknown simulated variable (file)": C("hofx", set_(f"{OBS0}/obs space/simulated variables", ["y"]),
                                                  "obs.nc", "ObsValue/y"),
    "other: unknown simulated variable (generated)": C(
        "makeobs", set_(f"{OBS0}/obs space/simulated variables", ["y"]),
        "observations.observers[0].obs space.simulated variables", "y"),
    "other: Identity maps to an unknown model variable": C(
        "variational", set_(f"{OBS0.replace('observations', CF + '/observations')}/obs operator",
                            {"name": "Identity", "variables": ["u"]}),
        "cost function.observations.observers[0].obs operator.variables", "u"),
    "other: cycle obs operator maps to an unknown variable": C(
        "cycle", set_("observations/obs operator", {"name": "Identity", "variables": ["u"]}),
        "observations.obs operator", "u"),
    "other: unknown analysed variable (letkf)": C("letkf", set_("variables", ["y"]), "variables", "y"),
    "other: template without the pattern": C("ensemble-forecast",
                                             set_("initial condition/members from template/template/filename",
                                                  "ens.1.nc"), "template"),
    "other: GETKF without modulation": C("letkf", set_("local ensemble DA/solver", "GETKF"), "local ensemble DA"),
    "other: 4D-Var cycle without linear model": C("cycle", chain(set_("cycling/method", "4D-Var")),
                                                  "linear model"),
    "other: LETKF cycle with a cost function": C("cycle-letkf", set_("cost function", {"background error": {}}),
                                                 "cycling.method", "cost function"),
    "other: missing input state": C("forecast", set_("initial condition/filename", "nowhere.nc"), "nowhere.nc",
                                    "not found"),
    "other: missing member file": C("letkf", set_("background/members from template/nmembers", 5), "ens.5.nc",
                                    "not found"),
    "other: resol smaller than the stencil": C("forecast", set_("geometry/resol", 3), "geometry.resol"),
    "other: GETKF modes 10**9": C("letkf", set_("local ensemble DA", {
        "solver": "GETKF", "horizontal localization": {"lengthscale": 0.5, "number of modes": 10**9}}),
        "local ensemble DA.horizontal localization.number of modes", subprocess=True),
    "other: empty variable name": C("letkf", set_("variables", [""]), "variables[0]", "at least 1 character"),
    "other: no state for hofx": C("hofx", delete("state"), "state", "required key is missing"),
    "other: hofx 4-D without a model": C("hofx", chain(delete("state"), set_("initial condition", {
        "date": corpus.BEGIN, "filename": "bg.nc"})), "model", "required key is missing"),
    "other: analytic init method a list (cycle)": C("cycle", set_("truth/initial condition/analytic init/method", []),
                                                    "truth.initial condition.analytic init.method"),
    "output: first after the end of the forecast": C("forecast", set_("output/first", "P1D"), "output.first",
                                                     "forecast length"),
    "output: frequency not a multiple of the step": C("forecast", set_("output/frequency", "PT5H"),
                                                      "output.frequency", "multiple"),
    "output: first without frequency": C("forecast", set_("output", {"filename": "out/fc.nc", "first": "PT6H"}),
                                          "output.first", "frequency"),
    "other: empty simulated variable name": C("letkf", set_(f"{OBS0}/obs space/simulated variables", [""]),
                                              "simulated variables"),
    "other: blank obs file name": C("letkf", set_(f"{OBS0}/obs space/obsdatain/filename", " "),
                                    "obsdatain.filename"),
    "range: negative seed (cycle observations)": C("cycle", set_("observations/seed", -5), "observations.seed",
                                                   "greater than or equal to 0"),
    "range: negative seed (eda)": C("eda", set_("eda/seed", -1), "eda.seed", "greater than or equal to 0"),
    "range: negative seed (gen-ens-pert-b)": C("gen-ens-pert-b", set_("seed", -2), "seed"),
    "huge: resol 2**31 in the cost function": C("variational", set_(f"{CF}/geometry/resol", 2**31),
                                                "cost function.geometry", "would need"),
    "huge: resol 2**63 (cycle)": C("cycle", set_("geometry/resol", 2**63), "geometry", "would need"),
    "date: truth before 1970 (cycle)": C("cycle", set_("truth/initial condition/date", "1960-01-01T00:00:00Z"),
                                         ok=True, outputs=("out/statistics.json",)),
    "date: truth in year 1 (cycle)": C("cycle-letkf", set_("truth/initial condition/date", "0001-01-01T00:00:00Z"),
                                       ok=True, outputs=("out/statistics.json",)),
    # Legal: a correlation far longer than the domain is a constant correlation (Poisson-summed spectrum).
    "range: correlation length 1e300": C("variational", set_(f"{BE}/saber central block/length scale", 1e300),
                                         ok=True),
    "range: negative analytic-init seed (cycle)": C("cycle", set_("truth/initial condition/analytic init/seed", -10),
                                                    "analytic init.seed"),
    "output: leading blank in the output name": C("forecast", set_("output", {"filename": " sub/fc.nc"}), ok=True,
                                                  outputs=(" sub/fc.nc",)),
    "output: leading blank in the cycle directory": C("cycle", set_("output/directory", " sub"), ok=True,
                                                      outputs=(" sub/statistics.nc", " sub/checkpoint.npz")),
    # Legal: one observation time in the window; the next one (past 9999) is never formed.
    "date: generated obs frequency past 9999": C("makeobs", set_(f"{OBS0}/obs space/generate/obs frequency",
                                                                 "P3000000D"), ok=True),
    "other: negative start member": C("letkf", set_("background/members from template/start", -1), "start"),
    "other: unstable time step": C("forecast", chain(set_("model/tstep", "PT120H"), set_("forecast length", "P50D"),
                                                     set_("output", {"filename": "out/fc.nc"})), "non-finite"),
}


# TCP services for the dask scheduler cases ---------------------------------------------------------
class _Service:
    """A local TCP service that answers every connection with ``reply`` (or nothing) until closed."""

    def __init__(self, reply: bytes | None):
        self.reply = reply
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            if self.reply is not None:
                try:
                    conn.sendall(self.reply)
                except OSError:
                    pass


_SERVICES: dict[str, _Service] = {}


def _service(kind: str) -> _Service:
    """``garbage``: sends 8-byte frame lengths of 2**64 - 1 (dask reads them as a message of exabytes);
    ``silent``: accepts and never answers.  Started on first use, kept for the session."""
    if kind not in _SERVICES:
        _SERVICES[kind] = _Service(b"\xff" * 4096 if kind == "garbage" else None)
    return _SERVICES[kind]


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# The checks ---------------------------------------------------------------------------------------
def _prepare(case: Case, directory: Path) -> tuple[str, str]:
    app, cfg = corpus.prepare(directory, case.base)
    name = case.edit(cfg, directory)
    if not isinstance(name, str):
        name = corpus.write_config(directory, cfg)
    return app, name


def _check(case: Case, directory: Path, before: set[str], code: int, stderr: str) -> None:
    lines = corpus.error_lines(stderr)
    assert "Traceback" not in stderr, stderr
    after = corpus.snapshot(directory)
    if case.ok:
        assert code == 0, stderr
        assert lines == [], stderr
        for name in case.outputs:
            assert (directory / name).is_file(), name
        return
    assert code == 2, f"exit {code}: {stderr}"
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("pyoops: error: "), line
    for text in case.expect:
        assert text in line, f"{text!r} not in {line!r}"
    assert after - before == set(), f"left behind: {sorted(after - before)}"
    assert corpus.temporaries(directory) == []


def _params() -> list[Any]:
    out = []
    for name, case in CASES.items():
        marks = list(case.marks)
        if case.xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=case.xfail))
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", _params())
def test_bad_input(name: str, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    app, config = _prepare(case, workdir)
    before = corpus.snapshot(workdir)
    if case.subprocess:
        with corpus.Timer() as timer:
            try:
                proc = subprocess.run([sys.executable, "-m", "pyoops.cli", app, config, "--quiet"], cwd=workdir,
                                      capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
                                      env={**os.environ, "PYTHONWARNINGS": "ignore"})
            except subprocess.TimeoutExpired:
                pytest.fail(f"pyoops {app} did not finish within {SUBPROCESS_TIMEOUT:.0f} s")
        code, stderr = proc.returncode, proc.stderr
    else:
        capsys.readouterr()
        with corpus.Timer() as timer:
            code = main([app, config, "--quiet"])
        stderr = capsys.readouterr().err
        assert timer.seconds < MAX_SECONDS, f"took {timer.seconds:.1f} s"
    _check(case, workdir, before, code, stderr)


@pytest.mark.parametrize("base", list(corpus.BASES))
def test_valid_bases_run(base: str, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The configurations the corpus breaks are themselves valid, quick runs."""
    app, cfg = corpus.prepare(workdir, base)
    config = corpus.write_config(workdir, cfg)
    with corpus.Timer() as timer:
        code = main([app, config, "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert corpus.error_lines(err) == []
    assert timer.seconds < MAX_SECONDS


def test_corpus_size() -> None:
    assert len(CASES) >= 80
    assert {corpus.BASES[c.base][0] for c in CASES.values()} >= {
        "forecast", "hofx", "variational", "ensemble-forecast", "gen-ens-pert-b", "letkf", "eda", "cycle", "dirac"}


def test_long_file_name_output_is_the_state(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The 250-character output holds the forecast, as a short name would."""
    app, cfg = corpus.prepare(workdir, "forecast")
    cfg["output"] = {"filename": LONG_NAME}
    short = dict(cfg, output={"filename": "short.nc"})
    assert main([app, corpus.write_config(workdir, cfg, "long.yaml"), "--quiet"]) == 0
    assert main([app, corpus.write_config(workdir, short, "short.yaml"), "--quiet"]) == 0
    import netCDF4

    with netCDF4.Dataset(workdir / LONG_NAME) as a, netCDF4.Dataset(workdir / "short.nc") as b:
        np.testing.assert_array_equal(np.asarray(a["x"][:]), np.asarray(b["x"][:]))
        assert a.date == b.date == "2010-01-01T12:00:00Z"
