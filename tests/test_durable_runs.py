"""Durable, incremental runs, tried the hard way: real processes killed, sinks that fail, scenes that
arrive later, two runs at once, and the driver's storage requests counted.

Every scenario ends by comparing its tables with those of one clean run of the same selection (row for
row, apart from run ids, commit ids, times and output names) and its rasters with the clean run's
rasters, pixel for pixel.

The sample has 4 tiles (55HBU, 55HCU, 54HYD, 54HXD) and 6 acquisitions from 2022-01-13 every 5 days
(four in January, two in February): 8 groups of tile x month.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
import rasterio
from faulty_proxy import faulty_proxy
from helpers import evi_cogs, sample_in_gcs_emulator, spark_submit, start_spark_submit

from evi_udf.cli.plan import plan_table
from evi_udf.config import load_config
from evi_udf.outputs.sinks import sink_for
from evi_udf.outputs.sinks.bigquery import BigQuerySink
from evi_udf.outputs.sinks.parquet import ParquetSink
from evi_udf.run.job import run
from evi_udf.sample.generate import SampleSpec, generate_archive

GROUPS = 8
TABLES = (
    "evi_commits",
    "evi_composites",
    "evi_scenes",
    "evi_failures",
    "evi_rejected",
    "evi_zone_scene_parts",
    "evi_zone_composite_parts",
)
# Columns that differ between two runs making the same rows: who, when, and attempt-named outputs.
VOLATILE = (
    "run_id",
    "commit_id",
    "committed_at",
    "processed_at",
    "processing_seconds",
    "raster_uri",
    "stac_uri",
    "quicklook_uri",
    "record_uri",
)
SORT_KEYS = {
    "evi_commits": ["mgrs_tile", "period"],
    "evi_composites": ["mgrs_tile", "period"],
    "evi_scenes": ["mgrs_tile", "product_id"],
    "evi_failures": ["mgrs_tile", "product_id"],
    "evi_rejected": ["index_row_id", "stage"],
    "evi_zone_scene_parts": ["zone_id", "mgrs_tile", "product_id"],
    "evi_zone_composite_parts": ["zone_id", "mgrs_tile", "period"],
}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("durable") / "archive"
    generate_archive(SampleSpec(out=root, scenes_per_tile=6, resolution_factor=61, seed=7))
    return root


def write_config(path: Path, archive: Path, root: Path, end: str = "2022-02-28", sink: str = "") -> Path:
    path.write_text(
        f"catalog:\n  index_uri: {archive}/L2/index.csv.gz\n  start_date: 2022-01-01\n  end_date: {end}\n"
        # The sample's zones: every kill, race and sink failure below also covers the zone rows.
        f"  period: month\nraster:\n  block_size: 256\noutput:\n  root: {root}\n"
        f"zones:\n  uri: {archive}/zones.parquet\n{sink}",
        encoding="utf-8",
    )
    return path


def bigquery_section(dataset: str, endpoint: str) -> str:
    return f"sink:\n  kind: bigquery\n  project: evi-test\n  dataset: {dataset}\n  api_endpoint: {endpoint}\n"


@pytest.fixture(scope="module")
def clean(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """The tables of one clean run over the whole selection."""
    root = tmp_path_factory.mktemp("clean")
    config = write_config(root / "job.yaml", archive, root / "out")
    result = spark_submit(config)
    assert result.returncode == 0, result.stderr[-3000:]
    return parquet_tables(root / "out")


def parquet_tables(root: Path) -> dict[str, pd.DataFrame]:
    sink = ParquetSink(str(root))
    return {name: sink.read(name) for name in TABLES}


def comparable(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    kept = frame.drop(columns=[c for c in VOLATILE if c in frame.columns])
    # List columns come back as arrays from Parquet and as lists from BigQuery: compare them as tuples.
    for column in kept.columns:
        if len(kept) and isinstance(kept[column].iloc[0], (list, np.ndarray)):
            kept[column] = kept[column].map(tuple)
    return kept.sort_values(SORT_KEYS[table]).reset_index(drop=True)


def assert_tables_equal(tables: dict[str, pd.DataFrame], clean: dict[str, pd.DataFrame]) -> None:
    for name in TABLES:
        pd.testing.assert_frame_equal(comparable(tables[name], name), comparable(clean[name], name), obj=name)


def assert_rasters_agree(tables: dict[str, pd.DataFrame], clean: dict[str, pd.DataFrame]) -> None:
    """Each composite row points at an existing COG whose pixels equal the clean run's."""
    ours = tables["evi_composites"].set_index(["mgrs_tile", "period"])["raster_uri"]
    reference = clean["evi_composites"].set_index(["mgrs_tile", "period"])["raster_uri"]
    assert sorted(ours.index) == sorted(reference.index)
    for group, uri in ours.items():
        with rasterio.open(uri) as made, rasterio.open(reference[group]) as expected:
            np.testing.assert_array_equal(made.read(), expected.read(), err_msg=str(group))
    commits = tables["evi_commits"].set_index(["mgrs_tile", "period"])["raster_uri"]
    assert commits.to_dict() == ours.to_dict()


def report_of(stdout: str) -> dict:
    return json.loads(Path(stdout.split("(report ")[1].split(")")[0]).read_text())


def count(root: Path, pattern: str) -> int:
    return len(list(root.rglob(pattern))) if root.exists() else 0


@pytest.mark.integration
@pytest.mark.slow
def test_a_run_killed_mid_way_is_finished_by_a_plain_rerun(archive, clean, tmp_path) -> None:
    out = tmp_path / "out"
    config = write_config(tmp_path / "job.yaml", archive, out)
    job = start_spark_submit(config, log=tmp_path / "killed.log")
    deadline = time.monotonic() + 300
    while count(out / "evi", "*.tif") < 2:
        assert job.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)  # the driver, its JVM and its Python workers
    job.wait(timeout=60)
    committed = count(out / "ledger", "*.parquet")
    assert 1 <= committed < GROUPS, "the kill must land mid-way"
    assert count(out / "tables", "*_*.parquet") == 0  # the driver never reached the sink

    rerun = spark_submit(config)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    report = report_of(rerun.stdout)
    assert report["groups_skipped"] == committed
    assert report["groups_processed"] == GROUPS - committed
    assert (report["commits_loaded"], report["commits_recovered"]) == (GROUPS, committed)
    tables = parquet_tables(out)
    assert_tables_equal(tables, clean)
    assert_rasters_agree(tables, clean)
    # Outputs without a commit (a task killed between its COG and its record) are orphans: not in
    # any table, and removed by a later commit of their group once a day old.
    referenced = set(tables["evi_composites"].raster_uri)
    for tif in (out / "evi").rglob("*.tif"):
        attempt = tif.name.removesuffix("_clear_count.tif").removesuffix(".tif").rsplit("_", 1)[1]
        evi = str(tif).removesuffix("_clear_count.tif").removesuffix(".tif") + ".tif"
        assert evi in referenced or not list((out / "ledger").rglob(f"*_{attempt}_*.parquet"))


@pytest.mark.integration
@pytest.mark.slow
def test_a_failing_parquet_sink_is_caught_up_by_the_rerun(archive, clean, tmp_path) -> None:
    out = tmp_path / "out"
    config = write_config(tmp_path / "job.yaml", archive, out)
    # The tables folder passes the probe at the start, but one table cannot be written at the end.
    (out / "tables").mkdir(parents=True)
    (out / "tables" / "evi_scenes").write_text("a file where a table folder should be")
    first = spark_submit(config)
    assert first.returncode == 1
    # spark-submit hands the Python driver's stderr on to its stdout.
    output = first.stdout + first.stderr
    assert f"error: {out / 'tables'}: cannot write the tables" in output and "Traceback" not in output
    assert count(out / "ledger", "*.parquet") == GROUPS  # every group committed before the sink failed

    (out / "tables" / "evi_scenes").unlink()
    rerun = spark_submit(config)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    report = report_of(rerun.stdout)
    assert (report["groups_processed"], report["commits_recovered"]) == (0, GROUPS)
    tables = parquet_tables(out)
    assert_tables_equal(tables, clean)
    assert_rasters_agree(tables, clean)


@pytest.mark.integration
def test_unwritable_tables_stop_the_run_before_any_group_is_processed(spark, archive, tmp_path) -> None:
    from evi_udf.errors import SinkError

    out = tmp_path / "out"
    out.mkdir()
    (out / "tables").write_text("a file where the tables folder should be")
    config = load_config(write_config(tmp_path / "job.yaml", archive, out))
    with pytest.raises(SinkError, match=f"{out / 'tables'}: cannot open the tables folder"):
        run(spark, config, ParquetSink(str(out)), log=lambda _: None)
    assert count(out, "*.tif") == 0 and count(out, "*.parquet") == 0


@pytest.mark.integration
@pytest.mark.slow
def test_a_failing_bigquery_sink_is_caught_up_by_the_rerun(
    archive, clean, tmp_path, bigquery_emulator, bigquery_emulator_url
) -> None:
    out, dataset = tmp_path / "out", f"evi_{uuid.uuid4().hex[:8]}"

    # Every BigQuery job of the first run (queries and loads) is refused with 403, a permission error
    # the client does not retry; getting and creating the dataset and tables still work, so the run
    # passes its start-up probe and fails at the end, when it loads the tables.
    with faulty_proxy(bigquery_emulator_url, "/jobs", failures=10**6, status=403, methods=("POST",)) as proxy:
        config = write_config(
            tmp_path / "down.yaml", archive, out, sink=bigquery_section(dataset, str(proxy["url"]))
        )
        first = spark_submit(config)
    assert first.returncode == 1
    output = first.stdout + first.stderr
    assert f"error: evi-test.{dataset}.evi_commits: query failed" in output and "Traceback" not in output
    assert count(out / "ledger", "*.parquet") == GROUPS

    config = write_config(
        tmp_path / "up.yaml", archive, out, sink=bigquery_section(dataset, bigquery_emulator_url)
    )
    rerun = spark_submit(config)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert report_of(rerun.stdout)["commits_recovered"] == GROUPS
    sink = BigQuerySink("evi-test", dataset, client=bigquery_emulator)
    tables = {name: sink.read(name) for name in TABLES}
    for name, columns in {
        "evi_composites": ["mgrs_tile", "period", "scene_count", "valid_pixels", "evi_mean", "evi_p50"],
        "evi_scenes": ["mgrs_tile", "product_id", "valid_pixels", "masked_pixels", "evi_mean"],
        "evi_commits": ["mgrs_tile", "period", "status", "scene_set_fingerprint", "scene_count"],
        "evi_rejected": ["index_row_id", "stage", "reason"],
    }.items():
        ours = tables[name][columns].sort_values(columns[:2]).reset_index(drop=True)
        expected = clean[name][columns].sort_values(columns[:2]).reset_index(drop=True)
        pd.testing.assert_frame_equal(ours, expected, check_dtype=False, obj=name)


@pytest.mark.integration
def test_scenes_that_arrive_later_remake_only_their_groups(spark, archive, clean, tmp_path) -> None:
    out = tmp_path / "out"
    # First the archive as it was on 2022-02-03: January complete, February with its first scene.
    early = load_config(write_config(tmp_path / "early.yaml", archive, out, end="2022-02-03"))
    first = run(spark, early, ParquetSink(str(out)), log=lambda _: None)
    assert (first.groups_processed, first.groups_new) == (GROUPS, GROUPS)
    february_before = ParquetSink(str(out)).read("evi_composites").query("period == '2022-02'")
    assert set(february_before.scene_count) == {1}

    lines: list[str] = []
    later = load_config(write_config(tmp_path / "later.yaml", archive, out))
    groups, _ = plan_table(later, lambda: spark)  # what `make plan` prints
    states = groups.set_index(["mgrs_tile", "period"])
    assert set(states.xs("2022-01", level="period").state) == {"done"}
    assert set(states.xs("2022-02", level="period").state) == {"changed"}
    assert set(states.xs("2022-02", level="period").reason) == {"scene set changed: 1 -> 2 scenes"}
    second = run(spark, later, ParquetSink(str(out)), log=lines.append)
    assert (second.groups_skipped, second.groups_changed, second.groups_processed) == (4, 4, 4)
    assert lines[0].endswith(
        "8 groups planned, 4 already done, 4 to process (0 new, 4 changed, 0 failed before, 0 overwritten)"
    )
    tables = parquet_tables(out)
    assert_tables_equal(tables, clean)
    assert_rasters_agree(tables, clean)
    # The superseded February composites are gone from disk as well as from the tables.
    on_disk = evi_cogs(out / "evi")
    assert on_disk == set(tables["evi_composites"].raster_uri)
    assert on_disk.isdisjoint(set(february_before.raster_uri))


@pytest.mark.integration
@pytest.mark.slow
def test_two_runs_at_once_on_the_same_root_lose_nothing(archive, clean, tmp_path) -> None:
    out = tmp_path / "out"
    config = write_config(tmp_path / "job.yaml", archive, out)
    jobs = [start_spark_submit(config, log=tmp_path / f"run{n}.log") for n in range(2)]
    for n, job in enumerate(jobs):
        assert job.wait(timeout=600) == 0, (tmp_path / f"run{n}.log").read_text()[-3000:]
    tables = parquet_tables(out)
    assert_tables_equal(tables, clean)
    assert_rasters_agree(tables, clean)
    on_disk = evi_cogs(out / "evi")
    assert on_disk == set(tables["evi_composites"].raster_uri)
    records = {p.name for p in (out / "ledger").rglob("*.parquet")}
    assert records == {Path(uri).name for uri in tables["evi_commits"].record_uri}


@pytest.mark.integration
@pytest.mark.slow
def test_two_runs_at_once_into_one_bigquery_dataset_lose_nothing(
    archive, clean, tmp_path, bigquery_emulator, bigquery_emulator_url
) -> None:
    out, dataset = tmp_path / "out", f"evi_{uuid.uuid4().hex[:8]}"
    config = write_config(
        tmp_path / "job.yaml", archive, out, sink=bigquery_section(dataset, bigquery_emulator_url)
    )
    jobs = [start_spark_submit(config, log=tmp_path / f"run{n}.log") for n in range(2)]
    for n, job in enumerate(jobs):
        assert job.wait(timeout=600) == 0, (tmp_path / f"run{n}.log").read_text()[-3000:]
    tables = {name: BigQuerySink("evi-test", dataset, client=bigquery_emulator).read(name) for name in TABLES}
    for name in ("evi_commits", "evi_composites", "evi_scenes", "evi_rejected"):
        assert len(tables[name]) == len(clean[name]), name
    # Rows and rasters agree: one commit per group, every row of the group from it, its COG on disk.
    commits = tables["evi_commits"].set_index(["mgrs_tile", "period"])
    for name in ("evi_composites", "evi_scenes"):
        frame = tables[name]
        assert list(frame.commit_id) == list(
            frame.set_index(["mgrs_tile", "period"]).index.map(commits["commit_id"])
        )
    on_disk = evi_cogs(out / "evi")
    assert on_disk == set(tables["evi_composites"].raster_uri) == set(commits.raster_uri)


@pytest.mark.integration
def test_the_driver_makes_the_same_storage_requests_for_2_or_8_done_groups(
    spark, tmp_path, gcs_emulator, bigquery_emulator_url
) -> None:
    source, output, dataset = sample_in_gcs_emulator(
        tmp_path / "archive", scenes_per_tile=6, resolution_factor=61, seed=7
    )
    config = tmp_path / "job.yaml"
    config.write_text(
        f"catalog:\n  index_uri: gs://{source}/L2/index.csv.gz\n  start_date: 2022-01-01\n"
        f"  end_date: 2022-02-28\n  period: month\nraster:\n  block_size: 256\n"
        f"output:\n  root: gs://{output}/evi\nstorage:\n  anonymous_buckets: []\n"
        + bigquery_section(dataset, bigquery_emulator_url),
        encoding="utf-8",
    )
    first = spark_submit(config, env={"STORAGE_EMULATOR_HOST": gcs_emulator})
    assert first.returncode == 0, first.stderr[-3000:]

    def driver_requests(tiles: str) -> tuple[int, list[str]]:
        settings = load_config(config, [f"catalog.tiles={tiles}"])
        sink = sink_for(settings)
        previous = os.environ["STORAGE_EMULATOR_HOST"]
        with faulty_proxy(gcs_emulator) as proxy:
            os.environ["STORAGE_EMULATOR_HOST"] = str(proxy["url"])
            try:
                report = run(spark, settings, sink, log=lambda _: None)
            finally:
                os.environ["STORAGE_EMULATOR_HOST"] = previous
        assert report.groups_skipped == report.groups_planned
        return int(proxy["requests"]), list(proxy["log"])

    two, two_log = driver_requests("[55HBU]")
    eight, eight_log = driver_requests("[]")
    print("driver requests:", *(unquote(line) for line in eight_log), sep="\n  ")
    assert two == eight, (two_log, eight_log)
    # The index, one listing of the ledger before and one after processing, the write probe and the
    # run report.
    assert eight <= 12, eight_log
    # No request names a group's files: no COG, STAC item or commit record is read or checked.
    decoded = [unquote(line) for line in eight_log]
    assert not [line for line in decoded if any(s in line for s in (".tif", ".png", ".parquet", "S2_EVI_"))]


@pytest.mark.integration
def test_an_unwritable_output_root_stops_the_run_before_any_group_is_processed(
    spark, archive, tmp_path
) -> None:
    from evi_udf.errors import StorageError

    root = tmp_path / "out"
    root.write_text("a file where the output folder should be")
    config = load_config(write_config(tmp_path / "job.yaml", archive, root))
    with pytest.raises(StorageError, match=f"{root}: the output root is not writable"):
        run(spark, config, ParquetSink(str(tmp_path / "tables-root")), log=lambda _: None)
    assert {p.name for p in tmp_path.iterdir()} == {"job.yaml", "out"}  # nothing else written
