"""The EDA stddev emulator (PyTorch): layout, network, reproducible training, calibration, the app, StdDev, a cycle."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

import pyoops  # noqa: E402
from pyoops.emulators.features import GridLayout, predictors  # noqa: E402
from pyoops.emulators.model import load_emulator, state_bytes  # noqa: E402
from pyoops.emulators.network import GridConvNet, GridPad  # noqa: E402
from pyoops.emulators.scores import coverage, rmse  # noqa: E402
from pyoops.emulators.training import TrainingOptions, fit_emulator, training_set  # noqa: E402
from pyoops.generic.grid import StructuredGrid  # noqa: E402
from pyoops.util.errors import ConfigError, InputFileError  # noqa: E402

from .test_cycle import l96_cycle  # noqa: E402

TINY = {"width": 8, "depth": 1, "kernel": 5}


def synthetic(ncycles: int, n: int, npts: int = 40, seed: int = 0) -> np.ndarray:
    """Members (ncycles, n, npts) with a smooth sigma(x, t) = exp(0.5 sin(4 pi x + phase_t)), Gaussian."""
    rng = np.random.default_rng(seed)
    x = np.arange(npts) / npts
    sigma = np.exp(0.5 * np.sin(4 * np.pi * x[None] + rng.uniform(0, 2 * np.pi, ncycles)[:, None]))
    return rng.standard_normal((ncycles, n, npts)) * sigma[:, None]


def test_layout_round_trip_and_padding() -> None:
    g = StructuredGrid.channel_2d(6, 4, levels=[0.0, 1.0], variables=("q", "p"))
    layout = GridLayout.from_geometry(g, ["q", "p"])
    assert layout.horizontal == (1, 2) and layout.periodic == (False, True) and layout.channels == 4
    rng = np.random.default_rng(0)
    fields = {"q": rng.standard_normal((3, 2, 4, 6)), "p": rng.standard_normal((3, 2, 4, 6))}
    chans = layout.to_channels(fields)
    assert chans.shape == (3, 4, 4, 6)
    back = layout.from_channels(chans)
    for v in fields:
        np.testing.assert_array_equal(back[v], fields[v])
    x = torch.arange(24.0).reshape(1, 1, 4, 6)
    padded = GridPad((False, True), 1)(x)
    assert padded.shape == (1, 1, 6, 8)
    np.testing.assert_array_equal(padded[0, 0, 1:-1, 0], x[0, 0, :, -1])     # x wraps around
    np.testing.assert_array_equal(padded[0, 0, 0, 1:-1], x[0, 0, 0, :])      # y repeats the wall row


def test_network_respects_periodicity_and_size() -> None:
    """Shifting the input along a periodic axis shifts the output (translation equivariance)."""
    g = StructuredGrid.periodic_1d(40)
    layout = GridLayout.from_geometry(g, ["x"])
    torch.manual_seed(0)
    net = GridConvNet(3, 1, layout.periodic, width=16, depth=2, kernel=5)
    for p in net.head.parameters():  # the heads start at zero; give them weights for the test
        torch.nn.init.normal_(p)
    x, base = torch.randn(2, 3, 40), torch.randn(2, 1, 40)
    mu, log_s = net(x, base)
    mu_s, log_s_s = net(torch.roll(x, 7, dims=-1), torch.roll(base, 7, dims=-1))
    torch.testing.assert_close(mu_s, torch.roll(mu, 7, dims=-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(log_s_s, torch.roll(log_s, 7, dims=-1), rtol=1e-5, atol=1e-5)
    # The default 2-D network for QG's 2 levels x 2 predictors stays under 200,000 parameters.
    big = GridConvNet(4 * 4, 4, (False, True), width=32, depth=3, kernel=5)
    assert sum(p.numel() for p in big.parameters()) < 200_000


def _fit(train: np.ndarray, val: np.ndarray, seed: int = 1, epochs: int = 25):
    layout = GridLayout.from_geometry(StructuredGrid.periodic_1d(train.shape[-1]), ["x"])
    ts, vs = training_set({"x": train}, layout, train.shape[1]), training_set({"x": val}, layout, val.shape[1])
    return fit_emulator(layout, 5, ["mean", "gradient"], TINY, ts, vs,
                        TrainingOptions(epochs=epochs, patience=8, seed=seed, batch_size=16, learning_rate=1e-2))


def test_training_is_bitwise_reproducible_and_seeded() -> None:
    data = synthetic(120, 20)
    a, history = _fit(data[:90], data[90:], epochs=4)
    b, _ = _fit(data[:90], data[90:], epochs=4)
    c, _ = _fit(data[:90], data[90:], seed=2, epochs=4)
    assert len(history) == 4
    assert state_bytes(a.net) == state_bytes(b.net)
    assert state_bytes(a.net) != state_bytes(c.net)


def test_tiny_emulator_beats_naive_and_is_calibrated() -> None:
    """Trained in seconds on 300 synthetic cycles (N = 20, M = 5, seed 0), scored on 100 held-out cycles
    (4000 points): the emulator's median has a smaller RMSE of log sigma_20 than the best-offset naive log sigma_5
    (the smooth sigma lets neighbours be pooled), and its 90 % intervals cover 84-96 % of the points (a tiny,
    briefly trained network: wider than the issue's 85-95 % target band, whose check is the benchmark's)."""
    data = synthetic(400, 20)
    emulator, _ = _fit(data[:240], data[240:300])
    test = data[300:]
    mu, s = emulator.predict({"x": test[:, :5]})
    y = np.log(test.std(axis=1, ddof=1))
    naive = np.log(test[:, :5].std(axis=1, ddof=1)) + emulator.training["naive offset"][0]
    assert rmse(mu["x"], y) < 0.75 * rmse(naive, y)
    assert 0.84 <= coverage(mu["x"], s["x"], y) <= 0.96


# The application, the file pair, StdDev and a cycle -----------------------------------------------
@pytest.fixture(scope="module")
def l96_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-member Lorenz-96 EDA (static B), 60 cycles, with its member archive."""
    d = tmp_path_factory.mktemp("l96eda")
    cfg = l96_cycle("EDA", d, cycles=60, members=10)
    cfg["output"]["member archive"] = True
    cfg["eda"] = {"seed": 3}
    pyoops.run("cycle", cfg)
    return d / "members.nc"


def _train_config(archive: Path, out: Path, **training: object) -> dict:
    return {"model plugin": "lorenz96", "geometry": {"resol": 40},
            "training data": {"archives": [str(archive)], "skip cycles": 5, "validation fraction": 0.25},
            "emulator": {"members": 5, "network": TINY},
            "training": {"epochs": 6, "patience": 5, "seed": 4, "batch size": 8, **training},
            "output": {"model": str(out / "emu.pt"), "directory": str(out)}}


def test_train_emulator_app_writes_model_yaml_and_curve(l96_archive: Path, tmp_path: Path) -> None:
    summary = pyoops.run("train-emulator", _train_config(l96_archive, tmp_path))
    for name in ("emu.pt", "emu.yaml", "loss_curve.png", "training.json"):
        assert (tmp_path / name).exists(), name
    spec = yaml.safe_load((tmp_path / "emu.yaml").read_text())
    assert spec["members"] == 5 and spec["target members"] == 10 and spec["network"]["parameters"] < 200_000
    assert summary["epochs"] <= 6 and math.isfinite(summary["best validation loss"])
    emulator = load_emulator(tmp_path / "emu.yaml")
    again = pyoops.run("train-emulator", _train_config(l96_archive, tmp_path / "again"))
    assert state_bytes(emulator.net) == state_bytes(load_emulator(tmp_path / "again" / "emu.pt").net)
    assert again["rmse emulator"] == summary["rmse emulator"]
    # A tampered weights file is refused, naming it.
    (tmp_path / "again" / "emu.pt").write_bytes(b"junk")
    with pytest.raises(InputFileError, match="emu.pt.*sha256"):
        load_emulator(tmp_path / "again" / "emu.pt")


def test_every_archive_keeps_its_last_cycles_for_validation(l96_archive: Path, tmp_path: Path) -> None:
    """Two archives (here the same one twice): each gives its last quarter of the 55 cycles after the 5 skipped."""
    cfg = _train_config(l96_archive, tmp_path)
    cfg["training data"]["archives"] = [str(l96_archive)] * 2
    cfg["training"]["epochs"] = 1
    pyoops.run("train-emulator", cfg)
    record = load_emulator(tmp_path / "emu.pt").training
    assert record["validation cycles"] == 2 * round(0.25 * 55)
    assert record["training cycles"] == 2 * (55 - round(0.25 * 55))


def test_train_emulator_config_errors(l96_archive: Path, tmp_path: Path) -> None:
    cfg = _train_config(l96_archive, tmp_path)
    cfg["emulator"]["network"] = {"width": 256, "depth": 4, "kernel": 5}
    with pytest.raises(ConfigError, match="emulator.network.*parameters"):
        pyoops.run("train-emulator", cfg)
    cfg = _train_config(l96_archive, tmp_path)
    cfg["emulator"]["target members"] = 20
    with pytest.raises(ConfigError, match="emulator.target members"):
        pyoops.run("train-emulator", cfg)


def test_stddev_block_and_a_short_cycle_with_emulated_sigma(l96_archive: Path, tmp_path: Path) -> None:
    """An EDA of 5 members whose static B takes sigma_b from the emulator: its B's StdDev is the emulator's
    e^(mu + s^2) from the cycle's 5 backgrounds, and 3 cycles run to finite, sensible analyses."""
    pyoops.run("train-emulator", _train_config(l96_archive, tmp_path))
    model = str(tmp_path / "emu.pt")
    from pyoops.fields.fieldset import FieldSet
    from pyoops.saber.blocks import BlockContext
    from pyoops.saber.generic.basic import StdDev
    from pyoops_lorenz96 import Lorenz96Geometry

    geometry = Lorenz96Geometry({"resol": 40})
    members = 8.0 + np.random.default_rng(0).standard_normal((7, 40))
    params = StdDev.Parameters.model_validate({"saber block name": "StdDev",
                                               "emulated stddev": {"model": model, "members": 5}})
    block = StdDev(params, BlockContext(geometry, geometry.variables, ensemble=FieldSet({"x": members}),
                                        path="background error"))
    expected = load_emulator(model).stddev({"x": members[:5]}, "variance")["x"]   # the block's default
    np.testing.assert_allclose(block.sigma["x"], expected, rtol=1e-12)
    wrong = StdDev.Parameters.model_validate({"saber block name": "StdDev",
                                              "emulated stddev": {"model": model, "members": 4}})
    with pytest.raises(ConfigError, match="emulated stddev.members"):
        StdDev(wrong, BlockContext(geometry, geometry.variables, ensemble=FieldSet({"x": members})))

    cfg = l96_cycle("EDA", tmp_path / "cycle", cycles=3, members=5)
    cfg["cost function"]["background error"]["saber outer blocks"] = [
        {"saber block name": "StdDev", "emulated stddev": {"model": model, "members": 5}}]
    summary = pyoops.run("cycle", cfg)
    stats = summary["experiment"].stats
    assert np.all(np.isfinite(stats["analysis rmse"]))
    # All 40 points observed with sigma_o = 1: the analyses beat the observations.
    assert np.mean(stats["analysis rmse"]) < 1.0


@pytest.mark.parametrize("plugin,geometry", [
    ("qg", {"nx": 16, "ny": 9, "depths": [4500.0, 5500.0]}),
    ("shallow_water", {"nx": 12, "ny": 10}),
    ("lorenz96", {"resol": 40}),
])
def test_one_architecture_for_every_model_geometry(plugin: str, geometry: dict) -> None:
    """The layout comes from the model's Geometry: QG convolves in (y, x) with walls in y and levels as channels,
    shallow water in doubly periodic (y, x), Lorenz-96 along its ring; the emulator's output has the field shapes."""
    from pyoops.emulators.model import Emulator
    from pyoops.registry import get_registry

    g = get_registry().model_plugin(plugin).make_geometry(geometry, "geometry")
    variables = list(g.variables)
    layout = GridLayout.from_geometry(g, variables)
    expected = {"qg": (False, True), "shallow_water": (True, True), "lorenz96": (True,)}[plugin]
    assert layout.periodic == expected
    x = predictors({v: np.random.default_rng(0).standard_normal((2, 5) + layout.shape) for v in variables}, layout,
                   ["mean", "gradient"])
    channels = layout.channels * (2 + len(layout.horizontal))
    assert x.shape == (2, channels) + layout.spatial_shape
    emulator = Emulator(layout, 5, 50, ["mean", "gradient"], {"width": 8, "depth": 1, "kernel": 3},
                        np.zeros(channels), np.ones(channels))
    mu, s = emulator.predict({v: np.random.default_rng(1).standard_normal((5,) + layout.shape) for v in variables})
    assert all(mu[v].shape == layout.shape and (s[v] > 0).all() for v in variables)


def test_a_relative_emulator_is_scale_equivariant() -> None:
    """With the ``relative`` flag and no flow predictors, members c x give mu + log c and the same s: the network
    sees log sigma_M less its domain mean, which scaling leaves as it is (to float32 rounding, 1e-5)."""
    from pyoops.emulators.model import Emulator

    layout = GridLayout(("x",), (40,), (0,), (True,), (0.025,))
    torch.manual_seed(0)
    emulator = Emulator(layout, 5, 50, ["relative"], TINY, np.zeros(1), np.ones(1))
    with torch.no_grad():
        for p in emulator.net.parameters():
            p.normal_(0.0, 0.3)
    members = np.random.default_rng(2).standard_normal((3, 5, 40)) * np.linspace(0.5, 2.0, 40)
    mu, s = emulator.predict({"x": members})
    mu10, s10 = emulator.predict({"x": 10.0 * members})
    np.testing.assert_allclose(mu10["x"] - mu["x"], np.log(10.0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(s10["x"], s["x"], rtol=1e-5)
    # Without the flag the network sees the level: the same members scaled give another correction.
    plain = Emulator(layout, 5, 50, [], TINY, np.zeros(1), np.ones(1), net=emulator.net)
    shift = plain.predict({"x": 10.0 * members})[0]["x"] - plain.predict({"x": members})[0]["x"]
    assert np.abs(shift - np.log(10.0)).max() > 1e-3


@pytest.mark.parametrize("periodic,shape,kernel", [((True,), (40,), 5), ((False, True), (9, 16), 3),
                                                   ((True, True), (10, 12), 5)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_numpy_inference_equals_the_torch_network(periodic: tuple, shape: tuple, kernel: int, dtype: type,
                                                  activation: str) -> None:
    """The numpy forward pass (used by Emulator.predict, in float32) reproduces GridConvNet.forward to float32
    rounding (torch computes in float32: about 1e-7 relative per operation over ~20 operations of O(1) values,
    so 1e-5), with float64 or float32 hidden layers, for each activation."""
    from pyoops.emulators.inference import NumpyGridConvNet

    torch.manual_seed(3)
    net = GridConvNet(6, 2, periodic, width=8, depth=2, kernel=kernel, activation=activation)
    with torch.no_grad():
        for p in (*net.head.parameters(), net.beta, net.gamma):  # not the zero start
            p.normal_(0.0, 0.5)
    x, base = torch.randn((3, 6) + shape), torch.randn((3, 2) + shape)
    with torch.no_grad():
        mu, log_s = net(x, base)
    numpy_net = NumpyGridConvNet({k: v.numpy() for k, v in net.state_dict().items()}, periodic, kernel, 2, True,
                                 dtype=dtype, activation=activation)
    mu_np, log_s_np = numpy_net(x.numpy(), base.numpy())
    np.testing.assert_allclose(mu_np, mu.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(log_s_np, log_s.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("layout", [GridLayout(("x",), (40,), (0,), (True,), (0.025,)),
                                    GridLayout(("q", "p"), (2, 9, 16), (1, 2), (False, True), (0.5, 0.25))])
def test_predict_equals_the_torch_network_on_normalised_inputs(layout: GridLayout) -> None:
    """Emulator.predict (point-major predictors, normalisation and constants folded into the numpy weights) gives
    the torch network's mu and exp(log s) on Emulator.inputs, batched or not (float32 rounding: 1e-5
    relative to the largest value)."""
    from pyoops.emulators.model import Emulator

    features = ["mean", "gradient"]
    rng = np.random.default_rng(5)
    members = {v: 3.0 + rng.standard_normal((3, 7) + layout.shape) for v in layout.variables}
    x = predictors({v: a[:, :5] for v, a in members.items()}, layout, features)
    axes = (0,) + tuple(range(2, x.ndim))   # a normalisation near the data's, not the identity
    mean = x.mean(axis=axes) + 0.3 * rng.standard_normal(x.shape[1])
    std = x.std(axis=axes) * rng.uniform(0.7, 1.5, x.shape[1])
    emulator = Emulator(layout, 5, 50, features, {"width": 8, "depth": 2, "kernel": 3}, mean, std)
    torch.manual_seed(4)
    with torch.no_grad():
        for p in emulator.net.parameters():   # every parameter, the zero head included
            p.add_(0.3 * torch.randn_like(p))
    x, base = emulator.inputs({v: a[:, :5] for v, a in members.items()})
    with torch.no_grad():
        mu_t, log_s_t = (layout.from_channels(a.double().numpy()) for a in emulator.net(x, base))
    mu, s = emulator.predict(members)
    one_mu, one_s = emulator.predict({v: a[1] for v, a in members.items()})
    for v in layout.variables:
        assert mu[v].shape == (3,) + layout.shape and one_mu[v].shape == layout.shape
        np.testing.assert_allclose(mu[v], mu_t[v], rtol=1e-5, atol=1e-5 * np.abs(mu_t[v]).max())
        np.testing.assert_allclose(np.log(s[v]), log_s_t[v], rtol=1e-5, atol=1e-5 * np.abs(log_s_t[v]).max())
        np.testing.assert_allclose(one_mu[v], mu[v][1], rtol=1e-12, atol=1e-12)   # BLAS may block by size
        np.testing.assert_allclose(one_s[v], s[v][1], rtol=1e-12)


def test_numpy_inference_runs_on_one_blas_thread_and_equals_two_threads() -> None:
    """The numpy forward pass limits BLAS to one thread while it runs (and restores it after), and gives the same
    bits as its products on two threads: OpenBLAS splits a product by rows and columns, never along the sum (on a
    one-core machine both sides run one thread and the comparison is trivially true)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from pyoops.emulators.inference import NumpyGridConvNet

    torch.manual_seed(4)
    net = GridConvNet(6, 2, (True, True), width=32, depth=2, kernel=3)
    with torch.no_grad():
        for p in (*net.head.parameters(), net.beta, net.gamma):
            p.normal_(0.0, 0.5)
    numpy_net = NumpyGridConvNet({k: v.numpy() for k, v in net.state_dict().items()}, (True, True), 3, 2, True)
    seen: list[set[int]] = []
    act = numpy_net.act

    def blas_threads() -> set[int]:
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    def recording_act(z: np.ndarray, dtype: np.dtype) -> np.ndarray:
        seen.append(blas_threads())
        return act(z, dtype)

    numpy_net.act = recording_act
    x = np.random.default_rng(0).standard_normal((3, 64 * 48, 6))
    with threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        one = numpy_net.points(x, (64, 48))
        after = blas_threads()
        numpy_net.act = act
        two = numpy_net._points(x, (64, 48))
    assert seen and all(s == {1} for s in seen)
    assert after == before
    assert np.array_equal(one, two)
