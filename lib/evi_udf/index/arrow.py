"""Selecting scenes from a local Parquet cache of the index on the driver, with pyarrow and the pandas rules.

A query for a year and a few tiles touches a few hive partitions of the cache (``utm_zone_part`` x
``sensing_year``) holding tens of thousands of rows. Spark needs seconds of job scheduling for that
(plus its JVM); pyarrow reads those partitions in milliseconds and :func:`select_scenes_pandas`, the
same rules :func:`evi_udf.index.catalog.select_scenes` runs in its UDFs, selects from them in a fraction of
a second. So ``make plan`` and the job select on the driver when the index is a local Parquet cache
and the partitions the query cannot skip hold at most ``catalog.driver_selection_max_rows`` rows
(counted from the Parquet footers, no data read; the pandas rules take about 2 s and 1 GB of driver
memory per million rows that reach them); anything larger, or an index in ``gs://`` or a CSV, is
selected by Spark on the executors.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from evi_udf.config import MGRS_TILE_PATTERN, CatalogConfig
from evi_udf.errors import CatalogError
from evi_udf.index.catalog import _CANONICAL_TIME, _is_parquet_uri
from evi_udf.index.columns import CORRUPT_RECORD_COLUMN, INDEX_COLUMNS, PARTITION_COLUMNS
from evi_udf.index.rules import partition_bounds, select_scenes_pandas


def local_index_cache(uri: str) -> Path | None:
    """The directory of ``uri`` when it is a Parquet cache on this machine, else None."""
    if "://" in uri and not uri.startswith("file://"):
        return None
    path = Path(uri.removeprefix("file://"))
    return path if _is_parquet_uri(uri) and path.is_dir() else None


def _dataset(path: Path) -> ds.Dataset:
    partitions = pa.schema([(name, pa.string()) for name in PARTITION_COLUMNS])
    # The schema is given, so that no file is opened before the partition filter has pruned it.
    schema = pa.schema(
        [(name, pa.string()) for name in (*INDEX_COLUMNS, CORRUPT_RECORD_COLUMN)] + list(partitions)
    )
    try:
        return ds.dataset(
            path, schema=schema, format="parquet", partitioning=ds.partitioning(partitions, flavor="hive")
        )
    except (OSError, pa.ArrowException) as exc:
        raise CatalogError(f"cannot read the Sentinel-2 index {path}: {exc}") from exc


def partition_expression(config: CatalogConfig) -> ds.Expression | None:
    """:func:`evi_udf.index.catalog._partition_filter` as a pyarrow expression: the partitions a query needs.

    Null partitions (rows whose tile or time does not parse) are always read: their rows must still be
    parsed and reported, as on the CSV path.
    """
    zones, first, last = partition_bounds(config)
    condition: ds.Expression | None = None
    zone, year = ds.field("utm_zone_part"), ds.field("sensing_year")
    if zones is not None:
        condition = zone.is_null() | zone.isin(zones)
    if first is not None:
        after = year.is_null() | (year >= first)
        condition = after if condition is None else condition & after
    if last is not None:
        before = year.is_null() | (year <= last)
        condition = before if condition is None else condition & before
    return condition


def rows_to_read(path: Path, config: CatalogConfig, dataset: ds.Dataset | None = None) -> int:
    """How many rows of the cache the query cannot skip by partition (from the Parquet footers)."""
    try:
        return int((dataset or _dataset(path)).count_rows(filter=partition_expression(config)))
    except (OSError, pa.ArrowException) as exc:
        raise CatalogError(f"cannot read the Sentinel-2 index {path}: {exc}") from exc


def driver_selection_applies(config: CatalogConfig) -> bool:
    """Whether :func:`select_on_driver` selects for this configuration (rather than Spark)."""
    return _driver_dataset(config) is not None


def _driver_dataset(config: CatalogConfig) -> ds.Dataset | None:
    if config.driver_selection_max_rows == 0:
        return None
    path = local_index_cache(config.index_uri)
    if path is None:
        return None
    dataset = _dataset(path)
    return dataset if rows_to_read(path, config, dataset) <= config.driver_selection_max_rows else None


def _raw_keep(table: pa.Table, config: CatalogConfig) -> pa.ChunkedArray | None:
    """The cheapest filters of :func:`evi_udf.index.catalog.raw_filter` (tiles and dates) in Arrow compute.

    As there, a value that does not read as the rules read it is unknown and passes, and lines with the
    wrong number of fields all pass: :func:`select_scenes_pandas` judges them. None when no filter
    applies.
    """
    keep = pc.is_valid(table[CORRUPT_RECORD_COLUMN])
    well_formed: pa.ChunkedArray | None = None

    def both(condition: pa.ChunkedArray) -> None:
        nonlocal well_formed
        well_formed = condition if well_formed is None else pc.and_(well_formed, condition)

    if config.tiles:
        tile = table["MGRS_TILE"]
        known = pc.fill_null(pc.match_substring_regex(tile, MGRS_TILE_PATTERN.pattern), False)
        both(pc.or_(pc.invert(known), pc.fill_null(pc.is_in(tile, pa.array(list(config.tiles))), False)))
    time = table["SENSING_TIME"]
    canonical = pc.fill_null(pc.match_substring_regex(time, _CANONICAL_TIME), False)
    day = pc.utf8_slice_codeunits(time, 0, 10)
    bounds = ((config.start_date, pc.greater_equal), (config.end_date, pc.less_equal))
    for bound, compare in bounds:
        if isinstance(bound, dt.date):
            inside = pc.fill_null(compare(day, bound.isoformat()), False)
            both(pc.or_(pc.invert(canonical), inside))
    return None if well_formed is None else pc.or_(keep, well_formed)


def read_index_arrow(config: CatalogConfig, dataset: ds.Dataset | None = None) -> pd.DataFrame:
    """The raw index rows a query may select, from the local Parquet cache ``config.index_uri``.

    Returns
    -------
    pandas.DataFrame
        :data:`INDEX_COLUMNS` and :data:`CORRUPT_RECORD_COLUMN` as text or None, as
        :func:`evi_udf.index.catalog.read_index_pandas` gives them: only rows of the partitions the query
        needs that pass the tile and date filters (or whose values cannot be judged from the raw text).

    Raises
    ------
    CatalogError
        If ``config.index_uri`` is not a local Parquet cache or cannot be read.
    """
    path = local_index_cache(config.index_uri)
    if path is None:
        raise CatalogError(
            f"cannot read the Sentinel-2 index {config.index_uri} on the driver: not a local Parquet cache"
        )
    columns = [*INDEX_COLUMNS, CORRUPT_RECORD_COLUMN]
    try:
        table = (dataset or _dataset(path)).to_table(columns=columns, filter=partition_expression(config))
    except (OSError, pa.ArrowException) as exc:
        raise CatalogError(f"cannot read the Sentinel-2 index {path}: {exc}") from exc
    keep = _raw_keep(table, config)
    if keep is not None:
        table = table.filter(keep)
    # Null strings become None, as read_index_pandas gives them.
    return table.to_pandas()


def select_scenes_on_driver(config: CatalogConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scenes, rejected) of :func:`select_scenes_pandas` on :func:`read_index_arrow`'s rows."""
    return select_scenes_pandas(read_index_arrow(config), config)


def select_on_driver(config: CatalogConfig) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(scenes, rejected) selected on the driver when the index is a local Parquet cache and the
    partitions the query needs hold at most ``config.driver_selection_max_rows`` rows; else None
    (select in Spark)."""
    dataset = _driver_dataset(config)
    if dataset is None:
        return None
    return select_scenes_pandas(read_index_arrow(config, dataset), config)
