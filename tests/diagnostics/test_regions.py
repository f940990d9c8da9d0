"""Region labels: boxes in the location coordinates, written to archives and used by obs-diagnostics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import pyoops
from pyoops.cli import main
from pyoops.config.parameters import validate
from pyoops.diagnostics.regions import RegionParameters, Regions
from pyoops.util.errors import ConfigError

from ..ensemble.test_cycle_archive import archived

WEST_EAST = [{"name": "west", "bounds": {"x": [0.0, 0.5]}}, {"name": "east", "bounds": {"x": [0.5, 1.0]}}]


def regions(spec: list[dict[str, Any]], coordinates: tuple[str, ...] = ("x", "y")) -> Regions:
    return Regions([validate(RegionParameters, r, f"regions[{i}]") for i, r in enumerate(spec)], coordinates)


def test_first_match_wins_half_open_and_unlabelled() -> None:
    r = regions([{"name": "box", "bounds": {"x": [0.0, 0.5], "y": [0.0, 0.5]}},
                 {"name": "strip", "bounds": {"x": [0.0, 0.5]}}])
    x = np.array([0.1, 0.1, 0.5, 0.49999, 0.7])
    y = np.array([0.1, 0.9, 0.1, 0.5, 0.1])
    assert r.labels({"x": x, "y": y}).tolist() == ["box", "strip", "", "strip", ""]


@pytest.mark.parametrize("spec,path,message", [
    ([{"name": "a", "bounds": {"z": [0, 1]}}], "regions[0].bounds", "no location coordinate 'z'"),
    ([{"name": "a", "bounds": {"x": [0, 1]}}, {"name": "a", "bounds": {"x": [1, 2]}}], "regions[1].name",
     "given twice"),
])
def test_bad_regions_name_the_key(spec: list[dict[str, Any]], path: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        regions(spec)
    assert err.value.path == path and message in err.value.message


def test_empty_interval_is_refused() -> None:
    with pytest.raises(ConfigError, match="lower < upper"):
        validate(RegionParameters, {"name": "a", "bounds": {"x": [0.5, 0.5]}}, "regions[0]")


def test_cycle_archive_regions_and_diagnostics_by_region(tmp_path: Path) -> None:
    cfg = archived("LETKF", tmp_path / "run", cycles=6, members=6)
    cfg["local ensemble DA"] = {"inflation": {"mult": 1.05}}
    cfg["output"]["regions"] = WEST_EAST
    pyoops.run("cycle", cfg)
    archive = tmp_path / "run" / "innovations.nc"
    import xarray as xr

    meta = xr.open_dataset(archive, group="MetaData")
    np.testing.assert_array_equal(meta["region"].values, np.where(meta["x"].values < 0.5, "west", "east"))
    assert json.loads(xr.open_dataset(archive).attrs["regions"])[1]["name"] == "east"
    # Diagnostics by region; then relabelled at read time with other regions.
    diag = {"archives": [str(archive)], "group by": ["region"], "bootstrap": {"samples": 20, "seed": 1},
            "output": {"json": {"filename": str(tmp_path / "d.json")}, "table": False}}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(diag))
    assert main(["obs-diagnostics", str(tmp_path / "d.yaml"), "--quiet"]) == 0
    names = [s["name"] for s in json.loads((tmp_path / "d.json").read_text())["subsets"]]
    assert names == ["all", "region=east", "region=west"]
    diag["regions"] = [{"name": "middle", "bounds": {"x": [0.25, 0.75]}}]
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(diag))
    assert main(["obs-diagnostics", str(tmp_path / "d.yaml"), "--quiet"]) == 0
    subsets = json.loads((tmp_path / "d.json").read_text())["subsets"]
    counts = {s["name"]: s["count"] for s in subsets}
    assert counts == {"all": 240, "region=(none)": 120, "region=middle": 120}


def test_cycle_refuses_regions_of_unknown_coordinates(tmp_path: Path, capsys: Any) -> None:
    cfg = archived("3D-Var", tmp_path / "run", cycles=1)
    cfg["output"]["regions"] = [{"name": "north", "bounds": {"y": [0.0, 1.0]}}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["cycle", str(tmp_path / "c.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "output.regions[0].bounds" in err[0] and "'y'" in err[0]
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
