"""Making the groups: one ``applyInPandas`` over the groups to do, exactly one group per Spark task.

Each task runs :func:`evi_udf.run.udf.make_group_function`'s function on its group: it makes the
outputs, publishes the commit record and returns the committed rows, which come back to the driver.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from evi_udf.config import JobConfig
from evi_udf.outputs.mosaic import Canvas
from evi_udf.outputs.rows import result_spark_schema
from evi_udf.run.udf import make_group_function, result_frame
from evi_udf.task.group import GroupKey

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


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
def one_group_per_task(spark: SparkSession, groups: int) -> Iterator[None]:
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


def process_groups(
    spark: SparkSession,
    scenes: DataFrame,
    todo: Sequence[GroupKey],
    config: JobConfig,
    run_id: str,
    canvases: Mapping[str, Canvas],
    zones_by_tile: DataFrame | None = None,
) -> pd.DataFrame:
    """Make every group of ``todo`` from the ``scenes`` frame, one per task, and return their rows.

    ``zones_by_tile`` (``mgrs_tile``, ``zone``, ``zone_id``, ``wkb``): the zones that may meet each
    tile; each group then gets its tile's zones through a cogroup.
    """
    from pyspark.sql import functions as F

    if not todo:
        return result_frame([])
    ids = bucket_ids(spark, len(todo))
    rows = [(key.mgrs_tile, key.period, bucket) for key, bucket in zip(todo, ids, strict=True)]
    schema = "mgrs_tile string, period string, bucket long"
    buckets = spark.createDataFrame(rows, schema)
    grouped = scenes.join(F.broadcast(buckets), ["mgrs_tile", "period"]).groupBy("bucket")
    with one_group_per_task(spark, len(todo)):
        if zones_by_tile is None:
            function = make_group_function(config, run_id, canvases=canvases)
            results = grouped.applyInPandas(function, schema=result_spark_schema())
        else:
            # Each group gets the zones of its tile (every period of a tile gets them all).
            # A frame of its own: the same one on both sides of a cogroup makes its columns ambiguous.
            zone_buckets = spark.createDataFrame(rows, schema)
            zone_groups = zones_by_tile.join(F.broadcast(zone_buckets), "mgrs_tile").groupBy("bucket")
            function = make_group_function(config, run_id, canvases=canvases, with_zones=True)
            results = grouped.cogroup(zone_groups).applyInPandas(function, schema=result_spark_schema())
        return results.toPandas()
