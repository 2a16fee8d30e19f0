"""Zones to tiles: the cell join (pandas and Spark) against every pair tested with shapely boxes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely

from evi_udf.raster.grid import tile_bounds
from evi_udf.zones.assignment import assign_zones, assign_zones_pandas, cells_of

# Both sides of the antimeridian (01KAA's footprint crosses it), the 54/55 boundary, Norway, 0/0.
TILES = ["60KZC", "60KYF", "01KAT", "01KAA", "55HBU", "54HYD", "32VLM", "31NAA"]


def shapes(west: float, south: float, east: float, north: float) -> shapely.Geometry:
    """A lon/lat box as shapely geometry, split in two when it crosses the antimeridian."""
    if west <= east:
        return shapely.box(west, south, east, north)
    return shapely.union(shapely.box(west, south, 180.0, north), shapely.box(-180.0, south, east, north))


def zones_frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    boxes = []
    for tile in TILES:  # around every tile, from fields to districts
        west, south, east, north = tile_bounds(tile)
        for _ in range(60):
            lon = rng.uniform(west - 1.5, west + 2.5)
            lat = rng.uniform(south - 1.5, north + 1.5)
            size = rng.choice([0.001, 0.05, 0.8])
            w, e = lon, lon + size
            boxes.append(((w + 180) % 360 - 180, lat, (e + 180) % 360 - 180, lat + size))
    boxes.append((179.5, -18.0, -179.5, -17.5))  # crosses the antimeridian
    boxes.append((10.0, 10.0, 10.5, 10.5))  # far from every tile
    frame = pd.DataFrame(boxes, columns=["west", "south", "east", "north"])
    return frame.assign(zone=np.arange(len(frame)))


def expected_pairs(zones: pd.DataFrame) -> set[tuple[str, int]]:
    pairs = set()
    for tile in TILES:
        footprint = shapes(*tile_bounds(tile))
        for zone, box in zip(
            zones["zone"], zones[["west", "south", "east", "north"]].itertuples(index=False), strict=True
        ):
            if shapely.intersects(footprint, shapes(*box)):
                pairs.add((tile, int(zone)))
    return pairs


def test_cells_cover_a_box_and_wrap_at_the_antimeridian() -> None:
    # 179.5 E to 179.5 W at 17.x S: cells 179 E and -180 (their south-west corners), row -18.
    assert cells_of(179.5, -17.9, -179.5, -17.2) == [(-18 + 90) * 360 + 359, (-18 + 90) * 360 + 0]
    assert len(cells_of(0.2, 0.2, 2.7, 1.1)) == 2 * 3


def test_pandas_assignment_equals_every_pair_checked(spark) -> None:
    zones = zones_frame()
    expected = expected_pairs(zones)
    got = assign_zones_pandas(zones, pd.Series(TILES))
    assert set(zip(got["mgrs_tile"], got["zone"], strict=True)) == expected
    assert ("01KAA", len(zones) - 2) in expected and ("60KYF", len(zones) - 2) in expected
    assert not any(zone == len(zones) - 1 for _, zone in expected)

    in_spark = assign_zones(
        spark.createDataFrame(zones), spark.createDataFrame(pd.DataFrame({"mgrs_tile": TILES}))
    )
    rows = {(r.mgrs_tile, int(r.zone)) for r in in_spark.collect()}
    assert rows == expected


pytestmark = pytest.mark.integration
