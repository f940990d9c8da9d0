"""The OOPS interface test kit: generic tests every model plugin runs against its own YAML.

As OOPS's ``test::Geometry``, ``test::Increment``, ``test::LinearModel`` ...
suites are instantiated once per model, a pyoops plugin proves its Geometry,
State, Increment, Model, LinearModel, observation operators, observation errors
and variable changes correct with one small test file::

    # plugins/mymodel/tests/test_interface.py
    from pathlib import Path
    from pyoops.testing import InterfaceTests

    class TestMyModelInterface(InterfaceTests):
        config_file = Path(__file__).with_name("interface.yaml")

and one YAML file next to it.  Relative file names in the YAML are relative to
the YAML file.  Keys, with defaults where a key is optional:

.. code-block:: yaml

    model plugin: lorenz96                  # required
    geometry: {resol: 40}                   # the plugin's geometry config
    geometry test:                          # optional
      other geometry: {resol: 20}           # must not be same_as the geometry
    state:                                  # required: {date, filename | analytic init}
      date: 2010-01-01T00:00:00Z
      analytic init: {method: sinusoid}
      norm: 8.031189202104505               # optional reference (file norm or analytic-init norm)
      norm tolerance: 1.0e-12
    increment test:                         # optional, defaults shown
      tolerance: 1.0e-8                     # algebra identities, serialize round trip
      seed: 7
      batch size: 3                         # members of the batched-increment test
      dirac: {ixdir: [0, 39]}               # default: first and last point (+ one per other variable)
    get values test:                        # optional, defaults shown
      nlocs: 50                             # random locations inside the grid
      seed: 11
      tolerance AD: 1.0e-12
      tolerance: 1.0e-12                    # interpolation at the grid points
    model: {name: Lorenz96, f: 8.0, tstep: PT6H}
    model test:
      forecast length: P2D
      final norm: 8.013211070984518         # optional regression value
      tolerance: 1.0e-12
      ensemble size: 3                      # batched forecast == member-by-member forecasts
      ensemble perturbation: 1.0e-3
      ensemble tolerance: 1.0e-14           # 0 demands bitwise equality
      seed: 13
    linear model: {name: Lorenz96TLM, f: 8.0, tstep: PT6H}
    linear model test:
      forecast length: P1D
      first multiplier TL: 1.0              # alpha = first multiplier * 10^-k, k = 0 .. iterations-1
      iterations TL: 12
      tolerance TL: 1.0e-7                  # best relative FD error must be below
      tolerance AD: 1.0e-12                 # relative difference of the two inner products
      tolerance linearity: 1.0e-12
      seed: 17
    observations test:
      time window: {begin: 2009-12-31T21:00:00Z, length: PT6H}
      observers:                            # as in an application's observations.observers
      - obs space:
          name: x grid
          simulated variables: [x]
          generate: {obs frequency: PT6H, obs density: 40, obs error: 1.0}
        obs operator: {name: Identity}
        obs error: {covariance model: diagonal}
      first multiplier TL: 1.0
      iterations TL: 12
      tolerance TL: 1.0e-6
      tolerance AD: 1.0e-12
      tolerance: 1.0e-12                    # linearity, R R^-1 = I, consistency of sigma
      randomize samples: 200
      seed: 19
    variable change test:                   # optional: VariableChangeTests skip without it
      variable change: {variable change name: ...}
      linear variable change: {variable change name: ...}
      input variables: [x]                  # default: the state's variables
      output variables: [...]
      test inverse: false
      tolerance AD: 1.0e-12

Comparisons are relative: :math:`|a - b| \\le \\mathrm{tol}\\cdot\\max(|a|, |b|)`.
Every random draw comes from :func:`pyoops.util.random.generator` with the
section's ``seed``, so a failure reproduces exactly.

The suites (:class:`~pyoops.testing.suites.GeometryTests`, :class:`~pyoops.testing.suites.StateTests`, :class:`~pyoops.testing.suites.IncrementTests`,
:class:`~pyoops.testing.suites.GetValuesTests`, :class:`~pyoops.testing.suites.ModelTests`, :class:`~pyoops.testing.suites.LinearModelTests`,
:class:`~pyoops.testing.suites.ObsOperatorTests`, :class:`~pyoops.testing.suites.ObsErrorTests`, :class:`~pyoops.testing.suites.VariableChangeTests`
and :class:`~pyoops.testing.suites.InterfaceTests`, which combines them) are thin: each test calls one
plain function of :mod:`pyoops.testing.checks`, which raises
:class:`AssertionError` with a clear message and returns the measured error.
A suite whose section is missing fails, naming the section, except the optional
``variable change test``.  A plugin without, say, a linear model derives its test
class from the suites it supports::

    class TestMyModelInterface(GeometryTests, StateTests, IncrementTests, ModelTests):
        config_file = Path(__file__).with_name("interface.yaml")

SABER blocks have their own suite, :class:`~pyoops.testing.blocks.BlockTests` (module
:mod:`pyoops.testing.blocks`), driven by a YAML file that holds a covariance section.

Objects are built exactly as applications build them, through
:func:`pyoops.registry.get_registry`; override
:meth:`~pyoops.testing.suites.InterfaceTestBase.make_registry` to test an in-process plugin.
"""

from pyoops.testing import checks
from pyoops.testing.blocks import BlockEnvironment, BlockTestParameters, BlockTests
from pyoops.testing.environment import InterfaceEnvironment
from pyoops.testing.parameters import InterfaceTestParameters, load_interface_parameters
from pyoops.testing.suites import (
    GeometryTests,
    GetValuesTests,
    IncrementTests,
    InterfaceTestBase,
    InterfaceTests,
    LinearModelTests,
    ModelTests,
    ObsErrorTests,
    ObsOperatorTests,
    StateTests,
    VariableChangeTests,
)

__all__ = [
    "BlockEnvironment",
    "BlockTestParameters",
    "BlockTests",
    "GeometryTests",
    "GetValuesTests",
    "IncrementTests",
    "InterfaceEnvironment",
    "InterfaceTestBase",
    "InterfaceTestParameters",
    "InterfaceTests",
    "LinearModelTests",
    "ModelTests",
    "ObsErrorTests",
    "ObsOperatorTests",
    "StateTests",
    "VariableChangeTests",
    "checks",
    "load_interface_parameters",
]
