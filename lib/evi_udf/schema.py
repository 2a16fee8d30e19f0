"""One definition of every output row: commits, composites, scenes, failures and rejected index rows.

The dataclasses are the source of truth: the Spark schema of the UDF's output, the Arrow schema of
commit records and Parquet tables, and the BigQuery columns are all derived from their fields, so a
column is added in one place.

``applyInPandas`` needs one output schema, so the UDF returns *result rows*: the union of the columns
of the row types plus ``kind`` (``commit``, ``composite``, ``scene`` or ``failure``); the driver
splits them into the tables by ``kind``. Rows made by a group carry the ``run_id`` of the run that
made them and the ``commit_id`` of the group's commit record (:mod:`evi_udf.ledger`); rejected index
rows carry the run that first rejected them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from typing import Any, Union


@dataclasses.dataclass(frozen=True)
class SceneRef:
    """One scene of a group, as the catalog selected it (the UDF builds these from its pandas rows)."""

    granule_id: str
    product_id: str
    mgrs_tile: str
    sensing_time: dt.datetime
    cloud_cover: float
    base_url: str
    level: str
    processing_baseline: str
    # UTC, as the index gives it (None when the index leaves it empty); part of the scene set's identity.
    generation_time: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class GroupKey:
    """What one composite covers: a tile and a period."""

    mgrs_tile: str
    period: str
    period_start: dt.date
    period_end: dt.date


@dataclasses.dataclass(frozen=True)
class CommitRow:
    """One row of ``evi_commits``: the current commit of one tile x period x parameter set.

    ``status`` is ``ok`` (every selected scene used), ``partial`` (a composite without the scenes that
    failed) or ``failed`` (no composite; the next run retries the group).
    """

    mgrs_tile: str
    period: str
    period_start: dt.date
    period_end: dt.date
    parameter_hash: str
    grid: str
    method: str
    status: str
    scene_set_fingerprint: str
    scene_count: int
    scenes_used: int
    scenes_failed: int
    committed_at: dt.datetime
    raster_uri: str | None
    record_uri: str
    software_version: str


@dataclasses.dataclass(frozen=True)
class EviStatisticsColumns:
    """EVI statistics as columns (NaN when no pixel was valid)."""

    evi_mean: float
    evi_std: float
    evi_min: float
    evi_max: float
    evi_p05: float
    evi_p25: float
    evi_p50: float
    evi_p75: float
    evi_p95: float
    histogram_edges: list[float]
    histogram_counts: list[int]


@dataclasses.dataclass(frozen=True)
class CompositeRow:
    """One row of ``evi_composites``: one tile x period."""

    mgrs_tile: str
    utm_zone: int
    period: str
    period_start: dt.date
    period_end: dt.date
    method: str
    grid: str
    scene_count: int
    scenes_failed: int
    total_pixels: int
    valid_pixels: int
    masked_pixels: int
    nodata_pixels: int
    statistics: EviStatisticsColumns
    footprint_wkt: str
    raster_uri: str
    stac_uri: str
    quicklook_uri: str
    parameter_hash: str
    software_version: str
    processed_at: dt.datetime
    # Wall-clock seconds of the whole ``process_group`` call (inputs, composite, COG, STAC, publish):
    # summed over groups it separates the raster work from the Spark overhead of a run.
    processing_seconds: float


@dataclasses.dataclass(frozen=True)
class SceneRow:
    """One row of ``evi_scenes``: one scene's EVI over its tile (the EVI time series)."""

    granule_id: str
    product_id: str
    mgrs_tile: str
    sensing_time: dt.datetime
    period: str
    processing_baseline: str
    offset_applied: float
    quantification: float
    index_cloud_cover: float
    total_pixels: int
    valid_pixels: int
    masked_pixels: int
    nodata_pixels: int
    invalid_pixels: int
    masked_fraction: float
    statistics: EviStatisticsColumns
    parameter_hash: str


@dataclasses.dataclass(frozen=True)
class FailureRow:
    """One row of ``evi_failures``: a scene or a whole group that could not be processed."""

    mgrs_tile: str
    period: str
    granule_id: str | None
    product_id: str | None
    stage: str
    error_class: str
    message: str
    parameter_hash: str


@dataclasses.dataclass(frozen=True)
class RejectedRow:
    """One row of ``evi_rejected``: an index row the catalog could not use, and why.

    ``index_row_id`` identifies the index line (a hash of its 14 raw fields, or of the whole line when
    it has the wrong number of fields), so the same line rejected for the same reason is one row
    whatever the run; the row keeps the ``run_id`` of the run that first rejected it.
    """

    index_row_id: str
    granule_id: str | None
    product_id: str | None
    mgrs_tile: str | None
    raw_sensing_time: str | None
    stage: str
    reason: str


def flatten(row: Any) -> dict[str, Any]:
    """A row dataclass as one flat dict (nested statistics become ``evi_*`` columns)."""
    flat: dict[str, Any] = {}
    for field in dataclasses.fields(row):
        value = getattr(row, field.name)
        if dataclasses.is_dataclass(value):
            flat.update(flatten(value))
        else:
            flat[field.name] = value
    return flat


ROW_TYPES: dict[str, type] = {
    "commit": CommitRow,
    "composite": CompositeRow,
    "scene": SceneRow,
    "failure": FailureRow,
    "rejected": RejectedRow,
}
TABLE_NAMES: dict[str, str] = {
    "commit": "evi_commits",
    "composite": "evi_composites",
    "scene": "evi_scenes",
    "failure": "evi_failures",
    "rejected": "evi_rejected",
}
KIND_OF_TABLE: dict[str, str] = {table: kind for kind, table in TABLE_NAMES.items()}
# The kinds a group's commit record holds; its rows replace the group's rows as a whole.
GROUP_KINDS: tuple[str, ...] = ("commit", "composite", "scene", "failure")
GROUP_TABLES: tuple[str, ...] = tuple(TABLE_NAMES[kind] for kind in GROUP_KINDS)
# What a group is across runs: tile, period and raster parameters. One commit per group is current.
GROUP_KEY_COLUMNS: tuple[str, ...] = ("mgrs_tile", "period", "parameter_hash")
# Within a table, rows with the same natural key are the same fact. Group rows are unique by their
# natural key within one commit (a scene row is a product on a tile in a period for a parameter set);
# a rejected index row is unique by the line and the reason.
NATURAL_KEYS: dict[str, tuple[str, ...]] = {
    "evi_commits": ("mgrs_tile", "period", "parameter_hash"),
    "evi_composites": ("mgrs_tile", "period", "parameter_hash"),
    "evi_scenes": ("mgrs_tile", "product_id", "period", "parameter_hash"),
    "evi_failures": ("mgrs_tile", "period", "parameter_hash", "granule_id", "product_id", "stage"),
    "evi_rejected": ("index_row_id", "stage", "reason"),
}


def _flat_fields(cls: type) -> list[tuple[str, Any, bool]]:
    """(name, python type, nullable) of a row type's flattened columns, in declaration order."""
    hints = typing.get_type_hints(cls)
    columns: list[tuple[str, Any, bool]] = []
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            columns.extend(_flat_fields(hint))
            continue
        nullable = False
        if typing.get_origin(hint) in (Union, types.UnionType):
            args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
            nullable, hint = True, args[0]
        columns.append((field.name, hint, nullable))
    return columns


def stamp_columns(kind: str) -> tuple[str, ...]:
    """The columns set outside the row dataclasses: the run, and for group rows the commit."""
    return ("run_id", "commit_id") if kind in GROUP_KINDS else ("run_id",)


def table_columns(kind: str) -> list[str]:
    """The columns of one result table, in order: the stamps, then the row's fields."""
    return [*stamp_columns(kind), *(name for name, _, _ in _flat_fields(ROW_TYPES[kind]))]


def result_fields() -> list[tuple[str, Any]]:
    """``kind`` then the union of every row type's columns (first declaration wins the order).

    Raises
    ------
    TypeError
        If two row types declare the same column with different types.
    """
    fields: dict[str, Any] = {"kind": str, "run_id": str, "commit_id": str}
    for cls in ROW_TYPES.values():
        for name, hint, _ in _flat_fields(cls):
            if name in fields and fields[name] != hint:
                raise TypeError(f"column {name} is {fields[name]} in one row type and {hint} in another")
            fields.setdefault(name, hint)
    return list(fields.items())


def spark_type(hint: Any) -> Any:
    """The Spark SQL type of a row field's Python type."""
    from pyspark.sql import types as T

    simple = {
        str: T.StringType(),
        int: T.LongType(),
        float: T.DoubleType(),
        bool: T.BooleanType(),
        dt.date: T.DateType(),
        dt.datetime: T.TimestampType(),
    }
    if hint in simple:
        return simple[hint]
    if typing.get_origin(hint) is list:
        (inner,) = typing.get_args(hint)
        return T.ArrayType(spark_type(inner))
    raise TypeError(f"no Spark type for {hint!r}")


def result_spark_schema() -> Any:
    """The ``applyInPandas`` output schema (every column nullable: each kind fills only its own)."""
    from pyspark.sql import types as T

    return T.StructType([T.StructField(name, spark_type(hint), True) for name, hint in result_fields()])


def to_result_records(kind: str, rows: list[Any]) -> list[dict[str, Any]]:
    """Row dataclasses as result records (``kind`` plus their flattened columns)."""
    return [{"kind": kind, **flatten(row)} for row in rows]


def bigquery_type(hint: Any) -> tuple[str, str]:
    """(BigQuery type, mode) of a row field's Python type; lists become REPEATED."""
    simple = {
        str: "STRING",
        int: "INT64",
        float: "FLOAT64",
        bool: "BOOL",
        dt.date: "DATE",
        dt.datetime: "TIMESTAMP",
    }
    if hint in simple:
        return simple[hint], "NULLABLE"
    if typing.get_origin(hint) is list:
        (inner,) = typing.get_args(hint)
        return simple[inner], "REPEATED"
    raise TypeError(f"no BigQuery type for {hint!r}")


def table_fields(kind: str) -> list[tuple[str, str, str]]:
    """(name, BigQuery type, mode) of one result table's columns, the stamps first."""
    fields = [(name, "STRING", "NULLABLE") for name in stamp_columns(kind)]
    fields += [(name, *bigquery_type(hint)) for name, hint, _ in _flat_fields(ROW_TYPES[kind])]
    return fields


def arrow_type(hint: Any) -> Any:
    """The Arrow type of a row field's Python type (timestamps in microseconds, UTC)."""
    import pyarrow as pa

    simple = {
        str: pa.string(),
        int: pa.int64(),
        float: pa.float64(),
        bool: pa.bool_(),
        dt.date: pa.date32(),
        dt.datetime: pa.timestamp("us", tz="UTC"),
    }
    if hint in simple:
        return simple[hint]
    if typing.get_origin(hint) is list:
        (inner,) = typing.get_args(hint)
        return pa.list_(arrow_type(inner))
    raise TypeError(f"no Arrow type for {hint!r}")


def table_arrow_schema(kind: str) -> Any:
    """The Arrow schema of one table's rows (Parquet tables, BigQuery loads)."""
    import pyarrow as pa

    hints = dict(result_fields())
    return pa.schema([(name, arrow_type(hints[name])) for name in table_columns(kind)])


def result_arrow_schema() -> Any:
    """The Arrow schema of result rows (every kind's columns), as commit records store them."""
    import pyarrow as pa

    return pa.schema([(name, arrow_type(hint)) for name, hint in result_fields()])
