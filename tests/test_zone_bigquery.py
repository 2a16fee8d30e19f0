"""Zone tables, views and example queries in the BigQuery emulator, against the DuckDB views over the
same rows (themselves checked against numpy in test_zone_views.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from pyproj import Transformer

from evi_udf.config import ZonesConfig, config_from_mapping
from evi_udf.errors import ZonesError
from evi_udf.index.catalog import read_index_pandas, select_scenes_pandas
from evi_udf.outputs.queries import load_query
from evi_udf.outputs.rows import table_arrow_schema, to_result_records
from evi_udf.outputs.sinks.bigquery import BigQuerySink
from evi_udf.outputs.zone_views import duckdb_views
from evi_udf.run.ledger import Ledger
from evi_udf.run.load import split_tables
from evi_udf.run.process import process_group
from evi_udf.run.udf import group_key_from_pandas, result_frame, scene_refs_from_pandas, zone_records
from evi_udf.sample.generate import SampleSpec, generate_archive
from evi_udf.storage import Storage
from evi_udf.task.names import new_attempt
from evi_udf.zones.input import read_zones
from evi_udf.zones.pixels import ZoneInput

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def zone_tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("zbq")
    generate_archive(
        SampleSpec(out=root / "s2", tiles=("55HBU",), scenes_per_tile=3, resolution_factor=61, seed=4)
    )
    index = str(root / "s2" / "L2" / "index.csv.gz")
    config = config_from_mapping(
        {"catalog": {"index_uri": index, "period": "month"}, "output": {"root": str(root / "out")}}
    )
    scenes, _ = select_scenes_pandas(read_index_pandas(index), config.catalog)
    scenes = scenes[scenes["period"] == scenes["period"].min()]
    key, refs = group_key_from_pandas(scenes), scene_refs_from_pandas(scenes)
    band = next(Path(refs[0].base_url).glob("GRANULE/*/IMG_DATA/R10m/*_B04_10m.jp2"))
    with rasterio.open(band) as dataset:
        west, south, east, north = Transformer.from_crs(dataset.crs, 4326, always_xy=True).transform_bounds(
            *dataset.bounds
        )
    mid = (south + north) / 2
    district = shapely.box(east - 0.6, mid - 0.3, east - 0.05, mid + 0.3)
    zones = {
        "district": district,
        "field-1": shapely.box(east - 0.5, mid - 0.1, east - 0.4, mid),
        "field-2": shapely.box(east - 0.3, mid, east - 0.2, mid + 0.1),
        "across-144": shapely.box(143.8, mid - 0.1, 144.2, mid + 0.1),  # a part: 55HBU owns east of 144 E
    }
    ids = list(zones)
    zone_input = ZoneInput(list(range(len(ids))), [zones[i] for i in ids])
    result = process_group(key, refs, config, zones=zone_input)
    records = (
        to_result_records("composite", [result.composite])
        + to_result_records("scene", result.scenes)
        + zone_records(key, result, dict(enumerate(ids)), result.composite.parameter_hash)
    )
    committed = Ledger(config.output.root, Storage()).commit(
        config,
        key,
        refs,
        new_attempt(),
        records,
        "run-1",
        lambda: dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc),
    )
    tables = split_tables(result_frame(committed))
    wkt = pd.DataFrame({"zone_id": ids, "geometry_wkt": [zones[i].wkt for i in ids]})
    return {"tables": tables, "zones": wkt, "root": root, "period": key.period}


def duckdb_rows(zone_tables: dict[str, object], view: str) -> pd.DataFrame:
    root = Path(zone_tables["root"]) / "duck"
    for kind, table in (
        ("zone_scene", "evi_zone_scene_parts"),
        ("zone_composite", "evi_zone_composite_parts"),
    ):
        folder = root / "tables" / table
        folder.mkdir(parents=True, exist_ok=True)
        schema = table_arrow_schema(kind)
        frame = zone_tables["tables"][table].reindex(columns=schema.names)
        pq.write_table(
            pa.Table.from_pandas(frame, schema=schema, preserve_index=False), folder / "part.parquet"
        )
    connection = duckdb.connect()
    connection.execute(duckdb_views(str(root)))
    return connection.execute(f"SELECT * FROM {view}").df()


def test_zone_views_tables_and_queries_in_bigquery(bigquery_emulator, zone_tables) -> None:
    from google.cloud import bigquery

    sink = BigQuerySink("evi-test", f"evi_{uuid.uuid4().hex[:8]}", client=bigquery_emulator)
    sink.load(zone_tables["tables"], "run-1")
    sink.load_zones(zone_tables["zones"], "run-1")
    dataset = sink.dataset

    def rows(sql: str, *parameters: object) -> pd.DataFrame:
        job = bigquery_emulator.query(
            sql, job_config=bigquery.QueryJobConfig(query_parameters=list(parameters))
        )
        return pd.DataFrame([dict(row) for row in job.result()])

    for view, keys in (("evi_zone_composites", ["zone_id"]), ("evi_zone_scenes", ["zone_id", "acquisition"])):
        got = rows(f"SELECT * FROM `{sink.table_id(view)}`").sort_values(keys).reset_index(drop=True)
        expected = duckdb_rows(zone_tables, view).sort_values(keys).reset_index(drop=True)
        assert len(got) == len(expected) > 0
        for column in ("total_pixels", "valid_pixels", "masked_pixels", "nodata_pixels"):
            assert list(got[column]) == list(expected[column]), column
        for column in (
            "evi_mean",
            "evi_std",
            "evi_min",
            "evi_max",
            "evi_p10",
            "evi_p50",
            "evi_p90",
            "masked_fraction",
        ):
            assert got[column].to_numpy() == pytest.approx(
                expected[column].to_numpy(), abs=1e-9, nan_ok=True
            ), column
    parts = zone_tables["tables"]["evi_zone_composite_parts"]
    # Parts merged by the views' histograms: the zone across 144 E, and the district, which reaches
    # past 55HBU's square into the ground 55HCU owns.
    assert set(parts.loc[~parts["zone_whole"].astype(bool), "zone_id"]) == {"across-144", "district"}

    zones = rows(
        f"SELECT zone_id, ST_ASTEXT(geometry) AS wkt FROM `{sink.table_id('evi_zones')}` ORDER BY zone_id"
    )
    assert list(zones["zone_id"]) == sorted(zone_tables["zones"]["zone_id"])

    composites = duckdb_rows(zone_tables, "evi_zone_composites").set_index("zone_id")
    monthly = rows(
        load_query("zone_monthly_median_in_district", "evi-test", dataset),
        bigquery.ScalarQueryParameter("district_id", "STRING", "district"),
        bigquery.ScalarQueryParameter("start", "DATE", dt.date(2022, 1, 1)),
        bigquery.ScalarQueryParameter("end", "DATE", dt.date(2022, 12, 31)),
    )
    assert list(monthly["field_id"]) == ["field-1", "field-2"]
    assert list(monthly["evi_median"]) == [
        pytest.approx(round(composites.loc[f, "evi_p50"], 4)) for f in ("field-1", "field-2")
    ]
    series = rows(
        load_query("zone_time_series", "evi-test", dataset),
        bigquery.ScalarQueryParameter("zone_id", "STRING", "field-1"),
        bigquery.ScalarQueryParameter("start", "TIMESTAMP", dt.datetime(2022, 1, 1, tzinfo=dt.timezone.utc)),
        bigquery.ScalarQueryParameter("end", "TIMESTAMP", dt.datetime(2022, 12, 31, tzinfo=dt.timezone.utc)),
    )
    scenes = duckdb_rows(zone_tables, "evi_zone_scenes")
    field = scenes[scenes["zone_id"] == "field-1"].sort_values("sensing_time")
    assert list(series["acquisition"]) == list(field["acquisition"])
    drop = rows(
        load_query("zone_largest_evi_drop", "evi-test", dataset),
        bigquery.ScalarQueryParameter("before", "STRING", zone_tables["period"]),
        bigquery.ScalarQueryParameter("after", "STRING", zone_tables["period"]),
        bigquery.ScalarQueryParameter("min_valid", "INT64", 1),
        bigquery.ScalarQueryParameter("top", "INT64", 10),
    )
    assert set(drop["zone_id"]) == set(composites.index[composites["valid_pixels"] >= 1])
    assert (drop["change"] == 0).all()  # the same period on both sides

    # The zones table is itself a zones source: a BigQuery table with an id and a GEOGRAPHY column.
    table = f"bq://evi-test.{dataset}.evi_zones"
    read_back = read_zones(ZonesConfig(uri=table), bigquery_client=bigquery_emulator)
    expected = dict(zip(zone_tables["zones"]["zone_id"], zone_tables["zones"]["geometry_wkt"], strict=True))
    assert sorted(read_back.ids) == sorted(expected) and read_back.rejected == []
    for zone_id, geometry in zip(read_back.ids, read_back.geometries, strict=True):
        assert shapely.equals_exact(
            geometry.normalize(), shapely.from_wkt(expected[zone_id]).normalize(), 1e-9
        )
    with pytest.raises(ZonesError, match=r"zones table bq://.*zones.id_column 'field'"):
        read_zones(ZonesConfig(uri=table, id_column="field"), bigquery_client=bigquery_emulator)
