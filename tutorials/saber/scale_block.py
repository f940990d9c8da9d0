"""A SABER outer block written outside pyoops, and a Dirac run that tests it.

``scale`` multiplies the fields of its active variables by one factor per variable:
U = diag(factor), so Uᵀ = U and U⁻¹ = diag(1/factor).  A real plugin registers it
through an entry point (see docs/saber.rst, "Writing a block"); this script
registers it in-process, then runs ``dirac`` with the block's adjoint and inverse
tests switched on.  Run ``python scale_block.py`` from tutorials/saber.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from pyoops.fields.fieldset import FieldSet
from pyoops.registry import hookimpl
from pyoops.saber import SaberBlockParameters, SaberOuterBlock


class ScaleParameters(SaberBlockParameters):
    """YAML keys of ``scale`` (the common keys come from SaberBlockParameters)."""

    saber_block_name: Literal["scale"]
    factor: float | dict[str, float] = Field(
        description="Factor for every active variable, or {variable: factor}; nonzero.")


class Scale(SaberOuterBlock):
    """``scale``: U = diag(factor) on the active variables."""

    Parameters = ScaleParameters

    def __init__(self, params: ScaleParameters, context: Any):
        super().__init__(params, context)  # sets params, context, geometry, variables; runs read/calibration
        f = params.factor
        self.factor = {v: float(f[v] if isinstance(f, dict) else f) for v in self.variables}

    def multiply(self, fields: FieldSet) -> FieldSet:  # inner -> outer
        return FieldSet({v: self.factor[v] * a for v, a in fields.items()}, copy=False)

    def multiply_ad(self, fields: FieldSet) -> FieldSet:  # outer -> inner
        return self.multiply(fields)

    def left_inverse_multiply(self, fields: FieldSet) -> FieldSet:  # outer -> inner
        return FieldSet({v: a / self.factor[v] for v, a in fields.items()}, copy=False)


@hookimpl
def pyoops_register(registry: Any) -> None:
    registry.saber_block.register("scale", Scale)


if __name__ == "__main__":
    import sys

    import pyoops
    from pyoops.registry import get_registry

    get_registry().register_plugin(sys.modules[__name__], name="scale-block")
    summary = pyoops.run("dirac", {
        "model plugin": "lorenz96",
        "geometry": {"resol": 40},
        "background": {"date": "2010-01-01T00:00:00Z", "analytic init": {"method": "sinusoid"}},
        "background error": {
            "covariance model": "SABER",
            "saber central block": {"saber block name": "spectral correlation", "length scale": 0.05},
            "saber outer blocks": [{"saber block name": "scale", "factor": 0.6,
                                    "adjoint test": True, "inverse test": True}],
        },
        "dirac": {"ixdir": [10]},
        "output dirac": {"filename": "output/dirac_scale_block.nc"},
    })
    print(f"scale block: adjoint and inverse tests passed; B max = {summary['B max']:.12g} (0.6^2 = 0.36)")
