"""The Spark job end to end: spark-submit on a small sample, reruns, and the UDF on pandas vs Spark.

The sample has tiles 55HBU and 54HYD, 6 acquisitions from 2022-01-13 every 5 days (4 in January, 2 in
February), a reprocessed duplicate of 55HBU's first scene, an index row without BASE_URL and a FAILED
geometric-quality flag on 54HYD's 2022-01-23 scene (sample.py's plan). One 54HYD scene is broken on
purpose by deleting its B04 file. Worked out by hand from that plan:

* groups: 55HBU x {2022-01, 2022-02}, 54HYD x {2022-01, 2022-02} -> 4 composites;
* scenes selected: 12 products - 1 FAILED flag (the 05.10 duplicate replaces its 02.14 original) = 11,
  of which 10 are processed (the broken one fails);
* failures: the broken scene; rejected index rows: 1 superseded, 1 empty BASE_URL.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from helpers import evi_cogs, spark_submit
from rio_cogeo.cogeo import cog_validate

from evi_udf.config import load_config
from evi_udf.index.catalog import read_index_pandas, select_scenes, select_scenes_pandas
from evi_udf.outputs.sinks.parquet import ParquetSink
from evi_udf.run.execute import bucket_ids
from evi_udf.run.job import run
from evi_udf.run.process import process_group
from evi_udf.run.udf import group_key_from_pandas, make_group_function, scene_refs_from_pandas
from evi_udf.sample.generate import SampleSpec, generate_archive

REPO = Path(__file__).resolve().parents[1]
BROKEN_DATE = "20220118"
BROKEN_TILE = "54HYD"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("job")
    archive = root / "archive"
    generate_archive(
        SampleSpec(out=archive, tiles=("55HBU", "54HYD"), scenes_per_tile=6, resolution_factor=61, seed=5)
    )
    broken = next((archive / "L2/tiles/54/H/YD").glob(f"*_{BROKEN_DATE}T*_T{BROKEN_TILE}_*.SAFE"))
    b04 = next(broken.glob("GRANULE/*/IMG_DATA/R10m/*_B04_10m.jp2"))
    b04.unlink()
    config = root / "job.yaml"
    config.write_text(
        f"catalog:\n  index_uri: {archive}/L2/index.csv.gz\n  start_date: 2022-01-01\n"
        f"  end_date: 2022-02-28\n  period: month\nraster:\n  block_size: 256\noutput:\n  root: {root}/out\n",
        encoding="utf-8",
    )
    return {"root": root, "archive": archive, "config": config, "broken": broken, "b04": b04}


def tables(root: Path) -> dict[str, pd.DataFrame]:
    sink = ParquetSink(str(root / "out"))
    return {
        name: sink.read(name)
        for name in ("evi_commits", "evi_composites", "evi_scenes", "evi_failures", "evi_rejected")
    }


@pytest.mark.integration
@pytest.mark.slow
def test_spark_submit_runs_the_job_and_reruns_replace_rather_than_duplicate(
    workspace: dict[str, Path],
) -> None:
    first = spark_submit(workspace["config"])
    assert first.returncode == 0, first.stderr[-3000:]
    assert "4 groups planned, 0 already done, 4 to process (4 new" in first.stdout
    out = tables(workspace["root"])
    composites, scenes, failures = out["evi_composites"], out["evi_scenes"], out["evi_failures"]

    assert sorted(zip(composites.mgrs_tile, composites.period, strict=True)) == [
        ("54HYD", "2022-01"),
        ("54HYD", "2022-02"),
        ("55HBU", "2022-01"),
        ("55HBU", "2022-02"),
    ]
    assert len(scenes) == 10
    assert workspace["broken"].name.removesuffix(".SAFE") not in set(scenes.product_id)
    assert list(failures.product_id) == [workspace["broken"].name.removesuffix(".SAFE")]
    assert failures.stage.iloc[0] == "read"
    assert workspace["b04"].name in failures.message.iloc[0]
    assert sorted(out["evi_rejected"].stage) == ["dedupe", "select"]
    commits = out["evi_commits"].set_index(["mgrs_tile", "period"])
    assert commits.loc[("54HYD", "2022-01"), "status"] == "partial"
    assert (
        commits.loc[("54HYD", "2022-01"), "scene_count"],
        commits.loc[("54HYD", "2022-01"), "scenes_used"],
    ) == (3, 2)
    assert (commits.drop(("54HYD", "2022-01")).status == "ok").all()
    # Every row of a group carries its group's current commit.
    for name in ("evi_composites", "evi_scenes", "evi_failures"):
        frame = out[name]
        current = frame.set_index(["mgrs_tile", "period"]).index.map(commits["commit_id"])
        assert list(frame.commit_id) == list(current), name
    by_group = composites.set_index(["mgrs_tile", "period"])
    assert by_group.loc[("54HYD", "2022-01"), "scene_count"] == 2  # 4 dates - FAILED flag - broken
    assert by_group.loc[("54HYD", "2022-01"), "scenes_failed"] == 1
    assert by_group.loc[("55HBU", "2022-01"), "scene_count"] == 4

    # Every COG is valid and equal to the raster core's output for the same group.
    for uri in composites.raster_uri:
        assert cog_validate(uri)[0], uri
    config = load_config(workspace["config"])
    index = str(workspace["archive"] / "L2" / "index.csv.gz")
    selected, _ = select_scenes_pandas(read_index_pandas(index), config.catalog)
    group = selected[(selected.mgrs_tile == "54HYD") & (selected.period == "2022-01")]
    direct_config = load_config(workspace["config"], [f"output.root={workspace['root']}/direct"])
    direct = process_group(group_key_from_pandas(group), scene_refs_from_pandas(group), direct_config)
    with (
        rasterio.open(by_group.loc[("54HYD", "2022-01"), "raster_uri"]) as job_cog,
        rasterio.open(direct.composite.raster_uri) as direct_cog,
    ):
        np.testing.assert_array_equal(job_cog.read(), direct_cog.read())

    report = json.loads(Path(first.stdout.split("(report ")[1].split(")")[0]).read_text())
    assert (report["groups_processed"], report["groups_failed"], report["scenes_read"]) == (4, 0, 10)
    # The report's counts are the rows the run wrote.
    assert report["scenes_read"] == len(scenes[scenes.run_id == report["run_id"]])
    assert report["scenes_failed"] == len(failures[failures.run_id == report["run_id"]])
    assert report["rejected_index_rows"] == len(out["evi_rejected"]) == 2
    for mosaic in report["mosaics"].values():
        assert Path(mosaic).is_file()
    # Each driver step is timed; together they are the run's wall time, bar the report itself.
    phases = report["phase_seconds"]
    assert list(phases) == ["plan", "process", "load", "clean", "stac", "mosaic"]
    assert all(seconds >= 0 for seconds in phases.values()) and phases["process"] > 0
    # (each figure is rounded to milliseconds, the wall time to centiseconds)
    assert sum(phases.values()) - 0.02 <= report["wall_seconds"] <= sum(phases.values()) + 5

    # A rerun skips every group and adds no row.
    second = spark_submit(workspace["config"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "4 groups planned, 4 already done, 0 to process" in second.stdout
    again = tables(workspace["root"])
    for name, frame in out.items():
        pd.testing.assert_frame_equal(again[name], frame, obj=name)
    # --overwrite processes everything again and replaces the rows, and the old outputs go.
    old_cogs = set(composites.raster_uri)
    third = spark_submit(workspace["config"], "--overwrite")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "4 groups planned, 0 already done, 4 to process" in third.stdout
    replaced = tables(workspace["root"])
    for name, frame in out.items():
        assert len(replaced[name]) == len(frame), name
    assert set(replaced["evi_composites"].run_id).isdisjoint(set(composites.run_id))
    assert (
        not replaced["evi_scenes"].duplicated(["mgrs_tile", "product_id", "period", "parameter_hash"]).any()
    )
    tifs = evi_cogs(workspace["root"] / "out" / "evi")
    assert tifs == set(replaced["evi_composites"].raster_uri)
    assert tifs.isdisjoint(old_cogs)
    records = list((workspace["root"] / "out" / "ledger").rglob("*.parquet"))
    assert sorted(p.name for p in records) == sorted(
        Path(uri).name for uri in replaced["evi_commits"].record_uri
    )


@pytest.mark.integration
def test_the_udf_gives_the_same_rows_on_pandas_and_through_apply_in_pandas(
    spark, workspace, tmp_path
) -> None:
    config = load_config(workspace["config"], [f"output.root={tmp_path}"])
    selection = select_scenes(spark, config.catalog)
    one_group = selection.scenes.where("mgrs_tile = '55HBU' AND period = '2022-02'")
    function = make_group_function(config, run_id="same-run")
    from evi_udf.outputs.rows import result_spark_schema

    through_spark = (
        one_group.groupBy("mgrs_tile", "period").applyInPandas(function, result_spark_schema()).toPandas()
    )
    on_pandas = function(one_group.toPandas())
    # Each call is its own attempt and commit: its time, ids and output names differ.
    ignore = ["processed_at", "processing_seconds", "committed_at", "commit_id"]
    ignore += ["raster_uri", "stac_uri", "quicklook_uri", "record_uri"]
    left = through_spark.drop(columns=ignore).sort_values(["kind", "product_id"], na_position="first")
    right = on_pandas.drop(columns=ignore).sort_values(["kind", "product_id"], na_position="first")
    # Spark hands timestamps back in microseconds, pandas keeps nanoseconds: compare the instants.
    for frame in (left, right):
        frame["sensing_time"] = frame["sensing_time"].astype("datetime64[ns]")
    assert sorted(left.kind) == ["commit", "composite", "scene", "scene"]
    pd.testing.assert_frame_equal(
        left.reset_index(drop=True), right.reset_index(drop=True), check_dtype=False
    )


@pytest.mark.integration
@pytest.mark.parametrize("groups", [1, 3, 7, 20])
def test_bucket_ids_put_each_group_in_its_own_task(spark, groups: int) -> None:
    from pyspark import TaskContext

    ids = bucket_ids(spark, groups)
    frame = spark.createDataFrame([(bucket, n) for n, bucket in enumerate(ids)], "bucket long, n long")

    def where(pdf: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"n": pdf.n.iloc[:1], "task": [TaskContext.get().partitionId()]})

    spark.conf.set("spark.sql.shuffle.partitions", str(groups))
    spark.conf.set("spark.sql.adaptive.coalescePartitions.enabled", "false")
    try:
        placed = frame.groupBy("bucket").applyInPandas(where, "n long, task long").toPandas()
    finally:
        spark.conf.unset("spark.sql.adaptive.coalescePartitions.enabled")
        spark.conf.set("spark.sql.shuffle.partitions", "4")
    assert len(placed) == groups
    assert placed.task.nunique() == groups


@pytest.mark.integration
def test_run_fails_its_rules_when_too_many_groups_fail(spark, workspace, tmp_path) -> None:
    config = load_config(
        workspace["config"],
        [
            f"output.root={tmp_path}",
            "run.max_failed_group_share=0.0",
            "catalog.tiles=[54HYD]",
            "catalog.period=day",
            f"catalog.start_date=2022-01-{BROKEN_DATE[-2:]}",
            f"catalog.end_date=2022-01-{BROKEN_DATE[-2:]}",
        ],
    )
    lines: list[str] = []
    report = run(spark, config, ParquetSink(config.output.root), log=lines.append)
    # The only group is the broken scene's day: no composite, a failed group, a failed run.
    assert (report.groups_processed, report.groups_failed, report.status) == (1, 1, "failed")
    assert "FAILED" in lines[-1]
    failures = ParquetSink(config.output.root).read("evi_failures")
    group_rows = failures[failures.product_id.isna()]
    assert group_rows.message.iloc[0] == f"every scene of {BROKEN_TILE} 2022-01-{BROKEN_DATE[-2:]} failed"
    (commit,) = ParquetSink(config.output.root).read("evi_commits").itertuples()
    assert (commit.status, commit.raster_uri, commit.scenes_used) == ("failed", None, 0)


@pytest.mark.integration
def test_python_workers_put_group_files_on_sparks_local_disk(spark) -> None:
    """The group function's scratch folder goes under the executor's Spark local directory."""
    from evi_udf.run.udf import spark_local_dir

    def where(pdf: pd.DataFrame) -> pd.DataFrame:
        import os

        return pd.DataFrame({"chosen": [spark_local_dir()], "dirs": [os.environ.get("SPARK_LOCAL_DIRS")]})

    found = (
        spark.createDataFrame([(1,)], "g long")
        .groupBy("g")
        .applyInPandas(where, "chosen string, dirs string")
    )
    (row,) = found.collect()
    assert row.dirs and row.chosen == row.dirs.split(",")[0]
    assert Path(row.chosen).is_dir()


@pytest.mark.integration
def test_a_truncated_index_is_a_catalog_error_naming_the_file(spark, workspace, tmp_path) -> None:
    from evi_udf.errors import CatalogError

    whole = (workspace["archive"] / "L2" / "index.csv.gz").read_bytes()
    truncated = tmp_path / "index.csv.gz"
    truncated.write_bytes(whole[: len(whole) * 2 // 3])
    config = load_config(
        workspace["config"], [f"catalog.index_uri={truncated}", f"output.root={tmp_path}/out"]
    )
    with pytest.raises(CatalogError, match=f"{truncated}: the index file is damaged"):
        run(spark, config, ParquetSink(config.output.root), log=lambda _: None)
    assert not (tmp_path / "out" / "ledger").exists()
