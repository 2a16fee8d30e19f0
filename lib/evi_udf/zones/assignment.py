"""Which zones each tile may count: a join of zone extents with tile footprints, in Spark or pandas.

Both sides are boxes in longitude/latitude: a zone's bounding box and a tile's 109.8 km footprint
(:func:`evi_udf.outputs.mosaic.tile_bounds`). A pair whose boxes meet is a candidate; the exact test (the
zone's pixels on the ground the tile owns) is made by :func:`evi_udf.zones.pixels.tile_zones` when the
group runs, so a candidate that owns nothing of a zone costs only its clipping. The join is an
equi-join on the 1-degree cells each box covers (then the boxes are compared), so it scales as the
number of pairs, not zones x tiles. A box whose west is east of its east crosses the antimeridian.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from evi_udf.raster.grid import tile_bounds

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

BOX_COLUMNS = ("west", "south", "east", "north")


def _lon_spans(west: float, east: float) -> list[tuple[float, float]]:
    return [(west, east)] if west <= east else [(west, 180.0), (-180.0, east)]


def cells_of(west: float, south: float, east: float, north: float) -> list[int]:
    """The 1-degree cells (numbered ``(lat + 90) * 360 + (lon + 180)`` by their south-west corner)
    a box covers."""
    cells = []
    low_lat, high_lat = math.floor(max(south, -90.0)), min(math.floor(north), 89)
    for low, high in _lon_spans(west, east):
        first, last = math.floor(low), min(math.floor(high), 179)
        for lat in range(low_lat, high_lat + 1):
            cells.extend((lat + 90) * 360 + lon + 180 for lon in range(first, last + 1))
    return cells


def boxes_meet(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    """Whether the boxes of two aligned frames (``west``, ``south``, ``east``, ``north``) meet."""
    lat = (a["south"].to_numpy() <= b["north"].to_numpy()) & (b["south"].to_numpy() <= a["north"].to_numpy())
    meet = np.zeros(len(a), dtype=bool)
    a_spans = [_spans_arrays(a, first) for first in (True, False)]
    b_spans = [_spans_arrays(b, first) for first in (True, False)]
    for a_low, a_high, a_ok in a_spans:
        for b_low, b_high, b_ok in b_spans:
            meet |= a_ok & b_ok & (a_low <= b_high) & (b_low <= a_high)
    return lat & meet


def _spans_arrays(frame: pd.DataFrame, first: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A box's first or second longitude span (the second exists only across the antimeridian)."""
    west, east = frame["west"].to_numpy(), frame["east"].to_numpy()
    crosses = west > east
    if first:
        return west, np.where(crosses, 180.0, east), np.ones(len(frame), dtype=bool)
    return np.full(len(frame), -180.0), east, crosses


def tile_footprints(tiles: pd.Series) -> pd.DataFrame:
    """``mgrs_tile`` and its footprint box for each tile name."""
    boxes = [tile_bounds(tile) for tile in tiles]
    return pd.DataFrame(boxes, columns=list(BOX_COLUMNS)).assign(mgrs_tile=list(tiles))


def explode_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (row of ``frame``, cell its box covers), with a ``cell`` column."""
    cells = [cells_of(w, s, e, n) for w, s, e, n in frame[list(BOX_COLUMNS)].itertuples(index=False)]
    return frame.assign(cell=cells).explode("cell").astype({"cell": "int64"})


def assign_zones_pandas(zones: pd.DataFrame, tiles: pd.Series) -> pd.DataFrame:
    """(``mgrs_tile``, ``zone``) pairs whose boxes meet; ``zones`` has ``zone`` and the box columns.

    The reference for :func:`assign_zones`, and what the driver uses for small runs.
    """
    footprints = explode_cells(tile_footprints(pd.Series(sorted(set(tiles)))))
    exploded = explode_cells(zones[["zone", *BOX_COLUMNS]])
    pairs = exploded.merge(footprints, on="cell", suffixes=("_zone", "_tile"))
    zone_box = pairs[[f"{c}_zone" for c in BOX_COLUMNS]].set_axis(list(BOX_COLUMNS), axis=1)
    tile_box = pairs[[f"{c}_tile" for c in BOX_COLUMNS]].set_axis(list(BOX_COLUMNS), axis=1)
    met = pairs[boxes_meet(zone_box, tile_box)]
    return (
        met[["mgrs_tile", "zone"]].drop_duplicates().sort_values(["mgrs_tile", "zone"]).reset_index(drop=True)
    )


def assign_zones(zones: DataFrame, tiles: DataFrame) -> DataFrame:
    """:func:`assign_zones_pandas` in Spark: ``zones`` has ``zone`` and the box columns, ``tiles`` a
    ``mgrs_tile`` column; returns distinct (``mgrs_tile``, ``zone``) pairs."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    box_fields = [T.StructField(c, T.DoubleType()) for c in BOX_COLUMNS]
    footprint_schema = T.StructType([*box_fields, T.StructField("mgrs_tile", T.StringType())])
    footprints = (
        tiles.select("mgrs_tile")
        .distinct()
        .mapInPandas(
            lambda batches: (tile_footprints(batch["mgrs_tile"]) for batch in batches), footprint_schema
        )
    )
    cells = F.udf(cells_of, T.ArrayType(T.LongType()))

    def with_cells(frame: DataFrame) -> DataFrame:
        return frame.withColumn("cell", F.explode(cells(*[F.col(c) for c in BOX_COLUMNS])))

    z = with_cells(zones.select("zone", *BOX_COLUMNS)).alias("z")
    t = with_cells(footprints).alias("t")
    lat = (F.col("z.south") <= F.col("t.north")) & (F.col("t.south") <= F.col("z.north"))

    def spans(side: str) -> list[tuple[object, object, object]]:
        west, east = F.col(f"{side}.west"), F.col(f"{side}.east")
        crosses = west > east
        return [
            (west, F.when(crosses, F.lit(180.0)).otherwise(east), F.lit(True)),
            (F.lit(-180.0), east, crosses),
        ]

    lon = F.lit(False)
    for z_low, z_high, z_ok in spans("z"):
        for t_low, t_high, t_ok in spans("t"):
            lon = lon | (z_ok & t_ok & (z_low <= t_high) & (t_low <= z_high))
    joined = z.join(t, on=F.col("z.cell") == F.col("t.cell")).where(lat & lon)
    return joined.select(F.col("t.mgrs_tile").alias("mgrs_tile"), F.col("z.zone").alias("zone")).distinct()
