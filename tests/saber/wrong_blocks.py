"""Deliberately wrong SABER blocks (a plugin module): the block tests must catch each with its figure.

* ``wrong adjoint`` (outer): U = 2 I, but Uᵀ y = 2 y + ε·roll(y), ε = ``error``.
* ``wrong inverse`` (outer): U = 2 I, U⁻¹ y = y / (2 (1 + ε)).
* ``wrong sqrt`` (central): C = I on the flattened fields, C^½ v = (1 + ε) v.
* ``wrong randomize`` (central): C = I, draws (1 + ε) ξ (the square root itself is right).
* ``lopsided`` (central): C x = x + ε·roll(x) (not symmetric).
* ``member mixer`` (central): C = I, but a batch's members leak into each other by ε.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from pyoops.fields.fieldset import FieldSet
from pyoops.registry import hookimpl
from pyoops.saber.blocks import SaberBlockParameters, SaberCentralBlock, SaberOuterBlock
from pyoops.saber.generic.basic import IdentityBlock


def _params(name: str) -> type[SaberBlockParameters]:
    return type(f"P_{name.replace(' ', '_')}", (SaberBlockParameters,), {
        "__annotations__": {"saber_block_name": Literal[name], "error": float}, "error": 1e-6})


class WrongAdjoint(SaberOuterBlock):
    Parameters = _params("wrong adjoint")

    def multiply(self, fields: FieldSet) -> FieldSet:
        return fields.map(lambda a: 2.0 * a)

    def multiply_ad(self, fields: FieldSet) -> FieldSet:
        return fields.map(lambda a: 2.0 * a + self.params.error * np.roll(a, 1, axis=-1))


class WrongInverse(SaberOuterBlock):
    Parameters = _params("wrong inverse")

    def multiply(self, fields: FieldSet) -> FieldSet:
        return fields.map(lambda a: 2.0 * a)

    multiply_ad = multiply

    def left_inverse_multiply(self, fields: FieldSet) -> FieldSet:
        return fields.map(lambda a: a / (2.0 * (1.0 + self.params.error)))


class _Identity(IdentityBlock):
    """ID with its own parameters."""

    def multiply(self, fields: FieldSet) -> FieldSet:
        return fields.copy()


class WrongSqrt(_Identity):
    Parameters = _params("wrong sqrt")

    def multiply_sqrt(self, ctl: np.ndarray) -> FieldSet:
        return super().multiply_sqrt((1.0 + self.params.error) * np.asarray(ctl))

    def multiply_sqrt_ad(self, fields: FieldSet) -> np.ndarray:
        return (1.0 + self.params.error) * super().multiply_sqrt_ad(fields)


class WrongRandomize(_Identity):
    Parameters = _params("wrong randomize")

    def randomize(self, rng: np.random.Generator, batch_shape: tuple[int, ...] = ()) -> FieldSet:
        return super().randomize(rng, batch_shape).map(lambda a: (1.0 + self.params.error) * a)


class Lopsided(SaberCentralBlock):
    Parameters = _params("lopsided")

    def multiply(self, fields: FieldSet) -> FieldSet:
        return fields.map(lambda a: a + self.params.error * np.roll(a, 1, axis=-1))


class MemberMixer(_Identity):
    Parameters = _params("member mixer")

    def multiply(self, fields: FieldSet) -> FieldSet:
        return fields.map(lambda a: a + self.params.error * a.sum(axis=0) if a.ndim > 1 else a.copy())


BLOCKS: dict[str, Any] = {"wrong adjoint": WrongAdjoint, "wrong inverse": WrongInverse, "wrong sqrt": WrongSqrt,
                          "wrong randomize": WrongRandomize, "lopsided": Lopsided, "member mixer": MemberMixer}


@hookimpl
def pyoops_register(registry: Any) -> None:
    for name, cls in BLOCKS.items():
        registry.saber_block.register(name, cls)
