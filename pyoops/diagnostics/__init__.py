"""Observation-space diagnostics: innovation archives and the statistics computed from them.

* :mod:`pyoops.diagnostics.archive` — the innovation archive (writer, reader, netCDF layout);
* :mod:`pyoops.diagnostics.statistics` — departure statistics, χ² checks, Desroziers
  estimates, spread–skill and rank histograms, with confidence intervals for serially
  correlated cycles.

This package knows no model and no application: it works on observation-space arrays.
"""

from pyoops.diagnostics.archive import InnovationArchiveWriter, InnovationData, read_archive

__all__ = ["InnovationArchiveWriter", "InnovationData", "read_archive"]
