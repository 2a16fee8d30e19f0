"""The Sentinel-2 index: reading, parsing, filtering, deduplication and group keys.

The rules live in plain pandas functions (:func:`parse_index`, :func:`classify_index`,
:func:`dedupe_scenes`, :func:`assign_periods`) so they can be tested without Spark. Spark runs the very
same functions: ``mapInPandas`` for the row-local steps, ``groupBy("mgrs_tile").applyInPandas`` for the
per-tile deduplication. :func:`select_scenes_pandas` and :func:`select_scenes` therefore give the same
scenes and rejected rows for the same index file.

Every index row ends up in exactly one of three places:

- **excluded**: a filter of the configuration (level, dates, tiles, bbox, cloud cover, quality flag)
  rules it out. Nothing is recorded: that is most of the index.
- **rejected**: a row with a ``reason`` and a ``stage``: ``parse`` (malformed), ``select`` (passes the
  filters but cannot be used, e.g. empty ``BASE_URL``) or ``dedupe`` (superseded by a newer product).
- **scene**: one row of :data:`SCENE_SCHEMA`, with its group key (``mgrs_tile``, ``period``).

A malformed row is only reported when the filters that can be evaluated on it do not exclude it: a
field that does not parse makes its filter *unknown*, and unknown keeps the row (three-valued logic).
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

import numpy as np
import pandas as pd
from pyspark.sql import types as T

from evi_udf.config import MGRS_TILE_PATTERN, CatalogConfig, StorageConfig
from evi_udf.errors import CatalogError, EviError, IndexSchemaError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

INDEX_COLUMNS: tuple[str, ...] = (
    "GRANULE_ID",
    "PRODUCT_ID",
    "DATATAKE_IDENTIFIER",
    "MGRS_TILE",
    "SENSING_TIME",
    "TOTAL_SIZE",
    "CLOUD_COVER",
    "GEOMETRIC_QUALITY_FLAG",
    "GENERATION_TIME",
    "NORTH_LAT",
    "SOUTH_LAT",
    "WEST_LON",
    "EAST_LON",
    "BASE_URL",
)
INDEX_HEADER = ",".join(INDEX_COLUMNS)

# Spark puts the whole line of a row with the wrong number of fields here (PERMISSIVE mode).
CORRUPT_RECORD_COLUMN = "_corrupt_record"
# Hive partitions of the Parquet cache; null for rows whose tile or sensing time does not parse.
PARTITION_COLUMNS: tuple[str, ...] = ("utm_zone_part", "sensing_year")

RAW_COLUMNS: tuple[str, ...] = tuple(column.lower() for column in INDEX_COLUMNS)
STAGES: tuple[str, ...] = ("parse", "select", "dedupe")

_TIME_EXAMPLE = "2015-12-23T02:39:13.886000Z"
_CORRUPT_REASON = "wrong number of fields"
_QUALITY_FLAGS = ("PASSED", "FAILED", "")
# Real index lines are 300-450 characters: show them whole, but bound a runaway line.
_MAX_LINE_IN_REASON = 1000


def _struct(fields: Sequence[tuple[str, T.DataType]]) -> T.StructType:
    # Every field is nullable: Spark does not check pandas UDF output against the declared
    # nullability, and a wrong "not null" lets the optimizer drop null checks. The columns that do hold
    # nulls are listed in the docstrings.
    return T.StructType([T.StructField(name, data_type, nullable=True) for name, data_type in fields])


_STR, _INT, _LONG, _DOUBLE = T.StringType(), T.IntegerType(), T.LongType(), T.DoubleType()
_DATE, _TIMESTAMP = T.DateType(), T.TimestampType()

_SCENE_FIELDS: tuple[tuple[str, T.DataType], ...] = (
    ("granule_id", _STR),
    ("product_id", _STR),
    ("datatake_identifier", _STR),
    ("datatake_key", _STR),
    ("mgrs_tile", _STR),
    ("utm_zone", _INT),
    ("latitude_band", _STR),
    ("epsg", _INT),
    ("sensing_time", _TIMESTAMP),
    ("sensing_date", _DATE),
    ("total_size", _LONG),
    ("cloud_cover", _DOUBLE),
    ("geometric_quality", _STR),
    ("generation_time", _TIMESTAMP),
    ("north_lat", _DOUBLE),
    ("south_lat", _DOUBLE),
    ("west_lon", _DOUBLE),
    ("east_lon", _DOUBLE),
    ("base_url", _STR),
    ("level", _STR),
    ("mission", _STR),
    ("processing_baseline", _STR),
    ("replaces", _STR),
    ("acquisition_id", _STR),
    ("period", _STR),
    ("period_start", _DATE),
    ("period_end", _DATE),
)
_REJECTED_FIELDS: tuple[tuple[str, T.DataType], ...] = (
    *((name, _STR) for name in RAW_COLUMNS),
    ("reason", _STR),
    ("stage", _STR),
)

#: One row per selected product. Null only in ``total_size``, ``geometric_quality``,
#: ``generation_time`` (empty in the index) and ``replaces`` (nothing superseded). Products with the
#: same ``acquisition_id`` are parts of one acquisition (a split delivery). Times are UTC.
SCENE_SCHEMA = _struct(_SCENE_FIELDS)
SCENE_COLUMNS: tuple[str, ...] = tuple(name for name, _ in _SCENE_FIELDS)

#: One row per rejected index row: the 14 raw index fields as text (null when empty or missing),
#: ``reason`` (names the field and the bad value) and ``stage`` (one of :data:`STAGES`).
REJECTED_SCHEMA = _struct(_REJECTED_FIELDS)
REJECTED_COLUMNS: tuple[str, ...] = tuple(name for name, _ in _REJECTED_FIELDS)

# The frame passed between the steps: typed scene columns, the raw text for rejected rows, and
# reason/stage (both null while the row is still a candidate scene). Internal, but a Spark schema
# because the steps exchange it through mapInPandas / applyInPandas.
_RAW_PREFIX = "raw_"
_WORK_FIELDS = (
    *_SCENE_FIELDS,
    *((_RAW_PREFIX + name, _STR) for name in RAW_COLUMNS),
    ("reason", _STR),
    ("stage", _STR),
)
_WORK_SCHEMA = _struct(_WORK_FIELDS)
_WORK_COLUMNS: tuple[str, ...] = tuple(name for name, _ in _WORK_FIELDS)

_INDEX_READ_SCHEMA = _struct([*((name, _STR) for name in INDEX_COLUMNS), (CORRUPT_RECORD_COLUMN, _STR)])
_PARQUET_SCHEMA = _struct(
    [
        *((name, _STR) for name in (*INDEX_COLUMNS, CORRUPT_RECORD_COLUMN)),
        *((p, _STR) for p in PARTITION_COLUMNS),
    ]
)


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


# --------------------------------------------------------------------------------------------------
# Parsing (pandas, row-local)
# --------------------------------------------------------------------------------------------------


def _text(raw: pd.DataFrame, column: str) -> pd.Series:
    """The column as str with "" for missing values, whatever the batch's dtype."""
    if column not in raw:
        return pd.Series("", index=raw.index, dtype=object)
    return raw[column].fillna("").astype(str)


def _nullable_text(values: pd.Series) -> pd.Series:
    return values.where(values != "", None).astype(object)


def _matches(values: pd.Series, pattern: str) -> np.ndarray:
    return values.str.fullmatch(pattern).fillna(False).to_numpy(dtype=bool)


def _tile_valid(tile: pd.Series) -> np.ndarray:
    return _matches(tile, MGRS_TILE_PATTERN.pattern)


def _parse_utc(values: pd.Series) -> pd.Series:
    """Parse index times (``2015-12-23T02:39:13.886000Z``) to tz-naive UTC; NaT where they do not parse."""
    parsed = pd.to_datetime(values, format="%Y-%m-%dT%H:%M:%S.%fZ", errors="coerce")
    # Whole seconds without a fraction are the same instant written shorter: accept them too.
    retry = parsed.isna() & (values != "")
    if retry.any():
        parsed[retry] = pd.to_datetime(values[retry], format="%Y-%m-%dT%H:%M:%SZ", errors="coerce")
    return parsed


class _Problems:
    """Collects per-row problem messages; a row with several problems gets them joined by '; '."""

    def __init__(self, index: pd.Index) -> None:
        self.reason = pd.Series(None, index=index, dtype=object)

    def add(self, mask: np.ndarray, field: str, values: pd.Series | None, text: str | pd.Series) -> None:
        """Record ``"<field> '<value>' <text>"`` (or ``"<field> <text>"``) for the rows in ``mask``."""
        if not mask.any():
            return
        if isinstance(text, pd.Series):
            text = text[mask]
        if values is None:
            messages = field + " " + pd.Series(text, index=self.reason.index[mask], dtype=object)
        else:
            messages = field + " '" + values[mask] + "' " + text
        current = self.reason[mask]
        prefix = np.where(current.isna(), "", current.fillna("") + "; ")
        self.reason[mask] = prefix + messages


def _number(problems: _Problems, values: pd.Series, field: str, low: float, high: float) -> pd.Series:
    """Parse a required float column; NaN and a problem where it is not a finite number in [low, high]."""
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    empty = (values == "").to_numpy()
    finite = np.isfinite(numbers.to_numpy())
    problems.add(empty, field, None, "is empty")
    problems.add(~empty & ~finite, field, values, "is not a number")
    outside = finite & ~((numbers >= low) & (numbers <= high)).to_numpy()
    problems.add(outside, field, values, f"is outside [{low:g}, {high:g}]")
    return numbers.where(finite & ~outside)


# The parsers of the fields the filters read. parse_index and the cheap prefilter of classify_index
# both call them, so the prefilter sees exactly the typed values the full parse produces.


def _parse_tile(problems: _Problems, tile: pd.Series) -> pd.DataFrame:
    valid = _tile_valid(tile)
    problems.add(~valid, "MGRS_TILE", tile, "is not an MGRS tile like 55HBU")
    zone = pd.to_numeric(tile.str[:2].where(valid), errors="coerce").astype("Int64")
    band = tile.str[2:3].where(valid, None)
    # Bands N..X are north of the equator (WGS 84 / UTM north, 326zz), C..M south (327zz).
    north = band.fillna("") >= "N"
    epsg = (zone + pd.Series(np.where(north, 32600, 32700), index=tile.index)).astype("Int64")
    return pd.DataFrame(
        {"mgrs_tile": tile.where(valid, None), "utm_zone": zone, "latitude_band": band, "epsg": epsg}
    )


def _parse_sensing(problems: _Problems, text: pd.Series) -> pd.DataFrame:
    sensing = _parse_utc(text)
    bad = sensing.isna().to_numpy()
    empty = (text == "").to_numpy()
    problems.add(bad & empty, "SENSING_TIME", None, "is empty")
    problems.add(bad & ~empty, "SENSING_TIME", text, f"is not a UTC time like {_TIME_EXAMPLE}")
    return pd.DataFrame({"sensing_time": sensing, "sensing_date": sensing.dt.normalize()})


def _parse_box(problems: _Problems, text: dict[str, pd.Series]) -> pd.DataFrame:
    north = _number(problems, text["NORTH_LAT"], "NORTH_LAT", -90.0, 90.0)
    south = _number(problems, text["SOUTH_LAT"], "SOUTH_LAT", -90.0, 90.0)
    inverted = (south > north).to_numpy()
    north_text = "is north of NORTH_LAT '" + text["NORTH_LAT"] + "'"
    problems.add(inverted, "SOUTH_LAT", text["SOUTH_LAT"], north_text)
    return pd.DataFrame(
        {
            "north_lat": north.where(~inverted),
            "south_lat": south.where(~inverted),
            # West > east is legal: the box crosses the antimeridian.
            "west_lon": _number(problems, text["WEST_LON"], "WEST_LON", -180.0, 180.0),
            "east_lon": _number(problems, text["EAST_LON"], "EAST_LON", -180.0, 180.0),
        }
    )


def _parse_level(problems: _Problems, product: pd.Series) -> pd.Series:
    level = product.str.extract(r"(?:^|_)MSI(L1C|L2A)(?:_|$)", expand=False)
    problems.add(
        level.isna().to_numpy() & (product != "").to_numpy(),
        "PRODUCT_ID",
        product,
        "names no processing level (MSIL1C or MSIL2A)",
    )
    return level.astype(object).where(level.notna(), None)


def _corrupt_mask(raw: pd.DataFrame) -> np.ndarray:
    if CORRUPT_RECORD_COLUMN not in raw:
        return np.zeros(len(raw), dtype=bool)
    return raw[CORRUPT_RECORD_COLUMN].notna().to_numpy()


def parse_index(raw: pd.DataFrame) -> pd.DataFrame:
    """Parse raw index rows into typed columns, recording why a row is malformed.

    Parameters
    ----------
    raw
        :data:`INDEX_COLUMNS` as text (``None``/NaN for empty) and optionally
        :data:`CORRUPT_RECORD_COLUMN`, as :func:`read_index` or :func:`read_index_pandas` give them.

    Returns
    -------
    pandas.DataFrame
        The internal work frame: the typed scene columns (null where a field does not parse; all null
        for a corrupt row), the raw text in ``raw_<column>`` columns, ``reason`` (null for a good row,
        else every problem of the row joined by ``"; "``) and ``stage`` (``"parse"`` where ``reason`` is
        set). ``replaces`` and the period columns are still null. Row order and count are kept.
    """
    raw = raw.reset_index(drop=True)
    index = raw.index
    text = {column: _text(raw, column) for column in INDEX_COLUMNS}
    problems = _Problems(index)
    out = pd.DataFrame(index=index)

    granule, product, datatake = text["GRANULE_ID"], text["PRODUCT_ID"], text["DATATAKE_IDENTIFIER"]
    problems.add((granule == "").to_numpy(), "GRANULE_ID", None, "is empty")
    problems.add((product == "").to_numpy(), "PRODUCT_ID", None, "is empty")
    # Deduplication groups on the datatake: a row without one cannot be deduplicated safely.
    problems.add((datatake == "").to_numpy(), "DATATAKE_IDENTIFIER", None, "is empty")
    out["granule_id"] = _nullable_text(granule)
    out["product_id"] = _nullable_text(product)
    out["datatake_identifier"] = _nullable_text(datatake)
    # Reprocessed products of one datatake differ only in this baseline suffix.
    out["datatake_key"] = _nullable_text(datatake.str.replace(r"_N\d{2}\.\d{2}$", "", regex=True))

    out = out.join(_parse_tile(problems, text["MGRS_TILE"]))
    out = out.join(_parse_sensing(problems, text["SENSING_TIME"]))

    size_text = text["TOTAL_SIZE"]
    # 18 digits keep the value inside int64; TOTAL_SIZE is bytes, so that is never a limit in practice.
    size_ok = _matches(size_text, r"\d{1,18}")
    size_empty = (size_text == "").to_numpy()
    problems.add(~size_ok & ~size_empty, "TOTAL_SIZE", size_text, "is not a non-negative whole number")
    out["total_size"] = pd.to_numeric(size_text.where(size_ok), errors="coerce").astype("Int64")

    out["cloud_cover"] = _number(problems, text["CLOUD_COVER"], "CLOUD_COVER", 0.0, 100.0)

    flag = text["GEOMETRIC_QUALITY_FLAG"]
    flag_ok = flag.isin(_QUALITY_FLAGS).to_numpy()
    problems.add(~flag_ok, "GEOMETRIC_QUALITY_FLAG", flag, "is not PASSED, FAILED or empty")
    out["geometric_quality"] = _nullable_text(flag.where(flag_ok, ""))

    generation_text = text["GENERATION_TIME"]
    generation = _parse_utc(generation_text)
    problems.add(
        generation.isna().to_numpy() & (generation_text != "").to_numpy(),
        "GENERATION_TIME",
        generation_text,
        f"is not a UTC time like {_TIME_EXAMPLE}",
    )
    out["generation_time"] = generation

    out = out.join(_parse_box(problems, text))
    base_url = text["BASE_URL"]
    out["base_url"] = _nullable_text(base_url)
    out["level"] = _parse_level(problems, product)
    mission = product.str.extract(r"^(S2[A-Z])_", expand=False)
    problems.add(
        mission.isna().to_numpy() & (product != "").to_numpy(),
        "PRODUCT_ID",
        product,
        "does not start with a Sentinel-2 mission (S2A_, S2B_, S2C_)",
    )
    out["mission"] = mission.astype(object).where(mission.notna(), None)

    baseline = _processing_baseline(base_url, product, granule, datatake)
    problems.add(
        baseline.isna().to_numpy(),
        "processing baseline",
        None,
        "not found in BASE_URL, PRODUCT_ID, GRANULE_ID or DATATAKE_IDENTIFIER",
    )
    out["processing_baseline"] = baseline

    out["replaces"] = None
    out["acquisition_id"] = None
    out["period"] = None
    out["period_start"] = pd.NaT
    out["period_end"] = pd.NaT
    for name, column in zip(RAW_COLUMNS, INDEX_COLUMNS, strict=True):
        out[_RAW_PREFIX + name] = _nullable_text(text[column])

    reason = problems.reason
    corrupt = _corrupt_mask(raw)
    if corrupt.any():
        # The fields of a row with the wrong field count may be shifted: trust none of them.
        out.loc[corrupt, list(SCENE_COLUMNS)] = None
        reason = reason.copy()
        reason[corrupt] = [_corrupt_reason(line) for line in raw.loc[corrupt, CORRUPT_RECORD_COLUMN]]
    out["reason"] = reason
    out["stage"] = pd.Series(np.where(reason.notna(), "parse", None), index=index, dtype=object)
    return out[list(_WORK_COLUMNS)]


def _processing_baseline(
    base_url: pd.Series, product: pd.Series, granule: pd.Series, datatake: pd.Series
) -> pd.Series:
    # The .SAFE folder names the product actually stored; old-naming PRODUCT_IDs carry no N-number,
    # and their GRANULE_ID / DATATAKE_IDENTIFIER end in _N02.01 instead.
    digits = base_url.str.extract(r"_N(\d{4})_[^/]*\.SAFE/?$", expand=False)
    digits = digits.fillna(product.str.extract(r"_N(\d{4})_", expand=False))
    dotted = digits.str[:2] + "." + digits.str[2:]
    suffix = r"_N(\d{2}\.\d{2})$"
    dotted = dotted.fillna(granule.str.extract(suffix, expand=False))
    dotted = dotted.fillna(datatake.str.extract(suffix, expand=False))
    return dotted.astype(object).where(dotted.notna(), None)


def _corrupt_reason(line: str) -> str:
    count = len(next(csv.reader([line]), []))
    shown = line if len(line) <= _MAX_LINE_IN_REASON else line[:_MAX_LINE_IN_REASON] + "..."
    return f"{_CORRUPT_REASON}: expected {len(INDEX_COLUMNS)}, found {count} in line {shown!r}"


# --------------------------------------------------------------------------------------------------
# Filtering (pandas, row-local, three-valued)
# --------------------------------------------------------------------------------------------------


def filter_mask(parsed: pd.DataFrame, config: CatalogConfig) -> np.ndarray:
    """Which parsed rows the configuration keeps.

    Each filter is evaluated on the typed columns; a null (unparseable) input makes that filter
    *unknown*, and unknown keeps the row, so a malformed row is excluded only by a filter it can be
    judged on. Corrupt rows (wrong field count) are always kept: their fields may be shifted.

    Parameters
    ----------
    parsed
        The output of :func:`parse_index`.
    config
        The catalog settings.

    Returns
    -------
    numpy.ndarray
        Boolean mask over ``parsed`` rows.
    """
    keep = np.ones(len(parsed), dtype=bool)

    def apply(passes: pd.Series | np.ndarray, unknown: pd.Series | np.ndarray) -> None:
        nonlocal keep
        keep &= np.asarray(passes, dtype=bool) | np.asarray(unknown, dtype=bool)

    level = parsed["level"]
    apply(level == config.level, level.isna())

    dates = parsed["sensing_date"]
    if config.start_date is not None:
        apply(dates >= pd.Timestamp(config.start_date), dates.isna())
    if config.end_date is not None:
        apply(dates <= pd.Timestamp(config.end_date), dates.isna())

    if config.tiles:
        tile = parsed["mgrs_tile"]
        apply(tile.isin(config.tiles), tile.isna())

    if config.bbox is not None:
        box = parsed[["west_lon", "south_lat", "east_lon", "north_lat"]]
        apply(_bbox_intersects(box, config.bbox), box.isna().any(axis=1))

    cloud = parsed["cloud_cover"]
    apply(cloud <= config.max_cloud_cover, cloud.isna())

    if config.geometric_quality != "any":
        flag = parsed["raw_geometric_quality_flag"].fillna("")
        allowed = ["PASSED"] if config.geometric_quality == "passed" else ["PASSED", ""]
        apply(flag.isin(allowed), ~flag.isin(_QUALITY_FLAGS))

    # The typed columns of a corrupt row are null (unknown), but the quality rule reads the raw flag.
    corrupt = parsed["reason"].fillna("").str.startswith(_CORRUPT_REASON).to_numpy()
    return keep | corrupt


def _lon_intervals(west: float, east: float) -> list[tuple[float, float]]:
    return [(west, east)] if west <= east else [(west, 180.0), (-180.0, east)]


def _bbox_intersects(box: pd.DataFrame, bbox: tuple[float, float, float, float]) -> np.ndarray:
    """Closed-interval intersection of each scene box with ``bbox``, either may cross the antimeridian."""
    q_west, q_south, q_east, q_north = bbox
    west, south = box["west_lon"].to_numpy(), box["south_lat"].to_numpy()
    east, north = box["east_lon"].to_numpy(), box["north_lat"].to_numpy()
    with np.errstate(invalid="ignore"):
        lat_ok = (south <= q_north) & (north >= q_south)
        crosses = west > east
        # A crossing scene box is [west, 180] plus [-180, east]; a plain one is [west, east].
        first_east = np.where(crosses, 180.0, east)
        lon_ok = np.zeros(len(box), dtype=bool)
        for low, high in _lon_intervals(q_west, q_east):
            lon_ok |= (west <= high) & (first_east >= low)
            lon_ok |= crosses & (east >= low)
    return lat_ok & lon_ok


def _prefilter(raw: pd.DataFrame, config: CatalogConfig) -> np.ndarray:
    """A superset of the rows :func:`filter_mask` keeps, from the cheap fields only.

    The columns it does not compute stay null, which :func:`filter_mask` treats as unknown and keeps,
    and the ones it computes come from the same parsers as :func:`parse_index`: so it can only drop
    rows the full rules drop too.
    """
    index = raw.index
    throwaway = _Problems(index)
    frame = pd.DataFrame(
        {name: None for name in ("level", "mgrs_tile", "raw_geometric_quality_flag", "reason")}, index=index
    )
    frame = frame.join(_parse_sensing(throwaway, _text(raw, "SENSING_TIME")))
    frame["cloud_cover"] = _number(throwaway, _text(raw, "CLOUD_COVER"), "CLOUD_COVER", 0.0, 100.0)
    if config.tiles:
        frame["mgrs_tile"] = _parse_tile(throwaway, _text(raw, "MGRS_TILE"))["mgrs_tile"]
    if config.bbox is not None:
        text = {column: _text(raw, column) for column in ("NORTH_LAT", "SOUTH_LAT", "WEST_LON", "EAST_LON")}
        frame = frame.join(_parse_box(throwaway, text))
    else:
        frame[["north_lat", "south_lat", "west_lon", "east_lon"]] = np.nan
    if config.geometric_quality != "any":
        frame["raw_geometric_quality_flag"] = _text(raw, "GEOMETRIC_QUALITY_FLAG")
    frame.loc[_corrupt_mask(raw), "reason"] = _CORRUPT_REASON
    return filter_mask(frame, config)


def classify_index(raw: pd.DataFrame, config: CatalogConfig) -> pd.DataFrame:
    """Parse and filter raw index rows: candidate scenes plus rows rejected at ``parse`` or ``select``.

    Rows excluded by the filters are dropped. Of the rest, a malformed row is rejected with its parse
    reason; a good row with an empty ``BASE_URL`` is rejected at stage ``select``; the others are
    candidate scenes (``stage`` null), not yet deduplicated.

    Parameters
    ----------
    raw
        Raw index rows (see :func:`parse_index`).
    config
        The catalog settings.

    Returns
    -------
    pandas.DataFrame
        The internal work frame (see :func:`parse_index`).
    """
    raw = raw.reset_index(drop=True)
    # Most of the index fails a cheap filter (dates, tiles, area, cloud): drop those rows before the
    # costly part of the parse (regular expressions, ids, baselines) runs on them.
    parsed = parse_index(raw[_prefilter(raw, config)])
    kept = parsed[filter_mask(parsed, config)].copy()
    no_url = kept["stage"].isna() & kept["base_url"].isna()
    kept.loc[no_url, "reason"] = "empty BASE_URL"
    kept.loc[no_url, "stage"] = "select"
    return kept.reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Deduplication and group keys
# --------------------------------------------------------------------------------------------------


def dedupe_scenes(candidates: pd.DataFrame) -> pd.DataFrame:
    """Keep one acquisition per (tile, datatake): every product of its newest processing baseline.

    Products of one tile and datatake with the same baseline are parts of one acquisition: ESA
    sometimes delivers a tile of one pass as two products with different generation times, each
    covering part of the tile, and both are needed (their valid pixels are merged, the newest
    generation first, before compositing). Only a newer baseline supersedes: products of older
    baselines become ``dedupe`` rejections with
    ``reason="superseded by <product id> (granule <granule id>, baseline NN.NN)"``, naming the
    acquisition's primary part: the newest generation time (missing counts as oldest), then the
    largest product id. So the selection does not depend on row order, in pandas or in Spark.

    Every kept part gets ``acquisition_id`` (``<tile>_<datatake key>``) and ``replaces``: the product
    ids its acquisition superseded (sorted, comma separated), or null.

    Parameters
    ----------
    candidates
        Candidate scenes of :func:`classify_index` (``stage`` null), of one tile or of many.

    Returns
    -------
    pandas.DataFrame
        The same rows, in the work frame layout: kept parts first (by tile, datatake, primary part
        first), then the rejected ones by product id.
    """
    keys = ["mgrs_tile", "datatake_key"]
    if candidates.empty:
        return candidates.copy()
    work = candidates.assign(
        _baseline=candidates["processing_baseline"].str.replace(".", "", regex=False).astype(int),
        _generation=candidates["generation_time"].fillna(pd.Timestamp.min),
    )
    newest = work.groupby(keys, sort=False)["_baseline"].transform("max")
    kept = work[work["_baseline"] == newest].sort_values(
        [*keys, "_generation", "product_id"], ascending=[True, True, False, False]
    )
    losers = work[work["_baseline"] != newest].sort_values([*keys, "product_id"])
    kept = kept.assign(acquisition_id=kept["mgrs_tile"] + "_" + kept["datatake_key"])

    replaces = losers.groupby(keys, sort=False)["product_id"].agg(lambda ids: ",".join(sorted(ids)))
    kept = kept.drop(columns="replaces").join(replaces.rename("replaces"), on=keys)
    kept["replaces"] = kept["replaces"].astype(object).where(kept["replaces"].notna(), None)

    primary = kept.drop_duplicates(keys, keep="first").set_index(keys)
    winner = losers[keys].join(primary[["product_id", "granule_id", "processing_baseline"]], on=keys)
    losers = losers.assign(
        reason="superseded by "
        + winner["product_id"]
        + " (granule "
        + winner["granule_id"]
        + ", baseline "
        + winner["processing_baseline"]
        + ")",
        stage="dedupe",
    )
    columns = list(_WORK_COLUMNS)
    return _concat([kept[columns], losers[columns]]).reset_index(drop=True)


def _concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    # pandas 2 warns (and pandas 3 changes dtypes) when empty frames take part in a concat.
    non_empty = [frame for frame in frames if len(frame)]
    return pd.concat(non_empty) if non_empty else frames[0]


def period_bounds(
    config: CatalogConfig, first: dt.date | None, last: dt.date | None
) -> tuple[dt.date | None, dt.date | None]:
    """The range of ``period="all"``: the configured dates, else the first/last selected sensing date."""
    return (config.start_date or first, config.end_date or last)


def assign_periods(
    frame: pd.DataFrame, period: str, start: dt.date | None = None, end: dt.date | None = None
) -> pd.DataFrame:
    """Set ``period``, ``period_start`` and ``period_end`` from each row's UTC ``sensing_date``.

    Parameters
    ----------
    frame
        Rows with ``sensing_date`` (dates or datetime64).
    period
        ``day`` (label ``2023-01-05``), ``month`` (``2023-01``), ``quarter`` (``2023-Q1``, Jan-Mar),
        ``year`` (``2023``) or ``all`` (``<start>_<end>`` in ISO dates).
    start, end
        The range of ``all`` (see :func:`period_bounds`); ignored by the other periods.

    Returns
    -------
    pandas.DataFrame
        A copy of ``frame`` with the three columns set (start and end as datetime64 midnights).
    """
    out = frame.copy()
    if out.empty:
        return out
    dates = pd.to_datetime(out["sensing_date"])
    if period == "day":
        label, first, last = dates.dt.strftime("%Y-%m-%d"), dates, dates
    elif period in ("month", "quarter", "year"):
        periods = dates.dt.to_period({"month": "M", "quarter": "Q", "year": "Y"}[period])
        first = periods.dt.start_time
        last = periods.dt.end_time.dt.normalize()
        years = dates.dt.year.astype(str)
        if period == "month":
            label = dates.dt.strftime("%Y-%m")
        elif period == "quarter":
            label = years + "-Q" + dates.dt.quarter.astype(str)
        else:
            label = years
    elif period == "all":
        if start is None or end is None:
            raise CatalogError("period 'all' needs a start and end date (from the config or the selection)")
        label = pd.Series(f"{start.isoformat()}_{end.isoformat()}", index=out.index)
        first = pd.Series(pd.Timestamp(start), index=out.index)
        last = pd.Series(pd.Timestamp(end), index=out.index)
    else:
        raise CatalogError(f"unknown period {period!r}")
    out["period"] = label.astype(object)
    # One resolution whatever the period: pd.Timestamp(date) is second-resolution in pandas 2.
    out["period_start"] = first.to_numpy(dtype="datetime64[ns]")
    out["period_end"] = last.to_numpy(dtype="datetime64[ns]")
    return out


# --------------------------------------------------------------------------------------------------
# Wiring: pandas and Spark
# --------------------------------------------------------------------------------------------------


def _scene_rows(work: pd.DataFrame) -> pd.DataFrame:
    scenes = work.loc[work["stage"].isna(), list(SCENE_COLUMNS)].copy()
    for column in ("sensing_date", "period_start", "period_end"):
        scenes[column] = pd.to_datetime(scenes[column]).dt.date.astype(object)
    scenes["utm_zone"] = scenes["utm_zone"].astype("int64")
    scenes["epsg"] = scenes["epsg"].astype("int64")
    return scenes.sort_values(["mgrs_tile", "sensing_time", "granule_id"]).reset_index(drop=True)


def _rejected_rows(work: pd.DataFrame) -> pd.DataFrame:
    rejected = work.loc[work["stage"].notna(), [_RAW_PREFIX + c for c in RAW_COLUMNS] + ["reason", "stage"]]
    rejected = rejected.rename(columns=lambda name: name.removeprefix(_RAW_PREFIX))
    stage_order = rejected["stage"].map({stage: i for i, stage in enumerate(STAGES)})
    return (
        rejected.assign(_stage=stage_order)
        .sort_values(["_stage", "granule_id", "reason"], na_position="first")
        .drop(columns="_stage")
        .reset_index(drop=True)
    )


def select_scenes_pandas(raw: pd.DataFrame, config: CatalogConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`select_scenes` on pandas, for tests and small indexes.

    Parameters
    ----------
    raw
        Raw index rows, e.g. from :func:`read_index_pandas`.
    config
        The catalog settings.

    Returns
    -------
    tuple of pandas.DataFrame
        ``(scenes, rejected)`` with the columns of :data:`SCENE_SCHEMA` and :data:`REJECTED_SCHEMA`;
        dates as :class:`datetime.date`, times as tz-naive UTC datetime64. Scenes are sorted by tile,
        sensing time and granule id; rejected rows by stage, granule id and reason.
    """
    work = classify_index(raw, config)
    candidates = work[work["stage"].isna()]
    dates = candidates["sensing_date"]
    first, last = (dates.min().date(), dates.max().date()) if len(dates) else (None, None)
    start, end = period_bounds(config, first, last)
    deduped = assign_periods(dedupe_scenes(candidates), config.period, start, end)
    done = _concat([work[work["stage"].notna()], deduped])
    return _scene_rows(done), _rejected_rows(done)


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
    condition = None
    if config.tiles:
        zones = sorted({tile[:2] for tile in config.tiles})
        condition = F.col("utm_zone_part").isNull() | F.col("utm_zone_part").isin(zones)
    year = F.col("sensing_year")
    if config.start_date is not None:
        after = year.isNull() | (year >= f"{config.start_date.year:04d}")
        condition = after if condition is None else condition & after
    if config.end_date is not None:
        before = year.isNull() | (year <= f"{config.end_date.year:04d}")
        condition = before if condition is None else condition & before
    return condition


def select_scenes(spark: SparkSession, config: CatalogConfig) -> CatalogSelection:
    """Select, deduplicate and group the scenes of the index named by ``config.index_uri``.

    Parse and filter run in ``mapInPandas`` (:func:`classify_index`), deduplication and the period
    keys per tile in ``groupBy("mgrs_tile").applyInPandas`` (:func:`dedupe_scenes`,
    :func:`assign_periods`): the same functions as :func:`select_scenes_pandas`. On the Parquet cache,
    partitions outside the configured tiles' UTM zones and the dates' years are skipped first.

    Parameters
    ----------
    spark
        The active session (its time zone must be UTC, as :func:`evi_udf.spark_session.build_session`
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

    raw = read_index(spark, config.index_uri)
    condition = _partition_filter(config) if set(PARTITION_COLUMNS) <= set(raw.columns) else None
    if condition is not None:
        raw = raw.where(condition)
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


def rejected_summary(selection: CatalogSelection) -> pd.DataFrame:
    """The rejected rows counted by stage and reason (columns ``stage``, ``reason``, ``count``)."""
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
    """``python -m evi_udf.catalog``: show which scenes a configuration selects and what it rejects."""
    from evi_udf.config import load_config
    from evi_udf.spark_session import build_session

    parser = argparse.ArgumentParser(prog="python -m evi_udf.catalog", description=main.__doc__)
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
    # reference to evi_udf.catalog, which executors can import.
    from evi_udf.catalog import main as _main

    sys.exit(_main())
