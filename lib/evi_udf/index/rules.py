"""The catalog's rules on index rows, in plain pandas: parsing, filtering, deduplication, periods.

They are tested without Spark, and Spark runs the very same functions (``mapInPandas`` for the
row-local steps, ``groupBy("mgrs_tile").applyInPandas`` for the per-tile deduplication; see
:mod:`evi_udf.index.catalog`), so :func:`select_scenes_pandas` and
:func:`evi_udf.index.catalog.select_scenes` give the same scenes and rejected rows for the same index file.

Every index row ends up in exactly one of three places:

- **excluded**: a filter of the configuration (level, dates, tiles, bbox, cloud cover, quality flag)
  rules it out. Nothing is recorded: that is most of the index.
- **rejected**: a row with a ``reason`` and a ``stage``: ``parse`` (malformed), ``select`` (passes the
  filters but cannot be used, e.g. empty ``BASE_URL``) or ``dedupe`` (superseded by a newer
  processing baseline).
- **scene**: one row of :data:`~evi_udf.index.columns.SCENE_SCHEMA`, with its group key
  (``mgrs_tile``, ``period``) and its acquisition.

A malformed row is only reported when the filters that can be evaluated on it do not exclude it: a
field that does not parse makes its filter *unknown*, and unknown keeps the row (three-valued logic).
A line with the wrong number of fields has no trustworthy fields at all, so it is judged by its text
(:func:`corrupt_line_relevant`): it is reported only when nothing in it rules out the query (a tile
it names, its first date, the UTM zone of its product id), so a corrupt line in Norway is not every
Australian run's failure row. Spark evaluates the same filters on the raw text columns first
(:func:`evi_udf.index.catalog.raw_filter`), so only candidate rows reach Python.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd

from evi_udf.config import MGRS_TILE_PATTERN, CatalogConfig
from evi_udf.errors import CatalogError
from evi_udf.index.columns import (
    _CORRUPT_REASON,
    _MAX_LINE_IN_REASON,
    _QUALITY_FLAGS,
    _RAW_PREFIX,
    _TIME_EXAMPLE,
    _WORK_COLUMNS,
    CORRUPT_RECORD_COLUMN,
    INDEX_COLUMNS,
    RAW_COLUMNS,
    SCENE_COLUMNS,
    STAGES,
)

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


# The processing level in a product id; ``{level}`` is L1C|L2A, or one level (Spark's raw filter).
LEVEL_IN_PRODUCT_ID = r"(?:^|_)MSI({level})(?:_|$)"


def _product_part(problems: _Problems, product: pd.Series, pattern: str, reason: str) -> pd.Series:
    """The first group of ``pattern`` in each non-empty product id; a product id without it is a
    problem with ``reason``."""
    part = product.str.extract(pattern, expand=False)
    problems.add(part.isna().to_numpy() & (product != "").to_numpy(), "PRODUCT_ID", product, reason)
    return part.astype(object).where(part.notna(), None)


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
    out["level"] = _product_part(
        problems,
        product,
        LEVEL_IN_PRODUCT_ID.format(level="L1C|L2A"),
        "names no processing level (MSIL1C or MSIL2A)",
    )
    out["mission"] = _product_part(
        problems, product, r"^(S2[A-Z])_", "does not start with a Sentinel-2 mission (S2A_, S2B_, S2C_)"
    )

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

    # The typed columns of a corrupt row are null (unknown), but the quality rule reads the raw flag:
    # such a row is judged by its line's text instead.
    corrupt = parsed["reason"].fillna("").str.startswith(_CORRUPT_REASON).to_numpy()
    if corrupt.any():
        lines = parsed["reason"].where(corrupt, "").astype(str)
        corrupt &= corrupt_line_relevant(lines, config)
    return keep | corrupt


def tiles_pattern(tiles: Sequence[str]) -> str:
    """A regular expression (Python and Java alike) that finds any of ``tiles`` in an index line: as the
    MGRS_TILE field (``,55HBU,``) or inside a product or granule id (``_T55HBU_``)."""
    return "(?:^|[,_])T?(?:" + "|".join(sorted(tiles)) + ")(?:[,_]|$)"


# The first ISO date of an index line is its SENSING_TIME (ids spell dates without dashes).
LINE_DATE_PATTERN = r"(\d{4}-\d{2}-\d{2})T"
# The UTM zone of the tile a line's product id names (``_T55HBU_``).
LINE_ZONE_PATTERN = r"_T(\d{2})[C-HJ-NP-X][A-HJ-NP-Z][A-HJ-NP-V]_"


def corrupt_line_relevant(lines: pd.Series, config: CatalogConfig) -> np.ndarray:
    """Whether lines with the wrong number of fields may belong to the query, judged by their text.

    Their fields may be shifted, so no field can be trusted; but a line that names none of the
    configured tiles, or whose first date (its SENSING_TIME) is outside the dates, or whose product
    id names a tile in a UTM zone the bbox does not meet, is about another part of the archive and
    is not this run's to report. A line without a date or a product id is kept: nothing rules it out.
    """
    keep = np.ones(len(lines), dtype=bool)
    if config.tiles:
        keep &= lines.str.contains(tiles_pattern(config.tiles), regex=True).to_numpy(dtype=bool)
    day = lines.str.extract(LINE_DATE_PATTERN, expand=False).fillna("")
    if config.start_date is not None:
        keep &= ((day == "") | (day >= config.start_date.isoformat())).to_numpy(dtype=bool)
    if config.end_date is not None:
        keep &= ((day == "") | (day <= config.end_date.isoformat())).to_numpy(dtype=bool)
    if config.bbox is not None:
        zones = {f"{zone:02d}" for zone in bbox_utm_zones(config.bbox)}
        zone = lines.str.extract(LINE_ZONE_PATTERN, expand=False).fillna("")
        keep &= ((zone == "") | zone.isin(zones)).to_numpy(dtype=bool)
    return keep


# The widest a Sentinel-2 tile reaches beyond its UTM zone's 6 degrees, as ground distance: a 100 km
# square at the zone edge is extended to 109.8 km, and zone edges are not square edges.
_TILE_OVERHANG_KM = 120.0


def bbox_utm_zones(bbox: tuple[float, float, float, float]) -> list[int]:
    """The UTM zones whose tiles may meet ``bbox`` (west, south, east, north; west > east crosses the
    antimeridian), including the zones of the Norway and Svalbard exceptions.

    Each zone's 6 degrees are widened by how far a tile can reach past them at the bbox's highest
    latitude; from 80 degrees on that is every zone.
    """
    west, south, east, north = bbox
    latitude = max(abs(south), abs(north))
    if latitude >= 80.0:  # meridians converge: a tile spans many degrees of longitude
        return list(range(1, 61))
    margin = _TILE_OVERHANG_KM / (111.32 * np.cos(np.radians(latitude)))
    zones = []
    for zone in range(1, 61):
        low, high = -180.0 + 6 * (zone - 1) - margin, -180.0 + 6 * zone + margin
        for q_low, q_high in _lon_intervals(west, east):
            # The zone's widened span, also shifted by 360 degrees where it wraps past +-180.
            if any(q_low <= high + shift and q_high >= low + shift for shift in (-360.0, 0.0, 360.0)):
                zones.append(zone)
                break
    # 31V-37X: Norway's and Svalbard's zones are wider than 6 degrees (32V spans 3-12 E; 31X, 33X,
    # 35X, 37X are 9 or 12 degrees wide); a neighbour of any listed zone there is listed too.
    if north >= 56.0 and any(31 <= zone <= 37 for zone in zones):
        zones = sorted(
            set(zones) | {z + d for z in zones if 31 <= z <= 37 for d in (-1, 1) if 31 <= z + d <= 37}
        )
    return zones


def partition_bounds(config: CatalogConfig) -> tuple[list[str] | None, str | None, str | None]:
    """The Parquet cache partitions a query needs: its UTM zones (``utm_zone_part`` values, None for
    any) and first and last ``sensing_year`` (None for open). Null partitions are always needed."""
    zones: set[str] | None = None
    if config.tiles:
        zones = {tile[:2] for tile in config.tiles}
    if config.bbox is not None:
        in_bbox = {f"{zone:02d}" for zone in bbox_utm_zones(config.bbox)}
        zones = in_bbox if zones is None else zones & in_bbox
    first = f"{config.start_date.year:04d}" if config.start_date is not None else None
    last = f"{config.end_date.year:04d}" if config.end_date is not None else None
    return (sorted(zones) if zones is not None else None), first, last


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
    corrupt = _corrupt_mask(raw)
    # The line itself: filter_mask judges a corrupt row by its text.
    frame.loc[corrupt, "reason"] = (
        _CORRUPT_REASON + ": " + raw.loc[corrupt, CORRUPT_RECORD_COLUMN].astype(str)
    )
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
