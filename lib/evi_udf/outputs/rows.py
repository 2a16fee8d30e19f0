"""One definition of every output row: commits, composites, scenes, failures and rejected index rows.

The dataclasses are the source of truth: the Spark schema of the UDF's output, the Arrow schema of
commit records and Parquet tables, and the BigQuery columns are all derived from their fields, so a
column is added in one place.

``applyInPandas`` needs one output schema, so the UDF returns *result rows*: the union of the columns
of the row types plus ``kind`` (``commit``, ``composite``, ``scene`` or ``failure``); the driver
splits them into the tables by ``kind``. Rows made by a group carry the ``run_id`` of the run that
made them and the ``commit_id`` of the group's commit record (:mod:`evi_udf.run.ledger`); rejected index
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
    # Products with the same acquisition id are parts of one acquisition (a tile delivered in two
    # products); empty: the product is an acquisition of its own.
    acquisition_id: str = ""


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
    """One row of ``evi_scenes``: one acquisition's EVI over its tile (the EVI time series).

    An acquisition ESA delivered in two products (a split tile) is one row, with both in
    ``product_ids``; ``product_id`` and ``granule_id`` name the newest of them.
    """

    granule_id: str
    product_id: str
    product_ids: list[str]
    mgrs_tile: str
    sensing_time: dt.datetime
    period: str
    processing_baseline: str
    offset_b02: float
    offset_b04: float
    offset_b08: float
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
class ZonePartColumns:
    """A zone's statistics on one tile, mergeable with its other tiles' (the columns both zone parts
    tables share; the final ones when ``zone_whole``)."""

    zone_whole: bool
    total_pixels: int
    valid_pixels: int
    masked_pixels: int
    nodata_pixels: int
    invalid_pixels: int
    evi_sum: float
    evi_m2: float
    evi_mean: float
    evi_std: float
    evi_min: float
    evi_max: float
    evi_p10: float
    evi_p50: float
    evi_p90: float
    evi_steps: list[int]
    evi_step_counts: list[int]


@dataclasses.dataclass(frozen=True)
class ZoneSceneRow:
    """One row of ``evi_zone_scene_parts``: one user zone's EVI in one acquisition, from one tile.

    A tile counts only the zone's pixels on the ground it owns (:mod:`evi_udf.zones.pixels`), so the parts
    of a zone on several tiles add up to the whole zone, each pixel once; the view
    ``evi_zone_scenes`` merges them per acquisition (the pass: mission, datatake start and orbit,
    the same on every tile). The statistics are mergeable: sums, not means; the EVI histogram in
    int16 steps (EVI x 10000) gives exact quantiles of the merged zone.
    """

    zone_id: str
    mgrs_tile: str
    period: str
    acquisition: str
    granule_id: str
    product_id: str
    sensing_time: dt.datetime
    statistics: ZonePartColumns
    parameter_hash: str


@dataclasses.dataclass(frozen=True)
class ZoneCompositeRow:
    """One row of ``evi_zone_composite_parts``: one user zone's EVI in one tile's composite of a
    period, mergeable as :class:`ZoneSceneRow` (the view ``evi_zone_composites`` merges the tiles)."""

    zone_id: str
    mgrs_tile: str
    period: str
    period_start: dt.date
    period_end: dt.date
    statistics: ZonePartColumns
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

    ``index_row_id`` is a hash of the line's 14 raw fields; with ``stage`` and ``reason`` (which quotes
    a line with the wrong number of fields whole) it identifies the fact, so the same line rejected for
    the same reason is one row whatever the run; the row keeps the ``run_id`` of the run that first
    rejected it.
    """

    index_row_id: str
    granule_id: str | None
    product_id: str | None
    mgrs_tile: str | None
    raw_sensing_time: str | None
    stage: str
    reason: str


TABLE_DESCRIPTIONS: dict[str, str] = {
    "evi_commits": (
        "One row per group (MGRS tile x period x raster parameter set): its current commit record, whose "
        "rows are the group's rows in the other tables. Written by the Sentinel-2 EVI pipeline."
    ),
    "evi_composites": (
        "One row per EVI composite (MGRS tile x period x raster parameter set): statistics of the published "
        "COG's pixels, its footprint and URIs."
    ),
    "evi_scenes": (
        "One row per Sentinel-2 product used in a composite: its EVI statistics over the tile (the EVI time "
        "series), cloud masking and radiometry."
    ),
    "evi_failures": "One row per scene or group that could not be processed, with the stage and the error.",
    "evi_zone_scene_parts": (
        "One row per user zone, acquisition and tile: the zone's EVI over the pixels that tile owns, as "
        "mergeable sums and an int16-step histogram. Query the view evi_zone_scenes, which merges the tiles."
    ),
    "evi_zone_composite_parts": (
        "One row per user zone, period and tile: the zone's EVI in that tile's composite over the pixels "
        "the tile owns, mergeable. Query the view evi_zone_composites, which merges the tiles."
    ),
    "evi_rejected": (
        "One row per Sentinel-2 index row the catalog could not use (malformed, no BASE_URL, superseded by "
        "a newer processing baseline), with the reason; kept with the run that first rejected it."
    ),
}
# What each column means (units, scale, encoding). A name means the same in every table unless
# _TABLE_COLUMN_DOCS says otherwise for one table. Every column of every table must be described here
# (tests/test_schema.py checks it), and the documentation's table reference (docs/reference/tables.md)
# is generated from it.
_COLUMN_DOCS: dict[str, str] = {
    "run_id": "The run that wrote the row (UTC start time and a random suffix, as in its run report).",
    "commit_id": "The commit of the group the row belongs to (commit time and attempt); see evi_commits.",
    "mgrs_tile": "MGRS tile as the Sentinel-2 index spells it, e.g. 55HBU (UTM zone, latitude band, square).",
    "utm_zone": "UTM zone of the tile (1-60).",
    "period": "Period label: 2022-01-05 (day), 2022-01 (month), 2022-Q1, 2022, 2022-01-01_2022-12-31 (all).",
    "period_start": "First day of the period (UTC sensing date).",
    "period_end": "Last day of the period (UTC sensing date), inclusive.",
    "parameter_hash": (
        "Hash of every raster setting that changes pixels or statistics (raster.* in the config)."
    ),
    "grid": "Output grid: native (the tile's UTM grid, 10 m) or a shared grid such as epsg3577_10m.",
    "method": "Compositing method: median, mean, max_evi, first_by_date or first_by_least_cloud.",
    "status": "ok (every selected scene used), partial (some scenes failed) or failed (no composite made).",
    "scene_set_fingerprint": (
        "Hash of the selected products (ids, baselines, generation times): the scene set."
    ),
    "scene_count": "Number of acquisitions (scenes) the composite was made from.",
    "scenes_used": "Number of selected scenes that went into the composite.",
    "scenes_failed": "Number of selected scenes that failed (see evi_failures).",
    "committed_at": "When the group's commit record was published (UTC).",
    "raster_uri": (
        "The EVI Cloud-Optimized GeoTIFF: float32 with NaN for no data, or with raster.output_dtype int16 "
        "EVI x 10000 (scale 0.0001) with -32768; the clear count is beside it, named ..._clear_count.tif."
    ),
    "record_uri": "The group's commit record (Parquet) in the output root's ledger.",
    "software_version": "Version of the evi_udf package that made the row.",
    "total_pixels": "Pixels of the output grid over the tile.",
    "valid_pixels": "Pixels with a valid EVI (clear, in the valid range, finite).",
    "masked_pixels": (
        "Pixels with data but no valid EVI: cloud, shadow, cirrus or snow masked, or invalid EVI."
    ),
    "nodata_pixels": "Pixels no scene covers (outside the swath or the tile's footprint).",
    "invalid_pixels": "Clear pixels whose EVI was out of the valid range or had a near-zero denominator.",
    "evi_mean": "Mean EVI of the valid pixels (dimensionless; NaN when there are none).",
    "evi_std": "Standard deviation of the valid pixels' EVI (population, dimensionless).",
    "evi_min": "Smallest valid EVI.",
    "evi_max": "Largest valid EVI.",
    "evi_p05": "5th percentile of the valid EVI (exact for EVI quantized to 0.0001).",
    "evi_p25": "25th percentile of the valid EVI.",
    "evi_p50": "Median of the valid EVI.",
    "evi_p75": "75th percentile of the valid EVI.",
    "evi_p95": "95th percentile of the valid EVI.",
    "histogram_edges": "Edges of the EVI histogram bins (bins + 1 values over the valid EVI range).",
    "histogram_counts": "Valid pixels per EVI histogram bin.",
    "footprint_wkt": "The tile's outline in WGS84 longitude/latitude as WKT (counter-clockwise ring).",
    "stac_uri": "The composite's STAC item (JSON).",
    "quicklook_uri": "A colour-mapped PNG quick-look of the composite.",
    "processed_at": "When the composite was made (UTC).",
    "processing_seconds": (
        "Wall-clock seconds the task spent on the group (download, composite, COG, publish)."
    ),
    "granule_id": "Sentinel-2 granule id as the index gives it.",
    "product_id": (
        "Sentinel-2 product id (e.g. S2B_MSIL2A_20220113T002709_N0510_R016_T55HBU_20230614T094127)."
    ),
    "sensing_time": "Sensing time of the scene (UTC).",
    "processing_baseline": (
        "ESA processing baseline of the product, e.g. 05.10 (from 04.00 an offset applies)."
    ),
    "offset_b02": "Radiometric offset added to B02 (blue) digital numbers: reflectance = (DN + offset) / q.",
    "offset_b04": "Radiometric offset added to B04 (red) digital numbers: reflectance = (DN + offset) / q.",
    "offset_b08": "Radiometric offset added to B08 (near infrared) digital numbers, as for B02 and B04.",
    "product_ids": (
        "Every product of the acquisition (two when ESA delivered the tile in two parts), newest first."
    ),
    "quantification": "Quantification value: reflectance = (DN + offset) / quantification.",
    "index_cloud_cover": "CLOUD_COVER of the index row (percent of the granule, ESA's estimate).",
    "masked_fraction": "masked_pixels / pixels with data: the share of the scene hidden by the cloud mask.",
    "stage": (
        "Pipeline step that failed or rejected the row: metadata, read, write, storage, commit, udf, ..."
    ),
    "error_class": "Python class of the error (an evi_udf.errors class for expected failures).",
    "message": "What went wrong, naming the scene, file or setting.",
    "index_row_id": "Hash of the index row's 14 raw fields: identifies the line across runs.",
    "zone_id": "The user zone's id, as the zones file (zones.uri, column zones.id_column) gives it.",
    "acquisition": (
        "The Sentinel-2 pass: mission, datatake start and relative orbit (S2B_20220113T002709_R016), the "
        "same on every tile it covers."
    ),
    "zone_whole": "Whether the zone lies wholly on this tile's owned ground (its only part).",
    "evi_sum": "Sum of the zone's valid EVI values on this tile.",
    "evi_m2": "Sum of squared deviations of those values from their mean (Chan et al.): merges exactly.",
    "evi_p10": "10th percentile of the valid EVI (exact for EVI quantized to 0.0001).",
    "evi_p90": "90th percentile of the valid EVI (exact for EVI quantized to 0.0001).",
    "evi_steps": (
        "For a zone other tiles also count: the distinct EVI values of its valid pixels on this tile, in "
        "int16 steps (EVI x 10000), so the view's quantiles of the merged zone are exact; empty for a "
        "whole zone, whose quantiles are final here."
    ),
    "evi_step_counts": "Pixels at each of evi_steps.",
    "raw_sensing_time": "SENSING_TIME of the index row as written (text; it may not parse).",
    "reason": (
        "Why the row could not be used (names the field and the bad value, or the superseding product)."
    ),
}
_TABLE_COLUMN_DOCS: dict[tuple[str, str], str] = {
    ("evi_commits", "scene_count"): "Number of scenes the catalog selected for the group.",
    ("evi_commits", "raster_uri"): "The group's EVI COG; null when the group failed.",
    (
        "evi_failures",
        "stage",
    ): "Pipeline step that failed: metadata, read, write, storage, commit, udf, pipeline.",
    ("evi_rejected", "stage"): "Catalog step that rejected the row: parse, select or dedupe.",
    ("evi_rejected", "granule_id"): "GRANULE_ID of the index row (null when empty).",
    ("evi_rejected", "product_id"): "PRODUCT_ID of the index row (null when empty).",
    ("evi_rejected", "mgrs_tile"): "MGRS_TILE of the index row (null when empty).",
    ("evi_failures", "granule_id"): "The failed scene's granule id; null for a failure of the whole group.",
    ("evi_failures", "product_id"): "The failed scene's product id; null for a failure of the whole group.",
    ("evi_failures", "mgrs_tile"): "MGRS tile of the group.",
    **{
        (table, column): text
        for table in ("evi_zone_scene_parts", "evi_zone_composite_parts")
        for column, text in (
            ("mgrs_tile", "The tile that counted this part of the zone (the group's tile)."),
            ("total_pixels", "Pixels of the zone on this tile's owned ground (10 m, or the coarse grid)."),
            ("valid_pixels", "Of those, pixels with a valid EVI."),
            (
                "masked_pixels",
                "Of those, pixels observed but hidden by the cloud mask (no clear observation).",
            ),
            ("nodata_pixels", "Of those, pixels with no observation (outside the swath)."),
            ("invalid_pixels", "Of those, clear pixels whose EVI was rejected."),
            ("evi_mean", "Mean of the valid EVI on this tile (the zone's mean when zone_whole)."),
            ("evi_std", "Standard deviation (population) of the valid EVI on this tile."),
            ("evi_min", "Smallest valid EVI on this tile (quantized to 0.0001)."),
            ("evi_max", "Largest valid EVI on this tile (quantized to 0.0001)."),
            ("evi_p10", "10th percentile of the zone's valid EVI when zone_whole; null for a part."),
            ("evi_p50", "Median of the zone's valid EVI when zone_whole; null for a part."),
            ("evi_p90", "90th percentile of the zone's valid EVI when zone_whole; null for a part."),
        )
    },
}


def column_description(table: str, column: str) -> str:
    """What ``column`` of ``table`` means.

    Raises
    ------
    KeyError
        If the column has no description (every column must have one).
    """
    return _TABLE_COLUMN_DOCS.get((table, column)) or _COLUMN_DOCS[column]


@dataclasses.dataclass(frozen=True)
class MosaicPieceRow:
    """A composite's piece of the run mosaic (:mod:`evi_udf.outputs.mosaic`): returned to the driver with the
    group's rows, never written to a table or a commit record."""

    mgrs_tile: str
    period: str
    piece_row: int
    piece_col: int
    piece_height: int
    piece_width: int
    piece_values: bytes


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
    "mosaic_piece": MosaicPieceRow,
    "zone_scene": ZoneSceneRow,
    "zone_composite": ZoneCompositeRow,
}
TABLE_NAMES: dict[str, str] = {
    "commit": "evi_commits",
    "composite": "evi_composites",
    "scene": "evi_scenes",
    "failure": "evi_failures",
    "rejected": "evi_rejected",
    "zone_scene": "evi_zone_scene_parts",
    "zone_composite": "evi_zone_composite_parts",
}
KIND_OF_TABLE: dict[str, str] = {table: kind for kind, table in TABLE_NAMES.items()}
# The kinds a group's commit record holds; its rows replace the group's rows as a whole.
GROUP_KINDS: tuple[str, ...] = ("commit", "composite", "scene", "failure", "zone_scene", "zone_composite")
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
    "evi_zone_scene_parts": ("zone_id", "mgrs_tile", "product_id", "period", "parameter_hash"),
    "evi_zone_composite_parts": ("zone_id", "mgrs_tile", "period", "parameter_hash"),
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
        bytes: T.BinaryType(),
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


@dataclasses.dataclass(frozen=True)
class TableColumn:
    """One column of a result table: its name, BigQuery type and mode, and what it means.

    Columns are REQUIRED unless the row type declares them optional or they are FLOAT64 (a statistic
    of no valid pixel is NULL) or lists (REPEATED).
    """

    name: str
    bigquery_type: str
    mode: str
    description: str

    @property
    def nullable(self) -> bool:
        return self.mode != "REQUIRED"


def table_fields(kind: str) -> list[TableColumn]:
    """The columns of one result table, the stamps first."""
    table = TABLE_NAMES[kind]
    columns = [
        TableColumn(name, "STRING", "REQUIRED", column_description(table, name))
        for name in stamp_columns(kind)
    ]
    for name, hint, optional in _flat_fields(ROW_TYPES[kind]):
        kind_name, mode = bigquery_type(hint)
        if mode != "REPEATED":
            mode = "NULLABLE" if optional or kind_name == "FLOAT64" else "REQUIRED"
        columns.append(TableColumn(name, kind_name, mode, column_description(table, name)))
    return columns


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
        bytes: pa.binary(),
    }
    if hint in simple:
        return simple[hint]
    if typing.get_origin(hint) is list:
        (inner,) = typing.get_args(hint)
        return pa.list_(arrow_type(inner))
    raise TypeError(f"no Arrow type for {hint!r}")


def table_arrow_schema(kind: str) -> Any:
    """The Arrow schema of one table's rows (Parquet tables, BigQuery loads), with descriptions.

    REQUIRED columns are non-nullable fields; each field carries its description in its metadata and
    the schema the table's.
    """
    import pyarrow as pa

    hints = dict(result_fields())
    fields = [
        pa.field(
            column.name,
            arrow_type(hints[column.name]),
            nullable=column.nullable,
            metadata={"description": column.description},
        )
        for column in table_fields(kind)
    ]
    return pa.schema(fields, metadata={"description": TABLE_DESCRIPTIONS[TABLE_NAMES[kind]]})


def result_arrow_schema() -> Any:
    """The Arrow schema of result rows (every kind's columns), as commit records store them."""
    import pyarrow as pa

    return pa.schema([(name, arrow_type(hint)) for name, hint in result_fields()])


def tables_markdown() -> str:
    """The table reference: every table, its columns, types, modes and meaning, as Markdown.

    The documentation's page of the tables is made from it (:mod:`evi_udf.cli.tables`).
    """
    lines = []
    for kind, table in TABLE_NAMES.items():
        lines += [f"#### `{table}`", "", TABLE_DESCRIPTIONS[table], "", "| column | type | mode | meaning |"]
        lines.append("|---|---|---|---|")
        for column in table_fields(kind):
            lines.append(
                f"| `{column.name}` | {column.bigquery_type} | {column.mode} | {column.description} |"
            )
        if table == "evi_composites":
            lines.append(
                "| `footprint` | GEOGRAPHY | REQUIRED | BigQuery only: `footprint_wkt` as a GEOGRAPHY, for "
                "spatial filters and joins. |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
