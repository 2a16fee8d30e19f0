"""One definition of every output row: composites, scenes and failures.

The dataclasses are the source of truth: the Spark, BigQuery and Parquet schemas of the result tables
are to be derived from their fields, so that a column is added in one place.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any


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


@dataclasses.dataclass(frozen=True)
class GroupKey:
    """What one composite covers: a tile and a period."""

    mgrs_tile: str
    period: str
    period_start: dt.date
    period_end: dt.date


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
