"""The Parquet cache of the index: the gzip CSV converted once, partitioned for pruning."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pandas as pd

from evi_udf.errors import CatalogError
from evi_udf.index.catalog import _is_parquet_uri, _spark_has_gcs, read_index
from evi_udf.index.columns import _PARQUET_SCHEMA, CORRUPT_RECORD_COLUMN, INDEX_COLUMNS, PARTITION_COLUMNS
from evi_udf.index.rules import _parse_utc, _text, _tile_valid

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@dataclasses.dataclass(frozen=True)
class IndexCacheSummary:
    """What :func:`write_index_parquet` wrote: its rows, those with the wrong number of fields (kept, so
    that the catalog still reports them), and its ``utm_zone_part`` x ``sensing_year`` partitions."""

    uri: str
    rows: int
    corrupt_rows: int
    partitions: int


def write_index_parquet(spark: SparkSession, csv_uri: str, out_uri: str) -> IndexCacheSummary:
    """Convert the index CSV once into a Parquet cache partitioned for pruning.

    The gzip index is not splittable, so every run that reads it goes through one task; the cache is
    read in parallel and :func:`select_scenes` skips whole partitions from the configured tiles and
    dates before any Python runs.

    Parameters
    ----------
    spark
        The active session.
    csv_uri
        The index CSV (``.csv`` or ``.csv.gz``, local or ``gs://``).
    out_uri
        Output directory, replaced if it exists. Name it ``*.parquet`` so :func:`read_index`
        recognises it (required for ``gs://``).

    Notes
    -----
    The cache holds the 14 raw text columns, ``_corrupt_record`` (so malformed rows are still
    reported) and the partition columns ``utm_zone_part`` (``MGRS_TILE[:2]``) and ``sensing_year``
    (``SENSING_TIME[:4]``). A partition value is null when the tile or sensing time does not parse
    (or the row is corrupt), so pruning never hides a malformed row that the CSV path would report.

    Spark's overwrite deletes ``out_uri`` before it writes: a batch reading the cache meanwhile fails.
    Write each refresh to a new name (e.g. with the date) and point ``catalog.index_uri`` at it.

    Returns
    -------
    IndexCacheSummary
        Counted from the cache as written (read back, which costs seconds on Parquet).

    Raises
    ------
    CatalogError
        If ``out_uri`` is not named ``*.parquet`` or cannot be written (``gs://`` without the
        connector), if ``csv_uri`` is a cache itself; and as :func:`read_index` for the source.
    """
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F

    from evi_udf.storage import is_gs

    if not out_uri.rstrip("/").endswith(".parquet"):
        raise CatalogError(
            f"index cache {out_uri}: name it *.parquet (e.g. gs://BUCKET/sentinel2/L2/index-20261201"
            ".parquet) so that catalog.index_uri recognises it as the cache"
        )
    if _is_parquet_uri(csv_uri):
        raise CatalogError(f"index cache {out_uri}: the source must be the index CSV, got {csv_uri}")
    if is_gs(out_uri) and not _spark_has_gcs(spark):
        raise CatalogError(
            f"index cache {out_uri}: this Spark has no gs:// connector to write it with (Dataproc has "
            "one built in): build the cache on Dataproc (scripts/submit.sh --index-cache) or locally"
        )
    raw = read_index(spark, csv_uri).select(*INDEX_COLUMNS, CORRUPT_RECORD_COLUMN)
    with_partitions = raw.mapInPandas(_add_partition_columns, _PARQUET_SCHEMA)
    try:
        (
            # One file per partition, sorted so Parquet row-group statistics on tile and time are tight.
            with_partitions.repartition(*PARTITION_COLUMNS)
            .sortWithinPartitions("MGRS_TILE", "SENSING_TIME")
            .write.mode("overwrite")
            .partitionBy(*PARTITION_COLUMNS)
            .parquet(out_uri)
        )
    except (Py4JJavaError, PySparkException) as exc:
        cause = str(exc.java_exception) if isinstance(exc, Py4JJavaError) else str(exc)
        raise CatalogError(f"index cache {out_uri}: cannot write it: {cause.splitlines()[0]}") from exc

    written = read_index(spark, out_uri)
    counts = written.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count(CORRUPT_RECORD_COLUMN).alias("corrupt"),
        F.countDistinct(*[F.coalesce(F.col(c), F.lit("")) for c in PARTITION_COLUMNS]).alias("partitions"),
    ).first()
    assert counts is not None  # an aggregate always has one row
    return IndexCacheSummary(out_uri, int(counts["rows"]), int(counts["corrupt"]), int(counts["partitions"]))


def _add_partition_columns(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for raw in batches:
        raw = raw.reset_index(drop=True)
        corrupt = raw[CORRUPT_RECORD_COLUMN].notna().to_numpy()
        tile = _text(raw, "MGRS_TILE")
        tile_ok = _tile_valid(tile) & ~corrupt
        sensing = _parse_utc(_text(raw, "SENSING_TIME"))
        time_ok = sensing.notna().to_numpy() & ~corrupt
        out = raw.copy()
        out["utm_zone_part"] = tile.str[:2].where(tile_ok, None)
        out["sensing_year"] = sensing.dt.strftime("%Y").where(time_ok, None)
        yield out[list(_PARQUET_SCHEMA.fieldNames())]
