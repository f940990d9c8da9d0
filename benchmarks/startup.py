"""Benchmark: whole-process start-up of the ``pyoops`` command.

Times, from outside, complete runs of

* ``python -c pass`` (bare interpreter, the floor),
* ``pyoops --help``,
* ``pyoops forecast --help``,
* ``pyoops plugins``,
* a one-step Lorenz-96 ``pyoops forecast`` (40 points, one ``PT6H`` step from the
  analytic rest-perturbed state of ``tutorials/lorenz96/spinup.yaml``, written to a
  temporary directory),

each ``--runs`` times after one warm-up run, and prints the median, minimum and maximum
wall time of each, with the Python, NumPy and SciPy versions and the load average
before and after, as the reStructuredText table of ``docs/benchmarks.rst``.  It also
says whether each command imported NumPy or SciPy (``-X importtime``).

``pyoops`` is the console script installed next to the interpreter when there is one
(not a pyenv shim, whose own start-up would be counted), else ``python -m pyoops.cli``.
The environment (``PYTHONPATH``, thread variables) is passed on unchanged.

Run with ``python benchmarks/startup.py [--runs 10]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORECAST_YAML = """\
model plugin: lorenz96
geometry:
  resol: 40
model:
  name: Lorenz96
  f: 8.0
  tstep: PT6H
initial condition:
  date: 2009-09-23T00:00:00Z
  analytic init: {{method: rest-perturbed, perturbation: 0.01}}
forecast length: PT6H
output:
  filename: {out}/fc.%date%.nc
  frequency: PT6H
"""


def pyoops_command() -> list[str]:
    """The ``pyoops`` console script next to this interpreter, else ``python -m pyoops.cli``."""
    script = Path(sys.executable).with_name("pyoops")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "pyoops.cli"]


def wall_times(command: list[str], runs: int) -> list[float]:
    """Wall seconds of ``runs`` whole-process runs of ``command`` (after one warm-up run)."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed with exit status {done.returncode}")
        if i:
            times.append(elapsed)
    return times


def heavy_imports(command: list[str]) -> str:
    """Which of numpy and scipy ``command`` imports (read from ``-X importtime``)."""
    if command[0] != sys.executable:
        command = [sys.executable, "-X", "importtime", *command]
    else:
        command = [sys.executable, "-X", "importtime", *command[1:]]
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    modules = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    found = [name for name in ("numpy", "scipy") if name in modules]
    return ", ".join(found) or "neither"


def versions() -> str:
    """Python, NumPy and SciPy versions (read in a child process, not imported here)."""
    code = "import numpy, scipy, platform; print(platform.python_version(), numpy.__version__, scipy.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return f"Python {out[0]}, NumPy {out[1]}, SciPy {out[2]}"


def main() -> None:
    """Time every command and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs of each command (median reported)")
    args = parser.parse_args()
    pyoops = pyoops_command()
    workdir = Path(tempfile.mkdtemp(prefix="pyoops-startup-"))
    try:
        config = workdir / "forecast1.yaml"
        config.write_text(FORECAST_YAML.format(out=workdir / "out"), encoding="utf-8")
        commands = [
            ("``python -c pass``", [sys.executable, "-c", "pass"]),
            ("``pyoops --help``", [*pyoops, "--help"]),
            ("``pyoops forecast --help``", [*pyoops, "forecast", "--help"]),
            ("``pyoops plugins``", [*pyoops, "plugins"]),
            ("one-step L96 ``pyoops forecast``", [*pyoops, "forecast", str(config), "--quiet"]),
        ]
        load_before = os.getloadavg()
        rows = []
        for label, command in commands:
            times = wall_times(command, args.runs)
            imports = heavy_imports(command) if command[0] != sys.executable or "-c" not in command else "neither"
            rows.append((label, statistics.median(times), min(times), max(times), imports))
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{time.strftime('%Y-%m-%d', time.gmtime())}, {os.cpu_count()} cores, {platform.machine()}, {versions()}")
    print(f"load average (1/5/15 min) before {'/'.join(f'{x:.2f}' for x in load_before)}, "
          f"after {'/'.join(f'{x:.2f}' for x in load_after)}; {args.runs} runs each; pyoops = {' '.join(pyoops)}")
    print()
    print(".. list-table::")
    print("   :header-rows: 1")
    print()
    print("   * - command")
    print("     - median (s)")
    print("     - min (s)")
    print("     - max (s)")
    print("     - imports")
    for label, median, low, high, imports in rows:
        print(f"   * - {label}")
        print(f"     - {median:.3f}")
        print(f"     - {low:.3f}")
        print(f"     - {high:.3f}")
        print(f"     - {imports}")


if __name__ == "__main__":
    main()
