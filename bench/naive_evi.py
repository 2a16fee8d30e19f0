"""The obvious script a user writes for an EVI median composite of one tile (benchmark baseline).

Whole bands go into numpy with rasterio, EVI is computed per scene with the product's own BOA offset
and quantification (read from ``MTD_MSIL2A.xml``) and the SCL clear-sky mask, the scenes are reduced
with ``np.nanmedian``, the result is written as a GeoTIFF and then copied into a COG. No
``evi_udf`` import: this is what someone without the pipeline would write, with the same pixel
rules as the pipeline (DN 0 / 65535 are no data, SCL classes 4, 5, 6 are clear, ``|denominator| <
1e-3`` and EVI outside [-1, 1] are invalid) so that the comparison is like for like. It is a
charitable version: float32 arithmetic (half the memory and time of float64) and GDAL's default
multi-threaded JPEG2000 decoding of whole bands.

    python bench/naive_evi.py OUT_COG SAFE_DIR [SAFE_DIR ...]

prints one JSON line: ``seconds`` (after imports), per-step seconds and ``peak_rss_mib``.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling

sys.path.insert(0, str(Path(__file__).resolve().parent))

from s2_product import BAND_IDS, CLEAR_SCL, band_files, radiometry  # noqa: E402 - sibling module


def scene_evi(safe: Path) -> tuple[np.ndarray, dict]:
    """EVI of one product (float32, NaN where not a clear valid observation) and its raster profile."""
    files = band_files(safe)
    offsets, quantification = radiometry(safe)
    reflectance = {}
    for band in BAND_IDS:
        with rasterio.open(files[band]) as dataset:
            dn = dataset.read(1)
            profile = dataset.profile
        value = (dn.astype(np.float32) + np.float32(offsets[band])) / np.float32(quantification)
        value[(dn == 0) | (dn == 65535)] = np.nan
        reflectance[band] = value
    with rasterio.open(files["SCL"]) as dataset:
        # Nearest-neighbour upsampling of the 20 m classes onto the 10 m grid.
        scl = dataset.read(1, out_shape=(profile["height"], profile["width"]), resampling=Resampling.nearest)
    blue, red, nir = reflectance["B02"], reflectance["B04"], reflectance["B08"]
    denominator = nir + np.float32(6) * red - np.float32(7.5) * blue + np.float32(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        evi = np.float32(2.5) * (nir - red) / denominator
    bad = ~np.isin(scl, CLEAR_SCL) | (np.abs(denominator) < np.float32(1e-3)) | ~(np.abs(evi) <= 1)
    evi[bad] = np.nan
    return evi, profile


def composite(safes: list[Path], out_cog: Path) -> dict[str, float]:
    """Write the median EVI composite of ``safes`` as a COG; return the seconds of each step."""
    steps: dict[str, float] = {}
    started = time.perf_counter()
    layers = []
    for safe in safes:
        evi, profile = scene_evi(safe)
        layers.append(evi)
    steps["read_and_evi"] = time.perf_counter() - started
    mark = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "All-NaN slice": pixels no scene saw clear
        median = np.nanmedian(np.stack(layers), axis=0).astype(np.float32)
    del layers
    steps["nanmedian"] = time.perf_counter() - mark
    mark = time.perf_counter()
    tif = out_cog.with_suffix(".plain.tif")
    profile.update(driver="GTiff", dtype="float32", nodata=float("nan"), count=1, compress="deflate")
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    profile.pop("tiled", None)
    with rasterio.open(tif, "w", **profile) as dataset:
        dataset.write(median, 1)
    steps["write_geotiff"] = time.perf_counter() - mark
    mark = time.perf_counter()
    rasterio.shutil.copy(
        tif, out_cog, driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES", NUM_THREADS="ALL_CPUS"
    )
    tif.unlink()
    steps["cog"] = time.perf_counter() - mark
    return steps


def main(argv: list[str]) -> int:
    """Command-line entry point: ``OUT_COG SAFE_DIR...``; prints the timings as one JSON line."""
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_cog = Path(argv[0])
    out_cog.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    steps = composite([Path(p) for p in argv[1:]], out_cog)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "steps": steps, "peak_rss_mib": peak_kib / 1024}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
