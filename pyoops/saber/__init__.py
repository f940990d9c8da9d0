"""SABER: background-error covariances assembled from chains of blocks."""

from pyoops.saber.blocks import BlockContext, SaberBlockParameters, SaberCentralBlock, SaberOuterBlock
from pyoops.saber.chain import ErrorCovariance, SaberBlockChain, SaberCovarianceParameters

__all__ = [
    "BlockContext",
    "ErrorCovariance",
    "SaberBlockChain",
    "SaberBlockParameters",
    "SaberCentralBlock",
    "SaberCovarianceParameters",
    "SaberOuterBlock",
]
