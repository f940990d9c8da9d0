"""Turn the reference run's observations into a given observation file with R x 2.

Reads ``out/reference/innovations.nc`` (the innovation archive of ``reference.yaml``) with
plain netCDF4 and writes ``out/given/obs.nc``: one IODA-like file of all windows with the
**same** observation times, locations and values, and ``ObsError`` = sqrt(2) x the error the
observations were made with, so that ``misspecified.yaml`` assumes R twice the truth.
"""

import importlib.util
import sys
from pathlib import Path

import netCDF4
import numpy as np

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("numpy_to_cycle", HERE.parent / "numpy_to_cycle.py")
numpy_to_cycle = importlib.util.module_from_spec(spec)
spec.loader.exec_module(numpy_to_cycle)


def main(archive: Path, out: Path, error_factor: float = np.sqrt(2.0)) -> None:
    with netCDF4.Dataset(archive) as nc:
        seconds = np.asarray(nc["MetaData/dateTime"][:], dtype=np.int64)
        x = np.asarray(nc["MetaData/x"][:], dtype=np.float64)
        y = np.asarray(nc["ObsValue/value"][:], dtype=np.float64)
        sigma = np.asarray(nc["ObsError/value"][:], dtype=np.float64)
    times = numpy_to_cycle.EPOCH + seconds.astype("timedelta64[s]")
    out.parent.mkdir(parents=True, exist_ok=True)
    numpy_to_cycle.write_obs_file(out, times, x, y, error_factor * sigma)


if __name__ == "__main__":
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
    main(base / "out" / "reference" / "innovations.nc", base / "out" / "given" / "obs.nc")
