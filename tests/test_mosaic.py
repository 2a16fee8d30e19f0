"""The per-period mosaic of the run: composites from two UTM zones on one geographic canvas.

Colours are checked against the quick-look ramp's stops, worked out by hand: EVI 0.2 is the stop
(223, 194, 125) and EVI 0.6 the stop (90, 174, 97).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform, transform_bounds

from evi_udf.job import write_mosaic
from evi_udf.raster_io import write_cog

NODATA = -32768


def constant_cog(tmp_path: Path, name: str, crs: str, west: float, north: float, evi: float) -> Path:
    """A 2196 px int16 composite at 50 m (109.8 km, an MGRS square) of one EVI value, with a hole."""
    size = 2196
    steps = np.full((size, size), round(evi * 10000), dtype=np.int16)
    steps[800:1400, 800:1400] = NODATA
    source = tmp_path / f"{name}_plain.tif"
    with rasterio.open(
        source,
        "w",
        driver="GTiff",
        tiled=True,
        blockxsize=512,
        blockysize=512,
        width=size,
        height=size,
        count=2,
        dtype="int16",
        crs=crs,
        transform=from_origin(west, north, 50.0, 50.0),
        nodata=NODATA,
    ) as dataset:
        dataset.write(steps, 1)
        dataset.write(np.where(steps == NODATA, NODATA, 1).astype(np.int16), 2)
        dataset.scales = (1e-4, 1.0)
    cog = tmp_path / f"{name}.tif"
    write_cog(source, cog, "zstd")
    with rasterio.open(cog) as written:
        assert written.overviews(1)  # the mosaic is meant to read these
    return cog


# The mosaic is a picture, not georeferenced by design; rasterio warns when it opens it.
@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_mosaic_places_each_composite_and_keeps_its_holes(tmp_path: Path) -> None:
    # 110 km squares either side of the zone 54/55 boundary (144 E) at about 37 S, apart.
    west_tile = constant_cog(tmp_path, "54", "EPSG:32754", 600000, 5900000, 0.2)
    east_tile = constant_cog(tmp_path, "55", "EPSG:32755", 200000, 5900000, 0.6)
    png = write_mosaic([west_tile, east_tile], tmp_path / "mosaic.png", 400)
    assert png is not None
    with rasterio.open(png) as image:
        rgba = image.read()
    assert rgba.shape[0] == 4 and rgba.shape[2] == 400
    opaque = rgba[3] == 255
    colours = {tuple(int(v) for v in rgba[:3, r, c]) for r, c in zip(*np.nonzero(opaque), strict=True)}
    assert colours == {(223, 194, 125), (90, 174, 97)}
    # Points of each composite, projected by hand onto the canvas: a hole centre is transparent, a
    # point away from the hole and from the overlap has that composite's colour.
    with rasterio.open(tmp_path / "mosaic.png") as image:
        height, width = image.height, image.width
    lons, lats = [], []
    for cog in (west_tile, east_tile):
        with rasterio.open(cog) as dataset:
            corners = transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds, densify_pts=21)
            lons += [corners[0], corners[2]]
            lats += [corners[1], corners[3]]
    step = (max(lons) - min(lons)) / width

    def canvas_pixel(cog: Path, col: int, row: int) -> tuple[int, int]:
        with rasterio.open(cog) as dataset:
            x, y = dataset.xy(row, col)
            (lon,), (lat,) = transform(dataset.crs, "EPSG:4326", [x], [y])
        return int((max(lats) - lat) / step), int((lon - min(lons)) / step)

    for cog, colour, clear_col in ((west_tile, 223, 300), (east_tile, 90, 1900)):
        r, c = canvas_pixel(cog, 1100, 1100)
        assert rgba[3, r, c] == 0, "the no-data square must stay transparent"
        r, c = canvas_pixel(cog, clear_col, 300)
        assert rgba[3, r, c] == 255 and rgba[0, r, c] == colour
    assert height == round((max(lats) - min(lats)) / step)
