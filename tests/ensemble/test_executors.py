"""Member executors: serial, processes and a real dask LocalCluster give bitwise the same results."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pyoops
from pyoops.config.parameters import validate
from pyoops.ensemble.executors import MemberExecutor, ParallelParameters, member_chunks
from pyoops.util.errors import ConfigError

START = "2010-01-01T00:00:00Z"


def _square(x: int) -> int:
    return x * x


def _eda_hybrid_cycle(directory: Path, parallel: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = {
        "model plugin": "lorenz96", "geometry": {"resol": 40}, "model": {"name": "Lorenz96", "tstep": "PT6H"},
        "truth": {"initial condition": {"date": START, "analytic init": {"method": "random", "seed": 3}},
                  "spin-up": "P20D"},
        "observations": {"obs frequency": "PT6H", "obs density": 20, "obs error": 1.0, "seed": 5,
                         "locations": "random", "locations seed": 4},
        "cycling": {"method": "EDA-hybrid", "members": 4, "cycles": 3, "window length": "PT6H", "seed": 1},
        "cost function": {"background error": {"covariance model": "SABER", "saber central block": {
            "saber block name": "Hybrid", "components": [
                {"covariance": {"saber central block": {"saber block name": "spectral correlation",
                                                        "length scale": 0.02},
                                "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": 0.6}}]},
                 "weight": {"value": 0.5}},
                {"covariance": {"saber central block": {
                    "saber block name": "Ensemble",
                    "localization": {"saber central block": {"saber block name": "spectral correlation",
                                                             "length scale": 0.2}}}},
                 "weight": {"value": 0.5}}]}}},
        "variational": {"minimizer": {"algorithm": "DRPCG"},
                        "iterations": [{"ninner": 15, "gradient norm reduction": 1e-8}]},
        "eda": {"seed": 2, "inflation": {"rtpp": 0.3}},
        "output": {"directory": str(directory), "plots": False},
    }
    if parallel is not None:
        cfg["parallel"] = parallel
    return cfg


def _same(a: Any, b: Any) -> None:
    for name in a.stats:
        np.testing.assert_array_equal(np.asarray(a.stats[name]), np.asarray(b.stats[name]), err_msg=name)
    np.testing.assert_array_equal(a.members["x"], b.members["x"])
    np.testing.assert_array_equal(a.control["x"], b.control["x"])


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return pyoops.run("cycle", _eda_hybrid_cycle(tmp_path_factory.mktemp("serial")))["experiment"]


def test_member_chunks() -> None:
    assert member_chunks(5, 2) == [[0, 1, 2], [3, 4]]
    assert member_chunks(3, 8) == [[0], [1], [2]]
    assert member_chunks(4, 1) == [[0, 1, 2, 3]]
    assert sum(member_chunks(11, 4), []) == list(range(11))


def test_map_keeps_the_order() -> None:
    for engine in ("serial", "processes"):
        with MemberExecutor({"engine": engine, "workers": 2}) as ex:
            assert ex.map(_square, range(7)) == [k * k for k in range(7)]


def test_processes_equal_serial(serial_run: Any, tmp_path: Path) -> None:
    run = pyoops.run("cycle", _eda_hybrid_cycle(tmp_path, {"engine": "processes", "workers": 2}))["experiment"]
    _same(serial_run, run)


def test_dask_local_cluster_equals_serial(serial_run: Any, tmp_path: Path) -> None:
    """A LocalCluster started (and closed) by the executor, 2 workers, and one given by its scheduler address."""
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    run = pyoops.run("cycle", _eda_hybrid_cycle(tmp_path / "a", {"engine": "dask", "workers": 2,
                                                                  "processes": False}))["experiment"]
    _same(serial_run, run)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        cfg = _eda_hybrid_cycle(tmp_path / "b", {"engine": "dask", "scheduler": cluster.scheduler_address})
        run = pyoops.run("cycle", cfg)["experiment"]
        assert len(cluster.scheduler_info["workers"]) == 2
    _same(serial_run, run)


def test_parallel_section_errors() -> None:
    with pytest.raises(ConfigError, match="only applies to engine: dask"):
        validate(ParallelParameters, {"engine": "processes", "scheduler": "tcp://127.0.0.1:1"}, "parallel")
    with pytest.raises(ConfigError, match="engine"):
        validate(ParallelParameters, {"engine": "mpi"}, "parallel")
    with pytest.raises(ConfigError, match="workers"):
        validate(ParallelParameters, {"engine": "processes", "workers": 0}, "parallel")
    cfg = copy.deepcopy(ParallelParameters().model_dump())
    assert cfg["engine"] == "serial"


def _thread_counts(_: int) -> tuple[int, list[int], bool]:
    import os

    from threadpoolctl import threadpool_info

    import pyoops.ensemble.executors as executors

    limited = executors._thread_limits is not None and os.environ.get("OPENBLAS_NUM_THREADS") == "1"
    return os.getpid(), [lib["num_threads"] for lib in threadpool_info()], limited


@pytest.mark.parametrize("parallel", [{"engine": "processes", "workers": 2},
                                      {"engine": "dask", "workers": 2, "processes": True}])
def test_worker_processes_use_one_blas_thread(parallel: dict[str, Any]) -> None:
    """Workers share the cores: each limits its BLAS/OpenMP pools to one thread; the calling process keeps its own."""
    if parallel["engine"] == "dask":
        pytest.importorskip("distributed")
    import os

    from threadpoolctl import threadpool_info

    before = [lib["num_threads"] for lib in threadpool_info()]
    with MemberExecutor(parallel) as ex:
        results = ex.map(_thread_counts, range(4))
    assert all(pid != os.getpid() for pid, _, _ in results)
    assert all(counts and set(counts) == {1} and limited for _, counts, limited in results), results
    assert [lib["num_threads"] for lib in threadpool_info()] == before
