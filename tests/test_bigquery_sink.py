"""The BigQuery sink against the BigQuery emulator, queried back through the real client."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pandas as pd
import pytest
from faulty_proxy import faulty_proxy

from evi_udf.config import config_from_mapping
from evi_udf.errors import SinkError
from evi_udf.index.catalog import read_index_pandas, select_scenes_pandas
from evi_udf.outputs.rows import to_result_records
from evi_udf.outputs.sinks.bigquery import BigQuerySink
from evi_udf.run.ledger import Ledger
from evi_udf.run.load import split_tables
from evi_udf.run.process import process_group
from evi_udf.run.udf import group_key_from_pandas, result_frame, scene_refs_from_pandas
from evi_udf.sample.generate import SampleSpec, generate_archive
from evi_udf.storage import Storage
from evi_udf.task.names import new_attempt

T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.timezone.utc)


def commit_tables(config, key, refs, result, run_id: str, at: dt.datetime) -> dict[str, pd.DataFrame]:
    """Commit a processed group in the ledger (as a task does) and split its rows into tables."""
    records = (
        to_result_records("composite", [result.composite] if result.composite else [])
        + to_result_records("scene", result.scenes)
        + to_result_records("failure", result.failures)
    )
    ledger = Ledger(config.output.root, Storage())
    committed = ledger.commit(config, key, refs, new_attempt(), records, run_id, lambda: at)
    return split_tables(result_frame(committed))


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
    refs = scene_refs_from_pandas(scenes)
    result = process_group(key, refs, config)
    # The same group made again later from one scene less (as if a product had vanished).
    fewer = process_group(key, refs[1:], config)
    return {
        "tables": commit_tables(config, key, refs, result, "run-1", T0),
        "newer": commit_tables(config, key, refs[1:], fewer, "run-2", T0 + dt.timedelta(hours=1)),
        "key": key,
        "composite": result.composite,
    }


def query(client, sql: str) -> list[dict]:
    return [dict(row) for row in client.query(sql).result()]


def new_sink(client) -> BigQuerySink:
    return BigQuerySink("evi-test", f"evi_{uuid.uuid4().hex[:8]}", client=client)


def counts(client, sink: BigQuerySink) -> dict[str, int]:
    return {
        table: query(client, f"SELECT COUNT(*) AS n FROM `{sink.table_id(table)}`")[0]["n"]
        for table in ("evi_commits", "evi_composites", "evi_scenes", "evi_failures", "evi_rejected")
    }


@pytest.mark.integration
def test_tables_are_created_loaded_and_queryable(bigquery_emulator, run_tables) -> None:
    sink = new_sink(bigquery_emulator)
    sink.load(run_tables["tables"], "run-1")
    dataset = sink.dataset

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
    commit = run_tables["tables"]["evi_commits"].iloc[0]
    key = run_tables["key"]
    assert sink.held_commits() == {(key.mgrs_tile, key.period, commit.parameter_hash): commit.commit_id}
    # No per-run staging table outlives the load.
    names = [t.table_id for t in bigquery_emulator.list_tables(f"evi-test.{dataset}")]
    assert sorted(names) == [
        "evi_commits",
        "evi_composites",
        "evi_failures",
        "evi_rejected",
        "evi_scenes",
        "evi_zone_composite_parts",
        "evi_zone_composites",
        "evi_zone_scene_parts",
        "evi_zone_scenes",
    ]


@pytest.mark.integration
def test_a_newer_commit_replaces_the_groups_rows_and_an_older_one_changes_nothing(
    bigquery_emulator, run_tables
) -> None:
    sink = new_sink(bigquery_emulator)
    first, newer = run_tables["tables"], run_tables["newer"]
    scenes = len(first["evi_scenes"])
    sink.load(first, "run-1")
    sink.load(first, "run-1")  # the same commit twice: nothing doubles
    assert counts(bigquery_emulator, sink) == {
        "evi_commits": 1,
        "evi_composites": 1,
        "evi_scenes": scenes,
        "evi_failures": 0,
        "evi_rejected": 0,
    }
    # The group remade from one scene less: its old scene row must go with the old commit.
    sink.load(newer, "run-2")
    assert counts(bigquery_emulator, sink)["evi_scenes"] == scenes - 1
    held = query(bigquery_emulator, f"SELECT DISTINCT commit_id, run_id FROM `{sink.table_id('evi_scenes')}`")
    assert held == [{"commit_id": newer["evi_commits"].commit_id.iloc[0], "run_id": "run-2"}]
    # A stale loader (it listed the ledger before the newer commit existed) changes nothing.
    sink.load(first, "run-1")
    assert counts(bigquery_emulator, sink)["evi_scenes"] == scenes - 1
    assert list(sink.held_commits().values()) == [newer["evi_commits"].commit_id.iloc[0]]


def shifted(tables: dict[str, pd.DataFrame], days: int, period: str) -> dict[str, pd.DataFrame]:
    """The same group's tables as if it were another period ``days`` later (another group)."""
    moved = {}
    for table, frame in tables.items():
        frame = frame.copy()
        if "commit_id" in frame:
            frame["commit_id"] = frame["commit_id"] + f"-{period}"
        if "period" in frame:
            frame["period"] = period
        for column in ("period_start", "period_end", "sensing_time"):
            if column in frame:
                frame[column] = frame[column] + pd.Timedelta(days=days)
        moved[table] = frame
    return moved


class RecordingClient:
    """The emulator's client, keeping the SQL of every query it is sent."""

    def __init__(self, client) -> None:
        self._client, self.sql = client, []

    def query(self, sql: str, *args, **kwargs):
        self.sql.append(sql)
        return self._client.query(sql, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._client, name)


@pytest.mark.integration
def test_a_load_reads_and_changes_only_the_partitions_of_its_periods(bigquery_emulator, run_tables) -> None:
    recording = RecordingClient(bigquery_emulator)
    sink = BigQuerySink("evi-test", f"evi_{uuid.uuid4().hex[:8]}", client=recording)
    first, newer = run_tables["tables"], run_tables["newer"]
    later = shifted(newer, 400, "later")
    sink.load(first, "run-1")
    sink.load(later, "run-3")
    recording.sql.clear()
    # The first group remade: its stale scene row goes; the later group's rows stay as they are.
    sink.load(newer, "run-2")
    scenes = query(
        bigquery_emulator, f"SELECT commit_id, COUNT(*) AS n FROM `{sink.table_id('evi_scenes')}` GROUP BY 1"
    )
    assert {r["commit_id"]: r["n"] for r in scenes} == {
        newer["evi_commits"].commit_id.iloc[0]: len(newer["evi_scenes"]),
        later["evi_commits"].commit_id.iloc[0]: len(later["evi_scenes"]),
    }
    assert counts(bigquery_emulator, sink)["evi_composites"] == 2
    # Every statement bounds each partitioned table by the loaded period's first and last day, as
    # constants (what BigQuery prunes partitions by); the later group's period is outside them.
    (transaction,) = [sql for sql in recording.sql if sql.startswith("BEGIN TRANSACTION")]
    start = newer["evi_commits"].period_start.iloc[0]
    end = newer["evi_commits"].period_end.iloc[0]
    day_after = (pd.Timestamp(end) + pd.Timedelta(days=1)).date()
    statements = [s for s in transaction.split(";\n") if s.startswith("MERGE")]
    # One per group table: composites, scenes, failures, the two zone tables (their stale rows go even
    # when the new commit has none) and commits.
    assert len(statements) == 6
    for statement in statements:
        for table, column, bounds in (
            ("evi_commits", "period_start", f"BETWEEN DATE '{start}' AND DATE '{end}'"),
            ("evi_composites", "period_start", f"BETWEEN DATE '{start}' AND DATE '{end}'"),
        ):
            references = statement.count(f"{sink.table_id(table)}`")
            assert statement.count(f".`{column}` {bounds}") >= references
        if "evi_scenes`" in statement or "evi_zone_scene_parts`" in statement:
            assert f">= TIMESTAMP '{start}'" in statement
            assert f"< TIMESTAMP '{day_after}'" in statement
        if "evi_zone_composite_parts`" in statement:
            assert f"BETWEEN DATE '{start}' AND DATE '{end}'" in statement


@pytest.mark.integration
def test_two_loads_at_once_leave_exactly_the_newest_commit(bigquery_emulator, run_tables) -> None:
    sink_a, errors = new_sink(bigquery_emulator), []
    sink_b = BigQuerySink("evi-test", sink_a.dataset, client=bigquery_emulator)
    sink_a.ensure_tables()

    def load(sink: BigQuerySink, tables, run_id: str) -> None:
        try:
            sink.load(tables, run_id)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=load, args=(sink_a, run_tables["newer"], "run-2")),
        threading.Thread(target=load, args=(sink_b, run_tables["tables"], "run-1")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    newest = run_tables["newer"]
    assert counts(bigquery_emulator, sink_a)["evi_scenes"] == len(newest["evi_scenes"])
    ids = query(bigquery_emulator, f"SELECT DISTINCT commit_id FROM `{sink_a.table_id('evi_scenes')}`")
    assert ids == [{"commit_id": newest["evi_commits"].commit_id.iloc[0]}]


@pytest.mark.integration
def test_rejected_rows_keep_the_run_that_first_rejected_them(bigquery_emulator) -> None:
    from evi_udf.run.load import rejected_records

    sink = new_sink(bigquery_emulator)
    raw = pd.DataFrame(
        [
            {
                "granule_id": "G1",
                "product_id": "P1",
                "mgrs_tile": "55HBU",
                "stage": "select",
                "reason": "empty BASE_URL",
            },
            {
                "granule_id": "G1",
                "product_id": "P1",
                "mgrs_tile": "55HBU",
                "stage": "select",
                "reason": "empty BASE_URL",
            },
            {
                "granule_id": None,
                "product_id": None,
                "mgrs_tile": None,
                "stage": "parse",
                "reason": "wrong number of fields: a",
            },
            {
                "granule_id": None,
                "product_id": None,
                "mgrs_tile": None,
                "stage": "parse",
                "reason": "wrong number of fields: b",
            },
        ]
    )
    first = rejected_records(raw, "run-1")
    assert len(first) == 3  # a duplicated line is one fact; two corrupt lines are two
    sink.load({"evi_rejected": result_frame(first)}, "run-1")
    sink.load({"evi_rejected": result_frame(rejected_records(raw, "run-2"))}, "run-2")
    rows = query(bigquery_emulator, f"SELECT run_id FROM `{sink.table_id('evi_rejected')}`")
    assert [r["run_id"] for r in rows] == ["run-1"] * 3


def test_names_are_validated() -> None:
    with pytest.raises(SinkError, match="dataset 'evi; DROP TABLE x': use letters"):
        BigQuerySink("my-project", "evi; DROP TABLE x")
    with pytest.raises(SinkError, match="project 'Bad_Project'"):
        BigQuerySink("Bad_Project", "evi")


def client_through(url: str):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project="evi-test", credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=url)
    )


@pytest.mark.integration
def test_an_existing_dataset_is_used_without_the_right_to_create_datasets(
    bigquery_emulator, bigquery_emulator_url, run_tables
) -> None:
    dataset = f"evi_{uuid.uuid4().hex[:8]}"
    bigquery_emulator.create_dataset(f"evi-test.{dataset}")
    # Creating a dataset is a POST to .../projects/evi-test/datasets: refused, as for a service account
    # that has no bigquery.datasets.create.
    with faulty_proxy(
        bigquery_emulator_url, "/projects/evi-test/datasets?", failures=100, status=403, methods=("POST",)
    ) as proxy:
        sink = BigQuerySink("evi-test", dataset, client=client_through(str(proxy["url"])))
        sink.load(run_tables["tables"], "run-1")
        assert counts(bigquery_emulator, sink)["evi_scenes"] == len(run_tables["tables"]["evi_scenes"])
        assert proxy["failed"] == 0
        missing = BigQuerySink(
            "evi-test", f"evi_{uuid.uuid4().hex[:8]}", client=client_through(str(proxy["url"]))
        )
        with pytest.raises(SinkError, match=rf"evi-test\.{missing.dataset}: cannot create the dataset"):
            missing.held_commits()
        assert proxy["failed"] == 1


@pytest.mark.integration
def test_every_api_error_is_a_sink_error_naming_the_dataset(bigquery_emulator_url, run_tables) -> None:
    dataset = f"evi_{uuid.uuid4().hex[:8]}"
    with faulty_proxy(bigquery_emulator_url, "/", failures=1000, status=403) as proxy:
        sink = BigQuerySink("evi-test", dataset, client=client_through(str(proxy["url"])))
        with pytest.raises(SinkError, match=rf"evi-test\.{dataset}"):
            sink.load(run_tables["tables"], "run-1")
        with pytest.raises(SinkError, match=rf"evi-test\.{dataset}"):
            sink.held_commits()


@pytest.mark.integration
def test_the_example_queries_run_with_parameters(bigquery_emulator, run_tables) -> None:
    from google.cloud import bigquery

    from evi_udf.outputs.queries import load_query

    sink = new_sink(bigquery_emulator)
    sink.load(run_tables["tables"], "run-1")
    dataset = sink.dataset

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
