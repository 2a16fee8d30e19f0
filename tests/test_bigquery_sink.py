"""The BigQuery sink against the BigQuery emulator, queried back through the real client."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from evi_udf.catalog import read_index_pandas, select_scenes_pandas
from evi_udf.config import config_from_mapping
from evi_udf.errors import SinkError
from evi_udf.job import split_tables
from evi_udf.process import parameter_hash, process_group
from evi_udf.sample import SampleSpec, generate_archive
from evi_udf.schema import to_result_records
from evi_udf.sinks.bigquery import BigQuerySink
from evi_udf.udf import group_key_from_pandas, result_frame, scene_refs_from_pandas


@pytest.fixture(scope="module")
def run_tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("bq")
    generate_archive(
        SampleSpec(out=root / "s2", tiles=("55HBU",), scenes_per_tile=4, resolution_factor=61, seed=2)
    )
    index = str(root / "s2" / "L2" / "index.csv.gz")
    config = config_from_mapping(
        {"catalog": {"index_uri": index, "period": "all"}, "output": {"root": str(root / "out")}}
    )
    scenes, _ = select_scenes_pandas(read_index_pandas(index), config.catalog)
    key = group_key_from_pandas(scenes)
    result = process_group(key, scene_refs_from_pandas(scenes), config)
    records = (
        to_result_records("composite", [result.composite])
        + to_result_records("scene", result.scenes)
        + to_result_records("failure", result.failures)
    )
    for record in records:
        record["run_id"] = "run-1"
    return {
        "tables": split_tables(result_frame(records)),
        "key": key,
        "hash": parameter_hash(config.raster),
        "composite": result.composite,
    }


def query(client, sql: str) -> list[dict]:
    return [dict(row) for row in client.query(sql).result()]


@pytest.mark.integration
def test_tables_are_created_loaded_and_queryable(bigquery_emulator, run_tables) -> None:
    dataset = f"evi_{uuid.uuid4().hex[:8]}"
    sink = BigQuerySink("evi-test", dataset, client=bigquery_emulator)
    key, params = run_tables["key"], run_tables["hash"]
    sink.write(run_tables["tables"], {(key.mgrs_tile, key.period, params)})

    composites = bigquery_emulator.get_table(f"evi-test.{dataset}.evi_composites")
    assert (composites.time_partitioning.field, composites.time_partitioning.type_) == (
        "period_start",
        "MONTH",
    )
    assert composites.clustering_fields == ["mgrs_tile"]
    scenes_table = bigquery_emulator.get_table(f"evi-test.{dataset}.evi_scenes")
    assert scenes_table.time_partitioning.field == "sensing_time"

    composite = run_tables["composite"]
    rows = query(
        bigquery_emulator,
        "SELECT mgrs_tile, valid_pixels, evi_mean, "
        "ST_INTERSECTS(footprint, ST_GEOGPOINT(144.2, -37.5)) AS covers "
        f"FROM `evi-test.{dataset}.evi_composites`",
    )
    assert rows == [
        {
            "mgrs_tile": "55HBU",
            "valid_pixels": composite.valid_pixels,
            "evi_mean": pytest.approx(composite.statistics.evi_mean),
            "covers": True,
        }
    ]
    # 55HBU's 100 km square spans about 143.6-144.9 E: a point at 146 E is outside.
    outside = query(
        bigquery_emulator,
        f"SELECT COUNT(*) AS n FROM `evi-test.{dataset}.evi_composites` "
        "WHERE ST_INTERSECTS(footprint, ST_GEOGPOINT(146.0, -37.5))",
    )
    assert outside == [{"n": 0}]
    scene_rows = query(
        bigquery_emulator,
        f"SELECT product_id, evi_mean FROM `evi-test.{dataset}.evi_scenes` ORDER BY sensing_time",
    )
    expected = run_tables["tables"]["evi_scenes"].sort_values("sensing_time")
    assert [r["product_id"] for r in scene_rows] == list(expected.product_id)


@pytest.mark.integration
def test_rerunning_a_group_replaces_its_rows(bigquery_emulator, run_tables) -> None:
    dataset = f"evi_{uuid.uuid4().hex[:8]}"
    sink = BigQuerySink("evi-test", dataset, client=bigquery_emulator)
    key, params = run_tables["key"], run_tables["hash"]
    group = {(key.mgrs_tile, key.period, params)}
    sink.write(run_tables["tables"], group)
    sink.write(run_tables["tables"], group)
    count = f"SELECT COUNT(*) AS n FROM `evi-test.{dataset}.%s`"
    scenes = len(run_tables["tables"]["evi_scenes"])
    assert query(bigquery_emulator, count % "evi_composites") == [{"n": 1}]
    assert query(bigquery_emulator, count % "evi_scenes") == [{"n": scenes}]
    # A rerun of the group where one scene now fails: its old scene row must go.
    fewer = dict(run_tables["tables"])
    fewer["evi_scenes"] = run_tables["tables"]["evi_scenes"].iloc[1:].assign(run_id="run-2")
    sink.write(fewer, group)
    assert query(bigquery_emulator, count % "evi_scenes") == [{"n": scenes - 1}]
    runs = query(bigquery_emulator, f"SELECT DISTINCT run_id FROM `evi-test.{dataset}.evi_scenes`")
    assert runs == [{"run_id": "run-2"}]


def test_names_are_validated() -> None:
    with pytest.raises(SinkError, match="dataset 'evi; DROP TABLE x': use letters"):
        BigQuerySink("my-project", "evi; DROP TABLE x")
    with pytest.raises(SinkError, match="project 'Bad_Project'"):
        BigQuerySink("Bad_Project", "evi")


@pytest.mark.integration
def test_the_example_queries_run_with_parameters(bigquery_emulator, run_tables) -> None:
    from google.cloud import bigquery

    from evi_udf.queries import load_query

    dataset = f"evi_{uuid.uuid4().hex[:8]}"
    key, params = run_tables["key"], run_tables["hash"]
    BigQuerySink("evi-test", dataset, client=bigquery_emulator).write(
        run_tables["tables"], {(key.mgrs_tile, key.period, params)}
    )

    def run(name: str, *parameters: object) -> list[dict]:
        job = bigquery_emulator.query(
            load_query(name, "evi-test", dataset),
            job_config=bigquery.QueryJobConfig(query_parameters=list(parameters)),
        )
        return [dict(row) for row in job.result()]

    scenes = run_tables["tables"]["evi_scenes"].sort_values("sensing_time")
    series = run(
        "evi_time_series",
        bigquery.ScalarQueryParameter("tile", "STRING", "55HBU"),
        bigquery.ScalarQueryParameter("start", "TIMESTAMP", dt.datetime(2022, 1, 1, tzinfo=dt.timezone.utc)),
        bigquery.ScalarQueryParameter("end", "TIMESTAMP", dt.datetime(2022, 12, 31, tzinfo=dt.timezone.utc)),
    )
    assert [r["product_id"] for r in series] == list(scenes.product_id)
    assert [r["evi_mean"] for r in series] == [pytest.approx(round(v, 4)) for v in scenes.evi_mean]

    inside = "POLYGON((144.0 -37.4, 144.3 -37.4, 144.3 -37.6, 144.0 -37.6, 144.0 -37.4))"
    monthly = run("monthly_mean_in_area", bigquery.ScalarQueryParameter("area_wkt", "STRING", inside))
    for row in monthly:
        # BigQuery's DATE_TRUNC of a DATE is a DATE; the emulator (DuckDB) returns a TIMESTAMP.
        row["month"] = row["month"].date() if isinstance(row["month"], dt.datetime) else row["month"]
    composite = run_tables["composite"]
    assert monthly == [
        {
            "month": dt.date(2022, 1, 1),
            "composites": 1,
            "valid_pixels": composite.valid_pixels,
            "evi_mean": pytest.approx(round(composite.statistics.evi_mean, 4)),
        }
    ]
    far = "POLYGON((150 -30, 151 -30, 151 -31, 150 -31, 150 -30))"
    assert run("monthly_mean_in_area", bigquery.ScalarQueryParameter("area_wkt", "STRING", far)) == []

    failures = run("failed_scenes", bigquery.ScalarQueryParameter("run_id", "STRING", "run-1"))
    assert len(failures) == len(run_tables["tables"]["evi_failures"])
    with pytest.raises(SinkError, match="no query 'nope'"):
        load_query("nope", "evi-test", dataset)
