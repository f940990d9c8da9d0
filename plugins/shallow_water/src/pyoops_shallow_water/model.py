r"""The shallow-water model ``ShallowWater`` and its linear model ``ShallowWaterTLM``.

YAML (defaults shown)::

    model:
      name: ShallowWater
      tstep: PT5M              # RK4 step
      mean depth: 1000.0       # H (m)
      g: 9.81                  # gravity (m s^-2)
      f: 1.0e-4                # Coriolis parameter (s^-1), f-plane
      diffusion: 0.0           # Laplacian diffusion nu (m^2 s^-1)
      hyperdiffusion: 0.0      # biharmonic hyperdiffusion nu4 (m^4 s^-1), e.g. 1.0e12 at 30x30

The numerics are described in :mod:`pyoops_shallow_water.numerics`.  A time
step that breaks the CFL condition of the scheme is rejected when the model is
built, with one line stating the Courant number, the limit and the longest
allowed step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field

from pyoops.config.parameters import PositiveDurationField, as_parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.generic.timestepping import FixedTimeStep, TimeSteppingParameters
from pyoops.interface.geometry import Geometry
from pyoops.interface.model import LinearModel, Model
from pyoops.util.datetime import Duration
from pyoops.util.errors import ConfigError

from pyoops_shallow_water.geometry import VARIABLES
from pyoops_shallow_water.numerics import (
    RK4_IMAGINARY_LIMIT,
    RK4_REAL_LIMIT,
    Physics,
    courant_number,
    rk4_step,
    rk4_step_ad,
    rk4_step_tl,
)

__all__ = [
    "ShallowWaterModel",
    "ShallowWaterParameters",
    "ShallowWaterTLM",
    "ShallowWaterTLMParameters",
    "check_cfl",
    "stack",
    "unstack",
]


class _Common(TimeSteppingParameters):
    tstep: PositiveDurationField = Field(Duration("PT5M"), description="Time step (ISO-8601) of the RK4 scheme.")
    mean_depth: float = Field(1000.0, gt=0, allow_inf_nan=False, description="Mean depth H (m).")
    g: float = Field(9.81, gt=0, allow_inf_nan=False, description="Gravity (m s^-2).")
    f: float = Field(1.0e-4, allow_inf_nan=False, description="Coriolis parameter of the f-plane (s^-1).")
    diffusion: float = Field(0.0, ge=0, allow_inf_nan=False,
                             description="Laplacian diffusion coefficient nu (m^2 s^-1) on h, u and v.")
    hyperdiffusion: float = Field(0.0, ge=0, allow_inf_nan=False,
                                  description="Biharmonic hyperdiffusion coefficient nu4 (m^4 s^-1) on h, u and v.")

    def physics(self, geometry: Any) -> Physics:
        """The constants of the scheme on ``geometry``."""
        return Physics(float(self.mean_depth), float(self.g), float(self.f), float(self.diffusion),
                       float(geometry.dx), float(geometry.dy), float(self.hyperdiffusion))


class ShallowWaterParameters(_Common):
    """YAML keys of the nonlinear model, ``{name: ShallowWater, tstep: PT5M, ...}``."""

    name: Literal["ShallowWater"] = "ShallowWater"


class ShallowWaterTLMParameters(_Common):
    """YAML keys of the linear model, ``{name: ShallowWaterTLM, tstep: PT5M, ...}``.

    Every key must equal the nonlinear model's that made the trajectory.
    """

    name: Literal["ShallowWaterTLM"] = "ShallowWaterTLM"


def _duration_floor(seconds: float) -> str:
    return str(Duration(f"PT{max(int(math.floor(seconds)), 1)}S"))


def check_cfl(p: Physics, tstep: Duration, path: str = "model") -> None:
    """Raise a one-line ConfigError if ``dt`` breaks the RK4 stability limit of the centred scheme.

    Gravity waves: :math:`\\sqrt{gH}\\,\\Delta t\\sqrt{\\Delta x^{-2} + \\Delta y^{-2}} \\le
    \\sqrt{8 - (f\\Delta t)^2}`; dissipation: :math:`\\Delta t(\\nu L + \\nu_4 L^2) \\le 2.785`,
    :math:`L = 4\\Delta x^{-2} + 4\\Delta y^{-2}`.
    """
    dt = Duration(tstep).total_seconds()
    inv = math.sqrt(p.dx ** -2 + p.dy ** -2)
    limit = math.sqrt(max(RK4_IMAGINARY_LIMIT ** 2 - (p.f * dt) ** 2, 0.0))
    cn = courant_number(p, dt)
    if not cn <= limit:
        dt_max = RK4_IMAGINARY_LIMIT / math.sqrt(p.f ** 2 + p.g * p.depth * inv ** 2)
        grid = (f"dx = {p.dx:.6g} m" if p.dx == p.dy else f"dx = {p.dx:.6g} m, dy = {p.dy:.6g} m")
        raise ConfigError(
            f"time step {Duration(tstep)} breaks the CFL condition of the RK4 centred scheme: gravity-wave "
            f"Courant number sqrt(g H) dt sqrt(1/dx^2 + 1/dy^2) = {cn:.3g} > {limit:.3g} (limit 2 sqrt(2); "
            f"sqrt(g H) = {p.wave_speed:.4g} m/s, {grid}); use tstep <= {_duration_floor(dt_max)}",
            f"{path}.tstep" if path else "tstep")
    if p.nu or p.nu4:
        lam = 4.0 * (p.dx ** -2 + p.dy ** -2)
        rate = p.nu * lam + p.nu4 * lam ** 2
        if not rate * dt <= RK4_REAL_LIMIT:
            raise ConfigError(
                f"time step {Duration(tstep)} breaks the diffusion stability limit of RK4: dt (nu L + nu4 L^2) = "
                f"{rate * dt:.3g} > 2.785 with L = 4/dx^2 + 4/dy^2 (nu = {p.nu:g} m^2/s, nu4 = {p.nu4:g} m^4/s); "
                f"use tstep <= {_duration_floor(RK4_REAL_LIMIT / rate)} or less diffusion",
                f"{path}.tstep" if path else "tstep")


def stack(fields: FieldSet) -> np.ndarray:
    """``(h, u, v)`` of a FieldSet as one array ``(..., 3, ny, nx)``."""
    arrays = [fields[v] for v in VARIABLES]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    return np.stack([np.broadcast_to(a, shape) for a in arrays], axis=-3)


def unstack(x: np.ndarray) -> FieldSet:
    """The FieldSet ``{h, u, v}`` of a stacked array (views)."""
    return FieldSet({v: x[..., i, :, :] for i, v in enumerate(VARIABLES)}, copy=False)


def _check_geometry(geometry: Geometry) -> None:
    if not all(hasattr(geometry, k) for k in ("dx", "dy")):
        raise ConfigError(f"the shallow-water model needs a ShallowWaterGeometry, got {type(geometry).__name__}",
                          "geometry")


class ShallowWaterModel(FixedTimeStep, Model):
    """Nonlinear rotating shallow water on the f-plane, RK4 (see :mod:`pyoops_shallow_water.numerics`).

    Parameters
    ----------
    params:
        Validated :class:`ShallowWaterParameters`, or the YAML mapping itself.
    geometry:
        A :class:`~pyoops_shallow_water.geometry.ShallowWaterGeometry`.

    Raises
    ------
    ConfigError
        If ``tstep`` breaks the CFL condition on this grid (one line with the limit).
    """

    Parameters = ShallowWaterParameters

    def __init__(self, params: ShallowWaterParameters | Mapping[str, Any], geometry: Geometry):
        super().__init__(as_parameters(ShallowWaterParameters, params, "model"), geometry)
        _check_geometry(geometry)
        self.physics = self.params.physics(geometry)
        self.dt = self.params.time_step()
        check_cfl(self.physics, self.params.tstep)

    def step(self, fields: FieldSet) -> FieldSet:
        """Advance ``h, u, v`` (shape ``(..., ny, nx)``) by one RK4 step."""
        return unstack(rk4_step(stack(fields), self.physics, self.dt))


class ShallowWaterTLM(FixedTimeStep, LinearModel):
    """Tangent linear and adjoint of :class:`ShallowWaterModel` about the stored trajectory.

    The TL is the exact derivative of the discrete RK4 step (the RK stages are
    recomputed from the trajectory state at the start of each step), so the adjoint
    test holds to round-off.  The trajectory may be one state or batched like the
    increments.
    """

    Parameters = ShallowWaterTLMParameters

    def __init__(self, params: ShallowWaterTLMParameters | Mapping[str, Any], geometry: Geometry):
        super().__init__(as_parameters(ShallowWaterTLMParameters, params, "linear model"), geometry)
        _check_geometry(geometry)
        self.physics = self.params.physics(geometry)
        self.dt = self.params.time_step()
        check_cfl(self.physics, self.params.tstep, "linear model")

    def trajectory_fields(self, fields: FieldSet) -> FieldSet:
        """Keep ``(h, u, v)`` stacked in one array (the TL/AD read nothing else)."""
        return FieldSet({"huv": stack(fields)}, copy=False)

    def step_tl(self, dfields: FieldSet, trajectory: FieldSet) -> FieldSet:
        return unstack(rk4_step_tl(stack(dfields), trajectory["huv"], self.physics, self.dt))

    def step_ad(self, dfields: FieldSet, trajectory: FieldSet) -> FieldSet:
        return unstack(rk4_step_ad(stack(dfields), trajectory["huv"], self.physics, self.dt))
