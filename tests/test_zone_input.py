"""Reading the zones file: every supported format, per-zone rejections with reasons, file-level errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio.raw
import pytest
import shapely
from pyproj import Transformer

from evi_udf.config import ConfigError, ZonesConfig
from evi_udf.errors import ZonesError
from evi_udf.zones.input import read_zones

FIELD = shapely.box(144.10, -35.20, 144.12, -35.18)
FARM = shapely.MultiPolygon(
    [shapely.box(144.2, -35.3, 144.25, -35.25), shapely.box(144.3, -35.3, 144.31, -35.29)]
)
BOWTIE = shapely.Polygon([(144.0, -35.0), (144.1, -35.1), (144.1, -35.0), (144.0, -35.1)])
POINT = shapely.Point(144.5, -35.5)

# (id, geometry, expected rejection reason or None)
ROWS = [
    ("field-1", FIELD, None),
    ("farm-2", FARM, None),
    ("bowtie", BOWTIE, "invalid geometry: Self-intersection[144.05 -35.05]"),
    ("well", POINT, "a Point, not a Polygon or MultiPolygon"),
    ("twice", FIELD, "zone id 'twice' appears 2 times"),
    ("twice", FARM, "zone id 'twice' appears 2 times"),
    ("", FIELD, "no zone id"),
    ("empty", shapely.Polygon(), "empty geometry"),
]


def write_with_gdal(path: Path, driver: str, crs: str | None = "EPSG:4326", rows=ROWS) -> None:
    pyogrio.raw.write(
        path,
        np.array([shapely.to_wkb(g) for _, g, _ in rows], dtype=object),
        [np.array([i for i, _, _ in rows], dtype=object)],
        fields=["zone_id"],
        crs=crs,
        geometry_type="Unknown",
        driver=driver,
        # FlatGeobuf's spatial index cannot hold an empty geometry.
        **({"layer_options": {"SPATIAL_INDEX": "NO"}} if driver == "FlatGeobuf" else {}),
    )


def write_geoparquet(path: Path, crs: object = "absent", rows=ROWS, id_column: str = "zone_id") -> None:
    column: dict[str, object] = {"encoding": "WKB", "geometry_types": []}
    if crs != "absent":
        column["crs"] = crs
    table = pa.table(
        {
            id_column: [i for i, _, _ in rows],
            "geometry": [shapely.to_wkb(g) for _, g, _ in rows],
        }
    )
    geo = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}
    pq.write_table(table.replace_schema_metadata({b"geo": json.dumps(geo).encode()}), path)


def check_rows(zones, rows=ROWS) -> None:
    assert list(zones.ids) == [i for i, _, reason in rows if reason is None]
    assert [(r.position, r.reason) for r in zones.rejected] == [
        (position, reason) for position, (_, _, reason) in enumerate(rows) if reason is not None
    ]
    assert zones.rejected[-2].zone_id is None  # the blank id


@pytest.mark.parametrize(
    ("name", "driver"), [("zones.geojson", "GeoJSON"), ("zones.gpkg", "GPKG"), ("zones.fgb", "FlatGeobuf")]
)
def test_gdal_formats_read_with_rejections(tmp_path: Path, name: str, driver: str) -> None:
    path = tmp_path / name
    write_with_gdal(path, driver)
    zones = read_zones(ZonesConfig(uri=str(path)))
    rows = ROWS
    if driver == "FlatGeobuf":  # FlatGeobuf stores an empty geometry as none at all
        rows = [*ROWS[:-1], ("empty", None, "no geometry (missing or unreadable WKB)")]
    check_rows(zones, rows)
    assert shapely.equals(zones.geometries[0], FIELD) and shapely.equals(zones.geometries[1], FARM)


def test_geoparquet_read_with_rejections_and_default_crs(tmp_path: Path) -> None:
    path = tmp_path / "zones.parquet"
    write_geoparquet(path)  # no crs member: OGC:CRS84, longitude/latitude
    zones = read_zones(ZonesConfig(uri=str(path)))
    check_rows(zones)
    assert shapely.equals(zones.geometries[0], FIELD)


def test_projected_zones_are_densified_and_transformed_to_lonlat(tmp_path: Path) -> None:
    to_utm = Transformer.from_crs(4326, 32755, always_xy=True)
    x0, y0 = to_utm.transform(144.1, -35.2)
    # A 2 km square in UTM 55S: its edges are straight in UTM, slightly curved in lon/lat.
    square = shapely.box(x0, y0, x0 + 2000, y0 + 2000)
    path = tmp_path / "utm.gpkg"
    write_with_gdal(path, "GPKG", crs="EPSG:32755", rows=[("utm-1", square, None)])
    zones = read_zones(ZonesConfig(uri=str(path)))
    geometry = zones.geometries[0]
    to_lonlat = Transformer.from_crs(32755, 4326, always_xy=True)
    # Every point along the UTM edge (here its midpoint) is a vertex of the lon/lat outline.
    mid_lon, mid_lat = to_lonlat.transform(x0 + 1000, y0)
    assert shapely.distance(geometry.exterior, shapely.Point(mid_lon, mid_lat)) < 1e-9
    corner_lon, corner_lat = to_lonlat.transform(x0, y0)
    assert shapely.distance(geometry.exterior, shapely.Point(corner_lon, corner_lat)) < 1e-12
    assert len(geometry.exterior.coords) > 100


# Writing the file without a CRS is the point of one case: pyogrio warns about it.
@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_file_level_problems_are_errors_naming_the_file(tmp_path: Path) -> None:
    no_crs = tmp_path / "no_crs.fgb"
    write_with_gdal(no_crs, "FlatGeobuf", crs=None, rows=ROWS[:1])
    null_crs = tmp_path / "null_crs.parquet"
    write_geoparquet(null_crs, crs=None, rows=ROWS[:1])
    bad_crs = tmp_path / "bad_crs.parquet"
    write_geoparquet(bad_crs, crs="EPSG:999999", rows=ROWS[:1])
    other_id = tmp_path / "other_id.parquet"
    write_geoparquet(other_id, rows=ROWS[:1], id_column="field")
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"zone_id": ["a"]}), plain)
    garbage = tmp_path / "garbage.gpkg"
    garbage.write_bytes(b"not a geopackage")
    cases = [
        (no_crs, "the layer has no CRS"),
        (null_crs, "unknown CRS (crs: null)"),
        (bad_crs, "unknown CRS 'EPSG:999999'"),
        (other_id, "no column 'zone_id' (zones.id_column); columns: field, geometry"),
        (plain, "without GeoParquet 'geo' metadata"),
        (garbage, "cannot read it"),
        (tmp_path / "missing.geojson", "no such file"),
    ]
    for path, message in cases:
        with pytest.raises(ZonesError) as caught:
            read_zones(ZonesConfig(uri=str(path)))
        assert str(path) in str(caught.value) and message in str(caught.value), str(caught.value)
    with pytest.raises(ConfigError, match="expected bq://project.dataset.table or one of .parquet"):
        ZonesConfig(uri="zones.shp")
    with pytest.raises(ConfigError, match="a BigQuery table is bq://project.dataset.table"):
        ZonesConfig(uri="bq://just-a-dataset")
