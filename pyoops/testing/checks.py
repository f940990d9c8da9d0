"""The checks of the interface test kit, as plain functions.

Every check takes the objects under test (and a seeded random generator where it
needs random data), raises :class:`AssertionError` with a message that names
the check, the quantities compared and the tolerance when the object fails, and
otherwise returns the measured error (a relative difference) or ``None``.  The
pytest suites in :mod:`pyoops.testing.suites` call them with objects built from
a plugin's YAML file; a model author can also call them directly while
debugging, e.g.::

    err = check_linear_model_adjoint(tlm, dx, Duration("P1D"), generator(1), 1e-12)

Comparisons are relative, as in OOPS: :math:`|a - b| \\le \\mathrm{tol}
\\cdot \\max(|a|, |b|)`, and for vectors :math:`\\|a - b\\| \\le \\mathrm{tol}
\\cdot \\max(\\|a\\|, \\|b\\|)`.

Checks that need a linear-model trajectory say so; :func:`run_trajectory`
makes one.  No check modifies the objects it is given (it works on copies),
except that the linear-model checks read, and :func:`run_trajectory` and
:func:`check_linear_model_tl` replace, the linear model's trajectory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pyoops.fields.fieldset import FieldSet
from pyoops.generic.forecast import TrajectorySaver, forecast, forecast_ad, forecast_tl
from pyoops.generic.obs_space import ObsSpace, ObsVector
from pyoops.interface.geometry import Geometry, Locations
from pyoops.interface.model import LinearModel, Model
from pyoops.interface.observations import GeoVaLs, LinearObsOperator, ObsError, ObsOperator
from pyoops.interface.state import Increment, State
from pyoops.interface.variable_change import LinearVariableChange, VariableChange
from pyoops.util.datetime import Duration
from pyoops.util.random import generator
from pyoops.util.variables import Variables

__all__ = [
    "assert_fields_close",
    "assert_relative",
    "check_batched_increments",
    "check_geometry_describe",
    "check_geometry_shapes",
    "check_hofx",
    "check_increment_axpy",
    "check_increment_copy",
    "check_increment_diff_sign",
    "check_increment_dirac",
    "check_increment_dot_symmetric",
    "check_increment_new_is_zero",
    "check_increment_ones",
    "check_increment_schur",
    "check_increment_serialize",
    "check_increment_triangle_inequality",
    "check_increment_two_a",
    "check_interpolator_adjoint",
    "check_interpolator_batched",
    "check_interpolator_grid_points",
    "check_linear_model_adjoint",
    "check_linear_model_linearity",
    "check_linear_model_tl",
    "check_linear_model_zero",
    "check_linear_obs_operator_adjoint",
    "check_linear_obs_operator_linearity",
    "check_linear_obs_operator_tl",
    "check_linear_obs_operator_zero",
    "check_linear_variable_change_adjoint",
    "check_linear_variable_change_inverse",
    "check_linear_variable_change_tl",
    "check_model_batched",
    "check_model_final_norm",
    "check_model_reproducible",
    "check_model_zero_length",
    "check_obs_error_consistency",
    "check_obs_error_inverse",
    "check_obs_error_randomize",
    "check_obs_error_symmetric",
    "check_state_add_increment",
    "check_state_copy_independent",
    "check_state_norm",
    "check_state_write_read",
    "check_variable_change",
    "check_variable_change_inverse",
    "fields_relative_difference",
    "finite_difference_errors",
    "grid_point_locations",
    "random_fields",
    "random_geovals",
    "random_increment",
    "random_locations",
    "random_obs_vector",
    "relative_difference",
    "run_trajectory",
]


# =======================================================================================
# Comparisons and random data
# =======================================================================================
def relative_difference(a: float, b: float) -> float:
    """:math:`|a - b| / \\max(|a|, |b|)`, or 0 when both are 0 (NaN if either is NaN)."""
    a, b = float(a), float(b)
    scale = max(abs(a), abs(b))
    if scale == 0.0:
        return 0.0
    return abs(a - b) / scale


def assert_relative(a: float, b: float, tolerance: float, what: str) -> float:
    """Assert :math:`|a - b| \\le \\mathrm{tol} \\cdot \\max(|a|, |b|)`; return the relative difference."""
    err = relative_difference(a, b)
    if not err <= tolerance:  # also catches NaN
        raise AssertionError(f"{what}: {a!r} and {b!r} differ by {err:.3e} (relative), "
                             f"tolerance {tolerance:.1e}")
    return err


def _vector(fields: Mapping[str, np.ndarray], variables: Sequence[str] | None = None) -> np.ndarray:
    names = list(variables) if variables is not None else list(fields)
    if not names:
        return np.zeros(0)
    return np.concatenate([np.asarray(fields[v], dtype=np.float64).ravel() for v in names])


def _check_same_variables(a: Mapping[str, Any], b: Mapping[str, Any], what: str) -> None:
    if set(a) != set(b):
        raise AssertionError(f"{what}: variables differ, {list(a)} vs {list(b)}")
    for v in a:
        if np.shape(a[v]) != np.shape(b[v]):
            raise AssertionError(f"{what}: field '{v}' has shape {np.shape(a[v])} vs {np.shape(b[v])}")


def fields_relative_difference(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """:math:`\\|a - b\\| / \\max(\\|a\\|, \\|b\\|)` over every field (0 when both are 0)."""
    _check_same_variables(a, b, "fields_relative_difference")
    va, vb = _vector(a), _vector(b, list(a))
    scale = max(np.linalg.norm(va), np.linalg.norm(vb))
    if scale == 0.0:
        return 0.0
    return float(np.linalg.norm(va - vb) / scale)


def assert_fields_close(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], tolerance: float,
                        what: str) -> float:
    """Assert two FieldSets (or GeoVaLs) agree to ``tolerance`` (0: bitwise); return the relative difference."""
    _check_same_variables(a, b, what)
    if tolerance == 0.0:
        for v in a:
            if not np.array_equal(a[v], b[v]):
                diff = np.abs(np.asarray(a[v]) - np.asarray(b[v]))
                raise AssertionError(f"{what}: field '{v}' is not bitwise identical "
                                     f"(max |difference| {np.nanmax(diff):.3e})")
        return 0.0
    err = fields_relative_difference(a, b)
    if not err <= tolerance:
        raise AssertionError(f"{what}: relative difference {err:.3e} > tolerance {tolerance:.1e}")
    return err


def random_fields(geometry: Geometry, variables: Sequence[str], rng: np.random.Generator,
                  batch_shape: tuple[int, ...] = ()) -> FieldSet:
    """Standard-normal fields of ``variables`` on ``geometry`` (optional leading batch axes).

    The same draws as :meth:`Geometry.random <pyoops.interface.geometry.Geometry.random>`,
    for geometries that do not derive from the interface class.
    """
    return Geometry.random(geometry, Variables(variables), rng, tuple(batch_shape))


def random_increment(template: Increment, rng: np.random.Generator) -> Increment:
    """A copy of ``template`` filled by ``Increment.random``."""
    dx = template.copy()
    dx.random(rng)
    return dx


def random_geovals(like: Mapping[str, np.ndarray], variables: Sequence[str], rng: np.random.Generator) -> GeoVaLs:
    """Standard-normal GeoVaLs of ``variables`` with the shapes of ``like``."""
    missing = [v for v in variables if v not in like]
    if missing:
        raise AssertionError(f"GeoVaLs lack variable(s) {missing} (have {list(like)})")
    return GeoVaLs({v: rng.standard_normal(np.shape(like[v])) for v in variables}, copy=False)


def random_obs_vector(obs_space: ObsSpace, rng: np.random.Generator) -> ObsVector:
    """A standard-normal ObsVector, zero where the observation is not used (QC)."""
    shape = (len(obs_space.simulated_variables), obs_space.nlocs)
    return ObsVector(obs_space, np.where(obs_space.qc_mask(), rng.standard_normal(shape), 0.0))


def grid_point_locations(geometry: Geometry) -> Locations:
    """The location of every grid point, in the order of a raveled field.

    Uses ``geometry.mesh()`` (full coordinate arrays keyed by location name, as
    :class:`~pyoops.generic.grid.StructuredGrid` provides) when it exists, otherwise
    the 1-D :attr:`~pyoops.interface.geometry.Geometry.coordinates` of the dimensions
    whose names are the location names.
    """
    names = tuple(geometry.location_names)
    mesh_fn = getattr(geometry, "mesh", None)
    if callable(mesh_fn):
        mesh = mesh_fn()
        if all(n in mesh for n in names):
            return Locations({n: np.asarray(mesh[n]).ravel() for n in names})
    coords = geometry.coordinates
    if all(n in geometry.dims for n in names):
        grids = np.meshgrid(*[np.asarray(coords[d]) for d in geometry.dims], indexing="ij")
        return Locations({n: grids[geometry.dims.index(n)].ravel() for n in names})
    raise AssertionError(f"cannot tell the grid-point locations of this geometry: location names {names} are "
                         f"neither keys of geometry.mesh() nor grid dimensions {geometry.dims}; give explicit "
                         "'locations' in 'get values test'")


def random_locations(geometry: Geometry, nlocs: int, rng: np.random.Generator) -> Locations:
    """``nlocs`` locations drawn uniformly between the smallest and largest grid-point coordinate.

    Every location lies inside the grid (between grid points), so any geometry
    accepts it; see :func:`grid_point_locations` for how the grid points are found.
    """
    points = grid_point_locations(geometry)
    return Locations({n: rng.uniform(float(c.min()), float(c.max()), nlocs) for n, c in points.coords.items()})


def finite_difference_errors(alphas: Sequence[float], finite_difference: Callable[[float], np.ndarray],
                             tangent_linear: np.ndarray) -> list[float]:
    """Relative errors :math:`\\|f(x + \\alpha\\delta x) - f(x) - \\alpha\\mathbf{F}\\delta x\\| /
    \\|\\alpha\\mathbf{F}\\delta x\\|` for each :math:`\\alpha`.

    Parameters
    ----------
    alphas
        The multipliers.
    finite_difference
        ``alpha -> f(x + alpha dx) - f(x)`` as a flat vector.
    tangent_linear
        :math:`\\mathbf{F}\\delta x` as a flat vector of the same layout.
    """
    errors = []
    tl = np.asarray(tangent_linear, dtype=float)
    for alpha in alphas:
        fd = np.asarray(finite_difference(alpha), dtype=float)
        if fd.shape != tl.shape:
            raise AssertionError(f"finite difference has shape {fd.shape}, tangent linear {tl.shape}")
        ref = np.linalg.norm(alpha * tl)
        num = np.linalg.norm(fd - alpha * tl)
        errors.append(float(num / ref) if ref > 0 else (0.0 if num == 0 else float("inf")))
    return errors


def _assert_tl(errors: list[float], alphas: Sequence[float], tolerance: float, what: str) -> float:
    finite = [e for e in errors if np.isfinite(e)]
    best = min(finite) if finite else float("inf")
    if not best < tolerance:
        table = ", ".join(f"{a:.0e}: {e:.2e}" for a, e in zip(alphas, errors))
        raise AssertionError(f"{what}: tangent linear does not match finite differences; best relative error "
                             f"{best:.3e} >= tolerance {tolerance:.1e} (alpha: error = {table})")
    return best


def _alphas(first_multiplier: float, iterations: int) -> list[float]:
    return [first_multiplier * 10.0 ** (-k) for k in range(iterations)]


def _dot_test(lhs: float, rhs: float, tolerance: float, what: str) -> float:
    err = relative_difference(lhs, rhs)
    if not err <= tolerance:
        raise AssertionError(f"{what}: adjoint test failed, <dy, A dx> = {lhs!r} but <A^T dy, dx> = {rhs!r}; "
                             f"relative difference {err:.3e} > tolerance {tolerance:.1e}")
    return err


def _member_fields(fields: FieldSet, m: int) -> FieldSet:
    """Member ``m`` of fields with a leading member axis (views)."""
    return FieldSet({v: a[m] for v, a in fields.items()}, copy=False)


def _fields_dot(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], what: str) -> float:
    if set(a) != set(b):
        raise AssertionError(f"{what}: cannot take an inner product of {list(a)} with {list(b)}")
    return float(sum(np.vdot(np.asarray(a[v]), np.asarray(b[v])) for v in a))


# =======================================================================================
# Increment
# =======================================================================================
def check_increment_new_is_zero(increment: Increment) -> None:
    """A newly constructed increment is zero everywhere."""
    for var, arr in increment.fields.items():
        if np.any(arr != 0):
            raise AssertionError(f"new increment is not zero: field '{var}' has {int(np.count_nonzero(arr))} "
                                 "non-zero value(s)")
    if increment.norm() != 0.0:
        raise AssertionError(f"new increment has norm {increment.norm()!r}, expected 0")


def check_increment_ones(template: Increment) -> None:
    """``ones()`` sets every value to 1, and ``zero()`` back to 0."""
    dx = template.copy()
    dx.ones()
    for var, arr in dx.fields.items():
        if not np.all(arr == 1.0):
            raise AssertionError(f"Increment.ones(): field '{var}' is not 1 everywhere")
    if dx.norm() != 1.0:
        raise AssertionError(f"Increment.ones(): RMS norm is {dx.norm()!r}, expected 1")
    dx.zero()
    check_increment_new_is_zero(dx)


def check_increment_copy(template: Increment, rng: np.random.Generator) -> None:
    """``copy() - original`` is exactly 0, and the copy is independent of the original."""
    dx = random_increment(template, rng)
    if dx.norm() == 0.0:
        raise AssertionError("Increment.random() gave a zero increment")
    saved = dx.fields.copy()
    dy = dx.copy()
    dy -= dx
    if dy.norm() != 0.0:
        raise AssertionError(f"copy - original has norm {dy.norm()!r}, expected exactly 0")
    assert_fields_close(dx.fields, saved, 0.0, "original changed by 'copy -= original'")
    dz = dx.copy()
    dz *= 2.0
    dz.random(rng)
    assert_fields_close(dx.fields, saved, 0.0, "original changed when its copy was modified (shared arrays?)")


def check_increment_triangle_inequality(template: Increment, rng: np.random.Generator) -> None:
    """:math:`\\|a + b\\| \\le \\|a\\| + \\|b\\|`."""
    a = random_increment(template, rng)
    b = random_increment(template, rng)
    na, nb = a.norm(), b.norm()
    a += b
    if not a.norm() <= (na + nb) * (1.0 + 1e-14):
        raise AssertionError(f"triangle inequality violated: |a + b| = {a.norm()!r} > |a| + |b| = {na + nb!r}")


def check_increment_two_a(template: Increment, rng: np.random.Generator, tolerance: float) -> float:
    """:math:`2a - (a + a) \\approx 0` relative to :math:`\\|2a\\|`; return the relative size."""
    a = random_increment(template, rng)
    two_a = a.copy()
    two_a *= 2.0
    s = a.copy()
    s += a
    s -= two_a
    ratio = s.norm() / two_a.norm()
    if not ratio <= tolerance:
        raise AssertionError(f"2a - (a + a) has relative norm {ratio:.3e} > tolerance {tolerance:.1e}")
    return ratio


def check_increment_dot_symmetric(template: Increment, rng: np.random.Generator, tolerance: float) -> float:
    """:math:`\\langle a, b\\rangle = \\langle b, a\\rangle` and :math:`\\langle a, a\\rangle > 0`."""
    a = random_increment(template, rng)
    b = random_increment(template, rng)
    if not a.dot_product_with(a) > 0:
        raise AssertionError(f"<a, a> = {a.dot_product_with(a)!r} for a random increment, expected > 0")
    return assert_relative(a.dot_product_with(b), b.dot_product_with(a), tolerance, "dot product symmetry")


def check_increment_axpy(template: Increment, rng: np.random.Generator, tolerance: float) -> float:
    """``a.axpy(s, b)`` equals ``a + s*b`` built with ``*=`` and ``+=``."""
    a = random_increment(template, rng)
    b = random_increment(template, rng)
    s = 2.5
    c = a.copy()
    c.axpy(s, b)
    d = b.copy()
    d *= s
    d += a
    return assert_fields_close(c.fields, d.fields, tolerance, "axpy(s, b) vs a + s*b")


def check_increment_diff_sign(template: Increment, state: State, rng: np.random.Generator,
                              tolerance: float) -> float:
    """``diff(x1, x2) = -diff(x2, x1)`` and ``diff(x + dx, x) = dx``."""
    x1 = state.copy()
    x2 = state.copy()
    dx = random_increment(template, rng)
    dx.time = state.time
    x2 += dx
    d12 = template.copy()
    d12.diff(x1, x2)
    d21 = template.copy()
    d21.diff(x2, x1)
    s = d12.copy()
    s += d21
    if not s.norm() <= tolerance * d12.norm():
        raise AssertionError(f"diff(x1, x2) + diff(x2, x1) has norm {s.norm():.3e}, expected 0 "
                             f"(|diff| = {d12.norm():.3e}, tolerance {tolerance:.1e}): diff has the wrong sign?")
    return assert_fields_close(d21.fields, dx.fields, tolerance, "diff(x + dx, x) vs dx")


def _default_dirac_targets(template: Increment, config: Mapping[str, Any]) -> set[tuple[str, int]] | None:
    if "ixdir" not in config:
        return None
    ixdir = list(config["ixdir"])
    variables = config.get("variables") or [template.variables[0]] * len(ixdir)
    return {(str(v), int(i)) for v, i in zip(variables, ixdir)}


def check_increment_dirac(template: Increment, config: Mapping[str, Any], rng: np.random.Generator) -> None:
    """``dirac(config)`` gives 1 at the requested points and 0 elsewhere (even after random values).

    When ``config`` uses the generic layout ``{ixdir: [flat indices], variables: [...]}``
    the exact positions are checked; otherwise only that the values are 0 or 1 with
    at least one 1.
    """
    dx = random_increment(template, rng)
    dx.dirac(dict(config))
    ones = set()
    for var, arr in dx.fields.items():
        flat = np.asarray(arr).reshape(-1)
        bad = ~((flat == 0.0) | (flat == 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise AssertionError(f"dirac({dict(config)}): field '{var}' has value {flat[i]!r} at flat index {i}; "
                                 "expected only 0 and 1")
        ones |= {(var, int(i)) for i in np.flatnonzero(flat == 1.0)}
    expected = _default_dirac_targets(template, config)
    if expected is None:
        if not ones:
            raise AssertionError(f"dirac({dict(config)}) produced no impulse")
        return
    if ones != expected:
        raise AssertionError(f"dirac({dict(config)}): ones at {sorted(ones)}, expected {sorted(expected)}")


def check_increment_schur(template: Increment, rng: np.random.Generator) -> None:
    """Schur product with 0 gives 0, with 1 leaves the increment unchanged (exactly)."""
    a = random_increment(template, rng)
    zero = template.copy()
    zero.zero()
    one = template.copy()
    one.ones()
    b = a.copy()
    b.schur_product_with(zero)
    if b.norm() != 0.0:
        raise AssertionError(f"a ∘ 0 has norm {b.norm()!r}, expected 0")
    c = a.copy()
    c.schur_product_with(one)
    assert_fields_close(c.fields, a.fields, 0.0, "a ∘ 1 vs a")
    d = a.copy()
    d.schur_product_with(a)
    expected = {v: np.asarray(a.fields[v]) ** 2 for v in a.fields}
    assert_fields_close(d.fields, expected, 0.0, "a ∘ a vs a**2")


def check_increment_serialize(template: Increment, rng: np.random.Generator, tolerance: float) -> float:
    """``deserialize(serialize(a))`` reproduces ``a``; the vector is 1-D with every value once."""
    a = random_increment(template, rng)
    vec = np.asarray(a.serialize())
    if vec.ndim != 1:
        raise AssertionError(f"serialize() returned shape {vec.shape}, expected a 1-D vector")
    total = sum(np.asarray(arr).size for arr in a.fields.values())
    if vec.size < total:
        raise AssertionError(f"serialize() returned {vec.size} values for {total} grid values")
    b = template.copy()
    b.zero()
    b.deserialize(vec)
    err = assert_fields_close(b.fields, a.fields, tolerance, "serialize/deserialize round trip")
    again = np.asarray(b.serialize())
    if again.shape != vec.shape or not np.linalg.norm(again - vec) <= tolerance * np.linalg.norm(vec):
        raise AssertionError("serialize(deserialize(v)) does not give v back")
    return err


def _member(batched: Increment, single: Increment, m: int) -> Increment:
    out = single.copy()
    for var in out.fields:
        out.fields[var][...] = batched.fields[var][m]
    return out


def check_batched_increments(batched: Increment, single: Increment, rng: np.random.Generator,
                             tolerance: float) -> None:
    """Increments with a leading member axis behave member by member.

    Parameters
    ----------
    batched
        A zero increment whose fields have one leading member axis.
    single
        A zero increment of the same variables without it.
    """
    nmem = None
    for var, arr in batched.fields.items():
        expected = tuple(single.fields[var].shape)
        if arr.shape[1:] != expected:
            raise AssertionError(f"batched field '{var}' has shape {arr.shape}, expected (members, *{expected})")
        nmem = arr.shape[0]
    if not nmem or nmem < 2:
        raise AssertionError("batched increment needs at least 2 members")
    a = random_increment(batched, rng)
    b = random_increment(batched, rng)
    am = [_member(a, single, m) for m in range(nmem)]
    bm = [_member(b, single, m) for m in range(nmem)]
    if any(x.norm() == 0.0 for x in am) or len({x.norm() for x in am}) < nmem:
        raise AssertionError("Increment.random() on a batched increment must give different non-zero members")
    s = 0.75
    ops: list[tuple[str, Callable[[Increment, Increment], None]]] = [
        ("axpy", lambda x, y: x.axpy(s, y)),
        ("+=", lambda x, y: x.__iadd__(y)),
        ("-=", lambda x, y: x.__isub__(y)),
        ("*=", lambda x, y: x.__imul__(s)),
        ("schur product", lambda x, y: x.schur_product_with(y)),
    ]
    for name, op in ops:
        c = a.copy()
        op(c, b)
        for m in range(nmem):
            cm = am[m].copy()
            op(cm, bm[m])
            assert_fields_close(_member(c, single, m).fields, cm.fields, tolerance,
                                f"batched {name}, member {m} vs the same operation on the member alone")
    dot = a.dot_product_with(b)
    assert_relative(dot, sum(x.dot_product_with(y) for x, y in zip(am, bm)), tolerance,
                    "batched dot product vs sum of member dot products")
    assert_relative(a.norm(), float(np.sqrt(np.mean([x.norm() ** 2 for x in am]))), tolerance,
                    "batched RMS norm vs RMS of member norms")


# =======================================================================================
# State
# =======================================================================================
def check_state_norm(state: State, reference: float, tolerance: float) -> float:
    """The state's norm matches the reference value (file norm or analytic-init norm)."""
    norm = state.norm()
    if not np.isfinite(norm):
        raise AssertionError(f"state norm is {norm!r}")
    return assert_relative(norm, reference, tolerance, "state norm vs reference 'norm'")


def check_state_write_read(state: State, filename: Any, reader: Callable[[Any], State]) -> None:
    """``write`` then read back (with ``reader(filename)``) gives identical fields and time."""
    original = state.fields.copy()
    state.write(str(filename))
    assert_fields_close(state.fields, original, 0.0, "State.write modified the state")
    back = reader(filename)
    if back.time != state.time:
        raise AssertionError(f"state read back is valid at {back.time}, written at {state.time}")
    missing = [v for v in state.variables if v not in back.fields]
    if missing:
        raise AssertionError(f"state read back lacks variable(s) {missing}")
    assert_fields_close(back.fields.subset(list(state.fields)), state.fields, 0.0, "write -> read round trip")


def check_state_add_increment(state: State, template: Increment, rng: np.random.Generator,
                              tolerance: float) -> float:
    """``x += 0`` leaves ``x`` unchanged exactly; ``diff(x + dx, x) = dx``."""
    x = state.copy()
    zero = template.copy()
    zero.zero()
    zero.time = state.time
    x += zero
    assert_fields_close(x.fields, state.fields, 0.0, "state += zero increment")
    dx = random_increment(template, rng)
    dx.time = state.time
    x += dx
    if x.time != state.time:
        raise AssertionError(f"state += increment changed the time from {state.time} to {x.time}")
    back = template.copy()
    back.diff(x, state)
    return assert_fields_close(back.fields, dx.fields, tolerance, "(x + dx) - x vs dx")


def check_state_copy_independent(state: State, template: Increment, rng: np.random.Generator) -> None:
    """A copy equals the state and does not share its arrays."""
    saved = state.fields.copy()
    y = state.copy()
    assert_fields_close(y.fields, state.fields, 0.0, "State.copy()")
    if y.time != state.time:
        raise AssertionError(f"State.copy() is valid at {y.time}, original at {state.time}")
    dx = random_increment(template, rng)
    dx.time = state.time
    y += dx
    assert_fields_close(state.fields, saved, 0.0, "original state changed when its copy was incremented")


# =======================================================================================
# Geometry and GetValues
# =======================================================================================
def check_geometry_describe(geometry: Geometry, twin: Geometry, other: Geometry | None = None) -> None:
    """``describe()`` is plain JSON data; ``same_as`` is true for the same config, false for ``other``."""
    desc = geometry.describe()
    try:
        json.dumps(desc)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"Geometry.describe() must return plain JSON-able data: {exc}") from None
    if not geometry.same_as(geometry):
        raise AssertionError("geometry.same_as(geometry) is False")
    if not geometry.same_as(twin) or not twin.same_as(geometry):
        raise AssertionError(f"two geometries from the same config are not same_as: {desc} vs {twin.describe()}")
    if other is not None and (geometry.same_as(other) or other.same_as(geometry)):
        raise AssertionError(f"geometries from different configs compare same_as: {desc} vs {other.describe()}")


def check_geometry_shapes(geometry: Geometry) -> None:
    """Dimensions, shapes, coordinates, cell areas and zero fields agree with each other."""
    if len(geometry.dims) != len(geometry.shape):
        raise AssertionError(f"geometry dims {geometry.dims} and shape {geometry.shape} differ in length")
    if len(geometry.variables) == 0:
        raise AssertionError("geometry has no variables")
    coords = geometry.coordinates
    for dim, n in zip(geometry.dims, geometry.shape):
        if dim not in coords:
            raise AssertionError(f"geometry has no coordinate for dimension '{dim}'")
        c = np.asarray(coords[dim])
        if c.shape != (n,) or not np.isfinite(c).all():
            raise AssertionError(f"coordinate '{dim}' has shape {c.shape} (expected ({n},)) or non-finite values")
    areas = np.asarray(geometry.cell_areas())
    if not (np.isfinite(areas).all() and (areas > 0).all()):
        raise AssertionError("cell areas must be finite and positive")
    for var, arr in geometry.zeros(geometry.variables).items():
        if arr.shape != tuple(geometry.field_shape(var)) or np.any(arr != 0):
            raise AssertionError(f"geometry.zeros: field '{var}' has shape {arr.shape}, expected "
                                 f"{geometry.field_shape(var)}, all zero")
    if not geometry.location_names:
        raise AssertionError("geometry has no location coordinate names")


def check_interpolator_adjoint(geometry: Geometry, locations: Locations, variables: Sequence[str],
                               rng: np.random.Generator, tolerance: float) -> float:
    """:math:`\\langle g, W f\\rangle = \\langle W^\\mathsf{T} g, f\\rangle` for the interpolator to ``locations``."""
    interp = geometry.interpolator(locations)
    variables = Variables(variables)
    f = random_fields(geometry, variables, rng)
    wf = interp.apply(f, variables)
    for v in variables:
        if np.shape(wf[v]) != (locations.nlocs,):
            raise AssertionError(f"GetValues.apply: GeoVaLs '{v}' have shape {np.shape(wf[v])}, "
                                 f"expected ({locations.nlocs},)")
    assert_fields_close(interp.apply_tl(f, variables), wf, 0.0, "GetValues.apply_tl vs apply")
    g = random_geovals(wf, variables, rng)
    wtg = geometry.zeros(variables)
    interp.apply_ad(g, wtg)
    return _dot_test(_fields_dot(g, wf, "GetValues"), _fields_dot(wtg, f, "GetValues"), tolerance,
                     "GetValues (interpolation)")


def check_interpolator_grid_points(geometry: Geometry, variables: Sequence[str], rng: np.random.Generator,
                                   tolerance: float) -> float:
    """Interpolating to the grid points reproduces the field (relative to its largest value)."""
    locations = grid_point_locations(geometry)
    interp = geometry.interpolator(locations)
    f = random_fields(geometry, variables, rng)
    g = interp.apply(f, Variables(variables))
    worst = 0.0
    for v in variables:
        want = np.asarray(f[v]).ravel()
        scale = float(np.abs(want).max()) or 1.0
        err = float(np.abs(np.asarray(g[v]) - want).max() / scale)
        worst = max(worst, err)
        if not err <= tolerance:
            raise AssertionError(f"interpolation of '{v}' to the grid points differs from the grid values by "
                                 f"{err:.3e} (relative to max |f|), tolerance {tolerance:.1e}")
    return worst


def check_interpolator_batched(geometry: Geometry, locations: Locations, variables: Sequence[str],
                               rng: np.random.Generator, tolerance: float, nmembers: int = 3) -> None:
    """``apply`` and ``apply_ad`` on fields with a member axis equal the member-by-member results."""
    interp = geometry.interpolator(locations)
    variables = Variables(variables)
    f = random_fields(geometry, variables, rng, (nmembers,))
    g = interp.apply(f, variables)
    gy = GeoVaLs({v: rng.standard_normal((nmembers, locations.nlocs)) for v in variables}, copy=False)
    ad = geometry.zeros(variables, (nmembers,))
    interp.apply_ad(gy, ad)
    for m in range(nmembers):
        assert_fields_close(_member_fields(g, m), interp.apply(_member_fields(f, m), variables), tolerance,
                            f"batched GetValues.apply, member {m}")
        adm = geometry.zeros(variables)
        interp.apply_ad(GeoVaLs(_member_fields(gy, m), copy=False), adm)
        assert_fields_close(_member_fields(ad, m), adm, tolerance, f"batched GetValues.apply_ad, member {m}")


# =======================================================================================
# Model
# =======================================================================================
def check_model_zero_length(model: Model, state: State) -> None:
    """A zero-length forecast leaves the state unchanged, bit for bit."""
    x = state.copy()
    forecast(model, x, Duration(0), show_progress=False)
    if x.time != state.time:
        raise AssertionError(f"zero-length forecast moved the time from {state.time} to {x.time}")
    assert_fields_close(x.fields, state.fields, 0.0, "zero-length forecast")


def check_model_reproducible(model: Model, state: State, length: Duration) -> State:
    """Two forecasts from the same state are bitwise identical and end at ``start + length``."""
    x1 = forecast(model, state.copy(), Duration(length), show_progress=False)
    x2 = forecast(model, state.copy(), Duration(length), show_progress=False)
    end = state.time + Duration(length)
    if x1.time != end:
        raise AssertionError(f"forecast of {Duration(length)} from {state.time} ended at {x1.time}, expected {end}")
    assert_fields_close(x1.fields, x2.fields, 0.0, "two forecasts from the same state")
    if not x1.fields.is_finite():
        raise AssertionError("forecast is not finite")
    return x1


def check_model_final_norm(model: Model, state: State, length: Duration, reference: float,
                           tolerance: float) -> float:
    """The norm at the end of the forecast matches the regression value ``reference``."""
    x = forecast(model, state.copy(), Duration(length), show_progress=False)
    return assert_relative(x.norm(), reference, tolerance,
                           f"final norm of the {Duration(length)} forecast vs reference 'final norm'")


def check_model_batched(model: Model, state: State, length: Duration, nmembers: int, perturbation: float,
                        rng: np.random.Generator, tolerance: float) -> None:
    """A batched forecast of ``nmembers`` perturbed states equals the forecasts of each member alone."""
    members = []
    for _ in range(nmembers):
        x = state.copy()
        x.fields = FieldSet({v: a + perturbation * rng.standard_normal(a.shape) for v, a in state.fields.items()},
                            copy=False)
        members.append(x)
    batched = state.copy()
    batched.fields = FieldSet({v: np.stack([x.fields[v] for x in members]) for v in state.fields}, copy=False)
    forecast(model, batched, Duration(length), show_progress=False)
    for m, x in enumerate(members):
        forecast(model, x, Duration(length), show_progress=False)
        if x.time != batched.time:
            raise AssertionError(f"batched forecast ended at {batched.time}, member forecast at {x.time}")
        assert_fields_close(_member_fields(batched.fields, m), x.fields, tolerance,
                            f"batched forecast, member {m} vs its own forecast")


# =======================================================================================
# LinearModel
# =======================================================================================
def run_trajectory(model: Model, linear_model: LinearModel, state: State, length: Duration) -> State:
    """Forecast ``state`` (a copy) with ``model``, giving ``linear_model`` its trajectory; return the end state."""
    if hasattr(linear_model, "clear_trajectory"):
        linear_model.clear_trajectory()
    if linear_model.time_resolution != model.time_resolution:
        raise AssertionError(f"linear model time step {linear_model.time_resolution} differs from the "
                             f"model time step {model.time_resolution}")
    return forecast(model, state.copy(), Duration(length), post=[TrajectorySaver(linear_model)],
                    show_progress=False)


def _at(template: Increment, time: Any) -> Increment:
    dx = template.copy()
    dx.time = time
    return dx


def check_linear_model_zero(linear_model: LinearModel, template: Increment, length: Duration) -> None:
    """TL and AD map 0 to 0 exactly (trajectory already set, ``template`` at the initial time)."""
    length = Duration(length)
    dx = _at(template, template.time)
    dx.zero()
    out = forecast_tl(linear_model, dx, length)
    if out.norm() != 0.0:
        raise AssertionError(f"TL of a zero increment has norm {out.norm()!r}, expected 0")
    if out.time != template.time + length:
        raise AssertionError(f"TL run ended at {out.time}, expected {template.time + length}")
    dy = _at(template, template.time + length)
    dy.zero()
    back = forecast_ad(linear_model, dy, length)
    if back.norm() != 0.0:
        raise AssertionError(f"AD of a zero increment has norm {back.norm()!r}, expected 0")
    if back.time != template.time:
        raise AssertionError(f"AD run ended at {back.time}, expected {template.time}")


def check_linear_model_linearity(linear_model: LinearModel, template: Increment, length: Duration,
                                 rng: np.random.Generator, tolerance: float, factor: float = 3.7) -> float:
    """:math:`\\mathbf{M}(a\\,\\delta x) = a\\,\\mathbf{M}\\delta x` (trajectory already set)."""
    dx = random_increment(template, rng)
    mdx = forecast_tl(linear_model, dx.copy(), Duration(length))
    scaled = dx.copy()
    scaled *= factor
    m_scaled = forecast_tl(linear_model, scaled, Duration(length))
    mdx *= factor
    return assert_fields_close(m_scaled.fields, mdx.fields, tolerance, f"TL linearity, M({factor} dx) vs {factor} M dx")


def check_linear_model_tl(model: Model, linear_model: LinearModel, state: State, template: Increment,
                          length: Duration, rng: np.random.Generator, first_multiplier: float, iterations: int,
                          tolerance: float) -> float:
    """Tangent linear vs finite differences; return the best relative error over the multipliers.

    Computes :math:`\\|\\mathcal{M}(x + \\alpha\\delta x) - \\mathcal{M}(x) - \\alpha\\mathbf{M}\\delta x\\|
    / \\|\\alpha\\mathbf{M}\\delta x\\|` for :math:`\\alpha = \\mathrm{first}\\cdot 10^{-k}`,
    :math:`k = 0 \\dots \\mathrm{iterations}-1`, and asserts the smallest is below ``tolerance``.
    Sets the linear model's trajectory to the forecast of ``state``.
    """
    length = Duration(length)
    x_end = run_trajectory(model, linear_model, state, length)
    dx = random_increment(template, rng)
    dx.time = state.time
    mdx = forecast_tl(linear_model, dx.copy(), length)
    variables = list(mdx.fields)

    def fd(alpha: float) -> np.ndarray:
        xp = state.copy()
        step = dx.copy()
        step *= alpha
        xp += step
        forecast(model, xp, length, show_progress=False)
        return _vector(xp.fields, variables) - _vector(x_end.fields, variables)

    alphas = _alphas(first_multiplier, iterations)
    errors = finite_difference_errors(alphas, fd, _vector(mdx.fields, variables))
    return _assert_tl(errors, alphas, tolerance, "linear model")


def check_linear_model_adjoint(linear_model: LinearModel, template: Increment, length: Duration,
                               rng: np.random.Generator, tolerance: float) -> float:
    """Dot-product test :math:`\\langle\\delta y, \\mathbf{M}\\delta x\\rangle =
    \\langle\\mathbf{M}^\\mathsf{T}\\delta y, \\delta x\\rangle` (trajectory already set).

    ``template`` is a zero increment valid at the start of the trajectory; returns the
    relative difference of the two inner products.
    """
    length = Duration(length)
    dx = random_increment(template, rng)
    dy = _at(random_increment(template, rng), template.time + length)
    mdx = forecast_tl(linear_model, dx.copy(), length)
    mtdy = forecast_ad(linear_model, dy.copy(), length)
    if mtdy.time != dx.time:
        raise AssertionError(f"adjoint run ended at {mtdy.time}, expected {dx.time}")
    return _dot_test(dy.dot_product_with(mdx), mtdy.dot_product_with(dx), tolerance, "linear model")


# =======================================================================================
# Observation operators and errors
# =======================================================================================
def _masked(y: ObsVector) -> np.ndarray:
    return np.where(y.obs_space.qc_mask(), y.values, 0.0)


def _check_obs_shape(y: Any, obs_space: ObsSpace, what: str) -> None:
    if not isinstance(y, ObsVector):
        raise AssertionError(f"{what} returned {type(y).__name__}, expected an ObsVector")
    shape = (len(obs_space.simulated_variables), obs_space.nlocs)
    if y.values.shape != shape:
        raise AssertionError(f"{what} has shape {y.values.shape}, expected {shape}")


def check_hofx(obs_operator: ObsOperator, geovals: GeoVaLs) -> ObsVector:
    """:math:`\\mathcal{H}(g)` has one value per simulated variable and location, finite where used."""
    obs_space = obs_operator.obs_space
    y = obs_operator.simulate_obs(geovals)
    _check_obs_shape(y, obs_space, "ObsOperator.simulate_obs")
    mask = obs_space.qc_mask()
    bad = mask & ~np.isfinite(y.values)
    if bad.any():
        raise AssertionError(f"H(x) of '{obs_space.name}' is not finite at {int(bad.sum())} used observation(s)")
    return y


def check_linear_obs_operator_zero(linear: LinearObsOperator, geovals: GeoVaLs) -> None:
    """TL and AD of the linear obs operator map 0 to 0 (after ``set_trajectory(geovals)``)."""
    linear.set_trajectory(geovals)
    zero = GeoVaLs({v: np.zeros(np.shape(geovals[v])) for v in linear.required_variables}, copy=False)
    y = linear.simulate_obs_tl(zero)
    _check_obs_shape(y, linear.obs_space, "LinearObsOperator.simulate_obs_tl")
    if np.any(_masked(y) != 0):
        raise AssertionError(f"H' 0 is not 0 for '{linear.obs_space.name}'")
    g = linear.simulate_obs_ad(ObsVector(linear.obs_space))
    for v in linear.required_variables:
        if v not in g:
            raise AssertionError(f"simulate_obs_ad returned no GeoVaLs for required variable '{v}'")
        if np.any(np.asarray(g[v]) != 0):
            raise AssertionError(f"H'^T 0 is not 0 for '{linear.obs_space.name}', variable '{v}'")


def check_linear_obs_operator_linearity(linear: LinearObsOperator, geovals: GeoVaLs, rng: np.random.Generator,
                                        tolerance: float, factor: float = 3.7) -> float:
    """:math:`\\mathbf{H}(a\\,\\delta g) = a\\,\\mathbf{H}\\delta g`."""
    linear.set_trajectory(geovals)
    dg = random_geovals(geovals, linear.required_variables, rng)
    y = _masked(linear.simulate_obs_tl(dg))
    ya = _masked(linear.simulate_obs_tl(GeoVaLs({v: factor * a for v, a in dg.items()}, copy=False)))
    scale = max(np.linalg.norm(factor * y), np.linalg.norm(ya))
    err = float(np.linalg.norm(ya - factor * y) / scale) if scale else 0.0
    if not err <= tolerance:
        raise AssertionError(f"linear obs operator '{linear.obs_space.name}': H({factor} dg) vs {factor} H dg "
                             f"differ by {err:.3e} > tolerance {tolerance:.1e}")
    return err


def check_declared_linear_obs_operator(obs_operator: ObsOperator, linear: LinearObsOperator, geovals: GeoVaLs,
                                       rng: np.random.Generator, tolerance: float) -> float:
    """An operator that declares ``linear = True`` (:attr:`~pyoops.interface.observations.ObsOperator.linear`):
    :math:`\\mathcal{H}(g) = \\mathbf{H}g` at a random :math:`g`, with the linear operator's trajectory at
    ``geovals`` and at another random point.  Returns the largest relative difference; 0 for an operator
    that does not declare it (nothing to check)."""
    if not getattr(type(obs_operator), "linear", False):
        return 0.0
    g = random_geovals(geovals, obs_operator.required_variables + linear.required_variables, rng)
    hg = _masked(obs_operator.simulate_obs(g))
    worst = 0.0
    for trajectory in (geovals, GeoVaLs({v: geovals[v] + 2.0 * g[v] for v in geovals if v in g}, copy=False)):
        linear.set_trajectory(trajectory)
        tl = _masked(linear.simulate_obs_tl(g))
        scale = max(np.linalg.norm(hg), np.linalg.norm(tl))
        err = float(np.linalg.norm(tl - hg) / scale) if scale else 0.0
        if not err <= tolerance:
            raise AssertionError(f"obs operator of '{linear.obs_space.name}' declares linear = True but H(g) and "
                                 f"its linear operator's H g differ by {err:.3e} > tolerance {tolerance:.1e}")
        worst = max(worst, err)
    return worst


def check_linear_obs_operator_tl(obs_operator: ObsOperator, linear: LinearObsOperator, geovals: GeoVaLs,
                                 rng: np.random.Generator, first_multiplier: float, iterations: int,
                                 tolerance: float) -> float:
    """Linear obs operator vs finite differences of the nonlinear one on GeoVaLs; return the best error."""
    linear.set_trajectory(geovals)
    dg = random_geovals(geovals, linear.required_variables, rng)
    base = _masked(obs_operator.simulate_obs(geovals))
    tl = _masked(linear.simulate_obs_tl(dg))

    def fd(alpha: float) -> np.ndarray:
        g = GeoVaLs(geovals, copy=True)
        for v, a in dg.items():
            g[v] = g[v] + alpha * a
        return (_masked(obs_operator.simulate_obs(g)) - base).ravel()

    alphas = _alphas(first_multiplier, iterations)
    errors = finite_difference_errors(alphas, fd, tl.ravel())
    return _assert_tl(errors, alphas, tolerance, f"linear obs operator of '{linear.obs_space.name}'")


def check_linear_obs_operator_adjoint(linear: LinearObsOperator, geovals: GeoVaLs, rng: np.random.Generator,
                                      tolerance: float) -> float:
    """Dot-product test :math:`\\langle\\delta y, \\mathbf{H}\\delta g\\rangle =
    \\langle\\mathbf{H}^\\mathsf{T}\\delta y, \\delta g\\rangle` over the used observations."""
    linear.set_trajectory(geovals)
    dg = random_geovals(geovals, linear.required_variables, rng)
    dy = random_obs_vector(linear.obs_space, rng)
    hdg = linear.simulate_obs_tl(dg)
    htdy = linear.simulate_obs_ad(dy.copy())
    htdy_fields = {v: np.asarray(htdy[v]) if v in htdy else np.zeros(np.shape(dg[v])) for v in dg}
    for v in htdy:
        if v not in dg and np.any(np.asarray(htdy[v]) != 0):
            raise AssertionError(f"simulate_obs_ad returned GeoVaLs of '{v}', not a required variable")
    return _dot_test(float(np.vdot(_masked(dy), _masked(hdg))), _fields_dot(htdy_fields, dg, "H^T dy"),
                     tolerance, f"linear obs operator of '{linear.obs_space.name}'")


def check_obs_error_consistency(obs_error: ObsError, tolerance: float) -> None:
    """Standard deviations are positive where used; ``inverse_variance`` is :math:`1/\\sigma^2` there
    and 0 elsewhere; ``multiply`` of ones gives :math:`\\sigma^2`."""
    obs_space = obs_error.obs_space
    mask = obs_space.qc_mask()
    sigma = obs_error.obserrors().values
    if not (np.isfinite(sigma[mask]).all() and (sigma[mask] > 0).all()):
        raise AssertionError(f"obs errors of '{obs_space.name}' must be finite and positive where used")
    iv = obs_error.inverse_variance().values
    if np.any(iv[~mask] != 0):
        raise AssertionError(f"inverse_variance of '{obs_space.name}' is not 0 for unused observations")
    err = np.abs(iv[mask] * sigma[mask] ** 2 - 1.0)
    if err.size and not err.max() <= tolerance:
        raise AssertionError(f"inverse_variance * obserrors**2 differs from 1 by {err.max():.3e} for "
                             f"'{obs_space.name}'")
    ones = ObsVector(obs_space, np.ones(mask.shape))
    rdiag = obs_error.multiply(ones).values
    err = np.abs(rdiag[mask] - sigma[mask] ** 2) / sigma[mask] ** 2
    if err.size and not err.max() <= tolerance:
        raise AssertionError(f"R applied to ones differs from obserrors**2 by {err.max():.3e} (relative) for "
                             f"'{obs_space.name}'")


def check_obs_error_inverse(obs_error: ObsError, rng: np.random.Generator, tolerance: float) -> float:
    """:math:`\\mathbf{R}\\mathbf{R}^{-1}\\delta y = \\delta y` and :math:`\\mathbf{R}^{-1}\\mathbf{R}\\delta y =
    \\delta y` over the used observations."""
    obs_space = obs_error.obs_space
    dy = random_obs_vector(obs_space, rng)
    worst = 0.0
    for name, out in (("R R^-1 dy", obs_error.multiply(obs_error.inverse_multiply(dy.copy()))),
                      ("R^-1 R dy", obs_error.inverse_multiply(obs_error.multiply(dy.copy())))):
        _check_obs_shape(out, obs_space, name)
        a, b = _masked(out), _masked(dy)
        err = float(np.linalg.norm(a - b) / np.linalg.norm(b)) if np.linalg.norm(b) else 0.0
        if not err <= tolerance:
            raise AssertionError(f"{name} differs from dy by {err:.3e} (relative) > tolerance {tolerance:.1e} "
                                 f"for '{obs_space.name}'")
        worst = max(worst, err)
    return worst


def check_obs_error_symmetric(obs_error: ObsError, rng: np.random.Generator, tolerance: float) -> float:
    """:math:`\\langle a, \\mathbf{R} b\\rangle = \\langle \\mathbf{R} a, b\\rangle`."""
    a = random_obs_vector(obs_error.obs_space, rng)
    b = random_obs_vector(obs_error.obs_space, rng)
    lhs = float(np.vdot(_masked(a), _masked(obs_error.multiply(b.copy()))))
    rhs = float(np.vdot(_masked(obs_error.multiply(a.copy())), _masked(b)))
    return _dot_test(lhs, rhs, tolerance, f"obs error R of '{obs_error.obs_space.name}' (symmetry)")


def check_obs_error_randomize(obs_error: ObsError, seed: int, nsamples: int) -> float:
    """``randomize`` is reproducible for a seed, differs between seeds, and has variance :math:`\\sigma^2`.

    Returns the sample mean of :math:`(\\epsilon/\\sigma)^2` over ``nsamples`` draws, which must be
    within six standard errors of 1.
    """
    obs_space = obs_error.obs_space
    mask = obs_space.qc_mask()
    name = obs_space.name
    a = obs_error.randomize(generator(seed, "obs error test", name))
    b = obs_error.randomize(generator(seed, "obs error test", name))
    _check_obs_shape(a, obs_space, "ObsError.randomize")
    if not np.array_equal(_masked(a), _masked(b)):
        raise AssertionError(f"ObsError.randomize of '{name}' is not reproducible with the same seeded generator")
    c = obs_error.randomize(generator(seed + 1, "obs error test", name))
    if mask.any() and np.array_equal(_masked(a), _masked(c)):
        raise AssertionError(f"ObsError.randomize of '{name}' gives the same draw for different seeds")
    if not mask.any():
        return 1.0
    sigma = obs_error.obserrors().values
    rng = generator(seed, "obs error test variance", name)
    z2 = np.array([(obs_error.randomize(rng).values[mask] / sigma[mask]) ** 2 for _ in range(nsamples)])
    mean = float(z2.mean())
    stderr = float(np.sqrt(2.0 / z2.size))
    if not abs(mean - 1.0) <= 6.0 * stderr:
        raise AssertionError(f"ObsError.randomize of '{name}': mean of (draw/sigma)^2 over {nsamples} draws is "
                             f"{mean:.4f}, expected 1 ± {6 * stderr:.4f}")
    return mean


# =======================================================================================
# Variable changes
# =======================================================================================
def _check_output(out: Any, variables_out: Sequence[str], geometry: Any, what: str,
                  batch: tuple[int, ...] = ()) -> None:
    if not isinstance(out, Mapping):
        raise AssertionError(f"{what} returned {type(out).__name__}, expected a FieldSet")
    missing = [v for v in variables_out if v not in out]
    if missing:
        raise AssertionError(f"{what} did not produce variable(s) {missing} (got {list(out)})")
    for v in variables_out:
        expected = tuple(batch) + tuple(geometry.field_shape(v))
        if np.shape(out[v]) != expected:
            raise AssertionError(f"{what}: '{v}' has shape {np.shape(out[v])}, expected {expected}")


def check_variable_change(change: VariableChange, fields: FieldSet, variables_out: Sequence[str]) -> FieldSet:
    """``change_var`` gives finite fields of every output variable, and leaves its input alone."""
    saved = fields.copy()
    out = change.change_var(fields, Variables(variables_out))
    _check_output(out, variables_out, change.geometry, "VariableChange.change_var")
    assert_fields_close(fields, saved, 0.0, "VariableChange.change_var modified its input")
    for v in variables_out:
        if not np.isfinite(out[v]).all():
            raise AssertionError(f"VariableChange.change_var: '{v}' is not finite")
    return out


def check_variable_change_inverse(change: VariableChange, fields: FieldSet, variables_out: Sequence[str],
                                  tolerance: float) -> float:
    """``change_var_inverse(change_var(x))`` gives ``x`` back."""
    out = change.change_var(fields, Variables(variables_out))
    back = change.change_var_inverse(out, Variables(list(fields)))
    _check_output(back, list(fields), change.geometry, "VariableChange.change_var_inverse")
    return assert_fields_close(FieldSet({v: back[v] for v in fields}), fields, tolerance,
                               "inverse variable change round trip")


def check_linear_variable_change_adjoint(change: LinearVariableChange, geometry: Geometry,
                                         variables_in: Sequence[str], variables_out: Sequence[str],
                                         rng: np.random.Generator, tolerance: float) -> float:
    """Dot-product test of a linear variable change (trajectory already set)."""
    dx = random_fields(geometry, variables_in, rng)
    kdx = change.multiply(dx.copy(), Variables(variables_out))
    _check_output(kdx, variables_out, geometry, "LinearVariableChange.multiply")
    dy = random_fields(geometry, variables_out, rng)
    ktdy = change.multiply_ad(dy.copy(), Variables(variables_in))
    _check_output(ktdy, variables_in, geometry, "LinearVariableChange.multiply_ad")
    lhs = _fields_dot(dy, {v: kdx[v] for v in variables_out}, "K dx")
    rhs = _fields_dot({v: ktdy[v] for v in variables_in}, dx, "K^T dy")
    return _dot_test(lhs, rhs, tolerance, "linear variable change")


def check_linear_variable_change_inverse(change: LinearVariableChange, geometry: Geometry,
                                         variables_in: Sequence[str], variables_out: Sequence[str],
                                         rng: np.random.Generator, tolerance: float) -> float:
    """:math:`\\mathbf{K}^{-1}\\mathbf{K}\\delta x = \\delta x` and the adjoint of the inverse passes its
    dot-product test."""
    dx = random_fields(geometry, variables_in, rng)
    kdx = change.multiply(dx.copy(), Variables(variables_out))
    back = change.multiply_inverse(kdx, Variables(variables_in))
    _check_output(back, variables_in, geometry, "LinearVariableChange.multiply_inverse")
    err = assert_fields_close(FieldSet({v: back[v] for v in variables_in}), dx, tolerance,
                              "K^-1 K dx vs dx (linear variable change)")
    dy = random_fields(geometry, variables_out, rng)
    dz = random_fields(geometry, variables_in, rng)
    kinv_dy = change.multiply_inverse(dy.copy(), Variables(variables_in))
    kinv_t_dz = change.multiply_inverse_ad(dz.copy(), Variables(variables_out))
    _dot_test(_fields_dot(dz, {v: kinv_dy[v] for v in variables_in}, "K^-1 dy"),
              _fields_dot({v: kinv_t_dz[v] for v in variables_out}, dy, "K^-T dz"),
              tolerance, "inverse linear variable change")
    return err


def check_linear_variable_change_tl(change: VariableChange, linear: LinearVariableChange, fields: FieldSet,
                                    variables_out: Sequence[str], rng: np.random.Generator,
                                    first_multiplier: float, iterations: int, tolerance: float) -> float:
    """The linear variable change linearised about ``fields`` vs finite differences of the nonlinear one."""
    linear.set_trajectory(fields)
    out = Variables(variables_out)
    geometry = linear.geometry
    dx = random_fields(geometry, list(fields), rng)
    base = change.change_var(fields, out)
    tl = linear.multiply(dx.copy(), out)

    def fd(alpha: float) -> np.ndarray:
        xp = FieldSet({v: fields[v] + alpha * dx[v] for v in fields}, copy=False)
        return _vector(change.change_var(xp, out), list(out)) - _vector(base, list(out))

    alphas = _alphas(first_multiplier, iterations)
    errors = finite_difference_errors(alphas, fd, _vector(tl, list(out)))
    return _assert_tl(errors, alphas, tolerance, "linear variable change")
