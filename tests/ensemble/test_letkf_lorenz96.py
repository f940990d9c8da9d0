"""Cycled Lorenz-96 twin experiments with the array-level LETKF/GETKF (no files).

REFERENCES section 3: F = 8, n = 40, dt = 0.05 (PT6H), every variable observed every
step with R = I; a localized ETKF with N = 20 reaches a time-mean analysis RMSE of
about 0.2.  These smoke tests run 200 cycles after a filter spin-up and require < 0.3
(the precise acceptance over >= 2000 cycles belongs to the cycling benchmark).
"""

from __future__ import annotations

import numpy as np
import pytest

from pyoops.assimilation.letkf import (
    ModulationParameters,
    ObsLocalization,
    getkf_analysis,
    letkf_analysis,
    local_obs_selection,
    modulate_obs,
    modulation_modes,
)
from pyoops.fields.fieldset import FieldSet
from pyoops.registry import get_registry

N_GRID = 40


def twin(analysis, nmembers=20, spinup=100, cycles=200, seed=0):
    """Time-mean analysis RMSE and spread of ``analysis(E, y) -> E`` cycled with the plugin's model."""
    registry = get_registry()
    plugin = registry.model_plugin("lorenz96")
    geometry = plugin.geometry({"resol": N_GRID})
    model = registry.model.maker_for({"name": "Lorenz96"}, "model")(
        registry.model.parameters({"name": "Lorenz96", "tstep": "PT6H"}, "model"), geometry)
    rng = np.random.default_rng(seed)
    truth = FieldSet({"x": 8.0 + rng.standard_normal(N_GRID)})
    for _ in range(500):
        truth = model.step(truth)
    ens = FieldSet({"x": truth["x"] + rng.standard_normal((nmembers, N_GRID))})
    rmse, spread = [], []
    for cycle in range(spinup + cycles):
        truth, ens = model.step(truth), model.step(ens)   # the whole ensemble in one call
        y = truth["x"] + rng.standard_normal(N_GRID)
        ens = FieldSet({"x": analysis(ens["x"], y)}, copy=False)
        if cycle >= spinup:
            rmse.append(np.sqrt(np.mean((ens["x"].mean(axis=0) - truth["x"]) ** 2)))
            spread.append(np.sqrt(np.mean(ens["x"].var(axis=0, ddof=1))))
    return float(np.mean(rmse)), float(np.mean(spread)), geometry


def test_letkf_lorenz96_twin():
    registry = get_registry()
    geometry = registry.model_plugin("lorenz96").geometry({"resol": N_GRID})
    from pyoops.interface.geometry import Locations

    selection = local_obs_selection(geometry, Locations({"x": np.arange(N_GRID) / N_GRID}),
                                    [ObsLocalization(localization_method="Gaspari-Cohn", lengthscale=0.3)])
    rmse, spread, _ = twin(lambda e, y: letkf_analysis(e, e, y, 1.0, selection, mult=1.04))
    assert rmse < 0.3, rmse
    assert 0.5 * rmse < spread < 2.0 * rmse  # the ensemble neither collapsed nor blew up


def test_getkf_lorenz96_twin():
    registry = get_registry()
    geometry = registry.model_plugin("lorenz96").geometry({"resol": N_GRID})
    from pyoops.interface.geometry import Locations

    selection = local_obs_selection(geometry, Locations({"x": np.arange(N_GRID) / N_GRID}), None)
    modes = modulation_modes(geometry, ModulationParameters(lengthscale=0.3, fraction_of_retained_variance=0.99))
    rmse, spread, _ = twin(lambda e, y: getkf_analysis(e, e, modulate_obs(e, modes), y, 1.0, selection, modes,
                                                       mult=1.04))
    assert rmse < 0.3, rmse


@pytest.mark.parametrize("rtps", [0.5])
def test_letkf_with_rtps_lorenz96_twin(rtps):
    registry = get_registry()
    geometry = registry.model_plugin("lorenz96").geometry({"resol": N_GRID})
    from pyoops.interface.geometry import Locations

    selection = local_obs_selection(geometry, Locations({"x": np.arange(N_GRID) / N_GRID}),
                                    [ObsLocalization(lengthscale=0.3)])
    rmse, _, _ = twin(lambda e, y: letkf_analysis(e, e, y, 1.0, selection, rtps=rtps), nmembers=10, cycles=150)
    assert rmse < 0.35, rmse
