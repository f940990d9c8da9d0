"""Hybrid ensembles with emulated members: the member archive of analyses, the generators in ``pyoops cycle``
(flow, linear, resample, static B), bitwise restart and bad configurations."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pyoops
from pyoops.ensemble.cycling import STATISTICS, load_checkpoint
from pyoops.ensemble.member_archive import MemberArchiveWriter, read_member_archive
from pyoops.generic.grid import StructuredGrid
from pyoops.util.appendlog import log_path
from pyoops.util.errors import InputFileError
from pyoops.util.random import generator

from .test_cycle import killed_and_straight, l96_cycle

N, REAL, EMULATED = 6, 3, 3
STATIC = {"covariance model": "SABER",
          "saber central block": {"saber block name": "spectral correlation", "length scale": 0.02},
          "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": 0.6}}]}


def hybrid_letkf(directory: Path, cycles: int = 30, generator_: str | None = "resample", analyses: bool = True,
                 **section: Any) -> dict[str, Any]:
    """Lorenz-96 (40 points), an ETKF (LETKF without localization) of N = 6 members, 3 of them emulated."""
    cfg = l96_cycle("LETKF", directory, cycles=cycles, members=N)
    cfg["local ensemble DA"] = {"inflation": {"mult": 1.04}}
    if generator_ is not None:
        cfg["emulated members"] = {"generator": generator_, "real": REAL, "emulated": EMULATED, **section}
    cfg["output"]["member archive"] = True
    cfg["output"]["member archive analyses"] = analyses
    return cfg


# The member archive of analyses ----------------------------------------------------------------
def _cycle_data(k: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(100 + k)
    return {"x": rng.standard_normal((4, 8))}, {"x": rng.standard_normal((4, 8))}


def _write(writer: MemberArchiveWriter, cycles: range) -> MemberArchiveWriter:
    for k in cycles:
        xb, xa = _cycle_data(k)
        writer.append_cycle(k, 21600 * k, xb, xa)
    return writer


def test_member_archive_keeps_the_analyses(tmp_path: Path) -> None:
    geometry = StructuredGrid.periodic_1d(8)
    path = tmp_path / "m.nc"
    w = MemberArchiveWriter(path, geometry, ["x"], 4, method="test", analyses=True)
    assert w.payload_bytes == 2 * 8 * 4 * 8
    with pytest.raises(ValueError, match="keeps the members' analyses"):
        w.append_cycle(0, 0, _cycle_data(0)[0])
    with pytest.raises(ValueError, match="analyses of 'x' have shape"):
        w.append_cycle(0, 0, _cycle_data(0)[0], {"x": np.zeros((3, 8))})
    _write(w, range(3)).close()
    archive = read_member_archive(path, geometry=geometry)
    assert archive.ncycles == 3 and archive.analyses is not None
    np.testing.assert_array_equal(archive.members["x"], np.stack([_cycle_data(k)[0]["x"] for k in range(3)]))
    np.testing.assert_array_equal(archive.analyses["x"], np.stack([_cycle_data(k)[1]["x"] for k in range(3)]))
    sub = archive.select_cycles(np.array([2, 0]))
    np.testing.assert_array_equal(sub.analyses["x"], archive.analyses["x"][[2, 0]])
    # A background-only archive refuses analyses and reads back without them.
    plain = MemberArchiveWriter(tmp_path / "plain.nc", geometry, ["x"], 4)
    with pytest.raises(ValueError, match="backgrounds only"):
        plain.append_cycle(0, 0, *_cycle_data(0))
    plain.append_cycle(0, 0, _cycle_data(0)[0])
    plain.close()
    assert read_member_archive(tmp_path / "plain.nc").analyses is None


def test_member_archive_of_analyses_resumes_bitwise(tmp_path: Path) -> None:
    """Checkpoint after 2 cycles, one more cycle and a torn write, the writer dies; the resumed archive equals an
    uninterrupted one, and a background-only writer refuses to continue the log."""
    geometry = StructuredGrid.periodic_1d(8)

    def writer(name: str, analyses: bool = True) -> MemberArchiveWriter:
        return MemberArchiveWriter(tmp_path / name, geometry, ["x"], 4, method="test", analyses=analyses)

    _write(writer("ref.nc"), range(5)).close()
    w = _write(writer("m.nc"), range(2))
    state = w.checkpoint_state()
    _write(w, range(2, 3))
    with open(log_path(tmp_path / "m.nc"), "ab") as fh:
        fh.write(b"MEM1 torn")
    w._log.release()   # killed: never closed
    with pytest.raises(InputFileError, match="other variables, members"):
        writer("m.nc", analyses=False).resume(state)
    resumed = writer("m.nc")
    resumed.resume(state)
    assert resumed.ncycles == 2
    _write(resumed, range(2, 5)).close()
    assert log_path(tmp_path / "m.nc").read_bytes() == log_path(tmp_path / "ref.nc").read_bytes()
    assert (tmp_path / "m.nc").read_bytes() == (tmp_path / "ref.nc").read_bytes()


# Generators in the cycle -----------------------------------------------------------------------
def _split(archive: Any, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backgrounds (N, 40), real analyses (M, 40) and emulated analyses (K, 40) of cycle k."""
    xa = archive.analyses["x"][k]
    return archive.members["x"][k], xa[:REAL], xa[REAL:]


def _run(cfg: dict[str, Any]) -> tuple[Any, Any]:
    summary = pyoops.run("cycle", cfg)
    state = summary["experiment"]
    for name in STATISTICS:
        assert np.asarray(state.stats[name]).shape == (cfg["cycling"]["cycles"],), name
    assert np.all(np.isfinite(state.stats["analysis rmse"])) and np.all(np.isfinite(state.members["x"]))
    archive = read_member_archive(Path(cfg["output"]["directory"]) / "members.nc")
    assert archive.analyses is not None and archive.analyses["x"].shape == (cfg["cycling"]["cycles"], N, 40)
    return state, archive


def test_linear_generator_in_the_cycle(tmp_path: Path, io: Any) -> None:
    """The archived emulated analyses are the covariance regression of that cycle's backgrounds and real analyses;
    the next cycle's backgrounds are the forecasts of all N analyses (real and emulated)."""
    from pyoops.emulators.features import GridLayout
    from pyoops.emulators.members import linear_endpoint, member_context, member_covariance_term, normalised_cycle

    _, archive = _run(hybrid_letkf(tmp_path / "linear", generator_="linear"))
    layout = GridLayout.from_geometry(StructuredGrid.periodic_1d(40), ["x"])
    for k in (0, 13, 29):
        xb, real, emulated = _split(archive, k)
        centre, scale, ub, ua_real = normalised_cycle(layout, {"x": xb}, {"x": real})
        ctx = member_context(ub, range(REAL), ua_real, centre, scale)
        u0 = ub[:, REAL:]
        u1 = linear_endpoint(u0, member_covariance_term(ub, u0, ctx, 1), ctx, 1)
        # The same float64 operations on the archived (exact float64) inputs: 1e-12 on values ~10.
        np.testing.assert_allclose(emulated, centre[0, 0] + scale[0, 0] * u1[0, :, 0], rtol=0, atol=1e-12)
        # The regression really moves the members (not the identity on the backgrounds).
        assert np.abs(emulated - xb[REAL:]).max() > 1e-3
    # Lorenz-96 RK4, dt = 0.05 per 6 h (the plugin's model, integrated independently): 1e-10 on values ~10
    # allows for a different association of the RK4 sums.
    np.testing.assert_allclose(archive.members["x"][1:], io.l96_rk4(archive.analyses["x"][:-1], 1),
                               rtol=0, atol=1e-10)


def test_resample_generator_stays_in_the_span_of_the_real_analyses(tmp_path: Path) -> None:
    _, archive = _run(hybrid_letkf(tmp_path / "resample", generator_="resample"))
    for k in (0, 11, 29):
        _, real, emulated = _split(archive, k)
        mean = real.mean(axis=0)
        dev = (real - mean).T                                     # (40, M)
        coef, *_ = np.linalg.lstsq(dev, (emulated - mean).T, rcond=None)
        residual = (emulated - mean).T - dev @ coef
        # In the span: the residual is the least-squares rounding, ~1e-15 of the deviations (~0.1-1): 1e-10.
        assert np.abs(residual).max() < 1e-10 * np.abs(dev).max()
        # And exactly the documented draw: mean + omega (x_S - mean) / sqrt(M - 1), omega from the cycle's stream.
        omega = generator(1, "emulated members", k).standard_normal((EMULATED, REAL)) / np.sqrt(REAL - 1)
        np.testing.assert_allclose(emulated, mean + omega @ (real - mean), rtol=0, atol=1e-12)
    # It can fail: the backgrounds are not in that span.
    xb, real, _ = _split(archive, 11)
    mean = real.mean(axis=0)
    coef, *_ = np.linalg.lstsq((real - mean).T, (xb[REAL:] - mean).T, rcond=None)
    assert np.abs((xb[REAL:] - mean).T - (real - mean).T @ coef).max() > 1e-3


def test_static_b_generator_matches_the_real_spread(tmp_path: Path) -> None:
    _, archive = _run(hybrid_letkf(tmp_path / "static", generator_="static B", **{"background error": STATIC}))
    for k in (0, 29):
        _, real, emulated = _split(archive, k)
        mean = real.mean(axis=0)
        # 'match real spread': alpha^2 mean(eta^2) = mean of the real analyses' variance (a ratio of sums: 1e-12).
        np.testing.assert_allclose(np.mean((emulated - mean) ** 2), real.var(axis=0, ddof=1).mean(), rtol=1e-12)
        # The draws come from B, not from the real members' span.
        coef, *_ = np.linalg.lstsq((real - mean).T, (emulated - mean).T, rcond=None)
        assert np.abs((emulated - mean).T - (real - mean).T @ coef).max() > 1e-3


def test_shadow_analyses_of_an_etkf_are_its_transform_of_every_member(tmp_path: Path) -> None:
    """ETKF with ``shadow analyses``: the cycle is the plain hybrid's, bitwise; the archive keeps the transform of
    every member's background (computed for all N anyway), which at the first cycle is the full ETKF's analysis."""
    plain, plain_archive = _run(hybrid_letkf(tmp_path / "plain", cycles=5))
    shadow, shadow_archive = _run(hybrid_letkf(tmp_path / "shadow", cycles=5, **{"shadow analyses": True}))
    _, full_archive = _run(hybrid_letkf(tmp_path / "full", cycles=5, generator_=None))
    np.testing.assert_array_equal(shadow_archive.members["x"], plain_archive.members["x"])
    np.testing.assert_array_equal(shadow.members["x"], plain.members["x"])
    np.testing.assert_array_equal(shadow_archive.analyses["x"][:, :REAL], plain_archive.analyses["x"][:, :REAL])
    np.testing.assert_array_equal(shadow_archive.analyses["x"][0], full_archive.analyses["x"][0])
    assert not np.allclose(shadow_archive.analyses["x"][:, REAL:], plain_archive.analyses["x"][:, REAL:])


def test_resample_run_resumes_bitwise(tmp_path: Path) -> None:
    """Stop after 15 cycles and resume to 30: statistics, members and the member archive (with analyses) equal an
    uninterrupted run's: the emulated draws come from per-cycle streams."""
    from pyoops.apps import make_application
    from pyoops.config.yaml_io import load_config

    cfg = hybrid_letkf(tmp_path / "resumed")
    app = make_application("cycle")
    app.validate(load_config(cfg))
    app.experiment.run(tmp_path / "resumed", stop_after=15)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.npz")["cycle"] == 15
    resumed = pyoops.run("cycle", cfg)["experiment"]
    straight = copy.deepcopy(cfg)
    straight["output"]["directory"] = str(tmp_path / "straight")
    ref = pyoops.run("cycle", straight)["experiment"]
    assert resumed.cycle == ref.cycle == 30
    for name in STATISTICS:
        np.testing.assert_array_equal(resumed.stats[name], ref.stats[name], err_msg=name)
    np.testing.assert_array_equal(resumed.members["x"], ref.members["x"])
    assert (tmp_path / "resumed" / "members.nc").read_bytes() == (tmp_path / "straight" / "members.nc").read_bytes()
    # It can fail: another seed draws other members.
    other = copy.deepcopy(cfg)
    other["output"]["directory"] = str(tmp_path / "other")
    other["cycling"]["seed"] = 2
    assert not np.array_equal(pyoops.run("cycle", other)["experiment"].members["x"], ref.members["x"])


# Bad configurations: one line, exit 2 ----------------------------------------------------------
def _bad(cfg: dict[str, Any], tmp_path: Path, io: Any, cli: Callable[..., Any]) -> str:
    config = io.write_yaml(tmp_path / "bad.yaml", cfg)
    code, _, err = cli("cycle", config, "--validate-only")
    assert code == 2 and len(err) == 1, err
    return err[0]


def _bad_app(app: str, cfg: dict[str, Any], tmp_path: Path, io: Any, cli: Callable[..., Any]) -> str:
    config = io.write_yaml(tmp_path / "bad_app.yaml", cfg)
    code, _, err = cli(app, config)
    assert code == 2 and len(err) == 1, err
    return err[0]


def test_bad_emulated_member_configs(tmp_path: Path, io: Any, cli: Callable[..., Any]) -> None:
    out = tmp_path / "out"
    cfg = hybrid_letkf(out)
    cfg["emulated members"]["emulated"] = 2
    assert "real + emulated = 5 members, cycling.members is 6" in _bad(cfg, tmp_path, io, cli)

    cfg = hybrid_letkf(out, generator_="flow")
    assert "'model' names the generator of 'flow'" in _bad(cfg, tmp_path, io, cli)

    cfg = hybrid_letkf(out, generator_="linear", model="gen.pt")
    assert "'model' names the generator of 'flow'" in _bad(cfg, tmp_path, io, cli)

    cfg = hybrid_letkf(out, generator_="static B")
    assert "'background error' is the static B" in _bad(cfg, tmp_path, io, cli)

    cfg = l96_cycle("3D-Var", out, cycles=3)
    cfg["emulated members"] = {"generator": "resample", "real": 2, "emulated": 2}
    assert "emulated members need a method" in _bad(cfg, tmp_path, io, cli)

    cfg = hybrid_letkf(out, generator_=None)
    cfg["output"]["member archive"] = False
    assert "set 'member archive: true'" in _bad(cfg, tmp_path, io, cli)

    cfg = hybrid_letkf(out)
    cfg["emulated members"]["real"] = 1
    assert "emulated members.real" in _bad(cfg, tmp_path, io, cli)

    cfg = hybrid_letkf(out)
    cfg["adaptive"] = {"inflation": {"scheme": "anderson", "spatial": "global"}}
    assert "not combined" in _bad(cfg, tmp_path, io, cli)


# The trained generator in the cycle (PyTorch) --------------------------------------------------
def test_flow_generator_trained_on_a_letkf_archive_cycles_reproducibly(tmp_path: Path, io: Any,
                                                                       cli: Callable[..., Any]) -> None:
    pytest.importorskip("torch")

    # Training data: a full LETKF of N members with their analyses archived; the generator from the application.
    _, archive = _run(hybrid_letkf(tmp_path / "full", cycles=40, generator_=None))
    np.testing.assert_array_equal(archive.cycle, np.arange(40))
    model = tmp_path / "gen" / "gen.pt"
    train = {"model plugin": "lorenz96", "geometry": {"resol": 40},
             "training data": {"archives": [archive.source], "skip cycles": 0, "validation fraction": 0.2},
             "generator": {"real members": REAL, "network": {"width": 8, "depth": 1, "kernel": 5, "set width": 8,
                                                             "set channels": 4},
                           "bridge": {"sigma": 0.3, "steps": 2}},
             "training": {"epochs": 2, "batch size": 16, "learning rate": 1e-2, "seed": 0},
             "output": {"model": str(model), "directory": str(tmp_path / "gen")}}
    summary = pyoops.run("train-member-generator", train)
    assert summary["epochs"] == 2
    for name in ("gen.pt", "gen.yaml", "training.json", "loss_curve.png"):
        assert (tmp_path / "gen" / name).exists(), name
    # An archive of backgrounds only cannot train a generator: one line naming the key.
    pyoops.run("cycle", hybrid_letkf(tmp_path / "bg", cycles=5, generator_=None, analyses=False))
    bad = copy.deepcopy(train)
    bad["training data"]["archives"] = [str(tmp_path / "bg" / "members.nc")]
    assert "member archive analyses" in _bad_app("train-member-generator", bad, tmp_path, io, cli)
    runs = []
    for name in ("a", "b"):
        cfg = hybrid_letkf(tmp_path / name, cycles=10, generator_="flow", model=str(model))
        runs.append(_run(cfg))
    (sa, aa), (sb, ab) = runs
    for name in STATISTICS:
        np.testing.assert_array_equal(sa.stats[name], sb.stats[name], err_msg=name)
    np.testing.assert_array_equal(sa.members["x"], sb.members["x"])
    np.testing.assert_array_equal(aa.analyses["x"], ab.analyses["x"])
    # The emulated members are not copies of the real ones or of their backgrounds.
    assert np.abs(aa.analyses["x"][:, REAL:] - aa.members["x"][:, REAL:]).max() > 1e-3
    # A generator trained with 3 real members does not fit a 2 + 4 ensemble.
    cfg = hybrid_letkf(tmp_path / "c", cycles=10, generator_="flow", model=str(model))
    cfg["emulated members"].update(real=2, emulated=4)
    assert "trained with 3 real members" in _bad(cfg, tmp_path, io, cli)


def test_sigkilled_flow_run_resumes_bitwise(tmp_path: Path) -> None:
    """SIGKILL a cycle whose members are emulated by a (randomly weighted) flow with bridge noise, mid-way; the
    resumed run equals an uninterrupted one bitwise: statistics, members and the archive of analyses."""
    torch = pytest.importorskip("torch")
    from pyoops.emulators.features import GridLayout
    from pyoops.emulators.member_model import MemberGenerator

    layout = GridLayout.from_geometry(StructuredGrid.periodic_1d(40), ["x"])
    gen = MemberGenerator(layout, REAL, N, {"width": 8, "depth": 1, "kernel": 3, "set width": 4, "set channels": 2},
                          0.3, 3, (np.zeros(2), np.ones(2)))
    with torch.no_grad():   # a non-zero head: the flow differs from the covariance regression
        for p in gen.net.parameters():
            p.copy_(0.05 * torch.from_numpy(np.random.default_rng(p.numel()).standard_normal(tuple(p.shape))))
    model = tmp_path / "gen.pt"
    gen.save(model)
    cfg = hybrid_letkf(tmp_path / "killed", cycles=120, generator_="flow", model=str(model))
    killed_and_straight(cfg, tmp_path, 15)
    a, b = (read_member_archive(tmp_path / d / "members.nc") for d in ("killed", "straight"))
    np.testing.assert_array_equal(a.members["x"], b.members["x"])
    np.testing.assert_array_equal(a.analyses["x"], b.analyses["x"])
