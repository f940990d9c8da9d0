"""pyoops's built-in makers, registered through the ``generic`` entry point like any plugin.

Every maker is registered by its import path (``"module:Class"``), so that registering
imports none of them: an application, block or operator module (and numpy, scipy,
pydantic models...) is imported the first time the maker is used.  The applications'
one-line summaries (the help of ``pyoops APP``) are given here for the same reason;
``tests/test_registry.py`` checks that they equal each class's ``summary``.
"""

from __future__ import annotations

from pyoops.registry import Registry, hookimpl

#: ``(factory attribute, name, import path)`` of every built-in maker but the applications.
MAKERS: tuple[tuple[str, str, str], ...] = (
    ("obs_operator", "Identity", "pyoops.generic.obs_operators:IdentityObsOperator"),
    ("linear_obs_operator", "Identity", "pyoops.generic.obs_operators:LinearIdentityObsOperator"),
    ("obs_operator", "WindSpeed", "pyoops.generic.obs_operators:WindSpeedObsOperator"),
    ("linear_obs_operator", "WindSpeed", "pyoops.generic.obs_operators:LinearWindSpeedObsOperator"),
    ("obs_error", "diagonal", "pyoops.generic.obs_error:DiagonalObsError"),
    ("model", "Identity", "pyoops.generic.identity_model:IdentityModel"),
    ("linear_model", "Identity", "pyoops.generic.identity_model:IdentityLinearModel"),
    ("saber_block", "ID", "pyoops.saber.generic.basic:IdentityBlock"),
    ("saber_block", "StdDev", "pyoops.saber.generic.basic:StdDev"),
    ("saber_block", "duplicate variables", "pyoops.saber.generic.basic:DuplicateVariables"),
    ("saber_block", "write fields", "pyoops.saber.generic.basic:WriteFields"),
    ("saber_block", "spectral correlation", "pyoops.saber.generic.spectral:SpectralCorrelation"),
    ("saber_block", "diffusion", "pyoops.saber.generic.diffusion:Diffusion"),
    ("saber_block", "interpolation", "pyoops.saber.generic.interpolation:Interpolation"),
    ("saber_block", "Ensemble", "pyoops.saber.generic.ensemble:EnsembleBlock"),
    ("saber_block", "Hybrid", "pyoops.saber.generic.hybrid:HybridBlock"),
    ("saber_block", "explicit covariance", "pyoops.saber.generic.explicit:ExplicitCovariance"),
)

#: ``(name, import path, summary)`` of every built-in application.
APPLICATIONS: tuple[tuple[str, str, str], ...] = (
    ("forecast", "pyoops.apps.forecast:ForecastApplication",
     "run the model from an initial condition and write states"),
    ("hofx", "pyoops.apps.hofx:HofXApplication",
     "compute H(x) in 3-D or 4-D; with make obs, write synthetic observations"),
    ("dirac", "pyoops.apps.covariance:DiracApplication",
     "apply B (and its components and localizations) to Dirac impulses; write netCDF and PNG"),
    ("error-covariance-toolbox", "pyoops.apps.covariance:ErrorCovarianceToolboxApplication",
     "block tests, variance of K random draws from B, Dirac responses"),
    ("gen-ens-pert-b", "pyoops.apps.covariance:GenEnsPertBApplication",
     "draw an ensemble of perturbations from B (optionally added to the background)"),
    ("ens-mean-variance", "pyoops.apps.ens_mean_variance:EnsMeanVarianceApplication",
     "ensemble mean, variance and standard deviation"),
    ("variational", "pyoops.apps.variational:VariationalApplication",
     "incremental 3D-Var, 3D/4D-FGAT, 4D-Var, 4D-Ens-Var (hybrid through the SABER Hybrid block)"),
    ("ensemble-forecast", "pyoops.apps.ensemble_forecast:EnsembleForecastApplication",
     "advance every member of an ensemble in batched forecasts, serially or in parallel"),
    ("letkf", "pyoops.apps.letkf:LocalEnsembleDAApplication",
     "local ensemble DA: LETKF or GETKF analysis of an ensemble (3-D or 4-D H(x))"),
    ("cycle", "pyoops.apps.cycle:CycleApplication",
     "cycled twin experiment: truth, synthetic obs, N cycles of 3D/4D-Var, EnVar, hybrid, EDA or LETKF"),
    ("eda", "pyoops.apps.eda:EDAApplication",
     "ensemble of data assimilations: perturbed-observation variational analyses of every member"),
    ("obs-diagnostics", "pyoops.apps.obs_diagnostics:ObsDiagnosticsApplication",
     "observation-space statistics, Desroziers estimates and rank histograms from innovation archives"),
    ("tune", "pyoops.apps.tune:TuneApplication",
     "estimate hybrid weight, inflation, localization and amplitudes of B and R from innovation archives"),
    ("train-emulator", "pyoops.apps.train_emulator:TrainEmulatorApplication",
     "train an emulator of the N-member EDA standard deviation from M members (needs pyoops[ml])"),
    ("train-member-generator", "pyoops.apps.train_member_generator:TrainMemberGeneratorApplication",
     "train the generator of emulated EDA members from archived (background, analysis) pairs (needs pyoops[ml])"),
)


@hookimpl
def pyoops_register(registry: Registry) -> None:
    """Register pyoops's generic applications, SABER blocks, operators and models (by import path)."""
    for factory, name, target in MAKERS:
        getattr(registry, factory).register(name, target)
    for name, target, summary in APPLICATIONS:
        registry.application.register(name, target, summary=summary)
