r"""``Ensemble``: the localized ensemble covariance, and sampling-optimal localization calibration.

With :math:`N` members :math:`x_k` (or perturbations given as such), the block uses
the normalised, inflated perturbations

.. math::

    e_k = \alpha\, f \circ \frac{x_k - \bar{x}}{\sqrt{N-1}}, \qquad k = 1, \dots, N,

where :math:`\alpha` is ``inflation value`` and :math:`f` the optional pointwise
``inflation field`` (SABER's convention: both multiply the *perturbations*, so the
covariance is multiplied by :math:`\alpha^2 f_i f_j`).  The covariance is

.. math::

    \mathbf{B}_e x = \sum_{k=1}^{N} e_k \circ \mathbf{L}(e_k \circ x),

with the localization :math:`\mathbf{L}` given as a nested covariance section
(``localization:`` with its own ``saber central block`` and optional
``saber outer blocks``, built on the same geometry and variables).  Without
localization :math:`\mathbf{B}_e = \mathbf{E}\mathbf{E}^\mathsf{T}`, the sample
covariance, exactly.  The members are one stacked array: :math:`\mathbf{L}` is
applied to all :math:`N` products :math:`e_k \circ x` at once as one batched FieldSet.

Square root (``has_sqrt`` when there is no localization, or when the
localization chain has one), with the control vector laid out member by member
(member-major, as in SABER), :math:`v = (v_1, \dots, v_N)`:

.. math::

    \mathbf{B}_e^{1/2} v = \sum_{k=1}^{N} e_k \circ \mathbf{L}^{1/2} v_k,
    \qquad
    \big(\mathbf{B}_e^{1/2\,\mathsf{T}} x\big)_k = \mathbf{L}^{1/2\,\mathsf{T}}(e_k \circ x),

so that :math:`\mathbf{B}_e^{1/2}\mathbf{B}_e^{1/2\,\mathsf{T}} = \mathbf{B}_e`.  The
control vector has :math:`N\,m_L` entries (:math:`m_L` = the localization's
``ctl_vec_size``), or :math:`N` without localization (then :math:`v_k` is a scalar
weight of :math:`e_k`).

YAML::

    background error:
      covariance model: SABER
      ensemble:
        members from template:
          template: {date: 2010-01-01T00:00:00Z, filename: data/ens.%mem%.nc}
          pattern: "%mem%"
          nmembers: 10
      saber central block:
        saber block name: Ensemble
        inflation value: 1.1
        localization:
          saber central block: {saber block name: spectral correlation, length scale: 0.1}

Calibration (``calibration: {localization length: {output: loc.nc}}``) estimates the
sampling-optimal localization of Ménétrier et al. (2015) from the ensemble itself:
with :math:`P = 1/(N-1)` and the homogeneous correlation :math:`C(r)` (the sample
correlations averaged over all pairs of points at separation :math:`r`),

.. math::

    L(r) = \frac{C(r)^2}{(1 + P)\,C(r)^2 + P},

and fits a Gaspari–Cohn (default) or Gaussian function to :math:`L(r)`; see
:func:`calibrate_localization_length`.  The result is written to a netCDF (or
YAML) file that :func:`read_localization_length` loads back, e.g. in a
localization block's ``read:``.

4-D ensembles (4D-Ens-Var): when every member is a list of states at the
sub-window times :math:`t = 1, \dots, T` (``states:`` in the ensemble section, see
:mod:`pyoops.generic.ensemble`), the members have axes ``(member, time, *grid)``
and the block acts on 4-D increments ``(..., time, *grid)``, coupling the times
through the members with a time-independent localization:

.. math::

    (\mathbf{B}_e x)_t = \sum_k e_k^t \circ \mathbf{L}\Big(\sum_s e_k^s \circ x_s\Big),
    \qquad
    (\mathbf{B}_e^{1/2} v)_t = \sum_k e_k^t \circ \mathbf{L}^{1/2} v_k

(same control vector as in 3-D).  Construction-time tests and calibration are not
available for 4-D ensembles yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from pyoops.config.parameters import DateTimeField, Parameters, validate
from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import read_fields, write_fields
from pyoops.saber.blocks import BlockContext, SaberBlockParameters, SaberCentralBlock
from pyoops.util.atomic import atomic_output, input_path
from pyoops.util.errors import ConfigError, InputFileError, join_path
from pyoops.util.variables import Variables

__all__ = [
    "EnsembleBlock",
    "EnsembleCalibrationParameters",
    "EnsembleParameters",
    "InflationFieldParameters",
    "LocalizationLengthCalibrationParameters",
    "LocalizationLengthResult",
    "calibrate_localization_length",
    "fit_localization_function",
    "gaspari_cohn",
    "homogeneous_correlation",
    "optimal_localization",
    "read_localization_length",
    "write_localization_length",
]


# Parameters ----------------------------------------------------------------------------------------
class InflationFieldParameters(Parameters):
    """``inflation field``: a netCDF file with one pointwise factor field per variable."""

    filename: str = Field(description="netCDF file (gridded-field layout) with one field per variable.")
    date: DateTimeField | None = Field(None, description="Valid time of the file (default: the covariance time).")


class LocalizationLengthCalibrationParameters(Parameters):
    """``calibration.localization length`` of the Ensemble block."""

    output: str | None = Field(
        None, description="File to write: netCDF (.nc, also readable with read_fields) or YAML (.yaml/.yml).")
    localization_function: Literal["gaspari-cohn", "gaussian"] = Field(
        "gaspari-cohn", description="Function fitted to the optimal localization L(r).")
    max_separation: float | None = Field(
        None, gt=0, description="Largest separation used in the fit (default: half the smallest domain extent).")


class EnsembleCalibrationParameters(Parameters):
    """``calibration:`` of the Ensemble block."""

    localization_length: LocalizationLengthCalibrationParameters = Field(
        description="Sampling-optimal localization length fitted to the ensemble's own correlations.")


class EnsembleParameters(SaberBlockParameters):
    """Keys of the ``Ensemble`` central block."""

    saber_block_name: Literal["Ensemble"]
    localization: dict[str, Any] | None = Field(
        None, description="Localization: a covariance section (saber central block, saber outer blocks) on the "
                          "same geometry and variables; none means the raw sample covariance.")
    inflation_value: float = Field(
        1.0, gt=0, description="Multiplies the ensemble perturbations (the covariance by its square).")
    inflation_field: InflationFieldParameters | None = Field(
        None, description="Pointwise factor multiplying the perturbations (one field per variable).")
    members_per_batch: int | None = Field(
        None, gt=0, description="Localize this many member products at a time (bounds memory on big grids; "
                                "default: all members in one batched application).")


# The block -----------------------------------------------------------------------------------------
class EnsembleBlock(SaberCentralBlock):
    r"""``Ensemble``: :math:`\mathbf{B}_e x = \sum_k e_k \circ \mathbf{L}(e_k \circ x)`.

    Parameters
    ----------
    params:
        Validated :class:`EnsembleParameters`.
    context:
        Block context; :meth:`~pyoops.saber.blocks.BlockContext.ensemble_perturbations`
        gives the perturbations (members minus their mean, or ``ensemble pert``),
        already brought through the outer blocks' left inverses.

    Attributes
    ----------
    members:
        The normalised, inflated perturbations :math:`e_k`, one stacked FieldSet of shape
        ``(N, *grid)`` per variable (``(N, T, *grid)`` for a 4-D ensemble).
    nmembers:
        :math:`N`.
    ntimes:
        Number of times :math:`T` of a 4-D ensemble, ``None`` for a 3-D one.
    localization:
        The localization :class:`~pyoops.saber.chain.SaberBlockChain`, or ``None``.
    calibrated:
        The :class:`LocalizationLengthResult` of ``calibration:``, or ``None``.

    Notes
    -----
    The localization chain is built without the ensemble (its blocks cannot calibrate
    from it); the sampling-optimal localization length comes from this block's own
    ``calibration:``.  With ``calibration:`` the block still applies the localization
    given in ``localization:`` (if any): calibrate, then run with ``read:`` of the
    localization block loading the written file.
    """

    Parameters = EnsembleParameters

    def __init__(self, params: EnsembleParameters, context: BlockContext):
        self.params = params
        self.context = context
        self.geometry = context.geometry
        self.variables = Variables(context.variables)
        self.calibrated: LocalizationLengthResult | None = None
        self._raw: FieldSet | None = self._perturbations()
        self.nmembers = next(iter(self._raw.values())).shape[0]
        self.members = self._scaled(self._raw)
        self.localization = self._build_localization()
        super().__init__(params, context)
        self._raw = None      # used by the calibration only: the scaled members are what the block applies

    # Construction ----------------------------------------------------------------------------------
    def _perturbations(self) -> FieldSet:
        pert = self.context.ensemble_perturbations()
        path = self.context.path
        missing = [v for v in self.variables if v not in pert]
        if missing:
            raise ConfigError(f"the ensemble has no variable(s) {missing} (it has: {', '.join(pert) or 'none'})", path)
        out = {}
        for v in self.variables:
            arr = np.asarray(pert[v], dtype=np.float64)
            shape = tuple(self.geometry.field_shape(v))
            lead = arr.shape[: arr.ndim - len(shape)]
            if arr.shape[arr.ndim - len(shape):] != shape:
                raise ConfigError(f"ensemble variable '{v}' has shape {arr.shape}, expected (members, *{shape})", path)
            if len(lead) not in (1, 2):
                raise ConfigError(f"ensemble variable '{v}' has leading axes {lead}, expected (members,) or "
                                  "(members, times)", path)
            out[v] = arr
        leads = {a.shape[: a.ndim - len(self.geometry.field_shape(v))] for v, a in out.items()}
        if len(leads) != 1:
            raise ConfigError(f"ensemble variables have different numbers of members or times: {sorted(leads)}", path)
        lead = leads.pop()
        if lead[0] < 2:
            raise ConfigError(f"the Ensemble block needs at least 2 members, got {lead[0]}", path)
        self.ntimes = lead[1] if len(lead) == 2 else None
        if self.ntimes is not None:
            for key in ("adjoint_test", "square_root_test"):
                if getattr(self.params, key):
                    raise ConfigError("construction-time tests are not available for 4-D ensembles yet",
                                      join_path(path, key.replace("_", " ").replace("square root", "square-root")))
            if self.params.calibration is not None:
                raise ConfigError("calibration from a 4-D ensemble is not supported yet; calibrate with the members "
                                  "at one time", join_path(path, "calibration"))
        return FieldSet(out, copy=False)

    def _scaled(self, pert: FieldSet) -> FieldSet:
        factor = self.params.inflation_value / math.sqrt(self.nmembers - 1)
        scaled = {v: pert[v] * factor for v in self.variables}
        if self.params.inflation_field is not None:
            cfg = self.params.inflation_field
            date = cfg.date or self.context.time
            infl, _ = read_fields(cfg.filename, self.geometry, self.variables, date)
            for v in self.variables:
                negative = int((infl[v] < 0).sum())
                if negative:
                    raise InputFileError(cfg.filename, f"inflation field '{v}' has {negative} negative value(s) of "
                                                       f"{infl[v].size} (an inflation field is >= 0)")
                scaled[v] = scaled[v] * infl[v]
        return FieldSet(scaled, copy=False)

    def _build_localization(self) -> Any:
        if self.params.localization is None:
            return None
        from pyoops.saber.chain import build_covariance

        path = join_path(self.context.path, "localization")
        ctx = self.context.inner(self.geometry, self.variables, None, path)
        ctx.ensemble_is_perturbations = False
        ctx.extras = {k: v for k, v in ctx.extras.items() if k != "ensemble dropped at"}
        chain = build_covariance(self.params.localization, ctx, path)
        return chain

    def nested_covariances(self) -> dict[str, Any]:
        """``{"localization": chain}`` when there is a localization (for the ``dirac`` application)."""
        return {} if self.localization is None else {"localization": self.localization}

    # Calibration -----------------------------------------------------------------------------------
    def direct_calibration(self, config: dict[str, Any]) -> None:
        """``calibration: {localization length: {...}}``: fit the sampling-optimal localization length."""
        path = join_path(self.context.path, "calibration")
        params = validate(EnsembleCalibrationParameters, config, path)
        cal = params.localization_length
        self.calibrated = calibrate_localization_length(
            self._raw, self.geometry, function=cal.localization_function, max_separation=cal.max_separation,
            path=join_path(path, "localization length"))
        if cal.output:
            self.write(cal.output)

    def write(self, filename: str) -> list[str]:
        """Write the calibrated localization length (nothing if the block was not calibrated)."""
        if self.calibrated is None:
            return []
        write_localization_length(filename, self.calibrated, self.geometry, self.variables, self.context.time)
        return [filename]

    # Operators -------------------------------------------------------------------------------------
    def sqrt_unavailable(self) -> str | None:
        """A square root exists without localization, or when the localization chain has one."""
        if self.localization is not None and not self.localization.has_sqrt:
            return f"the localization has no square root ({self.localization.sqrt_unavailable()})"
        return super().sqrt_unavailable()

    @property
    def ctl_vec_size(self) -> int:
        r""":math:`N` without localization, :math:`N\,m_L` with it."""
        if self.localization is None:
            return self.nmembers
        return self.nmembers * int(self.localization.ctl_vec_size)

    def _member_shape(self, v: str) -> tuple[int, ...]:
        """Shape of one member of ``v``: the grid, preceded by the times of a 4-D ensemble."""
        grid = tuple(self.geometry.field_shape(v))
        return grid if self.ntimes is None else (self.ntimes,) + grid

    def _nbatch(self, arr: np.ndarray, v: str) -> int:
        shape = self._member_shape(v)
        if arr.shape[arr.ndim - len(shape):] != shape:
            what = f"(..., {self.ntimes} times, *grid)" if self.ntimes is not None else "(..., *grid)"
            raise ValueError(f"Ensemble block: field '{v}' has shape {arr.shape}, expected {what} with grid "
                             f"{self.geometry.field_shape(v)}")
        return arr.ndim - len(shape)

    def _chunks(self) -> list[slice]:
        """Slices of members localized together (``members per batch``; default: all at once)."""
        step = self.params.members_per_batch or self.nmembers
        return [slice(k, min(k + step, self.nmembers)) for k in range(0, self.nmembers, step)]

    def _schur_members(self, fields: FieldSet, members: slice) -> FieldSet:
        """:math:`(e_k \\circ x)_k`, shape ``(*batch, K, *grid)`` for the K members of the slice.

        4-D: :math:`(\\sum_t e_k^t \\circ x_t)_k` for ``x`` of shape ``(*batch, T, *grid)``.
        """
        out = {}
        for v in self.variables:
            x = fields[v]
            nb = self._nbatch(x, v)
            prod = np.expand_dims(x, nb) * self.members[v][members]
            out[v] = prod if self.ntimes is None else prod.sum(axis=nb + 1)  # 4-D: sum over times
        return FieldSet(out, copy=False)

    def _sum_members(self, products: FieldSet, nbatch: int, members: slice,
                     total: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Add :math:`\\sum_k e_k \\circ y_k` (``y`` of shape ``(*batch, K, *grid)``) to ``total``.

        4-D: :math:`(\\sum_k e_k^t \\circ y_k)_t`, shape ``(*batch, T, *grid)``.
        """
        total = {} if total is None else total
        for v in self.variables:
            y = products[v] if self.ntimes is None else np.expand_dims(products[v], nbatch + 1)
            part = (y * self.members[v][members]).sum(axis=nbatch)
            if v in total:
                total[v] += part
            else:
                total[v] = part
        return total

    def _weights(self, fields: FieldSet) -> np.ndarray:
        """:math:`w_k = \\langle e_k, x\\rangle`, shape ``(*batch, N)``."""
        total: np.ndarray | None = None
        for v in self.variables:
            x = fields[v]
            nb = self._nbatch(x, v)
            xf = x.reshape(x.shape[:nb] + (-1,))
            ef = self.members[v].reshape((self.nmembers, -1))
            w = xf @ ef.T
            total = w if total is None else total + w
        assert total is not None
        return total

    def _combine(self, weights: np.ndarray) -> FieldSet:
        """:math:`\\sum_k w_k e_k` for weights of shape ``(*batch, N)``."""
        out = {}
        for v in self.variables:
            ef = self.members[v].reshape((self.nmembers, -1))
            out[v] = (weights @ ef).reshape(weights.shape[:-1] + self._member_shape(v))
        return FieldSet(out, copy=False)

    def _check(self, fields: FieldSet) -> None:
        missing = [v for v in self.variables if v not in fields]
        if missing:
            raise ValueError(f"Ensemble block: fields lack variable(s) {missing}")

    def multiply(self, fields: FieldSet) -> FieldSet:
        r""":math:`\sum_k e_k \circ \mathbf{L}(e_k \circ x)`.

        Without localization: :math:`\mathbf{E}\mathbf{E}^\mathsf{T}x`.
        """
        self._check(fields)
        if self.localization is None:
            return self._combine(self._weights(fields))
        v0 = self.variables[0]
        nb = self._nbatch(fields[v0], v0)
        total = None
        for members in self._chunks():
            localized = self.localization.multiply(self._schur_members(fields, members))
            total = self._sum_members(localized, nb, members, total)
        return FieldSet(total, copy=False)

    def multiply_sqrt(self, ctl: np.ndarray) -> FieldSet:
        r""":math:`\sum_k e_k \circ \mathbf{L}^{1/2} v_k` (:math:`\sum_k v_k e_k` without localization)."""
        ctl = np.asarray(ctl, dtype=np.float64)
        if ctl.shape[-1] != self.ctl_vec_size:
            raise ValueError(f"control vector has {ctl.shape[-1]} entries, expected {self.ctl_vec_size}")
        if self.localization is None:
            return self._combine(ctl)
        self._require_localization_sqrt()
        batch = ctl.shape[:-1]
        per_member = ctl.reshape(batch + (self.nmembers, -1))
        total = None
        for members in self._chunks():
            part = self.localization.multiply_sqrt(per_member[..., members, :])
            total = self._sum_members(part, len(batch), members, total)
        return FieldSet(total, copy=False)

    def multiply_sqrt_ad(self, fields: FieldSet) -> np.ndarray:
        r""":math:`(\mathbf{L}^{1/2\,\mathsf{T}}(e_k \circ x))_k`, flattened member-major.

        Without localization: :math:`(\langle e_k, x\rangle)_k`.
        """
        self._check(fields)
        if self.localization is None:
            return self._weights(fields)
        self._require_localization_sqrt()
        v0 = self.variables[0]
        batch = tuple(fields[v0].shape[: self._nbatch(fields[v0], v0)])
        parts = [np.asarray(self.localization.multiply_sqrt_ad(self._schur_members(fields, members)))
                 for members in self._chunks()]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-2)
        return out.reshape(batch + (-1,))

    def _require_localization_sqrt(self) -> None:
        if not self.localization.has_sqrt:
            raise ConfigError(self.sqrt_unavailable(), join_path(self.context.path, "localization"))

    def randomize(self, rng: np.random.Generator, batch_shape: tuple[int, ...] = ()) -> FieldSet:
        r"""A draw :math:`\sum_k e_k \circ r_k` with independent :math:`r_k \sim \mathcal{N}(0, \mathbf{L})`.

        Without localization :math:`r_k` is a standard normal scalar.  Its covariance is
        :math:`\sum_k e_k e_k^\mathsf{T} \circ \mathbf{L} = \mathbf{B}_e`; the localization
        only needs ``randomize`` (not a square root).
        """
        batch = tuple(batch_shape)
        if self.localization is None:
            return self._combine(rng.standard_normal(batch + (self.nmembers,)))
        total = None
        for members in self._chunks():
            draws = self.localization.randomize(rng, batch + (members.stop - members.start,))
            total = self._sum_members(draws, len(batch), members, total)
        return FieldSet(total, copy=False)


# Sampling-optimal localization ----------------------------------------------------------------------
def gaspari_cohn(r: Any, c: float) -> np.ndarray:
    r"""The Gaspari–Cohn (1999) fifth-order piecewise rational function, support :math:`2c`.

    With :math:`z = |r|/c`:

    .. math::

        \mathrm{GC}(z) = \begin{cases}
        -\tfrac14 z^5 + \tfrac12 z^4 + \tfrac58 z^3 - \tfrac53 z^2 + 1, & 0 \le z \le 1,\\
        \tfrac1{12} z^5 - \tfrac12 z^4 + \tfrac58 z^3 + \tfrac53 z^2 - 5z + 4 - \tfrac23 z^{-1}, & 1 < z \le 2,\\
        0, & z > 2.
        \end{cases}

    Its Daley length scale :math:`\sqrt{-C(0)/C''(0)}` is :math:`c\sqrt{3/10}`.
    """
    z = np.abs(np.asarray(r, dtype=np.float64)) / float(c)
    out = np.zeros_like(z)
    a = z <= 1.0
    za = z[a]
    out[a] = -0.25 * za**5 + 0.5 * za**4 + 0.625 * za**3 - (5.0 / 3.0) * za**2 + 1.0
    b = (z > 1.0) & (z < 2.0)
    zb = z[b]
    out[b] = zb**5 / 12.0 - 0.5 * zb**4 + 0.625 * zb**3 + (5.0 / 3.0) * zb**2 - 5.0 * zb + 4.0 - (2.0 / 3.0) / zb
    return out


def _gaussian(r: np.ndarray, length: float) -> np.ndarray:
    return np.exp(-0.5 * (np.asarray(r, dtype=np.float64) / length) ** 2)


def optimal_localization(correlation: Any, nmembers: int) -> np.ndarray:
    r"""Sampling-optimal localization :math:`L = C^2 / ((1 + P) C^2 + P)`, :math:`P = 1/(N-1)`.

    Ménétrier et al. (2015), Gaussian sampling, true correlation :math:`C`.
    """
    if nmembers < 2:
        raise ValueError("optimal localization needs at least 2 members")
    c2 = np.clip(np.asarray(correlation, dtype=np.float64), -1.0, 1.0) ** 2
    p = 1.0 / (nmembers - 1)
    return c2 / ((1.0 + p) * c2 + p)


def _structured_axes(geometry: Any, path: str) -> list[Any]:
    axes = getattr(geometry, "axes", None)
    if axes is None:
        raise ConfigError(f"localization-length calibration needs a structured grid, got {type(geometry).__name__}",
                          path)
    if not any(a.horizontal for a in axes):
        raise ConfigError("localization-length calibration needs at least one horizontal axis", path)
    return list(axes)


def homogeneous_correlation(perturbations: np.ndarray, geometry: Any, path: str = "") -> tuple[np.ndarray, ...]:
    r"""Homogeneous sample correlation at every horizontal lag, by FFT.

    With the perturbations :math:`e_k` (shape ``(N, *grid)``, mean removed) and every
    lag vector :math:`d` along the horizontal axes, sums run over the pairs of grid
    points :math:`(i, i + d)` (same level):

    .. math::

        \hat{C}(d) = \frac{\sum_i \sum_k e_k(i)\, e_k(i+d)}
        {\big(\sum_i \sum_k e_k(i)^2\big)^{1/2} \big(\sum_i \sum_k e_k(i+d)^2\big)^{1/2}},

    the pair-averaged covariance over the pair-averaged variances (a ratio of averages,
    nearly unbiased for homogeneous statistics, unlike the average of pointwise sample
    correlations).  Every sum is a correlation computed with FFTs in
    :math:`O(N\, n \log n)`: periodic axes wrap around, bounded axes are zero-padded to
    twice their length so that only overlapping pairs count.

    Parameters
    ----------
    perturbations:
        ``(N, *grid)`` array.
    geometry:
        The :class:`~pyoops.generic.grid.StructuredGrid` of the fields.

    Returns
    -------
    (separation, correlation, pairs):
        Flat arrays over all lags: horizontal distance :math:`|d|`, :math:`\hat{C}(d)`
        and the number of point pairs (lags without pairs or variance are dropped).
    """
    axes = _structured_axes(geometry, path)
    e = np.asarray(perturbations, dtype=np.float64)
    hor = [i for i, a in enumerate(axes) if a.horizontal]
    sizes = [axes[i].n if axes[i].periodic else 2 * axes[i].n for i in hor]
    other = tuple(i for i in range(len(axes)) if i not in hor)

    def spectrum(arr: np.ndarray, lead: int) -> np.ndarray:
        return np.fft.rfftn(arr, s=sizes, axes=[i + lead for i in hor])

    def back(spec: np.ndarray) -> np.ndarray:
        out = np.fft.irfftn(spec, s=sizes, axes=hor)
        return out.sum(axis=other) if other else out  # levels: pairs within a level only

    se = spectrum(e, 1)
    cov = back((se.real**2 + se.imag**2).sum(axis=0))  # sum_i sum_k e_k(i) e_k(i+d)
    sv = spectrum((e**2).sum(axis=0), 0)
    sm = spectrum(np.ones(e.shape[1:]), 0)
    var_left = back(np.conj(sv) * sm)  # sum_i v(i) over pairs (i, i+d)
    var_right = back(np.conj(sm) * sv)  # sum_i v(i+d) over pairs
    pairs = np.rint(back(sm.real**2 + sm.imag**2))
    lags = []
    for i, size in zip(hor, sizes):
        a = axes[i]
        j = np.arange(size)
        lag = np.where(j <= size // 2, j, j - size) if a.periodic else np.where(j < a.n, j, j - size)
        lags.append(lag * a.spacing)
    mesh = np.meshgrid(*lags, indexing="ij")
    sep = np.sqrt(sum(m**2 for m in mesh))
    scale = np.max(np.abs(var_left)) if var_left.size else 0.0
    keep = (pairs > 0.5) & (var_left > 1e-12 * scale) & (var_right > 1e-12 * scale)
    corr = cov[keep] / np.sqrt(var_left[keep] * var_right[keep])
    return sep[keep], corr, pairs[keep]


def _bin(sep: np.ndarray, corr: np.ndarray, pairs: np.ndarray, width: float) -> tuple[np.ndarray, ...]:
    idx = np.rint(sep / width).astype(np.int64)
    nb = int(idx.max()) + 1
    w = np.bincount(idx, weights=pairs, minlength=nb)
    rs = np.bincount(idx, weights=pairs * sep, minlength=nb)
    cs = np.bincount(idx, weights=pairs * corr, minlength=nb)
    ok = w > 0
    return rs[ok] / w[ok], cs[ok] / w[ok], w[ok]


def fit_localization_function(separation: Any, localization: Any, function: str = "gaspari-cohn",
                              bounds: tuple[float, float] | None = None) -> float:
    r"""Least-squares fit of a one-parameter localization function to :math:`L(r)`.

    Minimises :math:`\sum_b (L_b - f(r_b; \ell))^2` over the bins :math:`b`, first on a
    logarithmic grid of :math:`\ell`, then with a bounded Brent search around the best
    grid value.

    Parameters
    ----------
    separation, localization:
        :math:`r_b` and :math:`L_b`.
    function:
        ``"gaspari-cohn"``: :math:`f = \mathrm{GC}(r; c)`, returns the half width :math:`c`
        (support :math:`2c`); ``"gaussian"``: :math:`f = e^{-r^2/2\ell^2}`, returns :math:`\ell`.
    bounds:
        Search interval (default: from a tenth of the smallest nonzero separation to
        ten times the largest).
    """
    from scipy.optimize import minimize_scalar

    r = np.asarray(separation, dtype=np.float64)
    target = np.asarray(localization, dtype=np.float64)
    func = gaspari_cohn if function == "gaspari-cohn" else _gaussian
    if bounds is None:
        pos = r[r > 0]
        lo = 0.1 * (pos.min() if pos.size else 1.0)
        hi = 10.0 * (r.max() if r.max() > 0 else 1.0)
        bounds = (lo, hi)

    def cost(length: float) -> float:
        return float(((func(r, length) - target) ** 2).sum())

    grid = np.geomspace(bounds[0], bounds[1], 400)
    values = np.array([cost(g) for g in grid])
    i = int(values.argmin())
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    if hi <= lo:
        return float(grid[i])
    res = minimize_scalar(cost, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10 * hi})
    return float(res.x if res.fun <= values[i] else grid[i])


@dataclass
class LocalizationLengthResult:
    r"""Outcome of :func:`calibrate_localization_length`.

    Attributes
    ----------
    function:
        ``"gaspari-cohn"`` or ``"gaussian"``.
    length_scale:
        Daley length scale :math:`\sqrt{-L(0)/L''(0)}` of the fitted function: the
        Gaussian :math:`\ell`, or :math:`c\sqrt{3/10}` for Gaspari–Cohn.
    parameter:
        The fitted parameter: the Gaspari–Cohn half width :math:`c` (support radius
        :math:`2c`) or the Gaussian :math:`\ell`.
    nmembers:
        :math:`N`.
    separation, correlation, localization:
        Binned separations, homogeneous sample correlations :math:`\hat C(r)` (mean over
        variables) and optimal localization :math:`L(r)`.
    per_variable:
        ``{variable: length scale}`` from each variable's own fit.
    """

    function: str
    length_scale: float
    parameter: float
    nmembers: int
    separation: np.ndarray
    correlation: np.ndarray
    localization: np.ndarray
    per_variable: dict[str, float] = field(default_factory=dict)

    @property
    def support_radius(self) -> float:
        """Distance beyond which the fitted function is zero (``inf`` for a Gaussian)."""
        return 2.0 * self.parameter if self.function == "gaspari-cohn" else math.inf

    def as_dict(self) -> dict[str, Any]:
        """Scalars with YAML keys (what :func:`read_localization_length` returns)."""
        out: dict[str, Any] = {
            "localization function": self.function,
            "length scale": float(self.length_scale),
            "nmembers": int(self.nmembers),
        }
        if self.function == "gaspari-cohn":
            out["gaspari-cohn half width"] = float(self.parameter)
            out["support radius"] = float(self.support_radius)
        else:
            out["gaussian length"] = float(self.parameter)
        if self.per_variable:
            out["per variable"] = {k: float(v) for k, v in self.per_variable.items()}
        return out


def _daley(function: str, parameter: float) -> float:
    return parameter * math.sqrt(0.3) if function == "gaspari-cohn" else parameter


def calibrate_localization_length(perturbations: FieldSet, geometry: Any, function: str = "gaspari-cohn",
                                  max_separation: float | None = None, path: str = "") -> LocalizationLengthResult:
    r"""Fit the sampling-optimal localization length to an ensemble.

    For each variable, :func:`homogeneous_correlation` gives :math:`\hat{C}(d)`, binned
    by distance (bin width: the smallest horizontal grid spacing); the optimal
    localization :math:`L(r) = \hat C^2/((1+P)\hat C^2 + P)` with :math:`P = 1/(N-1)`
    (:func:`optimal_localization`) is fitted by :func:`fit_localization_function`
    over :math:`r \le` ``max_separation``.  The overall length is fitted to
    :math:`L(r)` of the variable-averaged correlation.  Because :math:`L` shrinks
    where :math:`C^2 \lesssim P`, the length decreases as :math:`N` decreases.

    Parameters
    ----------
    perturbations:
        ``{variable: (N, *grid)}`` perturbations (mean removed).
    geometry:
        :class:`~pyoops.generic.grid.StructuredGrid` of the fields.
    function:
        ``"gaspari-cohn"`` or ``"gaussian"``.
    max_separation:
        Largest separation used (default: half the smallest horizontal domain extent).
    """
    axes = _structured_axes(geometry, path)
    hor = [a for a in axes if a.horizontal]
    width = min(a.spacing for a in hor)
    rmax = max_separation if max_separation is not None else 0.5 * min(a.upper - a.lower for a in hor)
    nmem = None
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for v, e in perturbations.items():
        e = np.asarray(e, dtype=np.float64)
        nmem = e.shape[0] if nmem is None else nmem
        sep, corr, pairs = homogeneous_correlation(e, geometry, path)
        r, c, w = _bin(sep, corr, pairs, width)
        sel = r <= rmax + 1e-12 * rmax
        curves[v] = (r[sel], c[sel], w[sel])
    if nmem is None:
        raise ConfigError("no variables to calibrate", path)
    if nmem < 2:
        raise ConfigError(f"localization-length calibration needs at least 2 members, got {nmem}", path)
    per_var = {}
    for v, (r, c, _) in curves.items():
        per_var[v] = _daley(function, fit_localization_function(r, optimal_localization(c, nmem), function))
    r0 = next(iter(curves.values()))[0]
    if all(cv[0].shape == r0.shape and np.allclose(cv[0], r0) for cv in curves.values()):
        c_mean = np.mean([cv[1] for cv in curves.values()], axis=0)
    else:  # pragma: no cover - all variables share the grid
        c_mean = next(iter(curves.values()))[1]
    loc = optimal_localization(c_mean, nmem)
    param = fit_localization_function(r0, loc, function)
    return LocalizationLengthResult(function, _daley(function, param), param, int(nmem), r0, c_mean, loc, per_var)


def write_localization_length(filename: str, result: LocalizationLengthResult, geometry: Any,
                              variables: Variables, time: Any) -> None:
    """Write a calibrated localization length.

    * ``.yaml`` / ``.yml``: the scalars of :meth:`LocalizationLengthResult.as_dict` plus the
      binned curves (``separation``, ``sample correlation``, ``optimal localization``).
    * anything else: netCDF in the gridded-field layout with one constant field per
      variable holding that variable's length scale (``pyoops_kind = "localization length"``,
      readable with :func:`~pyoops.fields.netcdf.read_fields`), the scalars as global
      attributes (spaces replaced by underscores) and the curves as array attributes.
    """
    import yaml

    data = result.as_dict()
    if str(filename).endswith((".yaml", ".yml")):
        data = dict(data)
        data["separation"] = [float(x) for x in result.separation]
        data["sample correlation"] = [float(x) for x in result.correlation]
        data["optimal localization"] = [float(x) for x in result.localization]
        with atomic_output(filename, ".yaml") as tmp:
            Path(tmp).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return
    fields = FieldSet({v: np.full(geometry.field_shape(v), result.per_variable.get(v, result.length_scale))
                       for v in variables}, copy=False)
    attrs: dict[str, Any] = {k.replace(" ", "_").replace("-", "_"): v for k, v in data.items() if k != "per variable"}
    attrs["separation"] = np.asarray(result.separation)
    attrs["sample_correlation"] = np.asarray(result.correlation)
    attrs["optimal_localization"] = np.asarray(result.localization)
    write_fields(filename, geometry, fields, time, kind="localization length", attrs=attrs)


def read_localization_length(filename: str) -> dict[str, Any]:
    """Read what :func:`write_localization_length` wrote: ``{'length scale': ..., 'localization function': ...}``.

    The keys are those of :meth:`LocalizationLengthResult.as_dict` (YAML spelling,
    whichever format the file has).
    """
    name = str(filename)
    if not Path(name).is_file():
        raise InputFileError(name, "file not found")
    if name.endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(Path(name).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "length scale" not in data:
            raise InputFileError(name, "is not a localization-length file (no 'length scale')")
        return data
    import netCDF4

    try:
        with netCDF4.Dataset(input_path(name), "r") as ds:
            attrs = {k: ds.getncattr(k) for k in ds.ncattrs()}
    except OSError as exc:
        raise InputFileError(name, f"is not a readable netCDF file ({exc.strerror or exc})") from None
    if "length_scale" not in attrs:
        raise InputFileError(name, "is not a localization-length file (no global attribute 'length_scale')")
    out: dict[str, Any] = {}
    for key in ("localization_function", "length_scale", "nmembers", "gaspari_cohn_half_width", "support_radius",
                "gaussian_length"):
        if key in attrs:
            value = attrs[key]
            value = value.item() if hasattr(value, "item") else value
            out[key.replace("_", " ").replace("gaspari cohn", "gaspari-cohn")] = value
    return out
