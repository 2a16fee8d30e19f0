"""Zone statistics through the whole job: local Spark, the Parquet sink, the DuckDB views, and reruns.

The sample's 55HBU and 54HYD lie on either side of the 54/55 UTM boundary (144 E); 55HCU, east of
55HBU, has no zone. Zones: a field and
a farm on 55HBU, a district across the boundary (counted from both tiles), a zone in the sea far
away (no tile), a self-intersecting zone (rejected). The merged statistics are checked against the
composite COGs read with rasterio, each pixel given to the tile the mgrs library names for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import mgrs
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from pyproj import Transformer

from evi_udf.config import load_config
from evi_udf.outputs.sinks.parquet import ParquetSink
from evi_udf.outputs.zone_views import duckdb_views
from evi_udf.run.job import run
from evi_udf.sample.generate import SampleSpec, generate_archive

pytestmark = [pytest.mark.integration]


def write_zones(path: Path, zones: list[tuple[str, shapely.Geometry]]) -> None:
    geo = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": {"encoding": "WKB"}}}
    table = pa.table({"zone_id": [z for z, _ in zones], "geometry": [shapely.to_wkb(g) for _, g in zones]})
    pq.write_table(table.replace_schema_metadata({b"geo": json.dumps(geo).encode()}), path)


def tile_box(archive: Path, tile: str) -> tuple[float, float, float, float]:
    """(west, south, east, north) of a tile's band grid in lon/lat."""
    band = next(
        (archive / "L2" / "tiles").glob(f"*/*/*/*_T{tile}_*.SAFE/GRANULE/*/IMG_DATA/R10m/*_B04_10m.jp2")
    )
    with rasterio.open(band) as dataset:
        return Transformer.from_crs(dataset.crs, 4326, always_xy=True).transform_bounds(*dataset.bounds)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("zone_job")
    archive = root / "archive"
    generate_archive(
        SampleSpec(
            out=archive, tiles=("55HBU", "54HYD", "55HCU"), scenes_per_tile=2, resolution_factor=61, seed=8
        )
    )
    west, south, east, north = tile_box(archive, "55HBU")
    mid_lat = (south + north) / 2
    zones = [
        ("field", shapely.box(east - 0.30, mid_lat, east - 0.25, mid_lat + 0.04)),
        ("farm", shapely.box(east - 0.45, mid_lat - 0.2, east - 0.2, mid_lat - 0.05)),
        ("district", shapely.box(143.85, mid_lat - 0.15, 144.2, mid_lat + 0.15)),
        ("sea", shapely.box(160.0, -40.0, 160.1, -39.9)),
        (
            "bowtie",
            shapely.Polygon(
                [(144.3, mid_lat), (144.4, mid_lat + 0.1), (144.4, mid_lat), (144.3, mid_lat + 0.1)]
            ),
        ),
    ]
    zones_path = root / "zones.parquet"
    write_zones(zones_path, zones)
    config = root / "job.yaml"
    config.write_text(
        f"catalog:\n  index_uri: {archive}/L2/index.csv.gz\n  period: all\n"
        f"raster:\n  block_size: 256\noutput:\n  root: {root}/out\nzones:\n  uri: {zones_path}\n",
        encoding="utf-8",
    )
    return {
        "root": root,
        "archive": archive,
        "config": config,
        "zones": dict(zones),
        "zones_path": zones_path,
    }


def composite_pixels(uri: str, tile: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EVI (NaN = none), and lon/lat of the pixel centres the tile owns (by the mgrs library)."""
    with rasterio.open(uri) as dataset:
        values = dataset.read(1).astype(np.float64)
        values = np.where(values == dataset.nodata, np.nan, values * dataset.scales[0])
        rows, cols = np.meshgrid(np.arange(dataset.height), np.arange(dataset.width), indexing="ij")
        x, y = rasterio.transform.xy(dataset.transform, rows.ravel(), cols.ravel())
        lon, lat = Transformer.from_crs(dataset.crs, 4326, always_xy=True).transform(x, y)
    converter = mgrs.MGRS()
    owned = np.array(
        [converter.toMGRS(b, a, MGRSPrecision=0)[:5] == tile for a, b in zip(lon, lat, strict=True)]
    )
    return values.ravel()[owned], np.asarray(lon)[owned], np.asarray(lat)[owned]


def test_zone_statistics_through_the_job_merge_tiles_and_follow_the_zones(spark, workspace) -> None:
    config = load_config(str(workspace["config"]))
    out = Path(config.output.root)
    logs: list[str] = []
    report = run(spark, config, ParquetSink(config.output.root), log=logs.append)
    # 55HCU is in the index but no zone meets it: with zones and no tiles or bbox, it is not made.
    assert report.groups_planned == report.groups_processed == 2 and report.groups_failed == 0
    assert report.zones == 4
    assert [(r["zone_id"], r["position"]) for r in report.zones_rejected] == [("bowtie", 4)]
    assert "Self-intersection" in report.zones_rejected[0]["reason"]
    assert any("zones " in line and "4 zones, 1 rejected" in line for line in logs)
    assert any("'bowtie'" in line and "Self-intersection" in line for line in logs)

    connection = duckdb.connect()
    connection.execute(duckdb_views(str(out)))
    composites = connection.execute("SELECT * FROM evi_zone_composites ORDER BY zone_id").df()
    assert list(composites["zone_id"]) == ["district", "farm", "field"]  # nothing for the sea
    commits = ParquetSink(str(out)).read("evi_composites")
    pixels = {
        tile: composite_pixels(uri, tile)
        for tile, uri in zip(commits["mgrs_tile"], commits["raster_uri"], strict=True)
    }
    for row in composites.itertuples(index=False):
        zone = workspace["zones"][row.zone_id]
        values = np.concatenate([v[shapely.contains_xy(zone, lon, lat)] for v, lon, lat in pixels.values()])
        valid = values[np.isfinite(values)]
        assert row.total_pixels == values.size and row.valid_pixels == valid.size > 0
        # The tables hold the float composite, the COG its int16 encoding: one step apart at most.
        assert abs(row.evi_mean - valid.mean()) <= 0.5e-4
        assert abs(row.evi_p50 - np.quantile(valid, 0.5, method="inverted_cdf")) <= 1e-4 + 1e-9
        assert abs(row.evi_min - valid.min()) <= 1e-4 + 1e-9 and abs(row.evi_max - valid.max()) <= 1e-4 + 1e-9
        expected_tiles = ["54HYD", "55HBU"] if row.zone_id == "district" else ["55HBU"]
        assert list(row.mgrs_tiles) == expected_tiles
    scenes = connection.execute("SELECT * FROM evi_zone_scenes").df()
    assert set(scenes["zone_id"]) == {"district", "farm", "field"}
    district = scenes[scenes["zone_id"] == "district"]
    assert (district["mgrs_tiles"].map(len) == 2).all()  # both tiles saw every pass in the sample

    # A plain rerun does nothing; a new zone on 55HBU remakes 55HBU's group only.
    again = run(spark, config, ParquetSink(config.output.root), log=logs.append)
    assert again.groups_processed == 0 and again.groups_skipped == 2
    west, south, east, north = tile_box(workspace["archive"], "55HBU")
    mid_lat = (south + north) / 2
    # East of 54HYD's footprint (144.53 E) and west of 55HBU's square edge (about 144.68 E).
    new_field = shapely.box(east - 0.24, mid_lat + 0.05, east - 0.21, mid_lat + 0.08)
    zones = [*workspace["zones"].items(), ("new-field", new_field)]
    write_zones(workspace["zones_path"], zones)
    changed = run(spark, config, ParquetSink(config.output.root), log=logs.append)
    assert (changed.groups_changed, changed.groups_processed, changed.groups_skipped) == (1, 1, 1)
    connection = duckdb.connect()
    connection.execute(duckdb_views(str(out)))
    ids = connection.execute("SELECT DISTINCT zone_id FROM evi_zone_composites ORDER BY 1").fetchall()
    assert [i for (i,) in ids] == ["district", "farm", "field", "new-field"]
    # The district's parts still merge both tiles: 54HYD's part from the first run, 55HBU's new one.
    tiles = connection.execute(
        "SELECT mgrs_tiles FROM evi_zone_composites WHERE zone_id = 'district'"
    ).fetchone()
    assert list(tiles[0]) == ["54HYD", "55HBU"]
