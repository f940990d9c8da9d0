r"""Shallow-water states and their analytic initial conditions.

``analytic init: {method: NAME, ...}`` selects one of the following (lengths in
metres, heights in metres; ``f`` and ``g`` default to the model's defaults and must
equal the model's for the balanced states to be balanced in it):

* ``vortex``: a Gaussian height anomaly :math:`h = A\,e^{-r^2/(2R^2)}` (``amplitude``
  :math:`A`, ``radius`` :math:`R`, centre ``x0``, ``y0``, default the domain centre;
  :math:`r` is the periodic minimum-image distance) with the winds in discrete
  geostrophic balance, :math:`u = -(g/f)\delta_y h`, :math:`v = (g/f)\delta_x h`.
  :math:`A > 0` is an anticyclone on :math:`f > 0`.
* ``jet``: a balanced zonal jet pair, :math:`h(y) = -\tfrac{A}{2}\big[\tanh\tfrac{y - L_y/4}{W}
  - \tanh\tfrac{y - 3L_y/4}{W}\big]` (``amplitude`` :math:`A`, ``width`` :math:`W`),
  an eastward jet at :math:`L_y/4` and a westward one at :math:`3L_y/4` for
  :math:`A, f > 0`; ``perturbation`` adds that RMS amplitude of balanced random
  height (``seed``) to seed instabilities.
* ``turbulence``: random balanced turbulence: a Gaussian random height field
  (stream ``seed``) with the isotropic amplitude spectrum
  :math:`|\hat h(k)| \propto (k/k_0)\,e^{-(k/k_0)^2/2}`, :math:`k_0 = 2\pi/\ell`
  (``scale`` :math:`\ell`), zero mean, scaled to the RMS ``amplitude``, and its
  geostrophic winds.
* ``gravity wave pulse``: a height bump at rest, :math:`u = v = 0`, which is not
  balanced and radiates gravity waves at :math:`\sqrt{gH}`: ``shape: gaussian``
  (:math:`A\,e^{-r^2/(2w^2)}`, centre ``x0``, ``y0``) or ``shape: line``
  (:math:`A\,e^{-(x - x_0)^2/(2w^2)}`, uniform in :math:`y`), with ``amplitude``
  :math:`A` and ``width`` :math:`w`.
* ``rest``: :math:`h = u = v = 0`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import Field

from pyoops.config.parameters import Parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.generic.state import GenericState, analytic_init_methods, select_analytic_init
from pyoops.interface.geometry import Geometry
from pyoops.util.datetime import DateTime
from pyoops.util.errors import ConfigError, join_path
from pyoops.util.random import generator

from pyoops_shallow_water.numerics import geostrophic_winds

__all__ = [
    "AnalyticInitParameters",
    "GravityWavePulseInit",
    "JetInit",
    "RestInit",
    "ShallowWaterState",
    "TurbulenceInit",
    "VortexInit",
    "balanced_random_height",
]


class _Balanced(Parameters):
    f: float = Field(1.0e-4, allow_inf_nan=False, description="Coriolis parameter of the balance (s^-1), non-zero.")
    g: float = Field(9.81, gt=0, allow_inf_nan=False, description="Gravity of the balance (m s^-2).")


class VortexInit(_Balanced):
    """``{method: vortex, amplitude: 2.0, radius: 120000.0, x0: centre, y0: centre}``."""

    method: Literal["vortex"]
    amplitude: float = Field(2.0, allow_inf_nan=False, description="Peak height anomaly A (m).")
    radius: float = Field(120_000.0, gt=0, allow_inf_nan=False, description="Gaussian radius R (m).")
    x0: float | None = Field(None, allow_inf_nan=False, description="Centre x (m), default the domain centre.")
    y0: float | None = Field(None, allow_inf_nan=False, description="Centre y (m), default the domain centre.")


class JetInit(_Balanced):
    """``{method: jet, amplitude: 2.0, width: 80000.0, perturbation: 0.0, seed: 1}``."""

    method: Literal["jet"]
    amplitude: float = Field(2.0, allow_inf_nan=False, description="Height drop A across each jet (m).")
    width: float = Field(80_000.0, gt=0, allow_inf_nan=False, description="Jet width W (m).")
    perturbation: float = Field(0.0, ge=0, allow_inf_nan=False,
                                description="RMS of an added balanced random height (m).")
    scale: float = Field(150_000.0, gt=0, allow_inf_nan=False, description="Scale of the random perturbation (m).")
    seed: int = Field(1, description="Seed of the random perturbation.")


class TurbulenceInit(_Balanced):
    """``{method: turbulence, seed: 1, amplitude: 0.5, scale: 450000.0}``."""

    method: Literal["turbulence"]
    seed: int = Field(description="Seed of the random stream.")
    amplitude: float = Field(0.5, ge=0, allow_inf_nan=False, description="RMS height anomaly (m).")
    scale: float = Field(450_000.0, gt=0, allow_inf_nan=False,
                         description="Length of the spectral peak, 2 pi / k0 (m).")


class GravityWavePulseInit(Parameters):
    """``{method: gravity wave pulse, amplitude: 1.0, width: 50000.0, shape: gaussian}``."""

    method: Literal["gravity wave pulse"]
    amplitude: float = Field(1.0, allow_inf_nan=False, description="Peak height A (m).")
    width: float = Field(50_000.0, gt=0, allow_inf_nan=False, description="Gaussian width w (m).")
    shape: Literal["gaussian", "line"] = Field("gaussian", description="A round bump, or a line uniform in y.")
    x0: float | None = Field(None, allow_inf_nan=False, description="Centre x (m), default the domain centre.")
    y0: float | None = Field(None, allow_inf_nan=False, description="Centre y (m), default the domain centre.")


class RestInit(Parameters):
    """``{method: rest}``: no anomaly, no wind."""

    method: Literal["rest"]


#: The analytic initial conditions, discriminated by ``method`` (for JSON schemas).
AnalyticInitParameters = Annotated[
    Union[VortexInit, JetInit, TurbulenceInit, GravityWavePulseInit, RestInit], Field(discriminator="method")]

_METHODS = analytic_init_methods(AnalyticInitParameters)


def _separation(coord: np.ndarray, centre: float, period: float) -> np.ndarray:
    d = coord - centre
    return (d + 0.5 * period) % period - 0.5 * period


def balanced_random_height(geometry: Any, rng: np.random.Generator, scale: float, amplitude: float,
                           batch_shape: tuple[int, ...] = ()) -> np.ndarray:
    r"""Zero-mean Gaussian random heights with the spectrum :math:`(k/k_0)e^{-(k/k_0)^2/2}`, RMS ``amplitude``.

    Each member (leading ``batch_shape``) is scaled to the RMS amplitude exactly.
    """
    ny, nx = geometry.shape
    kx = 2 * np.pi * np.fft.fftfreq(nx, geometry.dx)
    ky = 2 * np.pi * np.fft.fftfreq(ny, geometry.dy)
    k = np.hypot(ky[:, None], kx[None, :])
    k0 = 2 * np.pi / scale
    spectrum = (k / k0) * np.exp(-0.5 * (k / k0) ** 2)
    noise = rng.standard_normal(batch_shape + (ny, nx))
    h = np.fft.ifft2(np.fft.fft2(noise) * spectrum).real
    h -= h.mean(axis=(-2, -1), keepdims=True)
    rms = np.sqrt((h ** 2).mean(axis=(-2, -1), keepdims=True))
    return amplitude * h / np.where(rms > 0, rms, 1.0)


class ShallowWaterState(GenericState):
    """A shallow-water state: the generic FieldSet-backed state plus analytic initial conditions."""

    analytic_methods = tuple(_METHODS)

    @classmethod
    def analytic_init(cls, geometry: Geometry, config: dict[str, Any], date: DateTime, path: str) -> FieldSet:
        """Fields ``h, u, v`` of the analytic initial condition ``config`` (see the module docs)."""
        params: Any = select_analytic_init(_METHODS, config, path)
        mesh = geometry.mesh()
        x, y = mesh["x"], mesh["y"]
        lx, ly = geometry.lx, geometry.ly
        zero = np.zeros(geometry.shape)
        if isinstance(params, RestInit):
            return FieldSet({"h": zero, "u": zero, "v": zero})
        if isinstance(params, GravityWavePulseInit):
            x0 = 0.5 * lx if params.x0 is None else params.x0
            y0 = 0.5 * ly if params.y0 is None else params.y0
            r2 = _separation(x, x0, lx) ** 2
            if params.shape == "gaussian":
                r2 = r2 + _separation(y, y0, ly) ** 2
            h = params.amplitude * np.exp(-0.5 * r2 / params.width ** 2)
            return FieldSet({"h": h, "u": zero, "v": zero})
        if params.f == 0:
            raise ConfigError(f"method '{params.method}' is geostrophically balanced and needs a non-zero f",
                              join_path(path, "f"))
        if isinstance(params, VortexInit):
            x0 = 0.5 * lx if params.x0 is None else params.x0
            y0 = 0.5 * ly if params.y0 is None else params.y0
            r2 = _separation(x, x0, lx) ** 2 + _separation(y, y0, ly) ** 2
            h = params.amplitude * np.exp(-0.5 * r2 / params.radius ** 2)
        elif isinstance(params, JetInit):
            w = params.width
            h = -0.5 * params.amplitude * (np.tanh((y - 0.25 * ly) / w) - np.tanh((y - 0.75 * ly) / w))
            if params.perturbation:
                h = h + balanced_random_height(geometry, generator(params.seed, "jet perturbation"), params.scale,
                                               params.perturbation)
        else:
            h = balanced_random_height(geometry, generator(params.seed, "turbulence"), params.scale, params.amplitude)
        u, v = geostrophic_winds(h, params.f, params.g, geometry.dx, geometry.dy)
        return FieldSet({"h": h, "u": u, "v": v}, copy=False)
