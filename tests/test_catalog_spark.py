"""The catalog through Spark: the same rules as the pandas path, run by mapInPandas / applyInPandas.

Few tests, each doing several checks, because every Spark job costs seconds on two cores. Expected
values are worked out by hand from the rows (see test_catalog.py for the row definitions).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import spark_submit_script
from test_catalog import (
    L2A_55HBU,
    L2A_214,
    L2A_510,
    NEW_L1C,
    OLD_L1C,
    antimeridian_rows,
    dedupe_rows,
    l2a,
    line,
    malformed_rows,
    write_index,
)

from evi_udf.config import CatalogConfig
from evi_udf.errors import CatalogError, IndexSchemaError
from evi_udf.index.arrow import driver_selection_applies, rows_to_read, select_scenes_on_driver
from evi_udf.index.catalog import (
    CORRUPT_RECORD_COLUMN,
    INDEX_COLUMNS,
    INDEX_HEADER,
    REJECTED_SCHEMA,
    SCENE_SCHEMA,
    main,
    plan_groups,
    read_index,
    read_index_pandas,
    report,
    select_scenes,
    select_scenes_pandas,
    write_index_parquet,
)
from evi_udf.run.planning import DriverSelection, SparkSelection

pytestmark = pytest.mark.integration

# Spark's toPandas gives a nullable long as float64 and an int as int32: compare them as Python ints.
SCENE_INT_COLUMNS = ("total_size", "utm_zone", "epsg")


def _plain(value: object, as_int: bool) -> object:
    """One value in a form both paths agree on: None for every kind of null, Python scalars."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        value = value.item()
    return int(value) if as_int else value


def records(frame: pd.DataFrame, int_columns: tuple[str, ...] = ()) -> list[dict[str, object]]:
    """The rows as plain dicts in a fixed order, for comparing frames built by the two paths."""
    rows = [
        {key: _plain(value, key in int_columns) for key, value in row.items()}
        for row in frame.to_dict("records")
    ]
    return sorted(rows, key=lambda row: tuple(str(row[key]) for key in sorted(row)))


def assert_same_selection(spark, config: CatalogConfig, csv_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run both paths; assert equal scenes and rejected rows; return the Spark frames."""
    selection = select_scenes(spark, config)
    assert selection.scenes.schema == SCENE_SCHEMA
    assert selection.rejected.schema == REJECTED_SCHEMA
    spark_scenes = selection.scenes.toPandas()
    spark_rejected = selection.rejected.toPandas()
    scenes, rejected = select_scenes_pandas(read_index_pandas(csv_path), config)
    assert records(spark_scenes, SCENE_INT_COLUMNS) == records(scenes, SCENE_INT_COLUMNS)
    assert records(spark_rejected) == records(rejected)
    return spark_scenes, spark_rejected


def test_split_acquisitions_are_kept_alike_in_spark_for_any_row_order(spark, tmp_path: Path) -> None:
    import random

    rows = dedupe_rows()
    (tmp_path / "ordered").mkdir()
    ordered = write_index(tmp_path / "ordered", rows, name="index.csv.gz")
    _, reference = select_scenes_pandas(read_index_pandas(ordered), CatalogConfig(index_uri=str(ordered)))
    expected = select_scenes_pandas(read_index_pandas(ordered), CatalogConfig(index_uri=str(ordered)))[0]
    for seed in range(2):
        shuffled = list(rows)
        random.Random(seed).shuffle(shuffled)
        (tmp_path / f"s{seed}").mkdir()
        path = write_index(tmp_path / f"s{seed}", shuffled, name="index.csv.gz")
        scenes, rejected = assert_same_selection(spark, CatalogConfig(index_uri=str(path)), path)
        assert records(scenes, SCENE_INT_COLUMNS) == records(expected, SCENE_INT_COLUMNS)
        assert records(rejected) == records(reference)


def test_spark_path_gives_the_pandas_result(spark, tmp_path: Path) -> None:
    bad_rows, _ = malformed_rows()
    too_many = line(l2a("bad-too-many")) + ",extra"
    too_few = ",".join(l2a("bad-too-few")[c] for c in INDEX_COLUMNS[:13])
    no_size = l2a("no-size", tile="55HCU", TOTAL_SIZE="", GENERATION_TIME="", GEOMETRIC_QUALITY_FLAG="")
    rows = [
        OLD_L1C,
        NEW_L1C,
        L2A_214,
        L2A_510,
        L2A_55HBU,
        *antimeridian_rows()[:4],
        no_size,
        l2a("no-url", tile="55HDU", BASE_URL=""),
        *bad_rows,
        too_many,
        too_few,
    ]
    path = write_index(tmp_path, rows, name="index.csv.gz")

    # period=all without dates: the range comes from a driver-side min/max over the selection.
    config = CatalogConfig(index_uri=str(path), level="L2A", period="all")
    scenes, rejected = assert_same_selection(spark, config, path)
    assert sorted(scenes["granule_id"]) == sorted(
        [
            "L2A_T29SND_A019940_20230415T093012",
            L2A_55HBU["GRANULE_ID"],
            "crossing-01KAB",
            "east-60KZF",
            "west-01KBB",
            "far-01KCB",
            "no-size",
        ]
    )
    assert set(scenes["period"]) == {"2020-12-30_2023-02-14"}
    assert rejected["stage"].value_counts().to_dict() == {"parse": 24, "select": 1, "dedupe": 1}
    by_id = rejected.set_index("granule_id")
    assert by_id.loc["bad-too-many", "reason"].startswith("wrong number of fields: expected 14, found 15")
    assert by_id.loc["bad-too-few", "reason"].startswith("wrong number of fields: expected 14, found 13")
    assert by_id.loc["L2A_T29SND_A019940_20201230T112446", "reason"] == (
        f"superseded by {L2A_510['PRODUCT_ID']} (granule L2A_T29SND_A019940_20230415T093012, baseline 05.10)"
    )

    # Arrow round trip of dates, nullable longs and nullable timestamps, as Spark holds them.
    kept = (
        select_scenes(spark, config)
        .scenes.where("granule_id in ('no-size', 'L2A_T29SND_A019940_20230415T093012')")
        .orderBy("granule_id")
        .collect()
    )
    reprocessed, empty_fields = kept
    assert reprocessed.total_size == 861234567
    assert reprocessed.sensing_date == dt.date(2020, 12, 30)
    assert (reprocessed.period_start, reprocessed.period_end) == (dt.date(2020, 12, 30), dt.date(2023, 2, 14))
    assert (reprocessed.utm_zone, reprocessed.epsg) == (29, 32629)
    assert reprocessed.replaces == L2A_214["PRODUCT_ID"]
    assert empty_fields.total_size is None
    assert empty_fields.generation_time is None
    assert empty_fields.geometric_quality is None
    # toPandas goes through Arrow in the session time zone (UTC), independent of the machine's zone.
    assert scenes.set_index("granule_id").loc["L2A_T29SND_A019940_20230415T093012", "sensing_time"] == (
        pd.Timestamp("2020-12-30 11:24:46.335")
    )

    # Filters and quarters on the same file: 55HBU and the antimeridian rows are sensed 2023-02-14,
    # 29SND in 2020 falls outside the dates; rows with a known FAILED/empty flag are out under "passed".
    config = CatalogConfig(
        index_uri=str(path),
        start_date=dt.date(2023, 1, 1),
        end_date=dt.date(2023, 3, 31),
        bbox=(179.0, -21.0, -179.0, -19.0),
        geometric_quality="passed",
        period="quarter",
    )
    scenes, rejected = assert_same_selection(spark, config, path)
    assert sorted(scenes["granule_id"]) == ["crossing-01KAB", "east-60KZF", "west-01KBB"]
    assert set(scenes["period"]) == {"2023-Q1"}
    assert set(scenes["period_end"]) == {dt.date(2023, 3, 31)}
    # The malformed rows all sit at 55HBU's box, outside this bbox, except where the box itself is
    # bad (unknown). The corrupt lines name product ids of zone 55, which no tile reaching this box
    # (zones 60 and 1) can have, so they are not this query's business.
    assert sorted(rejected["granule_id"]) == [
        "bad-lat-order",
        "bad-north",
        "bad-south-range",
        "bad-west-range",
    ]


def test_spark_header_mismatch_and_missing_file(spark, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(INDEX_HEADER.replace("CLOUD_COVER", "CLOUDY_PIXEL_PERCENTAGE") + "\n", encoding="utf-8")
    with pytest.raises(IndexSchemaError) as caught:
        read_index(spark, str(bad))
    assert str(bad) in str(caught.value)
    assert "column 7: expected CLOUD_COVER, found 'CLOUDY_PIXEL_PERCENTAGE'" in str(caught.value)

    with pytest.raises(CatalogError, match="cannot read the Sentinel-2 index"):
        read_index(spark, str(tmp_path / "missing.csv.gz"))

    config = tmp_path / "job.yaml"
    config.write_text(f"catalog:\n  index_uri: {bad}\n", encoding="utf-8")
    assert main(["--config", str(config), "--master", "local[2]"]) == 1
    assert "column 7: expected CLOUD_COVER" in capsys.readouterr().err


def test_parquet_cache_round_trip_and_partition_pruning(spark, tmp_path: Path) -> None:
    too_many = line(l2a("corrupt")) + ",extra"
    rows = [
        L2A_55HBU,
        l2a("hcu-2022", tile="55HCU", sensing="2022-06-01T00:10:00.000000Z"),
        L2A_214,
        L2A_510,
        l2a("snd-2023", tile="29SND", sensing="2023-02-10T11:24:46.335000Z"),
        l2a("bad-tile", MGRS_TILE="T55HBU"),
        l2a("bad-time", SENSING_TIME="yesterday"),
        too_many,
    ]
    csv_path = write_index(tmp_path, rows, name="index.csv.gz")
    cache = tmp_path / "index.parquet"
    write_index_parquet(spark, str(csv_path), str(cache))

    null = "__HIVE_DEFAULT_PARTITION__"
    partitions = {str(p.relative_to(cache)) for p in cache.glob("utm_zone_part=*/sensing_year=*")}
    assert partitions == {
        "utm_zone_part=55/sensing_year=2023",
        "utm_zone_part=55/sensing_year=2022",
        "utm_zone_part=29/sensing_year=2020",
        "utm_zone_part=29/sensing_year=2023",
        f"utm_zone_part={null}/sensing_year=2023",  # bad tile, good time
        f"utm_zone_part=55/sensing_year={null}",  # good tile, bad time
        f"utm_zone_part={null}/sensing_year={null}",  # corrupt: nothing trusted
    }

    # Round trip: the cache holds exactly the raw rows, corrupt record included, zone parts as text.
    cached = read_index(spark, str(cache)).toPandas()
    columns = [*INDEX_COLUMNS, CORRUPT_RECORD_COLUMN]
    assert records(cached[columns]) == records(read_index_pandas(csv_path))
    assert sorted(cached["utm_zone_part"].dropna().unique()) == ["29", "55"]

    # Spoil every file that tiles=55HBU and 2023 dates must skip; reading one of them fails...
    spoiled = [
        *cache.glob("utm_zone_part=29/*/*.parquet"),
        *cache.glob("utm_zone_part=55/sensing_year=2022/*.parquet"),
    ]
    assert len(spoiled) >= 3
    for file in spoiled:
        file.write_bytes(b"not a parquet file")
    with pytest.raises(Exception, match="(?i)parquet"):
        spark.read.parquet(str(cache / "utm_zone_part=29" / "sensing_year=2020")).count()

    # ...so the selection succeeding proves the partitions were pruned before any file was opened:
    # by Spark (driver_selection_max_rows 0) and by pyarrow on the driver (the default here).
    config = CatalogConfig(
        index_uri=str(cache), tiles=("55HBU",), start_date=dt.date(2023, 1, 1), end_date=dt.date(2023, 12, 31)
    )
    # Partitions 55/2023 (the 55HBU row), null/2023 (bad tile), 55/null (bad time), null/null (corrupt).
    assert rows_to_read(cache, config) == 4
    assert driver_selection_applies(config)
    assert not driver_selection_applies(dataclasses.replace(config, driver_selection_max_rows=3))
    expected_scenes, expected_rejected = select_scenes_pandas(
        read_index_pandas(csv_path), dataclasses.replace(config, index_uri=str(csv_path))
    )
    for max_rows in (0, 1000):
        selection = select_scenes(spark, dataclasses.replace(config, driver_selection_max_rows=max_rows))
        scenes = selection.scenes.toPandas()
        rejected = selection.rejected.toPandas()
        assert list(scenes["granule_id"]) == [L2A_55HBU["GRANULE_ID"]]
        assert sorted(rejected["granule_id"]) == ["bad-tile", "bad-time", "corrupt"]
        assert records(scenes, SCENE_INT_COLUMNS) == records(expected_scenes, SCENE_INT_COLUMNS)
        assert records(rejected) == records(expected_rejected)
    # A query that needs a spoiled partition names the cache, on the driver as in Spark.
    with pytest.raises(CatalogError, match=re.escape(f"cannot read the Sentinel-2 index {cache}")):
        select_scenes_on_driver(dataclasses.replace(config, tiles=("29SND",)))


def test_plan_and_cli_report(spark, tmp_path: Path, capsys) -> None:
    rows = [
        L2A_55HBU,
        l2a("hbu-mar", sensing="2023-03-06T00:06:49.024000Z"),
        L2A_214,
        L2A_510,
        l2a("no-url", tile="55HDU", BASE_URL=""),
    ]
    path = write_index(tmp_path, rows)
    config = CatalogConfig(index_uri=str(path), period="month")

    plan = plan_groups(select_scenes(spark, config))
    assert plan[["mgrs_tile", "period", "period_start", "period_end", "scene_count"]].values.tolist() == [
        ["29SND", "2020-12", dt.date(2020, 12, 1), dt.date(2020, 12, 31), 1],
        ["55HBU", "2023-02", dt.date(2023, 2, 1), dt.date(2023, 2, 28), 1],
        ["55HBU", "2023-03", dt.date(2023, 3, 1), dt.date(2023, 3, 31), 1],
    ]
    assert plan["granule_ids"].tolist() == [
        ["L2A_T29SND_A019940_20230415T093012"],
        [L2A_55HBU["GRANULE_ID"]],
        ["hbu-mar"],
    ]

    out = io.StringIO()
    report(spark, config, out=out)
    text = out.getvalue()
    assert "3 scenes in 3 groups (tile x month)" in text
    assert "2 rejected rows" in text
    assert f"superseded by {L2A_510['PRODUCT_ID']} (granule L2A_T29SND_A019940_20230415T093012" in text
    assert "empty BASE_URL" in text

    job = tmp_path / "job.yaml"
    job.write_text(f"catalog:\n  index_uri: {path}\n  period: year\n", encoding="utf-8")
    assert main(["--config", str(job), "--set", "catalog.tiles=[55HBU]", "--master", "local[2]"]) == 0
    printed = capsys.readouterr().out
    # 55HBU only: the February and March scenes share the year 2023; 29SND and 55HDU are filtered out.
    assert "2 scenes in 1 groups (tile x year)" in printed
    assert "0 rejected rows" in printed


def test_index_cache_job_writes_a_cache_that_selects_like_the_csv(spark, tmp_path: Path) -> None:
    """``spark_jobs/build_index_cache.py`` as users run it, then the catalog reading its output."""
    rows = [
        L2A_55HBU,
        l2a("hbu-2022", sensing="2022-06-01T00:10:00.000000Z"),
        L2A_214,
        L2A_510,
        l2a("no-url", tile="55HDU", BASE_URL=""),
        l2a("bad-time", SENSING_TIME="yesterday"),
        line(l2a("corrupt")) + ",extra",
    ]
    csv_path = write_index(tmp_path, rows, name="index.csv.gz")
    cache = tmp_path / "index-20261201.parquet"
    job = spark_submit_script("build_index_cache.py", "--source", str(csv_path), "--out", str(cache))
    assert job.returncode == 0, job.stderr[-3000:]
    # 7 rows, 1 of them with an extra field; partitions by hand: 55/2023 (55HBU, 55HDU), 55/2022,
    # 29/2020 (the 02.14 scene and its 05.10 reprocessing), 55/null (bad time), null/null (corrupt).
    assert f"index cache {cache}: 7 rows (1 with the wrong number of fields) in 5 partitions" in job.stdout
    assert f"--set catalog.index_uri={cache}" in job.stdout

    config = CatalogConfig(index_uri=str(cache), period="month")
    selection = select_scenes(spark, config)
    expected_scenes, expected_rejected = select_scenes_pandas(
        read_index_pandas(csv_path), dataclasses.replace(config, index_uri=str(csv_path))
    )
    # Scenes: both 55HBU rows and the 05.10 product; rejected: its 02.14 original, no-url, bad-time, corrupt.
    assert len(expected_scenes) == 3 and len(expected_rejected) == 4
    assert records(selection.scenes.toPandas(), SCENE_INT_COLUMNS) == records(
        expected_scenes, SCENE_INT_COLUMNS
    )
    assert records(selection.rejected.toPandas()) == records(expected_rejected)
    # The groups and scene-set fingerprints the job plans from: formatted by Spark from the Spark
    # selection, and in Python from the driver's, identical (generation times to the microsecond).
    spark_config = dataclasses.replace(config, driver_selection_max_rows=0)
    in_spark = SparkSelection(select_scenes(spark, spark_config), spark_config.index_uri).planned_groups()
    assert DriverSelection(expected_scenes, expected_rejected).planned_groups() == in_spark
    assert [(p.key.mgrs_tile, p.key.period, p.scene_count) for p in in_spark] == [
        ("29SND", "2020-12", 1),
        ("55HBU", "2022-06", 1),
        ("55HBU", "2023-02", 1),
    ]

    # `make plan` on the cache starts no JVM: with Java made unreachable it still plans (and fails on
    # the CSV, which needs Spark, so the environment really does keep Spark from starting).
    job_config = tmp_path / "plan.yaml"
    job_config.write_text(
        f"catalog:\n  index_uri: {cache}\n  period: month\noutput:\n  root: {tmp_path / 'out'}\n"
    )
    # spark-submit runs $JAVA_HOME/bin/java when JAVA_HOME is set.
    no_java = {**os.environ, "JAVA_HOME": str(tmp_path / "no-java")}
    planned = subprocess.run(
        [sys.executable, "-m", "evi_udf.cli.plan", "--config", str(job_config), "--master", "local[2]"],
        capture_output=True,
        text=True,
        env=no_java,
        check=False,
    )
    assert planned.returncode == 0, planned.stderr[-2000:]
    # As above: 55HBU 2023-02 and 2022-06, 29SND 2020-12 (the 05.10 product); 4 rejected rows.
    assert "3 scenes in 3 groups (tile x month): 3 new" in planned.stdout
    assert "4 rejected rows" in planned.stdout
    on_csv = subprocess.run(
        [
            sys.executable,
            "-m",
            "evi_udf.cli.plan",
            "--config",
            str(job_config),
            "--master",
            "local[2]",
            "--set",
            f"catalog.index_uri={csv_path}",
        ],
        capture_output=True,
        text=True,
        env=no_java,
        check=False,
    )
    assert on_csv.returncode != 0

    # Wrong outputs are refused with the reason, before anything is written.
    for out, message in [
        (str(tmp_path / "index-cache"), "name it *.parquet"),
        ("gs://bucket/index.parquet", "no gs:// connector"),
    ]:
        with pytest.raises(CatalogError, match=re.escape(message)):
            write_index_parquet(spark, str(csv_path), out)
    with pytest.raises(CatalogError, match="the source must be the index CSV"):
        write_index_parquet(spark, str(cache), str(tmp_path / "again.parquet"))
    failed = spark_submit_script(
        "build_index_cache.py",
        "--source",
        str(tmp_path / "missing.csv.gz"),
        "--out",
        str(tmp_path / "x.parquet"),
    )
    assert failed.returncode == 1
    # spark-submit's PythonRunner merges the driver's stderr into its stdout.
    assert "error: cannot read the Sentinel-2 index" in failed.stdout and "missing.csv.gz" in failed.stdout
