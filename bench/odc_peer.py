"""The pipeline a Python user would build instead: odc-stac + xarray + dask + odc-geo ``write_cog``.

For each L2A product folder a STAC item is made (assets B02, B04, B08, SCL with their projection
fields, read from the JPEG2000 headers, and the product's BOA offset and quantification from
``MTD_MSIL2A.xml``: what a STAC API such as Earth Search serves), then, timed:
``odc.stac.load`` of the four bands on the tile's 10 m grid (SCL upsampled by nearest neighbour) in
2048 px dask chunks, the same pixel rules as the pipeline (SCL 4, 5, 6 clear; DN 0 / 65535 no data;
``|denominator| < 1e-3`` and EVI outside [-1, 1] invalid), EVI per acquisition in float32, the median
over time (``skipna``: mean of the two middle values for an even count, as ours) and ``write_cog``,
computed by dask's threaded scheduler on ``--threads`` threads (the machine's cores). No
``evi_udf`` import.

    python bench/odc_peer.py OUT_COG SAFE_DIR [SAFE_DIR ...] [--threads 2] [--chunk 2048]

prints one JSON line: ``seconds`` (load to COG written), ``item_seconds`` (making the items, not
counted) and ``peak_rss_mib``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from s2_product import BAND_IDS, CLEAR_SCL, band_files, radiometry  # noqa: E402 - sibling module


def stac_item(safe: Path):  # noqa: ANN201 - pystac.Item, imported lazily
    """A STAC item of one L2A product folder, with per-asset grids and the product's radiometry."""
    import pystac
    import rasterio
    from pyproj import Transformer
    from pystac.extensions.projection import ProjectionExtension

    root = ET.parse(safe / "MTD_MSIL2A.xml").getroot()
    sensed = next(root.iter("PRODUCT_START_TIME")).text or ""
    offsets, quantification = radiometry(safe)
    files = band_files(safe)
    with rasterio.open(files["B02"]) as dataset:
        bounds, epsg = dataset.bounds, dataset.crs.to_epsg()
    # The footprint: the tile's box in degrees (odc-stac uses it to pick the items for the grid).
    to_degrees = Transformer.from_crs(epsg, 4326, always_xy=True)
    xs, ys = to_degrees.transform(
        [bounds.left, bounds.right, bounds.right, bounds.left],
        [bounds.bottom, bounds.bottom, bounds.top, bounds.top],
    )
    ring = [[x, y] for x, y in zip(xs, ys, strict=True)]
    item = pystac.Item(
        id=safe.name,
        geometry={"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
        bbox=[min(xs), min(ys), max(xs), max(ys)],
        datetime=dt.datetime.fromisoformat(sensed.replace("Z", "+00:00")),
        properties={"s2:quantification": quantification, "s2:offsets": offsets},
    )
    ProjectionExtension.add_to(item)
    for band, path in files.items():
        with rasterio.open(path) as dataset:
            href = str(path.resolve())
            asset = pystac.Asset(href=href, media_type=pystac.MediaType.JPEG2000, roles=["data"])
            item.add_asset(band, asset)
            projection = ProjectionExtension.ext(asset)
            projection.epsg = epsg
            projection.shape = [dataset.height, dataset.width]
            projection.transform = list(dataset.transform)[:6]
    return item


def composite(items: list, out_cog: Path, threads: int, chunk: int) -> None:
    """Load, mask, EVI, median and write the COG, computed by dask on ``threads`` threads."""
    import dask
    import numpy as np
    import odc.geo.xr  # noqa: F401 - registers the .odc accessor (write_cog)
    import odc.stac
    import xarray as xr
    from affine import Affine
    from odc.geo.geobox import GeoBox
    from pystac.extensions.projection import ProjectionExtension

    # The output grid is the 10 m band's own (as ours on the native grid).
    projection = ProjectionExtension.ext(items[0].assets["B02"])
    grid = GeoBox(tuple(projection.shape), Affine(*projection.transform), f"EPSG:{projection.epsg}")
    data = odc.stac.load(
        items,
        bands=[*BAND_IDS, "SCL"],
        geobox=grid,
        chunks={"x": chunk, "y": chunk},
        resampling="nearest",
        groupby="id",
    )
    per_time = []
    for index, item in enumerate(items):
        offsets = item.properties["s2:offsets"]
        quantification = np.float32(item.properties["s2:quantification"])
        scene = data.isel(time=index)
        reflectance = {}
        for band in BAND_IDS:
            dn = scene[band]
            value = (dn.astype("float32") + np.float32(offsets[band])) / quantification
            reflectance[band] = value.where((dn != 0) & (dn != 65535))
        blue, red, nir = reflectance["B02"], reflectance["B04"], reflectance["B08"]
        denominator = nir + np.float32(6) * red - np.float32(7.5) * blue + np.float32(1)
        evi = np.float32(2.5) * (nir - red) / denominator
        good = scene["SCL"].isin(list(CLEAR_SCL)) & (abs(denominator) >= np.float32(1e-3)) & (abs(evi) <= 1)
        per_time.append(evi.where(good))
    stack = xr.concat(per_time, dim="time")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "All-NaN slice": pixels no scene saw clear
        median = stack.median(dim="time", skipna=True).astype("float32")
        with dask.config.set(scheduler="threads", num_workers=threads):
            median.odc.write_cog(str(out_cog), overwrite=True, compress="deflate", nodata=float("nan"))


def main(argv: list[str]) -> int:
    """Command-line entry point; prints the timings as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_cog", type=Path)
    parser.add_argument("safes", type=Path, nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=2048)
    args = parser.parse_args(argv)
    args.out_cog.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    items = sorted((stac_item(safe) for safe in args.safes), key=lambda item: item.datetime)
    item_seconds = time.perf_counter() - started
    started = time.perf_counter()
    composite(items, args.out_cog, args.threads, args.chunk)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "item_seconds": item_seconds, "peak_rss_mib": peak_kib / 1024}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
