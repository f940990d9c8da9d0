"""Property-based fuzzing of the YAML configurations of forecast, hofx, variational, letkf and cycle.

Each example takes a small valid Lorenz-96 configuration (``reliability_corpus.py``) and applies one
to three random mutations, then runs ``pyoops.cli.main([app, config, "--quiet"])``:

* drop a key;
* replace a value by one of the same kind (another integer, float, duration, date,
  name; a list emptied, doubled, shortened or reversed);
* replace a value by a random scalar (small, negative or huge integer, float, ``.inf``,
  ``.nan``, string, boolean, null, date, duration), list or mapping;
* add an unknown key (a string or an integer) to a mapping;
* nest a value deeper (``v`` -> ``{k: v}`` or ``[v]``);
* or mutate the YAML text itself (truncate it, insert a character, duplicate or garble a
  line, add an alias bomb or a tag).

Property: the run returns 0 and its outputs exist, or returns 2 with exactly one line on
standard error, ``pyoops: error: ...``, that names a YAML key or a file and leaves no
``.pyoops-*`` temporary and no new file behind.  Never 1 (an internal error), never an
exception, never a hang (every example runs under an alarm of :data:`EXAMPLE_SECONDS`).
"Names a key or file": the message starts with a YAML path whose first key is one of the
application's or of the configuration, or with a file of the configuration (a member of
a file-name template included), or it quotes a key of the configuration (``'state'``);
the one-line message of a model that blew up names the time instead (as test_cli
accepts).  File names are kept inside the example's directory (no absolute name, no
``..``, no leading blank: see the corpus case on leading blanks), since the runs write.

Reproducibility: ``derandomize=True`` makes hypothesis derive the examples from the test
itself (the same examples on every run and machine) and ``database=None`` keeps no
example database, so CI always runs exactly these examples (``PYOOPS_FUZZ_RANDOM=1``
draws fresh ones, for a local bug hunt).  Integers are drawn small
(|n| <= 12) or huge (>= 10**9): a middle value such as ``cycles: 40000`` is a legal but
long run, which is not what this test is about.  ``MAX_EXAMPLES`` examples per
application keep the whole file under a minute on a loaded two-core machine.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import fnmatch
import glob
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pyoops.cli import main
from pyoops.config.yaml_io import parse_yaml


# The shared valid configurations live beside this file (tests are collected in importlib mode,
# so the folder is put on the path for this one import).
sys.path.insert(0, str(Path(__file__).parent))
import reliability_corpus as corpus  # noqa: E402

#: Examples per base configuration (6 of them; about 30 ms an example, 11 s for the file on an idle
#: two-core machine).  PYOOPS_FUZZ_EXAMPLES overrides it, PYOOPS_FUZZ_RANDOM=1 draws fresh examples
#: (a local bug hunt; CI runs the fixed, derandomized set).
MAX_EXAMPLES = int(os.environ.get("PYOOPS_FUZZ_EXAMPLES", "60"))
#: Wall-clock bound of one example; more is a hang.
EXAMPLE_SECONDS = 60

#: Generous deadline (an example takes ~30 ms; the machine may be loaded); the alarm of EXAMPLE_SECONDS is the
#: hard bound (hypothesis checks the deadline only once an example has finished).
FUZZ_SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=datetime.timedelta(seconds=EXAMPLE_SECONDS),
                         derandomize=os.environ.get("PYOOPS_FUZZ_RANDOM") is None, database=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                HealthCheck.data_too_large],
                         print_blob=False)

#: The one-line message of a model that blew up (pyoops.generic.forecast): it names the time, not a key.
NUMERICAL = re.compile(r"^the forecast became non-finite at \S+: the model blew up")

# Values -------------------------------------------------------------------------------------------
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
INTS = st.one_of(st.integers(-12, 12),
                 st.sampled_from([10**9, 3 * 10**9, 3_000_000_000, 10**12, 2**31, 2**63, 10**30, -10**9]))
FLOATS = st.one_of(st.floats(-10, 10, allow_nan=False),
                   st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e300, -1e300, 1e-300, 3e9, 0.0]))
DATES = st.sampled_from(["2010-01-01T00:00:00Z", "2010-01-01T06:00:00Z", "2009-12-31T21:00:00Z",
                         "9999-12-31T23:00:00Z", "0001-01-01T00:00:00Z", "2010-13-01T00:00:00Z", "2010-01-01",
                         "2010-01-01T00:00:00", "yesterday"])
DURATIONS = st.sampled_from(["PT6H", "PT12H", "PT3H", "P1D", "PT0S", "-PT6H", "PT5H", "PT1H", "P99999999999D",
                             "P3000000D", "P1M", "P1Y", "PT", "6H"])
WORDS = st.sampled_from(["Lorenz96", "Lorenz96TLM", "Identity", "diagonal", "SABER", "StdDev", "ID", "Hybrid",
                         "Ensemble", "spectral correlation", "LETKF", "GETKF", "3D-Var", "4D-Var", "DRPCG",
                         "x", "y", "bg.nc", "obs.nc", "ens.1.nc", "out/x.nc", "%mem%", "%date%", "", " "])
SCALARS = st.one_of(INTS, FLOATS, TEXT, st.booleans(), st.none(), DATES, DURATIONS, WORDS)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.one_of(TEXT, WORDS), inner, max_size=3)),
                      max_leaves=6)
NEW_KEYS = st.one_of(TEXT, WORDS, st.integers(-3, 3), st.sampled_from(["colour", "output", "model", "name",
                                                                          "filename", "date"]))


# Mutations --------------------------------------------------------------------------------------
def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value (mapping key or list index) in ``node``."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for k, v in items:
        out.append(prefix + (k,))
        out.extend(_paths(v, prefix + (k,)))
    return out


def _containers(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Paths of every mapping in ``node`` (the root is ``()``)."""
    out = [prefix] if isinstance(node, dict) else []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for k, v in items:
        out.extend(_containers(v, prefix + (k,)))
    return out


def _get(node: Any, path: tuple) -> Any:
    for k in path:
        node = node[k]
    return node


@st.composite
def mutated(draw: Any, base: str) -> tuple[str, Any, str | None]:
    """``(application, config, yaml text or None)``: a base configuration with 1-3 mutations."""
    app, cfg = corpus.BASES[base][0], copy.deepcopy(corpus.BASES[base][1]())
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "replace", "tweak", "tweak", "add", "nest"]))
        paths = _paths(cfg)
        if kind in ("drop", "replace", "tweak", "nest") and paths:
            path = draw(st.sampled_from(paths))
            parent = _get(cfg, path[:-1])
            if kind == "drop":
                del parent[path[-1]]
            elif kind == "replace":
                parent[path[-1]] = draw(VALUES)
            elif kind == "tweak":
                parent[path[-1]] = draw(_same_kind(parent[path[-1]]))
            else:
                value = parent[path[-1]]
                parent[path[-1]] = draw(st.one_of(st.just([value]), NEW_KEYS.map(lambda k: {k: value})))
        else:
            where = draw(st.sampled_from(_containers(cfg)))
            _get(cfg, where)[draw(NEW_KEYS)] = draw(VALUES)
    text = None
    if draw(st.integers(0, 5)) == 0:
        text = _text_mutation(draw, yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return app, cfg, text


def _same_kind(value: Any) -> Any:
    """Values of the kind of ``value``: another number, duration, date, name, or an edited list."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return INTS
    if isinstance(value, float):
        return FLOATS
    if isinstance(value, str):
        if value.startswith(("P", "-P")):
            return DURATIONS
        if value[:2] in ("20", "19"):
            return DATES
        return st.one_of(WORDS, TEXT)
    if isinstance(value, list) and value:
        return st.one_of(st.just([]), st.just(value + value), st.just(value[1:]), st.just(list(reversed(value))))
    return VALUES


def _text_mutation(draw: Any, text: str) -> str:
    lines = text.splitlines(keepends=True)
    kind = draw(st.sampled_from(["truncate", "insert", "duplicate", "garble", "bomb", "tag"]))
    if kind == "truncate":
        return text[: draw(st.integers(0, len(text)))]
    if kind == "insert":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from(list("{}[]:,&*!|>#'\"\t\n-?%@`\\") + ["\x00", "\ufeff"])) + text[at:]
    i = draw(st.integers(0, max(len(lines) - 1, 0)))
    if kind == "duplicate" and lines:
        return "".join(lines[: i + 1] + [lines[i]] + lines[i + 1:])
    if kind == "garble" and lines:
        return "".join(lines[:i] + [draw(TEXT) + "\n"] + lines[i + 1:])
    if kind == "bomb":
        bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"a{j}: &a{j} [{', '.join([f'*a{j - 1}'] * 10)}]\n" for j in range(1, 8))
        return text + bomb
    return text + draw(st.sampled_from(["t: !!python/name:os.system ''\n", "t: !custom 1\n", "t: !!binary 'x'\n",
                                        "t: &r [*r]\n", "t: !!int 'forty'\n", "t: !!float '1.0.0'\n"]))


# The property -----------------------------------------------------------------------------------
class _Hang(BaseException):
    """Raised by the alarm: not an Exception, so the command line cannot swallow it."""


@contextlib.contextmanager
def _alarm(seconds: int):
    def ring(signum: int, frame: Any) -> None:
        raise _Hang(f"the example took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _top_level_keys(app: str) -> set[str]:
    from pyoops.config.parameters import yaml_keys
    from pyoops.registry import get_registry

    return set(yaml_keys(get_registry().application.get(app).Parameters))


def _keys(node: Any) -> set[str]:
    """Every mapping key in ``node``, recursively."""
    if isinstance(node, dict):
        return {str(k) for k in node} | {k for v in node.values() for k in _keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _keys(v)}
    return set()


def _names_key_or_file(line: str, app: str, base: str, cfg: Any, directory: Path) -> bool:
    """The message starts with a YAML path or a file name, or quotes a YAML key ('key')."""
    text = line[len("pyoops: error: "):]
    head = _folded(text.split(": ")[0])
    if "cfg.yaml" in head or Path(head).name in corpus.INPUTS:
        return True
    names = {_folded(v) for v in _strings(cfg)}
    if (directory / head).exists() or head in names:
        return True  # a file named in the configuration (as the one-line message folds it)
    if any(fnmatch.fnmatchcase(head, re.sub(r"%[A-Za-z]+%", "*", glob.escape(v))) for v in names if "%" in v):
        return True  # a member or time of a file-name template
    if NUMERICAL.search(text):
        return True  # a numerical failure of the run names the time at which it happened (as test_cli accepts)
    keys = _top_level_keys(app) | _keys(cfg) | _keys(corpus.BASES[base][1]())
    if head.replace("[", ".").split(".")[0] in {_folded(k) for k in keys}:
        return True
    return any(_folded(f"'{k}'") in text for k in keys)


def _folded(text: str) -> str:
    """``text`` as the one-line error message shows it (whitespace runs folded, as pyoops.cli does)."""
    return " ".join(text.split())


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def _check_outputs(cfg: dict[str, Any], directory: Path) -> None:
    from pyoops.apps.files import declared_files

    for item in declared_files(cfg):
        if item.role != "output":
            continue
        if item.directory:
            assert (directory / item.value / "checkpoint.npz").is_file(), item
            continue
        pattern = item.value
        for mark in ("%date%", "%mem%"):
            pattern = pattern.replace(mark, "*")
        assert list(directory.glob(pattern)) or (directory / pattern).is_file(), f"no output {item.value}"


def check_example(app: str, base: str, cfg: Any, text: str | None, root: Path,
                  capsys: pytest.CaptureFixture[str]) -> None:
    directory = Path(tempfile.mkdtemp(dir=root))
    cwd = os.getcwd()
    try:
        corpus.write_inputs(directory)
        corpus.write_obs(directory / "obs6.nc", corpus.x0(), date="2010-01-01T06:00:00Z")
        if text is None:
            text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
        (directory / "cfg.yaml").write_text(text, encoding="utf-8")
        try:  # what pyoops reads (YAML may fold some characters of the dumped values); alias bombs refused
            cfg = parse_yaml(text).data
        except Exception:  # not a configuration: the command must say so, only its one line is checked
            cfg = {}
        # Every file name stays inside the example's directory: no absolute name, no '..', and no
        # leading blank (the netCDF library reads ' /x' as '/x'; see the corpus case 'output: leading blank').
        assume(all(not (v[:1] in ("/", "~") or v[:1].isspace() or ".." in v) for v in _strings(cfg)))
        before = corpus.snapshot(directory)
        os.chdir(directory)
        capsys.readouterr()
        with _alarm(EXAMPLE_SECONDS):
            code = main([app, "cfg.yaml", "--quiet"])
        err = capsys.readouterr().err
        lines = corpus.error_lines(err)
        assert code in (0, 2), f"exit {code}: {err}"
        assert "Traceback" not in err, err
        assert corpus.temporaries(directory) == []
        if code == 0:
            assert lines == [], err
            _check_outputs(cfg if isinstance(cfg, dict) else {}, directory)
            return
        assert len(lines) == 1, err
        assert lines[0].startswith("pyoops: error: "), lines[0]
        assert _names_key_or_file(lines[0], app, base, cfg, directory), lines[0]
        left = corpus.snapshot(directory) - before
        if "kept from this run" not in lines[0]:
            assert left == set(), f"left behind: {sorted(left)}"
    finally:
        os.chdir(cwd)
        shutil.rmtree(directory, ignore_errors=True)


FUZZED = ["forecast", "makeobs", "variational", "letkf", "cycle", "cycle-letkf"]


@pytest.mark.parametrize("base", FUZZED)
@FUZZ_SETTINGS
@given(data=st.data())
def test_fuzzed_configuration(base: str, data: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app, cfg, text = data.draw(mutated(base), label="mutated configuration")
    check_example(app, base, cfg, text, tmp_path, capsys)
