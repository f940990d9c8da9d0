"""Overview of the SABER tutorial: Dirac responses of the static, ensemble and hybrid
B against their analytic or numpy counterparts, and the randomized variance.

Reads the files run.sh wrote; writes output/saber_overview.png.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import netCDF4
import numpy as np

from pyoops.saber.generic.spectral import gaussian_correlation, matern_correlation

out = Path(__file__).resolve().parent / "output"
NMEM, K = 10, 2000  # members (make_ensemble.yaml), draws (toolbox.yaml)


def read(name: str) -> np.ndarray:
    with netCDF4.Dataset(out / name) as ds:
        return np.asarray(ds["x"][:])


with netCDF4.Dataset(out / "dirac_static.nc") as ds:
    x = np.asarray(ds["position"][:])
    ixdir = [int(i) for i in np.atleast_1d(ds.dirac_ixdir)]


def periodic(func, **kw) -> np.ndarray:
    """A correlation function centred on every Dirac point, with its periodic images."""
    total = np.zeros_like(x)
    for i in ixdir:
        for image in (-1.0, 0.0, 1.0):
            total += func(np.abs(x - x[i] + image), **kw)
    return total


fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)

# (a) Static B: spectral (Gaussian), diffusion (Matern nu = 3/2), dual resolution.
ax = axes[0, 0]
ax.plot(x, periodic(gaussian_correlation, length_scale=0.05) * 0.36, "-", color="0.75", lw=5,
        label="analytic 0.36 exp(-r²/2L²)")
ax.plot(x, periodic(matern_correlation, length_scale=0.05, nu=1.5) * 0.36, "-", color="navajowhite", lw=5,
        label="analytic 0.36 (1 + r/ℓ) exp(-r/ℓ)")
ax.plot(x, read("dirac_static.nc"), "o-", ms=3, color="C0", label="spectral correlation")
ax.plot(x, read("dirac_diffusion.nc"), "s-", ms=3, color="C1", label="diffusion")
ax.plot(x, read("dirac_dual_resolution.nc"), "^--", ms=3, color="C2", label="spectral on 20 points + interpolation")
ax.set_title("(a) static B (σ = 0.6, length scale 0.05)", fontsize=10)

# (b) Ensemble B: raw sample covariance, localization, localized covariance, truth.
ax = axes[0, 1]
members = np.array([read(f"ens.{k}.nc") for k in range(1, NMEM + 1)])
pert = (members - members.mean(axis=0)) / np.sqrt(NMEM - 1)
raw = (pert.T @ pert)[:, ixdir].sum(axis=1)  # E Eᵀ applied to the impulses, by numpy
truth = 0.64 * periodic(matern_correlation, length_scale=0.08, nu=1.5)
ax.plot(x, truth, "-", color="0.75", lw=5, label="covariance the members were drawn from")
ax.plot(x, raw, ":", color="C3", label=f"raw sample covariance ({NMEM} members)")
ax.plot(x, read("dirac_ensemble.localization.nc") * 0.5, "--", color="C4", label="localization (× 0.5)")
ax.plot(x, read("dirac_ensemble.nc"), "o-", ms=3, color="C0", label="localized ensemble B")
ax.set_title("(b) ensemble B, Gaussian localization 0.1", fontsize=10)

# (c) Hybrid: B = 0.5 B_s + 0.5 B_e (scalar weights: w^1/2 B_i w^1/2 = w B_i).
ax = axes[1, 0]
ax.plot(x, 0.5 * read("dirac_hybrid.component_0.nc"), "--", color="C1", label="0.5 × static (calibrated)")
ax.plot(x, 0.5 * read("dirac_hybrid.component_1.nc"), "--", color="C0", label="0.5 × localized ensemble")
ax.plot(x, read("dirac_hybrid.nc"), "o-", ms=3, color="k", label="hybrid B")
ax.set_title("(c) hybrid B = 0.5 B_s + 0.5 B_e", fontsize=10)

# (d) Randomization: sample variance of K draws against the exact diag(B).  The
# calibrated sigma is the ensemble spread and both correlations have a unit
# diagonal, so diag(B) = 0.5 sigma² + 0.5 var_ens = the ensemble variance.
ax = axes[1, 1]
exact = read("ens_variance.nc")
band = np.sqrt(2.0 / K) * exact
ax.fill_between(x, exact - 2 * band, exact + 2 * band, color="0.85", label="exact ± 2 √(2/K) (95 %)")
ax.plot(x, exact, "-", color="k", label="exact diag(B) = ensemble variance")
ax.plot(x, read("hybrid_variance.nc"), "o", ms=3, color="C3", label=f"sample variance, K = {K}")
ax.set_title("(d) hybrid B: variance of random draws", fontsize=10)

for ax in axes.flat:
    for i in ixdir:
        ax.axvline(x[i], color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("position")
    ax.legend(fontsize=7.5, loc="upper center")
    ax.set_xlim(0, 1)
for ax, factor in zip(axes.flat, (1.75, 1.35, 1.25, 1.1)):
    ax.set_ylim(top=ax.get_ylim()[1] * factor)
fig.suptitle("SABER on Lorenz-96: Dirac responses B·δ (impulses at the dotted lines)")
fig.savefig(out / "saber_overview.png", dpi=75, pil_kwargs={"optimize": True})
print(f"wrote {out / 'saber_overview.png'}")
