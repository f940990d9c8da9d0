r"""The SABER block test kit: :class:`BlockTests`, a pytest suite driven by a YAML file.

As :class:`~pyoops.testing.suites.InterfaceTests` proves a model plugin correct, ``BlockTests``
proves the SABER blocks of a covariance correct, one small test file per configuration::

    # tests/test_my_block.py
    from pathlib import Path
    from pyoops.testing import BlockTests

    class TestMyBlock(BlockTests):
        config_file = Path(__file__).with_name("my_block.yaml")

with the YAML next to it:

.. code-block:: yaml

    model plugin: lorenz96                 # required: the geometry comes from this plugin
    geometry: {resol: 40}
    date: 2010-01-01T00:00:00Z             # valid time of the increments (default: none)
    variables: [x]                         # default: the geometry's variables
    random ensemble:                       # optional: in-memory members for blocks that need them
      members: 10
      seed: 1
      covariance: {saber central block: {saber block name: spectral correlation, length scale: 0.1}}
    background error:                      # the covariance holding the block(s) under test
      covariance model: SABER
      saber central block: {saber block name: my block, length scale: 0.05}
      saber outer blocks:
      - {saber block name: StdDev, read: {value: 0.6}}
    block tests:                           # optional: pyoops.saber.checks.BlockTestSettings
      seed: 0
      randomization size: 2000
      significance: 1.0e-6

Every block of the covariance (the central block, each outer block, and with
``block tests.nested`` the blocks of nested chains), and :math:`\mathbf{B}` as a whole
(id ``B``), is a parameter of the tests that apply to it:

* ``test_adjoint`` (all blocks): outer, :math:`\langle Ux, y\rangle = \langle x, U^\mathsf{T}y\rangle`;
  central and B, :math:`\langle Cx, y\rangle = \langle x, Cy\rangle`;
* ``test_square_root`` (central, B): :math:`C = SS^\mathsf{T}`, ``multiply_sqrt_ad`` the adjoint;
* ``test_left_inverse`` (outer): :math:`U^{-1}Ux = x`;
* ``test_inverse`` (outer): :math:`UU^{-1}y = y`, square :math:`U` only;
* ``test_dirac`` (central, B): impulse responses symmetric and positive semi-definite;
* ``test_randomization_mean`` and ``test_randomization_pointwise`` (central, B): the
  sample variance of random draws against :math:`\mathrm{diag}(C)`, on average and at
  the worst point;
* ``test_batch`` (all): batched members equal one-by-one calls.

The checks are the functions of :mod:`pyoops.saber.checks`.  A test the block cannot run (no square root, no left inverse, a rectangular
:math:`U`, a grid too large for the exact variance) is *skipped with the reason*; a
failure reports the figure against its tolerance.  Each block's own tolerance keys
(``adjoint tolerance`` ...) apply to its tests.  Override :meth:`BlockTests.make_registry`
to test a block registered in-process, e.g. ``registry.register_plugin(my_plugin_module)``.
Relative file names inside ``background error`` are relative to the current directory,
as in applications.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from pydantic import Field

from pyoops.config.parameters import DateTimeField, Parameters, validate
from pyoops.config.yaml_io import load_config
from pyoops.fields.fieldset import FieldSet
from pyoops.saber.blocks import SaberOuterBlock
from pyoops.saber.chain import ErrorCovariance
from pyoops.saber.checks import (
    BlockCheck,
    BlockTestSettings,
    adjoint_check,
    batch_check,
    dirac_check,
    inverse_check,
    left_inverse_check,
    randomization_checks,
    square_root_check,
    symmetry_check,
)
from pyoops.util.errors import ConfigError, PyoopsError
from pyoops.util.random import generator
from pyoops.util.variables import Variables

__all__ = ["BlockEnvironment", "BlockTestParameters", "BlockTests"]


class RandomEnsembleParameters(Parameters):
    """``random ensemble``: members drawn in memory (white noise, or from a covariance)."""

    members: int = Field(ge=2, description="Number of members.")
    seed: int = Field(1, ge=0, description="Seed of the draws.")
    covariance: dict[str, Any] | None = Field(
        None, description="Draw the members from N(0, B) of this covariance section (default: standard normal).")


class BlockTestParameters(Parameters):
    """A BlockTests file (layout in :mod:`pyoops.testing.blocks`)."""

    model_plugin: str = Field(description="Model plugin whose geometry the blocks act on.")
    geometry: dict[str, Any] = Field(default_factory=dict, description="Geometry of the plugin.")
    date: DateTimeField | None = Field(None, description="Valid time of the increments.")
    variables: list[str] | None = Field(None, min_length=1, description="Variables of B (default: the geometry's).")
    random_ensemble: RandomEnsembleParameters | None = Field(
        None, description="In-memory ensemble handed to the covariance (for Ensemble blocks and calibrations).")
    background_error: dict[str, Any] = Field(description="The covariance section holding the blocks under test.")
    block_tests: BlockTestSettings = Field(default_factory=BlockTestSettings, description="Test settings.")


class BlockEnvironment:
    """The covariance of a BlockTests file, built once, and its blocks by YAML path.

    Parameters
    ----------
    params
        The validated file.
    registry
        The plugin registry (default: :func:`pyoops.registry.get_registry`).
    source
        Name of the file, for messages.
    """

    def __init__(self, params: BlockTestParameters, registry: Any = None, source: str = "<config>"):
        if registry is None:
            from pyoops.registry import get_registry

            registry = get_registry()
        self.params = params
        self.registry = registry
        self.source = source

    @classmethod
    def from_file(cls, source: "str | Path | dict[str, Any]", registry: Any = None,
                  name: str | None = None) -> "BlockEnvironment":
        """Load and validate a BlockTests file (or mapping; ``name`` then names it in messages)."""
        doc = load_config(source if isinstance(source, dict) else Path(source))
        try:
            params = validate(BlockTestParameters, doc.data)
        except ConfigError as exc:
            if doc.filename is None:
                raise
            raise ConfigError(f"{doc.where(exc.path)}: {exc}") from None
        return cls(params, registry, str(source) if not isinstance(source, dict) else (name or "<config>"))

    @functools.cached_property
    def plugin(self) -> Any:
        """The model plugin named by ``model plugin``."""
        return self.registry.model_plugin(self.params.model_plugin, "model plugin")

    @functools.cached_property
    def geometry(self) -> Any:
        """The geometry of the ``geometry`` section."""
        return self.plugin.make_geometry(self.params.geometry, "geometry")

    @property
    def variables(self) -> Variables:
        """The variables of B."""
        return Variables(self.params.variables or self.geometry.variables)

    def ensemble(self) -> FieldSet | None:
        """The ``random ensemble`` members stacked on a leading axis, or ``None``."""
        spec = self.params.random_ensemble
        if spec is None:
            return None
        rng = generator(spec.seed, "block tests", "random ensemble")
        if spec.covariance is None:
            return self.geometry.random(self.variables, rng, (spec.members,))
        cov = ErrorCovariance(spec.covariance, self.geometry, self.variables, self.params.date, self.registry,
                              self.plugin, "random ensemble.covariance")
        return cov.chain.randomize(rng, (spec.members,))

    @functools.cached_property
    def covariance(self) -> ErrorCovariance:
        """The :class:`~pyoops.saber.chain.ErrorCovariance` of ``background error``."""
        ensemble = self.ensemble()
        return ErrorCovariance(self.params.background_error, self.geometry, self.variables, self.params.date,
                               self.registry, self.plugin, "background error", ensemble=ensemble,
                               ensemble_is_perturbations=False)

    @functools.cached_property
    def blocks(self) -> dict[str, Any]:
        """``{YAML path: block}`` of every block under test, then ``{"B": chain}``."""
        chain = self.covariance.chain
        out = dict(chain.blocks(nested=self.params.block_tests.nested))
        out["B"] = chain
        return out

    def central(self) -> list[str]:
        """Paths of the central blocks, and ``B``."""
        return [p for p, b in self.blocks.items() if not isinstance(b, SaberOuterBlock)]

    def outer(self) -> list[str]:
        """Paths of the outer blocks."""
        return [p for p, b in self.blocks.items() if isinstance(b, SaberOuterBlock)]

    def rng(self, path: str, test: str) -> np.random.Generator:
        """The random stream of ``test`` on the block at ``path``."""
        return generator(self.params.block_tests.seed, "block tests", path, test)

    def tolerance(self, path: str, key: str) -> float:
        """The block's own tolerance ``key`` (``adjoint_tolerance`` ...), or the settings' for ``B``."""
        if path == "B":
            return self.params.block_tests.tolerance
        return float(getattr(self.blocks[path].params, key))

    def randomization(self, path: str) -> list[BlockCheck]:
        """The two randomization checks of the block at ``path`` (computed once: they share the draws)."""
        cache = self.__dict__.setdefault("_randomization", {})
        if path not in cache:
            s = self.params.block_tests
            cache[path] = randomization_checks(self.blocks[path], s.seed, s.randomization_size, s.significance,
                                               s.max_points, path, ("block tests", path, "randomization"))
        return cache[path]

    def __repr__(self) -> str:
        return f"BlockEnvironment({self.source!r})"


#: Environments built at collection time, by (test class, source): the class fixture reuses them.
_BUILT: dict[tuple[type, str], "BlockEnvironment | str"] = {}


def _environment(cls: type) -> "BlockEnvironment | str":
    """The environment of a BlockTests subclass, or the one-line error that prevented building it."""
    source = cls.config_file if cls.config_file is not None else cls.config
    if source is None:
        return f"{cls.__name__} must set config_file (the path of its block-test YAML file) or config"
    key = (cls, str(source))
    if key not in _BUILT:
        try:
            env = BlockEnvironment.from_file(source if isinstance(source, dict) else Path(source),
                                             registry=cls.make_registry(), name=f"{cls.__qualname__}.config")
            env.blocks  # noqa: B018 - build now, so that the parameters are known
            _BUILT[key] = env
        except PyoopsError as exc:
            _BUILT[key] = f"{source}: the covariance could not be built: {exc}"
        except Exception as exc:  # a bug in a block: report it on the tests, not as a collection error
            _BUILT[key] = f"{source}: building the covariance raised {type(exc).__name__}: {exc}"
    return _BUILT[key]


def _report(check: BlockCheck) -> float:
    """Skip with the reason, fail with the figure, or return the figure."""
    if check.skipped is not None:
        pytest.skip(f"{check.where}: {check.message()}")
    assert check.passed, f"{check.where}: {check.message()}"
    return float(check.figure)


class BlockTests:
    """pytest suite of the SABER block tests (layout of the YAML in :mod:`pyoops.testing.blocks`).

    Attributes
    ----------
    config_file
        Path of the block-test YAML file (set it in the subclass).
    config
        The configuration as a mapping, instead of ``config_file``.
    """

    config_file: ClassVar["str | Path | None"] = None
    config: ClassVar["dict[str, Any] | None"] = None

    @classmethod
    def make_registry(cls) -> Any:
        """The registry to build blocks with (override to test an in-process plugin)."""
        from pyoops.registry import get_registry

        return get_registry()

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """One parameter per block the test applies to (the covariance is built here, once per class)."""
        env = _environment(type(self))
        for kind in ("central", "outer", "block"):
            if kind not in metafunc.fixturenames:
                continue
            if isinstance(env, str):
                metafunc.parametrize(kind, [pytest.param(env, id="build")])
                continue
            paths = {"central": env.central(), "outer": env.outer(), "block": list(env.blocks)}[kind]
            params = [pytest.param(p, id=_short(p)) for p in paths] or [pytest.param(None, id=f"no-{kind}-block")]
            metafunc.parametrize(kind, params)

    @pytest.fixture(scope="class")
    def blocks(self, request: pytest.FixtureRequest) -> BlockEnvironment:
        """The :class:`BlockEnvironment` of the class's file."""
        env = _environment(request.cls)
        if isinstance(env, str):
            pytest.fail(env, pytrace=False)
        return env

    @staticmethod
    def _path(blocks: BlockEnvironment, path: "str | None", kind: str) -> str:
        if path is None:
            pytest.skip(f"{blocks.source}: the covariance has no {kind} block")
        return path

    # Tests ----------------------------------------------------------------------------------
    def test_adjoint(self, blocks: BlockEnvironment, block: str) -> None:
        """Outer: dot-product test of ``multiply_ad``; central and B: self-adjointness."""
        b = blocks.blocks[block]
        tol = blocks.tolerance(block, "adjoint_tolerance")
        check = adjoint_check if isinstance(b, SaberOuterBlock) else symmetry_check
        _report(check(b, blocks.rng(block, "adjoint"), tol, block))

    def test_square_root(self, blocks: BlockEnvironment, central: "str | None") -> None:
        """:math:`C = SS^\\mathsf{T}` and the adjoint of the square root."""
        central = self._path(blocks, central, "central")
        _report(square_root_check(blocks.blocks[central], blocks.rng(central, "square root"),
                                  blocks.tolerance(central, "square_root_tolerance"), central))

    def test_left_inverse(self, blocks: BlockEnvironment, outer: "str | None") -> None:
        """:math:`U^{-1}Ux = x`."""
        outer = self._path(blocks, outer, "outer")
        _report(left_inverse_check(blocks.blocks[outer], blocks.rng(outer, "left inverse"),
                                   blocks.tolerance(outer, "inner_inverse_tolerance"), outer))

    def test_inverse(self, blocks: BlockEnvironment, outer: "str | None") -> None:
        """:math:`UU^{-1}y = y` for a square :math:`U`."""
        outer = self._path(blocks, outer, "outer")
        _report(inverse_check(blocks.blocks[outer], blocks.rng(outer, "inverse"),
                              blocks.tolerance(outer, "outer_inverse_tolerance"), outer))

    def test_dirac(self, blocks: BlockEnvironment, central: "str | None") -> None:
        """Impulse responses: symmetric, positive semi-definite."""
        central = self._path(blocks, central, "central")
        points = blocks.params.block_tests.dirac_points if central == "B" else None
        _report(dirac_check(blocks.blocks[central], points, blocks.tolerance(central, "adjoint_tolerance"), central))

    def _randomization(self, blocks: BlockEnvironment, central: "str | None", which: int) -> None:
        _report(blocks.randomization(self._path(blocks, central, "central"))[which])

    def test_randomization_mean(self, blocks: BlockEnvironment, central: "str | None") -> None:
        """Mean sample variance of random draws against :math:`\\mathrm{diag}(C)` (statistical)."""
        self._randomization(blocks, central, 0)

    def test_randomization_pointwise(self, blocks: BlockEnvironment, central: "str | None") -> None:
        """Every point's sample variance against :math:`C_{ii}` (statistical, Bonferroni)."""
        self._randomization(blocks, central, 1)

    def test_batch(self, blocks: BlockEnvironment, block: str) -> None:
        """Batched members equal one-by-one calls."""
        s = blocks.params.block_tests
        _report(batch_check(blocks.blocks[block], blocks.rng(block, "batch"), s.batch_size, s.tolerance, block))


def _short(path: str) -> str:
    """A test id from a YAML path: ``background error.saber outer blocks[0]`` → ``outer[0]``."""
    if path == "B":
        return "B"
    text = path.replace("background error.", "").replace("saber outer blocks", "outer")
    return text.replace("saber central block", "central").replace(".covariance.", ".").replace(" ", "_")
