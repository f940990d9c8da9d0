"""Without PyTorch (the optional extra ``pyoops[ml]``): pyoops works and the ML parts fail in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

NO_TORCH = Path(__file__).parent / "fixtures" / "no_torch"


def run_without_torch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(NO_TORCH), *sys.path])
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_pyoops_imports_and_ml_application_fails_in_one_line(tmp_path: Path) -> None:
    check = run_without_torch("-c", "import torch", cwd=tmp_path)
    assert check.returncode != 0 and "hidden by tests/fixtures/no_torch" in check.stderr
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "model plugin": "lorenz96", "geometry": {"resol": 40},
        "training data": {"archives": [str(tmp_path / "members.nc")]},
        "output": {"model": str(tmp_path / "emu.pt")}}))
    result = run_without_torch("-m", "pyoops.cli", "train-emulator", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'pyoops[ml]'" in lines[0], result.stderr
    # The other applications and the numpy parts of the emulator package work.
    ok = run_without_torch("-c", "import pyoops, pyoops.emulators.bound as b, pyoops.ensemble.member_archive;"
                                 " from pyoops.apps import make_application; make_application('cycle');"
                                 " print(round(b.oracle_relative_sd(50), 3))", cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.strip() == "0.101", ok.stderr


def test_emulated_stddev_without_torch_fails_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "dirac.yaml"
    script = (
        "import numpy as np\n"
        "from pyoops.fields.fieldset import FieldSet\n"
        "from pyoops.saber.blocks import BlockContext\n"
        "from pyoops.saber.generic.basic import StdDev\n"
        "from pyoops.util.errors import PyoopsError\n"
        "from pyoops_lorenz96 import Lorenz96Geometry\n"
        "g = Lorenz96Geometry({'resol': 40})\n"
        "p = StdDev.Parameters.model_validate({'saber block name': 'StdDev',\n"
        "    'emulated stddev': {'model': 'emu.pt', 'members': 5}})\n"
        "try:\n"
        "    StdDev(p, BlockContext(g, g.variables, ensemble=FieldSet({'x': np.ones((5, 40))}), path='B'))\n"
        "except PyoopsError as exc:\n"
        "    print(exc)\n")
    config.write_text(script)
    result = run_without_torch(str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("needs PyTorch, which is not installed: pip install 'pyoops[ml]'")
    assert "\n" not in result.stdout.strip()


def test_emulated_members_without_torch(tmp_path: Path) -> None:
    """The generator's training and a 'flow' cycle need PyTorch (one line, exit 2); the non-learned generators
    and the member archive of analyses run without it."""
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "model plugin": "lorenz96", "geometry": {"resol": 40},
        "training data": {"archives": [str(tmp_path / "members.nc")]},
        "generator": {"real members": 3}, "output": {"model": str(tmp_path / "gen.pt")}}))
    result = run_without_torch("-m", "pyoops.cli", "train-member-generator", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'pyoops[ml]'" in lines[0], result.stderr
    cycle = {"model plugin": "lorenz96", "geometry": {"resol": 40}, "model": {"name": "Lorenz96", "tstep": "PT6H"},
             "truth": {"initial condition": {"date": "2010-01-01T00:00:00Z",
                                             "analytic init": {"method": "random", "seed": 3}}, "spin-up": "P5D"},
             "observations": {"obs frequency": "PT6H", "obs density": 40, "obs error": 1.0, "seed": 5},
             "cycling": {"method": "LETKF", "cycles": 4, "window length": "PT6H", "members": 6, "seed": 1},
             "emulated members": {"generator": "flow", "model": str(tmp_path / "gen.pt"), "real": 3, "emulated": 3},
             "output": {"directory": str(tmp_path / "out"), "plots": False, "member archive": True,
                        "member archive analyses": True}}
    config = tmp_path / "cycle.yaml"
    config.write_text(yaml.safe_dump(cycle))
    result = run_without_torch("-m", "pyoops.cli", "cycle", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'pyoops[ml]'" in lines[0], result.stderr
    cycle["emulated members"] = {"generator": "linear", "real": 3, "emulated": 3}
    config.write_text(yaml.safe_dump(cycle))
    result = run_without_torch("-m", "pyoops.cli", "cycle", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "members.nc").exists()
