"""The Sentinel-2 index in Spark: reading it (CSV, gzip CSV, the Parquet cache, ``gs://``), selecting
scenes with the rules of :mod:`evi_udf.index.rules` in ``mapInPandas`` / ``applyInPandas``, and the
``python -m evi_udf.index.catalog`` report.

The columns and schemas are in :mod:`evi_udf.index.columns`, the Parquet cache in
:mod:`evi_udf.index.cache`; the names other modules use from them are re-exported here.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime as dt
import functools
import gzip
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import pandas as pd

from evi_udf.config import MGRS_TILE_PATTERN, CatalogConfig, StorageConfig
from evi_udf.errors import CatalogError, EviError, IndexSchemaError
from evi_udf.index.columns import (
    _INDEX_READ_SCHEMA,
    _PARQUET_SCHEMA,
    _RAW_PREFIX,
    _WORK_SCHEMA,
    CORRUPT_RECORD_COLUMN,
    INDEX_COLUMNS,
    INDEX_HEADER,
    PARTITION_COLUMNS,
    RAW_COLUMNS,
    REJECTED_COLUMNS,
    REJECTED_SCHEMA,
    SCENE_COLUMNS,
    SCENE_SCHEMA,
    STAGES,
)
from evi_udf.index.rules import (
    LEVEL_IN_PRODUCT_ID,
    LINE_DATE_PATTERN,
    LINE_ZONE_PATTERN,
    assign_periods,
    bbox_utm_zones,
    classify_index,
    dedupe_scenes,
    filter_mask,
    parse_index,
    partition_bounds,
    period_bounds,
    select_scenes_pandas,
    tiles_pattern,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from evi_udf.index.cache import IndexCacheSummary

__all__ = [
    "CORRUPT_RECORD_COLUMN",
    "INDEX_COLUMNS",
    "INDEX_HEADER",
    "PARTITION_COLUMNS",
    "RAW_COLUMNS",
    "REJECTED_COLUMNS",
    "REJECTED_SCHEMA",
    "SCENE_COLUMNS",
    "SCENE_SCHEMA",
    "STAGES",
    "CatalogSelection",
    "assign_periods",
    "check_header",
    "classify_index",
    "dedupe_scenes",
    "filter_mask",
    "index_read_errors",
    "main",
    "parse_index",
    "period_bounds",
    "plan_groups",
    "read_index",
    "read_index_pandas",
    "rejected_summary",
    "report",
    "select_scenes",
    "select_scenes_pandas",
    "text_table",
    "write_index_parquet",
]


def write_index_parquet(spark: SparkSession, csv_uri: str, out_uri: str) -> IndexCacheSummary:
    """See :func:`evi_udf.index.cache.write_index_parquet` (imported late: it imports this module)."""
    from evi_udf.index.cache import write_index_parquet as write

    return write(spark, csv_uri, out_uri)


@dataclasses.dataclass(frozen=True)
class CatalogSelection:
    """The outcome of :func:`select_scenes`: scenes to process and rows that could not be used.

    Attributes
    ----------
    scenes
        Spark DataFrame with :data:`SCENE_SCHEMA`, one row per (tile, datatake) after deduplication.
    rejected
        Spark DataFrame with :data:`REJECTED_SCHEMA`.
    """

    scenes: DataFrame
    rejected: DataFrame


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def check_header(line: str | None, uri: str) -> None:
    """Raise :class:`IndexSchemaError` unless ``line`` is the 14-column index header.

    Parameters
    ----------
    line
        The first line of the file (``None`` for an empty file).
    uri
        Named in the error message.

    Raises
    ------
    IndexSchemaError
        If the header is missing or differs; the message shows the expected and the found header and
        the first column that differs.
    """
    if line is None:
        raise IndexSchemaError(f"{uri}: the file is empty; expected the header line {INDEX_HEADER}")
    found = line.lstrip("\ufeff").rstrip("\r\n")
    if found == INDEX_HEADER:
        return
    found_columns = found.split(",")
    detail = f"expected {len(INDEX_COLUMNS)} columns, found {len(found_columns)}"
    for position, (want, got) in enumerate(zip(INDEX_COLUMNS, found_columns, strict=False), start=1):
        if want != got:
            detail = f"column {position}: expected {want}, found {got!r}"
            break
    raise IndexSchemaError(
        f"{uri}: the first line is not the Sentinel-2 index header ({detail})\n"
        f"  expected: {INDEX_HEADER}\n"
        f"  found:    {found}"
    )


def _is_parquet_uri(uri: str) -> bool:
    # A gs:// "directory" cannot be recognised without listing the bucket: caches there must be named
    # *.parquet (or given with a trailing slash).
    stripped = uri.rstrip("/")
    if stripped.endswith(".parquet") or uri.endswith("/"):
        return True
    return "://" not in uri and os.path.isdir(uri)


def read_index(spark: SparkSession, uri: str) -> DataFrame:
    """Read the Sentinel-2 index (CSV, gzip CSV or the Parquet cache) as raw text columns.

    Parameters
    ----------
    spark
        The active session.
    uri
        Local path or ``gs://`` URI (passed to Spark as is). A path ending in ``.parquet`` or ``/``, or a
        local directory, is read as the cache written by :func:`write_index_parquet`; anything else as
        CSV (``.gz`` is decompressed by Spark).

    Returns
    -------
    DataFrame
        The columns :data:`INDEX_COLUMNS` and :data:`CORRUPT_RECORD_COLUMN`, all strings (empty fields
        are null), plus :data:`PARTITION_COLUMNS` for the Parquet cache. A CSV row with the wrong number
        of fields has its whole line in ``_corrupt_record``.

        Spark only detects a wrong field count when the query reads *every* CSV column: after a
        ``select`` of some columns (CSV column pruning), ``_corrupt_record`` stays null. Pass the whole
        row on, as :func:`select_scenes` does.

    Raises
    ------
    IndexSchemaError
        If the CSV header is not :data:`INDEX_HEADER`.
    CatalogError
        If the file cannot be read.
    """
    from pyspark.errors import AnalysisException

    uri = _spark_readable(spark, uri)
    try:
        if _is_parquet_uri(uri):
            return spark.read.schema(_PARQUET_SCHEMA).parquet(uri)
        first = spark.read.text(uri).first()
        check_header(None if first is None else first[0], uri)
        return (
            spark.read.schema(_INDEX_READ_SCHEMA)
            .option("header", True)
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT_RECORD_COLUMN)
            # RFC 4180 quoting ("" inside quotes), as Python's csv module reads it.
            .option("escape", '"')
            .csv(uri)
        )
    except AnalysisException as exc:
        message = str(exc).splitlines()[0]
        raise CatalogError(f"cannot read the Sentinel-2 index {uri}: {message}") from exc


# What Spark's gzip and Parquet readers say about a damaged file, deep inside a Java stack trace.
_DAMAGED_FILE = (
    "Unexpected end of input stream",
    "EOFException",
    "ZipException",
    "Not in GZIP format",
    "invalid stored block lengths",
    "is not a Parquet file",
    "CorruptedFile",
    "incorrect header check",
)


@contextlib.contextmanager
def index_read_errors(uri: str) -> Iterator[None]:
    """Turn Spark's failure to read a damaged index (a truncated gzip, a corrupt Parquet file), raised
    at the first action as a Java stack trace, into a :class:`CatalogError` naming the file."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        yield
    except (Py4JJavaError, PySparkException) as exc:
        text = str(exc)
        clue = next((c for c in _DAMAGED_FILE if c in text), None)
        if clue is None:
            raise
        raise CatalogError(
            f"{uri}: the index file is damaged ({clue}); download or convert it again"
        ) from exc


def _spark_has_gcs(spark: SparkSession) -> bool:
    from py4j.protocol import Py4JJavaError

    hadoop = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
    try:
        spark.sparkContext._jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass("gs", hadoop)  # type: ignore[union-attr]
    except Py4JJavaError:
        return False
    return True


def _spark_readable(spark: SparkSession, uri: str) -> str:
    """``uri`` itself where Spark can read it; a local copy of a ``gs://`` CSV index in local mode.

    Dataproc ships the GCS connector, so Spark reads ``gs://`` directly there. A local session has no
    connector (it comes from Maven), so the driver downloads the index through the storage layer
    (Application Default Credentials, or the emulator) and Spark reads the copy, which every local
    executor can see.
    """
    from evi_udf.storage import Storage, is_gs

    if not is_gs(uri) or _spark_has_gcs(spark):
        return uri
    if not spark.sparkContext.master.startswith("local"):
        raise CatalogError(
            f"cannot read the Sentinel-2 index {uri}: this Spark has no gs:// connector "
            "(Dataproc has one built in; elsewhere add gcs-connector to the classpath)"
        )
    if _is_parquet_uri(uri):
        raise CatalogError(
            f"cannot read the Parquet index cache {uri} in a local session without the gs:// connector; "
            "use the CSV index or a local copy of the cache"
        )
    directory = Path(tempfile.mkdtemp(prefix="evi_index_"))
    store = Storage(anonymous_buckets=StorageConfig().anonymous_buckets)
    try:
        return str(store.fetch(uri, directory))
    except EviError as exc:
        raise CatalogError(f"cannot read the Sentinel-2 index {uri}: {exc}") from exc


def read_index_pandas(path: str | Path) -> pd.DataFrame:
    """Read a local index CSV (plain or gzip) into pandas with the same rules as :func:`read_index`.

    Meant for tests and small indexes: it parses line by line in Python.

    Returns
    -------
    pandas.DataFrame
        :data:`INDEX_COLUMNS` plus :data:`CORRUPT_RECORD_COLUMN`, strings or ``None``, the same values
        Spark gives: empty fields are ``None``, blank lines are skipped, a row with the wrong number of
        fields keeps its first 14 fields (missing ones ``None``) and its whole line as corrupt record.

    Raises
    ------
    IndexSchemaError
        If the header is not :data:`INDEX_HEADER`.
    CatalogError
        If the file cannot be read.
    """
    path = Path(path)
    try:
        with path.open("rb") as probe:
            is_gzip = probe.read(2) == b"\x1f\x8b"
        opener = gzip.open if is_gzip else open
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise CatalogError(f"cannot read the Sentinel-2 index {path}: {exc}") from exc
    check_header(lines[0] if lines else None, str(path))
    width = len(INDEX_COLUMNS)
    records = []
    for line in lines[1:]:
        if not line:
            continue
        fields = next(csv.reader([line]))
        corrupt = line if len(fields) != width else None
        fields = (fields + [""] * width)[:width]
        records.append([value or None for value in fields] + [corrupt])
    return pd.DataFrame(records, columns=[*INDEX_COLUMNS, CORRUPT_RECORD_COLUMN], dtype=object)


def _classify_batches(batches: Iterator[pd.DataFrame], config: CatalogConfig) -> Iterator[pd.DataFrame]:
    for raw in batches:
        yield classify_index(raw, config)


def _dedupe_tile(
    group: pd.DataFrame, period: str, start: dt.date | None, end: dt.date | None
) -> pd.DataFrame:
    return assign_periods(dedupe_scenes(group), period, start, end)


def _partition_filter(config: CatalogConfig) -> Column | None:
    from pyspark.sql import functions as F

    # Null partitions hold rows whose tile or time does not parse: they must still reach the parser
    # so they are reported, as on the CSV path.
    zones, first, last = partition_bounds(config)
    condition = None
    zone, year = F.col("utm_zone_part"), F.col("sensing_year")
    if zones is not None:
        condition = zone.isNull() | zone.isin(zones)
    if first is not None:
        after = year.isNull() | (year >= first)
        condition = after if condition is None else condition & after
    if last is not None:
        before = year.isNull() | (year <= last)
        condition = before if condition is None else condition & before
    return condition


# SENSING_TIME as the index writes it; the pandas parser accepts exactly these (1-6 fraction digits).
_CANONICAL_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"


def _number_or_unknown(column: str) -> Column:
    """The column as a double when it is a finite number, else null (unknown: the rules decide)."""
    from pyspark.sql import functions as F

    value = F.expr(f"try_cast({column} AS DOUBLE)")
    return F.when(~F.isnan(value) & (F.abs(value) < float("inf")), value)


def raw_filter(config: CatalogConfig) -> Column:
    """The catalog filters as a Spark SQL condition on the raw text columns, before any Python runs.

    It keeps every row the pandas rules (:func:`~evi_udf.index.rules.filter_mask`) may keep: a filter
    is applied only where the raw value reads as the rules read it (a tile like ``55HBU``, a time like
    ``2023-02-14T00:06:49.024000Z``, a finite number in range); anything else is unknown and passes,
    to be parsed, filtered and if need be rejected in pandas. A line with the wrong number of fields
    passes when its text may belong to the query (:func:`~evi_udf.index.rules.corrupt_line_relevant`).
    So most of the index never leaves the JVM, and the selection is the same as without it.
    """
    from pyspark.sql import functions as F

    def unknown_or(known: Column, passes: Column) -> Column:
        return ~F.coalesce(known, F.lit(False)) | F.coalesce(passes, F.lit(False))

    conditions = []
    product = F.coalesce(F.col("PRODUCT_ID"), F.lit(""))
    conditions.append(
        unknown_or(
            product.rlike(LEVEL_IN_PRODUCT_ID.format(level="L1C|L2A")),
            product.rlike(LEVEL_IN_PRODUCT_ID.format(level=config.level)),
        )
    )
    time_text = F.col("SENSING_TIME")
    day = F.substring(time_text, 1, 10)
    canonical = time_text.rlike(_CANONICAL_TIME)
    if config.start_date is not None:
        conditions.append(unknown_or(canonical, day >= config.start_date.isoformat()))
    if config.end_date is not None:
        conditions.append(unknown_or(canonical, day <= config.end_date.isoformat()))
    if config.tiles:
        tile = F.col("MGRS_TILE")
        conditions.append(unknown_or(tile.rlike(MGRS_TILE_PATTERN.pattern), tile.isin(list(config.tiles))))
    cloud = _number_or_unknown("CLOUD_COVER")
    in_range = (cloud >= 0.0) & (cloud <= 100.0)
    conditions.append(unknown_or(in_range, cloud <= config.max_cloud_cover))
    if config.geometric_quality != "any":
        flag = F.coalesce(F.col("GEOMETRIC_QUALITY_FLAG"), F.lit(""))
        allowed = ["PASSED"] if config.geometric_quality == "passed" else ["PASSED", ""]
        conditions.append(unknown_or(flag.isin("PASSED", "FAILED", ""), flag.isin(allowed)))
    if config.bbox is not None:
        conditions.append(_bbox_condition(config.bbox))
    well_formed = conditions[0]
    for condition in conditions[1:]:
        well_formed = well_formed & condition

    line = F.col(CORRUPT_RECORD_COLUMN)
    relevant = F.lit(True)
    if config.tiles:
        relevant = relevant & line.rlike(tiles_pattern(config.tiles))
    line_day = F.regexp_extract(line, LINE_DATE_PATTERN, 1)
    if config.start_date is not None:
        relevant = relevant & ((line_day == "") | (line_day >= config.start_date.isoformat()))
    if config.end_date is not None:
        relevant = relevant & ((line_day == "") | (line_day <= config.end_date.isoformat()))
    if config.bbox is not None:
        zone = F.regexp_extract(line, LINE_ZONE_PATTERN, 1)
        zones = [f"{z:02d}" for z in bbox_utm_zones(config.bbox)]
        relevant = relevant & ((zone == "") | zone.isin(zones))
    return F.when(line.isNull(), well_formed).otherwise(relevant)


def _bbox_condition(bbox: tuple[float, float, float, float]) -> Column:
    """:func:`~evi_udf.index.rules._bbox_intersects` in Spark SQL; unknown (passes) where a corner is
    not a number in range or south is north of north, as the pandas parser makes it."""
    from pyspark.sql import functions as F

    north, south = _number_or_unknown("NORTH_LAT"), _number_or_unknown("SOUTH_LAT")
    west, east = _number_or_unknown("WEST_LON"), _number_or_unknown("EAST_LON")
    known = (
        north.between(-90.0, 90.0)
        & south.between(-90.0, 90.0)
        & west.between(-180.0, 180.0)
        & east.between(-180.0, 180.0)
        & (south <= north)
    )
    q_west, q_south, q_east, q_north = bbox
    lat_ok = (south <= q_north) & (north >= q_south)
    crosses = west > east
    first_east = F.when(crosses, F.lit(180.0)).otherwise(east)
    intervals = [(q_west, q_east)] if q_west <= q_east else [(q_west, 180.0), (-180.0, q_east)]
    lon_ok = F.lit(False)
    for low, high in intervals:
        lon_ok = lon_ok | ((west <= high) & (first_east >= low)) | (crosses & (east >= low))
    return ~F.coalesce(known, F.lit(False)) | F.coalesce(lat_ok & lon_ok, F.lit(False))


def select_scenes(spark: SparkSession, config: CatalogConfig) -> CatalogSelection:
    """Select, deduplicate and group the scenes of the index named by ``config.index_uri``.

    Parse and filter run in ``mapInPandas`` (:func:`classify_index`), deduplication and the period
    keys per tile in ``groupBy("mgrs_tile").applyInPandas`` (:func:`dedupe_scenes`,
    :func:`assign_periods`): the same functions as :func:`select_scenes_pandas`. On the Parquet cache,
    partitions outside the configured tiles' UTM zones and the dates' years are skipped first.

    Parameters
    ----------
    spark
        The active session (its time zone must be UTC, as :func:`evi_udf.run.session.build_session`
        sets it).
    config
        The catalog settings.

    Returns
    -------
    CatalogSelection
        Scenes and rejected rows, both cached (they are used more than once downstream). With
        ``period="all"`` and no configured dates, one Spark job runs here to find the date range.

    Raises
    ------
    IndexSchemaError, CatalogError
        If the index cannot be read or has the wrong header.
    """
    from pyspark.sql import functions as F

    from evi_udf.index.arrow import select_on_driver

    on_driver = select_on_driver(config)
    if on_driver is not None:
        return selection_from_pandas(spark, *on_driver)
    raw = read_index(spark, config.index_uri)
    condition = _partition_filter(config) if set(PARTITION_COLUMNS) <= set(raw.columns) else None
    if condition is not None:
        raw = raw.where(condition)
    raw = raw.where(raw_filter(config))
    # Every CSV column must reach the UDF: with fewer, Spark stops flagging wrong field counts.
    work = raw.select(*INDEX_COLUMNS, CORRUPT_RECORD_COLUMN).mapInPandas(
        functools.partial(_classify_batches, config=config), _WORK_SCHEMA
    )
    work = work.cache()
    candidates = work.where(F.col("stage").isNull())

    start, end = config.start_date, config.end_date
    if config.period == "all" and (start is None or end is None):
        first, last = candidates.agg(F.min("sensing_date"), F.max("sensing_date")).first()
        start, end = period_bounds(config, first, last)

    deduped = candidates.groupBy("mgrs_tile").applyInPandas(
        functools.partial(_dedupe_tile, period=config.period, start=start, end=end), _WORK_SCHEMA
    )
    deduped = deduped.cache()

    rejected_columns = [F.col(_RAW_PREFIX + name).alias(name) for name in RAW_COLUMNS] + ["reason", "stage"]
    rejected = (
        work.where(F.col("stage").isNotNull())
        .select(*rejected_columns)
        .unionByName(deduped.where(F.col("stage").isNotNull()).select(*rejected_columns))
    )
    scenes = deduped.where(F.col("stage").isNull()).select(*SCENE_COLUMNS)
    return CatalogSelection(scenes=scenes, rejected=rejected)


def selection_from_pandas(
    spark: SparkSession, scenes: pd.DataFrame, rejected: pd.DataFrame
) -> CatalogSelection:
    """A :class:`CatalogSelection` of the frames :func:`select_scenes_pandas` returned on the driver."""
    return CatalogSelection(
        scenes=spark.createDataFrame(scenes, SCENE_SCHEMA),
        rejected=spark.createDataFrame(rejected, REJECTED_SCHEMA),
    )


def plan_groups(selection: CatalogSelection | pd.DataFrame) -> pd.DataFrame:
    """One row per (tile, period): the work units of the EVI job.

    Parameters
    ----------
    selection
        A :class:`CatalogSelection`, or a scenes frame from :func:`select_scenes_pandas`.

    Returns
    -------
    pandas.DataFrame
        Columns ``mgrs_tile``, ``period``, ``period_start``, ``period_end``, ``scene_count`` and
        ``granule_ids`` (a list ordered by sensing time, then granule id), sorted by tile and period
        start.
    """
    columns = ["mgrs_tile", "period", "period_start", "period_end", "sensing_time", "granule_id"]
    if isinstance(selection, CatalogSelection):
        scenes = selection.scenes.select(*columns).toPandas()
    else:
        scenes = selection[columns]
    keys = ["mgrs_tile", "period", "period_start", "period_end"]
    ordered = scenes.sort_values([*keys, "sensing_time", "granule_id"])
    groups = ordered.groupby(keys, sort=False)["granule_id"]
    plan = pd.concat([groups.size().rename("scene_count"), groups.agg(list).rename("granule_ids")], axis=1)
    plan = plan.reset_index().sort_values(["mgrs_tile", "period_start"]).reset_index(drop=True)
    return plan.astype({"scene_count": "int64"})


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def rejected_summary(selection: CatalogSelection | pd.DataFrame) -> pd.DataFrame:
    """The rejected rows counted by stage and reason (columns ``stage``, ``reason``, ``count``), most
    frequent first within a stage; ``selection`` may be the rejected frame of :func:`select_scenes_pandas`."""
    if isinstance(selection, pd.DataFrame):
        counts = selection.groupby(["stage", "reason"], dropna=False).size().rename("count").reset_index()
        ordered = counts.sort_values(["stage", "count", "reason"], ascending=[True, False, True])
        return ordered.astype({"count": "int64"}).reset_index(drop=True)

    from pyspark.sql import functions as F

    return (
        selection.rejected.groupBy("stage", "reason").count().orderBy("stage", F.desc("count"), "reason")
    ).toPandas()


def report(spark: SparkSession, config: CatalogConfig, out: TextIO | None = None, limit: int = 50) -> None:
    """Print the plan of groups and the rejected rows counted by stage and reason (to stdout by default)."""
    # Looked up per call, not as a default argument, so redirected stdout is honoured.
    out = out or sys.stdout
    selection = select_scenes(spark, config)
    plan = plan_groups(selection)
    print(f"index: {config.index_uri}", file=out)
    print(f"{int(plan['scene_count'].sum())} scenes in {len(plan)} groups (tile x {config.period})", file=out)
    if not plan.empty:
        shown = plan.assign(granule_ids=plan["granule_ids"].map(", ".join))
        print(text_table(shown), file=out)
    counts = rejected_summary(selection)
    print(f"{int(counts['count'].sum())} rejected rows", file=out)
    if not counts.empty:
        print(text_table(counts[["count", "stage", "reason"]].head(limit), width=160), file=out)
        if len(counts) > limit:
            print(f"... and {len(counts) - limit} more distinct reasons", file=out)


def text_table(frame: pd.DataFrame, width: int = 80) -> str:
    """Left-aligned text columns (pandas right-aligns text, which makes long reasons unreadable)."""
    cells = [[_shorten(str(value), width) for value in row] for row in frame.itertuples(index=False)]
    header = [str(column) for column in frame.columns]
    widths = [max(len(text) for text in column) for column in zip(header, *cells, strict=True)]
    lines = [header, *cells]
    return "\n".join("  ".join(t.ljust(w) for t, w in zip(ln, widths, strict=True)).rstrip() for ln in lines)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evi_udf.index.catalog``: show which scenes a configuration selects and what it rejects."""
    from evi_udf.config import load_config
    from evi_udf.run.session import build_session

    parser = argparse.ArgumentParser(prog="python -m evi_udf.index.catalog", description=main.__doc__)
    parser.add_argument("--config", required=True, help="job configuration, e.g. conf/local.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    parser.add_argument("--master", help="Spark master for local runs, e.g. local[2]")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.set)
        if args.master and args.master.startswith("local"):
            # Local workers must run this interpreter, which has the library and pandas.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        spark = build_session("evi-catalog", master=args.master)
        report(spark, config.catalog)
    except EviError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Run main from the imported module, not from __main__: Spark pickles the UDF functions by
    # reference to evi_udf.index.catalog, which executors can import.
    from evi_udf.index.catalog import main as _main

    sys.exit(_main())
