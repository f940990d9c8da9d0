r"""The two-layer QG model ``QG``, its tangent linear and adjoint ``QgTLM``.

One step of length :math:`\Delta t` (``tstep``, default ``PT1H``), as in OOPS:

1. the wall rows of :math:`\psi` are set to their zonal means (rigid walls);
2. :math:`q = q(\psi)` and the winds :math:`u = -\partial_y\psi`,
   :math:`v = \partial_x\psi` (:mod:`pyoops_qg.numerics`);
3. semi-Lagrangian advection of :math:`q` (:math:`Dq_i/Dt = 0`): each interior
   point takes the value at its departure point by bicubic interpolation, the
   departure point found by a predictor–corrector (OOPS's
   :math:`(x - \Delta t\,u,\ y - \Delta t\,v)` with the arrival wind, then the
   trapezoidal rule with the predicted wind);
4. PV inversion for the new :math:`\psi`, the wall values adjusted so that the
   circulation along each wall is conserved (Kelvin's theorem).

With no forcing and a flat bottom, energy and the PV integrals are conserved to
0.15% and 2e-4 over 10 days of growing baroclinic waves on the 40 × 20 grid
(:mod:`pyoops_qg.diagnostics`; ``plugins/qg/tests/test_qg.py``).

There is no forcing and no explicit dissipation; the interpolation damps the
smallest scales.  The state variables ``q``, ``u`` and ``v`` are recomputed
from ``x`` after each step, so only ``x`` is prognostic (an analysis of ``x``
alone is a valid initial state).  Arrays may carry leading member axes, so one
call advances a whole ensemble.

Time-step limit
    The interpolation stencil follows the departure point, so the scheme is not limited by
    the Courant number itself (a Rossby wave on a uniform 120 m/s flow stays accurate to 0.4%
    over 3 days at Courant 5.9 on the 40 × 20 grid); the departure point, estimated along a
    straight trajectory, loses accuracy as :math:`\Delta t\,|\nabla\mathbf{u}|` grows.  The
    model keeps a conservative guard of two grid lengths per step.  At configuration it
    requires

    .. math::

        U_{\max}\,\Delta t \le 2\min(\Delta x, \Delta y),

    with :math:`U_{\max}` = ``maximum wind speed`` (150 m/s by default, above the
    130 m/s of the ``large-vortices`` state), and every step checks the actual
    displacement (a :class:`~pyoops.util.errors.NumericalError` beyond two grid
    lengths, naming the longest ``tstep`` for the winds met).  On the 40 × 20 grid
    (300 km × 332 km) that allows up to ``PT1H6M40S``; 128 × 64 allows ``PT20M``,
    320 × 160 ``PT8M20S``, 512 × 256 ``PT5M``.

Initial states that vary along a wall
    The step first sets each wall row to its zonal mean.  A state whose wall rows vary
    (a draw from a B without ``QG walls``, or an analysis with such a B) thereby gets a
    jump over one row next to the wall, a jet of :math:`a/(2\Delta y)` for a departure
    :math:`a` from the mean: at 320 × 160 a draw from the tutorial's B gives 106 m/s,
    which grows into a wall jet that stops a ``PT7M30S`` run at its 10th step (and a
    ``PT1M`` run reaches 250 m/s in 4 hours).  The model logs a warning naming the block when
    that jet exceeds :data:`WALL_JET_WARNING` m/s.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from pyoops.config.parameters import PositiveDurationField, as_parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.generic.timestepping import FixedTimeStep, TimeSteppingParameters
from pyoops.interface.geometry import Geometry
from pyoops.interface.model import LinearModel, Model
from pyoops.util.datetime import Duration
from pyoops.util.errors import ConfigError
from pyoops_qg.numerics import MAX_DISPLACEMENT, Linearisation, step

__all__ = ["LINEARISATION_CACHE", "QgModel", "QgModelParameters", "QgTLM", "QgTLMParameters", "max_time_step"]

logger = logging.getLogger("pyoops")


class _Common(TimeSteppingParameters):
    tstep: PositiveDurationField = Field(Duration("PT1H"), description="Time step (ISO-8601).")
    maximum_wind_speed: float = Field(150.0, gt=0.0, allow_inf_nan=False,
                                      description="Largest wind speed (m/s) the time step must handle: "
                                                  "U_max * tstep <= 2 min(dx, dy).")


class QgModelParameters(_Common):
    """YAML keys of the nonlinear model: ``{name: QG, tstep: PT1H}``."""

    name: Literal["QG"] = "QG"


class QgTLMParameters(_Common):
    """YAML keys of the linear model: ``{name: QgTLM, tstep: PT1H, trajectory: departures}`` (the nonlinear
    model's tstep; what the trajectory keeps, see :class:`QgTLM`)."""

    name: Literal["QgTLM"] = "QgTLM"
    trajectory: Literal["matrices", "departures", "state"] = Field(
        "departures", description="What is kept per model step of the trajectory (per grid point and layer): "
        "'matrices' (the interpolation matrices, about 460 B; fastest), 'departures' (the departure points, "
        "96 B; each TL or AD step rebuilds the matrices) or 'state' (the streamfunction, 8 B; each TL or AD "
        "step recomputes the linearisation)")

#: Linearisations kept built with ``trajectory: state``: a TL sweep followed by an AD sweep uses the last
#: steps twice in a row, and every other step once per sweep.
LINEARISATION_CACHE = 2


def max_time_step(geometry: Any, max_wind: float) -> float:
    """Longest time step (s) with :math:`U_{\\max}\\Delta t \\le 2\\min(\\Delta x, \\Delta y)`."""
    return MAX_DISPLACEMENT * min(geometry.dx, geometry.dy) / max_wind


def _check_time_step(params: _Common, geometry: Any) -> float:
    dt = params.tstep.total_seconds()
    limit = max_time_step(geometry, params.maximum_wind_speed)
    spacing = min(geometry.dx, geometry.dy) / 1e3
    if dt > limit * (1 + 1e-12):
        raise ConfigError(
            f"time step {params.tstep} ({dt:g} s) breaks the semi-Lagrangian scheme on the {geometry.nx} x "
            f"{geometry.ny} grid: at the maximum wind speed {params.maximum_wind_speed:g} m/s the departure point "
            f"must stay within {MAX_DISPLACEMENT:g} grid lengths (min(dx, dy) = {spacing:.1f} km), "
            f"i.e. tstep <= {Duration(int(limit))} ({limit:.0f} s)", "model.tstep")
    return dt


#: A state whose wall rows vary along the walls by more than this wind (m/s) times ``2 dy`` is reported.
WALL_JET_WARNING = 1.0


def _warn_wall_jet(ops: Any, psi: Any) -> None:
    r"""Log a warning when ``psi`` varies along a wall (only an initial state can: the model keeps the walls).

    The step sets each wall row to its zonal mean and keeps the interior, so a departure ``a`` from the
    mean becomes a jump over one row: a jet of :math:`a/(2\Delta y)` along the wall.
    """
    anomaly = ops.wall_anomaly(psi)
    jet = anomaly / (2.0 * ops.dy)
    if jet > WALL_JET_WARNING:
        logger.warning(
            f"QG model: the streamfunction 'x' of the initial state varies along the walls by up to {anomaly:.3g} "
            f"m^2/s; the rigid walls keep each wall row's mean, which leaves a jet of up to {jet:.0f} m/s in the "
            f"row next to the wall ({ops.dy / 1e3:.0f} km): if the state was drawn from or analysed with a B, add "
            "'- saber block name: QG walls' before 'QG balance' in 'background error.saber outer blocks'")


def _psi(fields: FieldSet, what: str) -> Any:
    if "x" not in fields:
        raise ConfigError(f"the QG {what} needs the streamfunction 'x' among the variables, got "
                          f"{list(fields)}")
    return fields["x"]


class QgModel(FixedTimeStep, Model):
    """Nonlinear two-layer QG model, ``{name: QG, tstep: PT1H}`` (see the module docs).

    Parameters
    ----------
    params:
        Validated :class:`QgModelParameters`, or the YAML mapping itself.
    geometry:
        A :class:`~pyoops_qg.geometry.QgGeometry`.
    """

    Parameters = QgModelParameters

    def __init__(self, params: QgModelParameters | Mapping[str, Any], geometry: Geometry):
        super().__init__(as_parameters(QgModelParameters, params, "model"), geometry)
        self.dt = _check_time_step(self.params, geometry)
        self.ops = geometry.operators

    def step(self, fields: FieldSet) -> FieldSet:
        """Advance ``x`` by one step; ``q``, ``u``, ``v`` (if present) are recomputed from it."""
        psi = _psi(fields, "model")
        _warn_wall_jet(self.ops, psi)
        psi = step(self.ops, psi, self.dt)
        return FieldSet(self.ops.diagnose(psi, fields.keys()), copy=False)


class QgTLM(FixedTimeStep, LinearModel):
    """Tangent linear and adjoint of :class:`QgModel`, ``{name: QgTLM, tstep: PT1H}``.

    The exact derivative of the discrete step, including the dependence of the
    semi-Lagrangian departure points (and interpolation weights) on the winds, so
    the adjoint test holds to round-off.  The increments' ``q``, ``u``, ``v`` are
    functions of their ``x`` (as in the nonlinear model): the TL ignores them on
    input and recomputes them; the adjoint returns zero for them.

    Trajectory storage (``trajectory``)
        Each model step of the trajectory is a :class:`~pyoops_qg.numerics.Linearisation`, built at its
        first TL or AD use, which keeps (per grid point and layer, see its docs):

        * ``matrices``: the sparse interpolation matrices of both semi-Lagrangian stages and the
          interpolation gradients, about 460 bytes;
        * ``departures`` (default): the departure points instead of the matrices, 96 bytes (1.8 GB for a
          24-hour window at 320 × 160 with ``PT8M``); each TL or AD step rebuilds the two matrices from
          them, which makes it about 3 times as long;
        * ``state``: the streamfunction, 8 bytes, and the last :data:`LINEARISATION_CACHE` steps used
          built, so that each TL or AD step (but those at the turn between a TL and an AD sweep)
          recomputes its linearisation as well: about one nonlinear step more.

        All three give the same numbers to the last bit.
    """

    Parameters = QgTLMParameters

    def __init__(self, params: QgTLMParameters | Mapping[str, Any], geometry: Geometry):
        super().__init__(as_parameters(QgTLMParameters, params, "linear model"), geometry)
        self.dt = _check_time_step(self.params, geometry)
        self.ops = geometry.operators
        self._built: OrderedDict[int, Linearisation] = OrderedDict()

    def trajectory_fields(self, fields: FieldSet) -> Linearisation:
        """The linearisation about ``fields`` (built on first use)."""
        return Linearisation(self.ops, _psi(fields, "linear model trajectory"), self.dt,
                             storage=self.params.trajectory)

    def clear_trajectory(self) -> None:
        super().clear_trajectory()
        self._built.clear()

    def _use(self, trajectory: Linearisation) -> Linearisation:
        """``trajectory``, noted as used last; with ``trajectory: state`` the least recently used beyond
        :data:`LINEARISATION_CACHE` is released."""
        if trajectory.storage == "state":
            self._built[id(trajectory)] = trajectory   # the cache holds it, so its id is not reused
            self._built.move_to_end(id(trajectory))
            while len(self._built) > LINEARISATION_CACHE:
                self._built.popitem(last=False)[1].release()
        return trajectory

    def step_tl(self, dfields: FieldSet, trajectory: Linearisation) -> FieldSet:
        psi = _psi(dfields, "linear model")
        dpsi = self._use(trajectory).step_tl(psi)
        return FieldSet(self.ops.diagnose_linear(dpsi, dfields.keys()), copy=False)

    def step_ad(self, dfields: FieldSet, trajectory: Linearisation) -> FieldSet:
        _psi(dfields, "linear model")
        apsi = self._use(trajectory).step_ad(self.ops.diagnose_linear_ad(dfields))
        out = {v: (apsi if v == "x" else apsi * 0.0) for v in dfields}
        return FieldSet(out, copy=False)
