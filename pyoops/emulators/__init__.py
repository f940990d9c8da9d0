r"""Emulators of EDA statistics: the :math:`N`-member standard deviation from :math:`M` members.

The EDA's background-error standard deviation at a point is the sample standard
deviation :math:`\hat\sigma_N` of its :math:`N` background members.  An emulator maps
what :math:`M < N` members give — :math:`\log\hat\sigma_M` of every variable and level at
every point, optionally their mean and its gradient — to a predictive distribution of
:math:`\log\hat\sigma_N` at every point, here a Gaussian :math:`\mathcal N(\mu, s^2)` on
:math:`\log\hat\sigma_N` (a log-normal on :math:`\hat\sigma_N`, median :math:`e^\mu`), from
a small convolutional network that respects the grid (:mod:`.network`).

Modules (only :mod:`.network`, :mod:`.training` and :mod:`.model` import PyTorch, lazily,
so pyoops imports and runs without the optional extra ``pyoops[ml]``):

* :mod:`.features` — the grid layout of a geometry and the predictors (numpy);
* :mod:`.inference` — the trained network's forward pass in numpy (what predictions use);
* :mod:`.bound` — :math:`c_4(n)`, the oracle floor, and the Monte Carlo estimate of the
  information-theoretic bound :math:`\mathbb E[\hat\sigma_N \mid \mathcal F_M]` (numpy);
* :mod:`.scores` — RMSE, Gaussian and ensemble CRPS, PIT and coverage (numpy);
* :mod:`.network` — the grid-respecting convolutional network (PyTorch);
* :mod:`.model` — the saved emulator (weights + YAML) and its inference (PyTorch);
* :mod:`.training` — data from member archives, the training loop (PyTorch).
"""

from __future__ import annotations

from pyoops.util.errors import PyoopsError

__all__ = ["MLExtraMissing", "require_torch"]

INSTALL_HINT = "pip install 'pyoops[ml]'"


class MLExtraMissing(PyoopsError):
    """PyTorch (the optional extra ``pyoops[ml]``) is not installed."""


def require_torch(what: str) -> object:
    """``import torch``, or one :class:`MLExtraMissing` line naming ``what`` needs it and how to install it."""
    try:
        import torch
    except ImportError:
        raise MLExtraMissing(f"{what} needs PyTorch, which is not installed: {INSTALL_HINT}") from None
    return torch
