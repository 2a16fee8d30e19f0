"""Zones on a tile's grid (evi_udf.zones.pixels): ownership against the mgrs library, labels against
point-in-polygon tests on pixel centres (shapely), tiny and overlapping zones."""

from __future__ import annotations

import mgrs
import numpy as np
import pytest
import shapely
from pyproj import Transformer

from evi_udf.raster.grid import PixelGrid, block_windows, mgrs_square_origin
from evi_udf.zones.pixels import owned_area, tile_zones
from evi_udf.zones.statistics import NO_ZONE

# 54HYD and 55HBU: the sample's tiles on either side of the 54/55 UTM boundary (144 E); 55HCU inside
# zone 55; 32VLM in Norway's widened zone 32V; 50TMK, a square cut by the S/T latitude band edge.
TILES = ("55HBU", "54HYD", "55HCU", "32VLM", "50TMK")


def mgrs_names(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """The 100 km square (as a tile name) the mgrs library gives each point."""
    converter = mgrs.MGRS()
    return np.array([converter.toMGRS(y, x, MGRSPrecision=0)[:5] for x, y in zip(lon, lat, strict=True)])


@pytest.mark.parametrize("tile", TILES)
def test_owned_area_is_where_mgrs_names_the_tile(tile: str) -> None:
    epsg, west, south = mgrs_square_origin(tile)
    rng = np.random.default_rng(0)
    # Points over the 109.8 km tile and 10 km around it.
    x = west + rng.uniform(-10_000, 119_800, 2000)
    y = south + 100_000 - rng.uniform(-10_000, 119_800, 2000)
    lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
    inside = shapely.contains_xy(owned_area(tile), x, y)
    assert (inside == (mgrs_names(lon, lat) == tile)).all()
    assert 0 < inside.sum() < len(x)


def test_the_overlap_of_tiles_across_the_utm_boundary_is_owned_once() -> None:
    """Points seen by both 54HYD and 55HBU (their 109.8 km tiles overlap across 144 E): one owner."""
    footprints = {}
    for tile in ("54HYD", "55HBU"):
        epsg, west, south = mgrs_square_origin(tile)
        to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
        box = shapely.box(west, south + 100_000 - 109_800, west + 109_800, south + 100_000)
        footprints[tile] = (
            epsg,
            shapely.transform(
                box.segmentize(1000), lambda xy, t=to_lonlat: np.column_stack(t.transform(*xy.T))
            ),
        )
    both = shapely.intersection(footprints["54HYD"][1], footprints["55HBU"][1])
    assert both.area > 0
    rng = np.random.default_rng(1)
    w, s, e, n = both.bounds
    lon, lat = rng.uniform(w, e, 4000), rng.uniform(s, n, 4000)
    seen = shapely.contains_xy(both, lon, lat)
    lon, lat = lon[seen], lat[seen]
    claims = {}
    for tile, (epsg, _) in footprints.items():
        x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
        claims[tile] = shapely.contains_xy(owned_area(tile), x, y)
    owners = claims["54HYD"].astype(int) + claims["55HBU"]
    # The overlap also reaches squares south of both (their tiles' 9.8 km overhang): those points are
    # neither tile's. Every other point is claimed by exactly the tile mgrs names, never by both.
    named = mgrs_names(lon, lat)
    assert lon.size > 500 and owners.max() == 1
    assert (claims["54HYD"] == (named == "54HYD")).all() and (claims["55HBU"] == (named == "55HBU")).all()
    assert claims["54HYD"].sum() > 100 and claims["55HBU"].sum() > 100


def small_grid(tile: str, resolution: float = 600.0) -> PixelGrid:
    epsg, west, south = mgrs_square_origin(tile)
    size = round(109_800 / resolution)
    return PixelGrid(f"EPSG:{epsg}", resolution, west, south + 100_000, size, size)


def square_around(lon: float, lat: float, half: float) -> shapely.Polygon:
    return shapely.box(lon - half, lat - half, lon + half, lat + half)


def test_labels_follow_the_pixel_centre_rule_with_overlaps_tiny_zones_and_ownership() -> None:
    tile = "55HBU"
    grid = small_grid(tile)
    to_lonlat = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    # Pixel centres of the whole grid, in lon/lat, and who owns them (by the mgrs library).
    cols, rows = np.meshgrid(np.arange(grid.width), np.arange(grid.height))
    cx, cy = grid.left + (cols + 0.5) * grid.resolution, grid.top - (rows + 0.5) * grid.resolution
    lon, lat = to_lonlat.transform(cx, cy)
    owned = (mgrs_names(lon.ravel(), lat.ravel()) == tile).reshape(lon.shape)

    center_lon, center_lat = to_lonlat.transform(grid.left + 50_000, grid.top - 50_000)
    zones = [
        square_around(center_lon, center_lat, 0.05),  # 0: a farm
        square_around(center_lon + 0.02, center_lat, 0.02),  # 1: a field inside the farm (overlaps 0)
        shapely.Polygon(
            [
                (center_lon - 0.3, center_lat),
                (center_lon, center_lat + 0.2),
                (center_lon + 0.1, center_lat - 0.1),
            ]
        ),  # 2
        square_around(center_lon - 0.15, center_lat - 0.15, 0.0005),  # 3: tiny, smaller than a pixel
        # 4: across the west edge of the owned ground (144 E): only its eastern part is this tile's.
        square_around(144.0, center_lat, 0.05),
        square_around(100.0, 0.0, 0.1),  # 5: nowhere near the tile
    ]
    prepared = tile_zones(tile, grid, range(len(zones)), zones)
    assert list(prepared.numbers) == [0, 1, 2, 3, 4]  # zone 5 is not this tile's
    assert prepared.touched.tolist() == [False, False, False, True, False]
    assert prepared.layers >= 2  # 0 overlaps 1 and 2

    labelled = {zone: np.zeros(lon.shape, dtype=bool) for zone in range(len(zones))}
    for window in block_windows(grid.width, grid.height, 64):
        rows_, cols_ = window.toslices()
        for labels in prepared.labels(window):
            for zone in np.unique(labels[labels != NO_ZONE]):
                labelled[int(zone)][rows_, cols_] |= labels == zone

    for zone in (0, 1, 2, 4):
        expected = shapely.contains_xy(zones[zone], lon, lat) & owned
        assert (labelled[zone] == expected).all(), zone
        assert expected.any()
    # Zone 4 straddles the boundary: this tile has only the part east of 144 E.
    assert (lon[labelled[4]] >= 144.0).all()
    assert not labelled[5].any()
    # The tiny zone has no pixel centre: it gets the pixel it lies in.
    assert labelled[3].sum() >= 1
    x3, y3 = Transformer.from_crs(4326, grid.crs, always_xy=True).transform(
        center_lon - 0.15, center_lat - 0.15
    )
    row3, col3 = int((grid.top - y3) // grid.resolution), int((x3 - grid.left) // grid.resolution)
    assert labelled[3][row3, col3]

    # Each zone is final once the walk has passed its last row.
    last = {int(z): int(r) for z, r in zip(prepared.numbers, prepared.last_row, strict=True)}
    for zone, mask in labelled.items():
        if mask.any():
            assert np.flatnonzero(mask.any(axis=1)).max() <= last[zone]
    assert set(prepared.finished_by(grid.height).tolist()) == {0, 1, 2, 3, 4}
    assert prepared.finished_by(0).size == 0
