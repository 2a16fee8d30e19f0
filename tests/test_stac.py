"""The STAC outputs, read by the clients users load them with: odc-stac, stackstac and pystac.

A run on two tiles (55HBU, and 54HXD where every other acquisition leaves half the tile without data)
writes items, the catalog files and the GeoParquet listing; each is checked against the COGs read
directly with rasterio, and validated offline against the STAC core schemas (from pystac) and the
projection and raster extension rules (tests/data/stac/README.md).
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pystac
import pytest
import rasterio
from pyproj import CRS
from pystac.validation import JsonSchemaSTACValidator, validate_dict

from evi_udf.config import config_from_mapping
from evi_udf.index.catalog import read_index_pandas, select_scenes_pandas
from evi_udf.outputs.sinks.parquet import ParquetSink
from evi_udf.outputs.stac import ring_area
from evi_udf.run.job import run
from evi_udf.run.process import process_group
from evi_udf.run.udf import group_key_from_pandas, scene_refs_from_pandas
from evi_udf.sample.generate import SampleSpec, generate_archive

SCHEMAS = Path(__file__).parent / "data" / "stac"
EXTENSIONS = {
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json": "projection-v1.1.0.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json": "raster-v1.1.0.json",
}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stac") / "archive"
    generate_archive(
        SampleSpec(out=root, tiles=("55HBU", "54HXD"), scenes_per_tile=4, resolution_factor=61, seed=11)
    )
    return root


def job_config(archive: Path, out: Path, **raster: object):
    return config_from_mapping(
        {
            "catalog": {"index_uri": f"{archive}/L2/index.csv.gz", "period": "month"},
            "raster": {"block_size": 256, **raster},
            "output": {"root": str(out)},
        }
    )


@pytest.fixture(scope="module")
def outputs(spark, archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("stac-out")
    config = job_config(archive, out)
    report = run(spark, config, ParquetSink(str(out)), log=lambda _: None)
    composites = ParquetSink(str(out)).read("evi_composites")
    items = {
        row.mgrs_tile + "_" + row.period: json.loads(Path(row.stac_uri).read_text())
        for row in composites.itertuples()
    }
    return {"out": out, "config": config, "report": report, "composites": composites, "items": items}


def masked_cog(href: str) -> np.ndarray:
    """A COG's band 1 as float64 with its scale and offset applied and no data as NaN."""
    with rasterio.open(href) as dataset:
        band = dataset.read(1, masked=True).astype("float64") * dataset.scales[0] + dataset.offsets[0]
        return band.filled(np.nan)


def test_odc_stac_loads_evi_as_float_with_no_data_masked(outputs) -> None:
    import odc.stac

    for name, document in outputs["items"].items():
        item = pystac.Item.from_dict(document)
        loaded = odc.stac.load([item], bands=["evi", "clear_count"], chunks={})
        evi = loaded.evi.isel(time=0).values
        assert loaded.evi.dtype == np.float32, name
        expected = masked_cog(document["assets"]["evi"]["href"])
        np.testing.assert_array_equal(np.isnan(evi), np.isnan(expected), err_msg=name)
        np.testing.assert_allclose(evi[~np.isnan(evi)], expected[~np.isnan(expected)], rtol=0, atol=1e-7)
        # The mean a user computes is the COG's (the issue: -11070.4 on 54HXD before).
        assert float(np.nanmean(evi)) == pytest.approx(float(np.nanmean(expected)), abs=1e-6)
        assert -1 <= float(np.nanmean(evi)) <= 1
        counts = loaded.clear_count.isel(time=0).values
        with rasterio.open(document["assets"]["clear_count"]["href"]) as dataset:
            np.testing.assert_array_equal(counts, dataset.read(1))
    swath_edge = [d for n, d in outputs["items"].items() if n.startswith("54HXD")]
    assert swath_edge and any(
        np.isnan(masked_cog(d["assets"]["evi"]["href"])).mean() > 0.05 for d in swath_edge
    )


def test_stackstac_stacks_the_items_from_their_json(outputs) -> None:
    import stackstac

    for name, document in outputs["items"].items():
        # The sample's 610 m pixels do not divide the tiles' origins; stackstac's default snaps the
        # bounds outwards to whole multiples of the resolution (real 10 m tiles need no snapping).
        stack = stackstac.stack([document], assets=["evi"], snap_bounds=False)
        evi = stack.isel(time=0, band=0).values
        expected = masked_cog(document["assets"]["evi"]["href"])
        assert evi.shape == expected.shape, name
        np.testing.assert_array_equal(np.isnan(evi), np.isnan(expected), err_msg=name)
        np.testing.assert_allclose(evi[~np.isnan(evi)], expected[~np.isnan(expected)], rtol=0, atol=1e-7)
        assert stack.epsg == document["properties"]["proj:epsg"]


def test_int16_composites_are_scaled_back_by_stackstac(archive, tmp_path) -> None:
    import stackstac

    config = job_config(archive, tmp_path, output_dtype="int16")
    scenes, _ = select_scenes_pandas(read_index_pandas(config.catalog.index_uri), config.catalog)
    group = scenes[(scenes.mgrs_tile == "54HXD") & (scenes.period == "2022-01")]
    result = process_group(group_key_from_pandas(group), scene_refs_from_pandas(group), config)
    document = json.loads(Path(result.composite.stac_uri).read_text())
    assert document["assets"]["evi"]["raster:bands"][0] == {
        "data_type": "int16",
        "nodata": -32768,
        "scale": 0.0001,
        "offset": 0.0,
        "unit": "1",
        "spatial_resolution": 610.0,
    }
    evi = stackstac.stack([document], assets=["evi"], snap_bounds=False).isel(time=0, band=0).values
    with rasterio.open(result.composite.raster_uri) as dataset:
        steps = dataset.read(1).astype("float64")
    expected = np.where(steps == -32768, np.nan, steps / 10000)
    np.testing.assert_array_equal(np.isnan(evi), np.isnan(expected))
    np.testing.assert_allclose(evi[~np.isnan(evi)], expected[~np.isnan(expected)], rtol=0, atol=1e-9)


def validator() -> JsonSchemaSTACValidator:
    checker = JsonSchemaSTACValidator()
    for uri, name in EXTENSIONS.items():
        checker.schema_cache[uri] = json.loads((SCHEMAS / name).read_text())
    return checker


def test_every_stac_document_validates_offline_and_a_broken_one_does_not(outputs) -> None:
    checker = validator()
    out: Path = outputs["out"]
    documents = [*outputs["items"].values()]
    documents += [json.loads(path.read_text()) for path in (out / "stac").rglob("*.json")]
    kinds = {document["type"] for document in documents}
    assert kinds == {"Feature", "Collection", "Catalog"}
    for document in documents:
        schemas = validate_dict(document, validator=checker)
        declared = set(document.get("stac_extensions", []))
        assert declared <= set(schemas), document["id"]
    broken = json.loads(json.dumps(next(iter(outputs["items"].values()))))
    broken["properties"]["proj:code"] = "EPSG:32755"  # projection v2.0.0's field under v1.1.0
    with pytest.raises(pystac.errors.STACValidationError):
        validate_dict(broken, validator=checker)
    broken = json.loads(json.dumps(next(iter(outputs["items"].values()))))
    broken["assets"]["evi"]["raster:bands"][0]["nodata"] = "none"
    with pytest.raises(pystac.errors.STACValidationError):
        validate_dict(broken, validator=checker)


def test_items_have_absolute_hrefs_a_self_link_ccw_rings_and_wkt2(outputs) -> None:
    for document in outputs["items"].values():
        links = {link["rel"]: link["href"] for link in document["links"]}
        assert Path(links["self"]).is_absolute() and Path(links["self"]).is_file()
        for asset in document["assets"].values():
            assert Path(asset["href"]).is_absolute() and Path(asset["href"]).is_file()
        (ring,) = document["geometry"]["coordinates"]
        points = [tuple(p) for p in ring]
        assert points[0] == points[-1]
        assert all(a != b for a, b in zip(points[:-1], points[1:], strict=True))
        assert len(set(points[:-1])) == len(points) - 1
        assert ring_area(points) > 0  # counter-clockwise
        properties = document["properties"]
        wkt2 = properties["proj:wkt2"]
        assert wkt2.startswith("PROJCRS[")  # WKT2, not WKT1's PROJCS[
        assert (
            CRS.from_wkt(wkt2).to_epsg()
            == properties["proj:epsg"]
            == 32700 + int(properties["evi:mgrs_tile"][:2])
        )
        with rasterio.open(document["assets"]["evi"]["href"]) as dataset:
            assert properties["proj:shape"] == [dataset.height, dataset.width]
            assert properties["proj:transform"] == list(dataset.transform)[:6]
            assert properties["proj:bbox"] == list(dataset.bounds)


def test_the_catalog_walks_to_every_current_composite(outputs) -> None:
    out: Path = outputs["out"]
    catalog = pystac.Catalog.from_file(str(out / "stac" / "catalog.json"))
    (collection,) = catalog.get_children()
    assert isinstance(collection, pystac.Collection)
    items = list(collection.get_items(recursive=True))
    composites = outputs["composites"]
    assert sorted(item.get_self_href() for item in items) == sorted(composites.stac_uri)
    west, south, east, north = collection.extent.spatial.bboxes[0]
    for item in items:
        assert (
            west <= item.bbox[0] and south <= item.bbox[1] and item.bbox[2] <= east and item.bbox[3] <= north
        )
    start, end = collection.extent.temporal.intervals[0]
    assert (start.date(), end.date()) == (composites.period_start.min(), composites.period_end.max())
    assert collection.summaries.get_list("proj:epsg") == [32754, 32755]
    assert collection.extra_fields["item_assets"]["evi"]["raster:bands"][0]["data_type"] == "float32"


def test_the_geoparquet_listing_holds_the_items(outputs) -> None:
    out: Path = outputs["out"]
    files = sorted((out / "stac").rglob("items/*.parquet"))
    assert [f.stem for f in files] == sorted(set(outputs["composites"].period))
    table = pq.read_table(files[0])
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    rows = table.to_pylist()
    items = {d["id"]: d for d in outputs["items"].values()}
    for row in rows:
        item = items[row["id"]]
        # WKB decoded by hand: byte order, type 3 (polygon), one ring, then (x, y) doubles.
        order, kind, rings, count = struct.unpack_from("<BIII", row["geometry"])
        assert (order, kind, rings) == (1, 3, 1)
        coords = struct.unpack_from(f"<{2 * count}d", row["geometry"], 13)
        ring = [list(coords[i : i + 2]) for i in range(0, len(coords), 2)]
        assert ring == item["geometry"]["coordinates"][0]
        assert [row["bbox"][k] for k in ("xmin", "ymin", "xmax", "ymax")] == item["bbox"]
        assert row["evi_href"] == item["assets"]["evi"]["href"]
        assert row["start_datetime"] == dt.datetime.fromisoformat(
            item["properties"]["start_datetime"].replace("Z", "+00:00")
        )
        assert row["valid_pixels"] == item["properties"]["evi:valid_pixels"]
    import duckdb

    glob = str(out / "stac" / "*" / "items" / "*.parquet")
    assert duckdb.sql(f"SELECT count(*) FROM '{glob}'").fetchall() == [(len(outputs["items"]),)]


@pytest.mark.integration
def test_bigquery_loads_the_geoparquet_listing_with_geography(outputs, bigquery_emulator) -> None:
    import uuid

    from google.cloud import bigquery

    out: Path = outputs["out"]
    dataset = f"evi-test.stac_{uuid.uuid4().hex[:8]}"
    bigquery_emulator.create_dataset(dataset)
    # The listing's columns in their order (the emulator matches Parquet columns by position).
    types = {
        "string": "STRING",
        "timestamp[us, tz=UTC]": "TIMESTAMP",
        "int64": "INT64",
        "binary": "GEOGRAPHY",
    }
    listing = pq.read_schema(next((out / "stac").rglob("items/*.parquet")))
    corners = [bigquery.SchemaField(name, "FLOAT64") for name in ("xmin", "ymin", "xmax", "ymax")]
    schema = [
        bigquery.SchemaField("bbox", "RECORD", fields=corners)
        if field.name == "bbox"
        else bigquery.SchemaField(field.name, types[str(field.type)])
        for field in listing
    ]
    # The emulator cannot create a table from a load (BigQuery can): create it first.
    bigquery_emulator.create_table(bigquery.Table(f"{dataset}.items", schema=schema))
    config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET)
    for path in sorted((out / "stac").rglob("items/*.parquet")):
        with open(path, "rb") as handle:
            bigquery_emulator.load_table_from_file(handle, f"{dataset}.items", job_config=config).result()
    # 55HBU covers 144.2 E, 37.5 S; 54HXD (zone 54, 100 km further west) does not.
    sql = (
        f"SELECT mgrs_tile, COUNT(*) AS n FROM `{dataset}.items` "
        "WHERE ST_INTERSECTS(geometry, ST_GEOGPOINT(144.2, -37.5)) GROUP BY mgrs_tile"
    )
    rows = {row["mgrs_tile"]: row["n"] for row in bigquery_emulator.query(sql).result()}
    periods = len(set(outputs["composites"].query("mgrs_tile == '55HBU'").period))
    assert rows == {"55HBU": periods}
