r"""Cycled 3D-Var with one gain while B, H and R do not change.

A deterministic 3D-Var cycle with the ``DirectSolve`` minimizer, a background error that does not
depend on the backgrounds (no ensemble) and an observation operator linear in the state
(:attr:`~pyoops.interface.observations.ObsOperator.linear`) has, every cycle whose observation
network (locations, errors, used observations) is that of the cycle before, the same analysis map

.. math::

    \mathbf{x}_a = \mathbf{x}_b + \mathbf{K}\,\bigl(\mathbf{y} - \mathcal{H}(\mathbf{x}_b)\bigr),
    \qquad \mathbf{K} = \mathbf{B}\mathbf{H}^\mathrm{T}(\mathbf{H}\mathbf{B}\mathbf{H}^\mathrm{T} + \mathbf{R})^{-1},

which is what ``DirectSolve`` computes from the cost function, in the same factorisation
(:func:`~pyoops.assimilation.driver.analysis_gain`): further outer loops add nothing (their
innovation is that of the first loop's analysis, whose exact increment is zero).  The gain is
computed by the full machinery — cost function, linearisation, explicit B — at the first cycle
and again whenever the network changes; every other cycle costs one :math:`\mathcal{H}(\mathbf{x}_b)`
and one matrix-vector product.  The analyses equal those of the cost-function path to rounding
(the same products in another order; ``tests/ensemble/test_static_gain.py`` compares them).

DAPPER's ``Var3D`` does the same with its gain formed once; OOPS, which runs one executable per
cycle, has no counterpart.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pyoops.fields.fieldset import FieldSet

logger = logging.getLogger(__name__)

__all__ = ["StaticGainCycle", "static_gain_obstacle"]


def static_gain_obstacle(experiment: Any) -> str | None:
    """Why the cycle of ``experiment`` cannot reuse a gain (None: it can, network permitting)."""
    if experiment.method != "3D-Var" or experiment.cost_type != "3D-Var":
        return "not a 3D-Var cycle"
    if experiment.nmembers or not experiment.control_member:
        return "members are analysed"
    section = experiment.params.variational
    if dict(section.get("minimizer") or {}).get("algorithm") != "DirectSolve":
        return "the minimizer is not DirectSolve"
    for it in section.get("iterations") or []:
        if it.get("geometry") is not None or it.get("online diagnostics") is not None:
            return "an outer loop has its own geometry or online diagnostics"
    if experiment.archive:
        return "the innovation archive records every outer loop"
    return None


class StaticGainCycle:
    """The gain of a cycled deterministic 3D-Var, kept while the observation network does not change.

    Parameters
    ----------
    experiment:
        The :class:`~pyoops.ensemble.cycling.CycleExperiment` (its cost configuration, model plugin,
        geometry and variables); :func:`static_gain_obstacle` must have returned None for it.
    """

    def __init__(self, experiment: Any):
        self.experiment = experiment
        self._key: tuple[Any, ...] | None = None
        self._gain: Any = None
        #: How many times the gain was computed (1 for a fixed network).
        self.computed = 0

    @staticmethod
    def _network_key(twin: Any, mask: np.ndarray) -> tuple[Any, ...]:
        """Everything of the cycle's observations the gain depends on, as bytes: the location
        coordinates, the observation errors and which observations are used."""
        return twin.locations.key(), np.ascontiguousarray(twin.error).tobytes(), mask.tobytes()

    def analyse(self, k: int, twin: Any, background: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """The analysis of cycle ``k`` from ``background`` (one state's fields), or None when the
        cycle's observation operator is not linear in the state (the caller then minimises)."""
        ob = twin.built_observer
        if not getattr(type(ob.obs_operator), "linear", False) or ob.params.linear_obs_operator is not None:
            return None
        mask = ob.obs_space.qc_mask() & np.isfinite(twin.values)
        key = self._network_key(twin, mask)
        if key != self._key:
            for var, row in zip(ob.obs_space.simulated_variables, np.asarray(twin.values)):
                ob.obs_space.put_db("ObsValue", var, row)
            self._gain = self._compute(k, twin, background)
            self._key = key
            self.computed += 1
        hx = ob.hofx(FieldSet(background, copy=False)).values
        innovation = np.where(mask, twin.values - hx, 0.0).ravel()
        increment = self._gain.increment(innovation)
        return {v: background[v] + increment[v] if v in increment else np.array(background[v]) for v in background}

    def _compute(self, k: int, twin: Any, background: dict[str, np.ndarray]) -> Any:
        from pyoops.assimilation.costfunction import CostFunction, CostFunctionParameters
        from pyoops.assimilation.driver import analysis_gain
        from pyoops.config.parameters import validate
        from pyoops.generic.observers import Observers

        exp = self.experiment
        cfg = exp.cost_config(k, twin.observer)
        cost = CostFunction(validate(CostFunctionParameters, cfg, "cost function"), exp.registry, exp.plugin)
        state = exp.plugin.state(cost.geometry, FieldSet(background), exp.analysis_time(k))
        gain = analysis_gain(cost, [state], Observers([twin.built_observer]))
        logger.info("cycle %d: 3D-Var gain (%d x %d) computed for this observation network, reused while it "
                    "does not change", k, *gain.matrix.shape)
        return gain
