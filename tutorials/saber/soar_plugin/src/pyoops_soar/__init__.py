"""pyoops-soar: a second-order auto-regressive (SOAR) correlation as a SABER central block."""

from pyoops_soar.block import SoarCorrelation, SoarParameters

__all__ = ["SoarCorrelation", "SoarParameters"]
