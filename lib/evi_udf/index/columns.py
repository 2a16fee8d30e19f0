"""The Sentinel-2 index's columns and the schemas of the catalog's outputs.

Shared by the pure row rules (:mod:`evi_udf.index.rules`), the Spark plumbing and reading
(:mod:`evi_udf.index.catalog`) and the Parquet cache (:mod:`evi_udf.index.cache`). Importing it starts no
Spark session: the Spark types are plain data.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import types as T

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
