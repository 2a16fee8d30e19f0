"""The Spark job: index -> groups -> ``applyInPandas`` -> rasters and statistics tables.

:func:`run` is what ``spark_jobs/evi_job.py`` calls. It selects scenes with the catalog, skips groups
whose composite already exists for the same parameters (unless overwriting), spreads the remaining
groups one per task, processes them with :func:`evi_udf.udf.make_group_function`, and hands the
composite, scene and failure rows to the injected sink. It ends with a run report (printed and
written as JSON next to the outputs) and a quick-look mosaic of the run's composites.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds

from evi_udf.catalog import select_scenes
from evi_udf.config import JobConfig
from evi_udf.process import composite_uri, evi_to_rgba, parameter_hash, write_png
from evi_udf.schema import (
    TABLE_NAMES,
    FailureRow,
    GroupKey,
    result_spark_schema,
    table_columns,
    to_result_records,
)
from evi_udf.storage import Storage
from evi_udf.udf import make_group_function, result_frame

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

GROUP_COLUMNS = ("mgrs_tile", "period", "period_start", "period_end")


class ResultSink(Protocol):
    """Where the result tables go (local Parquet, BigQuery)."""

    def write(self, tables: dict[str, pd.DataFrame], replaced_groups: set[tuple[str, str, str]]) -> None:
        """Merge one run's rows; the rows of ``replaced_groups`` (tile, period, hash) are replaced."""


@dataclasses.dataclass(frozen=True)
class RunReport:
    """What a run did, for people (printed) and machines (JSON next to the outputs)."""

    run_id: str
    status: str
    started_at: str
    wall_seconds: float
    groups_planned: int
    groups_skipped: int
    groups_processed: int
    groups_failed: int
    failed_share: float
    scenes_read: int
    scenes_failed: int
    rejected_index_rows: int
    total_pixels: int
    valid_pixels: int
    output_root: str
    report_uri: str
    mosaics: dict[str, str]
    composites: list[str]

    def summary(self) -> str:
        """A few lines for the console."""
        return "\n".join(
            [
                f"run {self.run_id}: {self.status.upper()} in {self.wall_seconds:.1f} s",
                f"  groups: {self.groups_planned} planned, {self.groups_processed} processed, "
                f"{self.groups_skipped} skipped (already done), {self.groups_failed} failed",
                f"  scenes: {self.scenes_read} read, {self.scenes_failed} failed; "
                f"{self.rejected_index_rows} index rows rejected",
                f"  pixels: {self.valid_pixels:,} valid EVI of {self.total_pixels:,} in the composites",
                f"  outputs: {self.output_root} (report {self.report_uri})",
                *(f"  mosaic {period}: {uri}" for period, uri in sorted(self.mosaics.items())),
            ]
        )


def new_run_id(now: dt.datetime) -> str:
    """A readable, unique run id: UTC time plus a random suffix."""
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def _group_keys(scenes: DataFrame) -> list[tuple[GroupKey, int]]:
    from pyspark.sql import functions as F

    rows = (
        scenes.groupBy(*GROUP_COLUMNS)
        .agg(F.count("*").alias("scenes"))
        .orderBy(F.desc("scenes"), "mgrs_tile", "period")
        .collect()
    )
    return [(GroupKey(r.mgrs_tile, r.period, r.period_start, r.period_end), r.scenes) for r in rows]


def bucket_ids(spark: SparkSession, partitions: int) -> list[int]:
    """One integer per shuffle partition whose Spark hash lands in that partition.

    Grouping by these integers with ``spark.sql.shuffle.partitions = partitions`` puts exactly one
    group in each task: groups are never queued behind each other on one executor by a hash collision.
    """
    from pyspark.sql import functions as F

    candidates = (
        spark.range(0, 64 * partitions)
        .select("id", F.pmod(F.hash("id"), F.lit(partitions)).alias("partition"))
        .groupBy("partition")
        .agg(F.min("id").alias("id"))
        .orderBy("partition")
        .collect()
    )
    if len(candidates) != partitions:
        raise RuntimeError(f"could not find a bucket id for each of {partitions} partitions")
    return [row.id for row in candidates]


@contextlib.contextmanager
def _one_group_per_task(spark: SparkSession, groups: int) -> Iterator[None]:
    # Adaptive execution would coalesce the tiny scene-row partitions into one task, which is exactly
    # the accident to avoid: the work is in the rasters, not in the rows.
    settings = {
        "spark.sql.shuffle.partitions": str(groups),
        "spark.sql.adaptive.coalescePartitions.enabled": "false",
    }
    previous = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def _process(
    spark: SparkSession, scenes: DataFrame, todo: Sequence[GroupKey], config: JobConfig, run_id: str
) -> pd.DataFrame:
    from pyspark.sql import functions as F

    if not todo:
        return result_frame([])
    ids = bucket_ids(spark, len(todo))
    buckets = spark.createDataFrame(
        [(key.mgrs_tile, key.period, bucket) for key, bucket in zip(todo, ids, strict=True)],
        "mgrs_tile string, period string, bucket long",
    )
    with _one_group_per_task(spark, len(todo)):
        results = (
            scenes.join(F.broadcast(buckets), ["mgrs_tile", "period"])
            .groupBy("bucket")
            .applyInPandas(make_group_function(config, run_id), schema=result_spark_schema())
            .toPandas()
        )
    return results


def _rejections_as_failures(rejected: pd.DataFrame, config: JobConfig, run_id: str) -> list[dict[str, Any]]:
    rows = [
        FailureRow(
            mgrs_tile=str(row.mgrs_tile or ""),
            period="",
            granule_id=row.granule_id,
            product_id=row.product_id,
            stage=f"catalog:{row.stage}",
            error_class="RejectedIndexRow",
            message=str(row.reason),
            parameter_hash=parameter_hash(config.raster),
        )
        for row in rejected.itertuples(index=False)
    ]
    records = to_result_records("failure", rows)
    for record in records:
        record["run_id"] = run_id
    return records


def split_tables(results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Result rows split by ``kind`` into the three tables, each with its own columns."""
    return {
        table: results.loc[results["kind"] == kind, table_columns(kind)].reset_index(drop=True)
        for kind, table in TABLE_NAMES.items()
    }


def write_mosaic(cogs: Sequence[Path], destination: Path, width: int) -> Path | None:
    """A colour-mapped PNG of the given composites on one geographic canvas ``width`` pixels wide.

    Each composite is warped from its coarsest overview that is still finer than the canvas: warping
    the full-resolution band would decode all of it for a picture a few hundred pixels across.
    """
    if not cogs or width <= 0:
        return None
    # Per composite: geographic bounds, EVI scale, width and overview factors (one open per file).
    described = []
    for cog in cogs:
        with rasterio.open(cog) as dataset:
            box = transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds, densify_pts=21)
            described.append((box, np.float32(dataset.scales[0]), dataset.width, dataset.overviews(1)))
    bounds = [box for box, *_ in described]
    west, south = min(b[0] for b in bounds), min(b[1] for b in bounds)
    east, north = max(b[2] for b in bounds), max(b[3] for b in bounds)
    step = (east - west) / width
    height = max(1, round((north - south) / step))
    transform = rasterio.Affine(step, 0, west, 0, -step, north)
    canvas = np.full((height, width), np.nan, dtype=np.float32)
    for cog, (box, scale, cog_width, factors) in zip(cogs, described, strict=True):
        # Source pixels per canvas pixel across the composite's width.
        decimation = cog_width * step / (box[2] - box[0])
        finer = [level for level, factor in enumerate(factors) if factor <= decimation]
        options = {"overview_level": finer[-1]} if finer else {}
        with (
            rasterio.open(cog, **options) as dataset,
            WarpedVRT(
                dataset,
                crs="EPSG:4326",
                transform=transform,
                width=width,
                height=height,
                resampling=Resampling.nearest,
            ) as warped,
        ):
            band = warped.read(1, masked=True).astype(np.float32) * scale
            values = band.filled(np.nan)
            canvas = np.where(np.isfinite(values), values, canvas)
    destination.parent.mkdir(parents=True, exist_ok=True)
    write_png(evi_to_rgba(canvas), destination)
    return destination


def run(
    spark: SparkSession,
    config: JobConfig,
    sink: ResultSink,
    log: Callable[[str], None] = print,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
) -> RunReport:
    """Run the whole job once and return its report.

    Raises
    ------
    EviError
        When the run cannot start or finish as a whole (unreadable index, sink failure); failures of
        single scenes and groups are rows, not exceptions.
    """
    started = clock()
    started_clock = time.perf_counter()
    store = Storage(config.storage.anonymous_buckets, config.storage.project)
    run_id = new_run_id(started)
    selection = select_scenes(spark, config.catalog)
    planned = _group_keys(selection.scenes)
    params = parameter_hash(config.raster)
    todo, skipped = [], []
    for key, _count in planned:
        done = not config.run.overwrite and store.exists(composite_uri(key, config))
        (skipped if done else todo).append(key)
    log(f"run {run_id}: {len(planned)} groups planned, {len(skipped)} already done, {len(todo)} to process")
    results = _process(spark, selection.scenes, todo, config, run_id)
    rejected = selection.rejected.toPandas()
    # One frame from records, typed once: concatenating frames whose kind-specific columns are all
    # empty makes pandas guess (and warn about) their dtypes.
    processed = results.astype(object).where(results.notna(), None).to_dict("records")
    results = result_frame(processed + _rejections_as_failures(rejected, config, run_id))
    tables = split_tables(results)
    sink.write(tables, {(key.mgrs_tile, key.period, params) for key in todo})

    composites = tables["evi_composites"]
    processed_keys = {(key.mgrs_tile, key.period) for key in todo}
    made = {(row.mgrs_tile, row.period) for row in composites.itertuples(index=False)}
    failed_groups = len(processed_keys - made)
    scene_failures = tables["evi_failures"]
    scene_failures = scene_failures[
        scene_failures["product_id"].notna() & ~scene_failures["stage"].str.startswith("catalog:")
    ]
    root = config.output.root.rstrip("/")
    mosaics = {}
    with tempfile.TemporaryDirectory(prefix="evi_run_") as scratch:
        local = Path(scratch)
        for period in sorted({key.period for key, _ in planned}):
            uris = [
                u
                for key, _ in planned
                if key.period == period and store.exists(u := composite_uri(key, config))
            ]
            picture = write_mosaic(
                [store.fetch(u, local / "cogs") for u in uris],
                local / f"{period}.png",
                config.run.mosaic_size,
            )
            if picture:
                mosaics[period] = f"{root}/runs/{run_id}_mosaic_{period}.png"
                store.publish(picture, mosaics[period], overwrite=True)
    failed_share = failed_groups / len(todo) if todo else 0.0
    report = RunReport(
        run_id=run_id,
        status="failed" if failed_share > config.run.max_failed_group_share else "ok",
        started_at=started.isoformat(timespec="seconds"),
        wall_seconds=round(time.perf_counter() - started_clock, 2),
        groups_planned=len(planned),
        groups_skipped=len(skipped),
        groups_processed=len(todo),
        groups_failed=failed_groups,
        failed_share=round(failed_share, 4),
        scenes_read=len(tables["evi_scenes"]),
        scenes_failed=scene_failures["product_id"].nunique(),
        rejected_index_rows=len(rejected),
        total_pixels=int(composites["total_pixels"].sum()),
        valid_pixels=int(composites["valid_pixels"].sum()),
        output_root=root,
        report_uri=f"{root}/runs/{run_id}.json",
        mosaics=mosaics,
        composites=[uri for uri in composites["raster_uri"]],
    )
    with tempfile.TemporaryDirectory(prefix="evi_run_") as scratch:
        report_file = Path(scratch) / "report.json"
        report_file.write_text(json.dumps(dataclasses.asdict(report), indent=2))
        store.publish(report_file, report.report_uri, overwrite=True)
    log(report.summary())
    return report
