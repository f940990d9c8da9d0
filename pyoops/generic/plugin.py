"""pyoops's built-in makers, registered through the ``generic`` entry point like any plugin."""

from __future__ import annotations

from pyoops.registry import Registry, hookimpl


@hookimpl
def pyoops_register(registry: Registry) -> None:
    from pyoops.apps.forecast import ForecastApplication
    from pyoops.apps.hofx import HofXApplication
    from pyoops.generic.identity_model import IdentityLinearModel, IdentityModel
    from pyoops.generic.obs_error import DiagonalObsError
    from pyoops.generic.obs_operators import IdentityObsOperator, LinearIdentityObsOperator
    from pyoops.generic.obs_operators import LinearWindSpeedObsOperator, WindSpeedObsOperator

    registry.obs_operator.register("Identity", IdentityObsOperator)
    registry.linear_obs_operator.register("Identity", LinearIdentityObsOperator)
    registry.obs_operator.register("WindSpeed", WindSpeedObsOperator)
    registry.linear_obs_operator.register("WindSpeed", LinearWindSpeedObsOperator)
    registry.obs_error.register("diagonal", DiagonalObsError)
    registry.model.register("Identity", IdentityModel)
    registry.linear_model.register("Identity", IdentityLinearModel)
    registry.application.register("forecast", ForecastApplication)
    registry.application.register("hofx", HofXApplication)

    from pyoops.apps.covariance import DiracApplication, ErrorCovarianceToolboxApplication, GenEnsPertBApplication
    from pyoops.apps.ens_mean_variance import EnsMeanVarianceApplication
    from pyoops.apps.obs_diagnostics import ObsDiagnosticsApplication

    registry.application.register("dirac", DiracApplication)
    registry.application.register("error-covariance-toolbox", ErrorCovarianceToolboxApplication)
    registry.application.register("gen-ens-pert-b", GenEnsPertBApplication)
    registry.application.register("ens-mean-variance", EnsMeanVarianceApplication)

    from pyoops.apps.variational import VariationalApplication

    registry.application.register("variational", VariationalApplication)

    from pyoops.saber.generic.basic import DuplicateVariables, IdentityBlock, StdDev, WriteFields

    registry.saber_block.register("ID", IdentityBlock)
    registry.saber_block.register("StdDev", StdDev)
    registry.saber_block.register("duplicate variables", DuplicateVariables)
    registry.saber_block.register("write fields", WriteFields)

    from pyoops.saber.generic.diffusion import Diffusion
    from pyoops.saber.generic.spectral import SpectralCorrelation

    registry.saber_block.register("spectral correlation", SpectralCorrelation)
    registry.saber_block.register("diffusion", Diffusion)

    from pyoops.saber.generic.ensemble import EnsembleBlock
    from pyoops.saber.generic.hybrid import HybridBlock
    from pyoops.saber.generic.interpolation import Interpolation

    registry.saber_block.register("interpolation", Interpolation)
    registry.saber_block.register("Ensemble", EnsembleBlock)
    registry.saber_block.register("Hybrid", HybridBlock)

    from pyoops.apps.ensemble_forecast import EnsembleForecastApplication
    from pyoops.apps.letkf import LocalEnsembleDAApplication

    registry.application.register("ensemble-forecast", EnsembleForecastApplication)
    registry.application.register("letkf", LocalEnsembleDAApplication)

    from pyoops.apps.cycle import CycleApplication
    from pyoops.apps.eda import EDAApplication
    from pyoops.saber.generic.explicit import ExplicitCovariance

    registry.application.register("cycle", CycleApplication)
    registry.application.register("eda", EDAApplication)
    registry.saber_block.register("explicit covariance", ExplicitCovariance)
    registry.application.register("obs-diagnostics", ObsDiagnosticsApplication)
    from pyoops.apps.tune import TuneApplication

    registry.application.register("tune", TuneApplication)

    from pyoops.apps.train_emulator import TrainEmulatorApplication  # imports PyTorch only when run

    registry.application.register("train-emulator", TrainEmulatorApplication)
