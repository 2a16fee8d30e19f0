"""The per-period mosaic of the run: composites from two UTM zones on one geographic canvas.

Colours are checked against the quick-look ramp's stops, worked out by hand: EVI 0.2 is the stop
(223, 194, 125) and EVI 0.6 the stop (90, 174, 97).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform, transform_bounds

from evi_udf.outputs.mosaic import MosaicPiece, mosaic_canvases, paint, render
from evi_udf.raster.io import write_cog
from evi_udf.run.process import evi_to_rgba
from evi_udf.task.group import GroupKey

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


def test_mosaic_places_each_composite_and_keeps_its_holes(tmp_path: Path) -> None:
    # 54HXD and 55HBU: 110 km squares either side of the zone 54/55 boundary (144 E) at about 37 S.
    west_tile = constant_cog(tmp_path, "54", "EPSG:32754", 600000, 5900000, 0.2)
    east_tile = constant_cog(tmp_path, "55", "EPSG:32755", 200000, 5900000, 0.6)
    keys = [
        GroupKey(tile, "2022-01", dt.date(2022, 1, 1), dt.date(2022, 1, 31)) for tile in ("54HXD", "55HBU")
    ]
    (canvas,) = mosaic_canvases(keys, 400).values()
    assert canvas.width == 400
    pieces = [paint(cog, canvas) for cog in (west_tile, east_tile)]
    # Each task sends only its tile's part of the canvas, as bytes.
    for piece in pieces:
        assert piece is not None and piece.values.size < canvas.width * canvas.height
        height, width = piece.values.shape
        again = MosaicPiece.from_bytes(piece.row, piece.col, height, width, piece.to_bytes())
        np.testing.assert_array_equal(again.values, piece.values)
    rgba = evi_to_rgba(render(canvas, pieces))
    assert rgba.shape == (4, canvas.height, canvas.width)
    opaque = rgba[3] == 255
    colours = {tuple(int(v) for v in rgba[:3, r, c]) for r, c in zip(*np.nonzero(opaque), strict=True)}
    assert colours == {(223, 194, 125), (90, 174, 97)}

    # Points of each composite, projected by hand onto the canvas: a hole centre is transparent, a
    # point away from the hole and from the overlap has that composite's colour.
    def canvas_pixel(cog: Path, col: int, row: int) -> tuple[int, int]:
        with rasterio.open(cog) as dataset:
            x, y = dataset.xy(row, col)
            (lon,), (lat,) = transform(dataset.crs, "EPSG:4326", [x], [y])
        return int((canvas.north - lat) / canvas.step), int((lon - canvas.west) / canvas.step)

    for cog, colour, clear_col in ((west_tile, 223, 300), (east_tile, 90, 1900)):
        r, c = canvas_pixel(cog, 1100, 1100)
        assert rgba[3, r, c] == 0, "the no-data square must stay transparent"
        r, c = canvas_pixel(cog, clear_col, 300)
        assert rgba[3, r, c] == 255 and rgba[0, r, c] == colour
    # The canvas spans the two tiles: their corners, projected by hand, fall inside it and touch its edges.
    lons, lats = [], []
    for cog in (west_tile, east_tile):
        with rasterio.open(cog) as dataset:
            corners = transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds, densify_pts=21)
            lons += [corners[0], corners[2]]
            lats += [corners[1], corners[3]]
    assert canvas.west == pytest.approx(min(lons), abs=1e-6) and canvas.north == pytest.approx(
        max(lats), abs=1e-6
    )
    assert canvas.west + canvas.width * canvas.step == pytest.approx(max(lons), abs=canvas.step)


def test_a_tall_run_keeps_the_canvas_within_four_times_its_width() -> None:
    keys = [
        GroupKey(tile, "2022", dt.date(2022, 1, 1), dt.date(2022, 12, 31))
        for tile in ("55HBU", "55KBU", "55WBU")
    ]
    (canvas,) = mosaic_canvases(keys, 100).values()
    assert canvas.height <= 4 * 100 + 1 and canvas.width <= 100
    assert mosaic_canvases(keys, 0) == {}
