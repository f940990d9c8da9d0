"""``explicit covariance``: a dense matrix from a file (small problems), its square root and checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyoops.fields.fieldset import FieldSet
from pyoops.registry import get_registry
from pyoops.saber.chain import ErrorCovariance
from pyoops.saber.generic.explicit import write_matrix
from pyoops.util.errors import ConfigError, InputFileError

DATE = "2010-01-01T00:00:00Z"


def _geometry(n: int = 12):  # noqa: ANN202
    from pyoops_lorenz96 import Lorenz96Geometry

    return Lorenz96Geometry({"resol": n})


def _cov(path: Path, n: int = 12, block: dict | None = None) -> ErrorCovariance:
    registry = get_registry()
    cfg = {"covariance model": "SABER",
           "saber central block": {"saber block name": "explicit covariance", "read": {"filename": str(path)},
                                   "adjoint test": True, "square-root test": True, **(block or {})}}
    return ErrorCovariance(cfg, _geometry(n), ["x"], DATE, registry, registry.model_plugin("lorenz96"))


@pytest.mark.parametrize("suffix", [".nc", ".npy"])
def test_multiply_sqrt_and_randomize(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((12, 12))
    m = a @ a.T
    write_matrix(str(tmp_path / f"b{suffix}"), m)
    cov = _cov(tmp_path / f"b{suffix}")          # construction runs the adjoint and square-root tests
    x = rng.standard_normal((3, 12))
    out = cov.chain.multiply(FieldSet({"x": x}))
    np.testing.assert_allclose(out["x"], x @ m, rtol=1e-12)
    v = rng.standard_normal(12)
    s = cov.chain.multiply_sqrt(v)["x"]
    np.testing.assert_allclose(cov.chain.multiply_sqrt_ad(FieldSet({"x": s})),
                               cov.chain.central._sqrt.T @ s, rtol=1e-12)
    draws = cov.chain.randomize(np.random.default_rng(1), (20000,))["x"]
    np.testing.assert_allclose(np.cov(draws.T), m, atol=0.1 * np.abs(m).max())


def test_bad_matrices(tmp_path: Path) -> None:
    write_matrix(str(tmp_path / "wrong.nc"), np.eye(5))
    with pytest.raises(InputFileError, match="expected \\(12, 12\\)"):
        _cov(tmp_path / "wrong.nc")
    a = np.eye(12)
    a[0, 1] = 0.5
    write_matrix(str(tmp_path / "asym.nc"), a)
    with pytest.raises(InputFileError, match="not symmetric"):
        _cov(tmp_path / "asym.nc")
    write_matrix(str(tmp_path / "neg.nc"), -np.eye(12))
    with pytest.raises(InputFileError, match="positive semi-definite"):
        _cov(tmp_path / "neg.nc")
    write_matrix(str(tmp_path / "ok.nc"), np.eye(12))
    with pytest.raises(ConfigError, match="max size"):
        _cov(tmp_path / "ok.nc", block={"max size": 10})
    with pytest.raises(InputFileError, match="not found"):
        _cov(tmp_path / "missing.nc")
