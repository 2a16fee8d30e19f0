"""The pandas edge of the raster core: catalog rows in, committed result rows out.

``groupBy(...).applyInPandas`` hands each group to Python as a pandas DataFrame with the catalog's
scene columns; these functions turn it into the plain dataclasses :mod:`evi_udf.run.process` takes (so
the raster core never sees pandas or Spark), run the group, commit it in the ledger
(:mod:`evi_udf.run.ledger`) and hand the committed rows back to Spark.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import shapely

from evi_udf.config import JobConfig
from evi_udf.errors import EviError
from evi_udf.outputs.mosaic import Canvas
from evi_udf.outputs.rows import (
    FailureRow,
    MosaicPieceRow,
    ZoneCompositeRow,
    ZonePartColumns,
    ZoneSceneRow,
    result_fields,
    to_result_records,
)
from evi_udf.run.ledger import Ledger
from evi_udf.run.process import GroupResult, process_group
from evi_udf.storage import Storage
from evi_udf.task.group import GroupKey, SceneRef
from evi_udf.task.identity import parameter_hash, zone_set_fingerprint
from evi_udf.task.names import group_outputs, new_attempt
from evi_udf.zones.pixels import ZoneInput
from evi_udf.zones.statistics import ZoneStatistics, ZoneSummary, summarize

# Failures that are not the pipeline's own errors are bugs or environment faults; the message keeps
# the innermost frames so that a failure row is enough to find the line.
TRACEBACK_FRAMES = 3


def _as_datetime(value: object) -> dt.datetime:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_pydatetime()


def _as_date(value: object) -> dt.date:
    return pd.Timestamp(value).date()


def _as_optional_datetime(value: object) -> dt.datetime | None:
    return None if value is None or pd.isna(value) else _as_datetime(value)


def scene_refs_from_pandas(group: pd.DataFrame) -> list[SceneRef]:
    """One :class:`SceneRef` per catalog row (columns of ``catalog.SCENE_SCHEMA``), in sensing order."""
    refs = [
        SceneRef(
            granule_id=str(row.granule_id),
            product_id=str(row.product_id),
            mgrs_tile=str(row.mgrs_tile),
            sensing_time=_as_datetime(row.sensing_time),
            cloud_cover=float(row.cloud_cover),
            base_url=str(row.base_url),
            level=str(row.level),
            processing_baseline=str(row.processing_baseline),
            generation_time=_as_optional_datetime(getattr(row, "generation_time", None)),
            acquisition_id=str(getattr(row, "acquisition_id", None) or ""),
        )
        for row in group.itertuples(index=False)
    ]
    return sorted(refs, key=lambda ref: (ref.sensing_time, ref.product_id))


def group_key_from_pandas(group: pd.DataFrame) -> GroupKey:
    """The (tile, period) key shared by every row of a group.

    Raises
    ------
    ValueError
        If the rows do not all belong to one tile and period (a grouping bug upstream).
    """
    keys = group[["mgrs_tile", "period", "period_start", "period_end"]].drop_duplicates()
    if len(keys) != 1:
        raise ValueError(f"a group must hold one tile and period, got {len(keys)}: {keys.to_dict('records')}")
    row = keys.iloc[0]
    return GroupKey(str(row.mgrs_tile), str(row.period), _as_date(row.period_start), _as_date(row.period_end))


def result_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Result records as a pandas frame with every result column, typed for Arrow.

    Integers use pandas' nullable ``Int64`` (each kind leaves the others' columns empty) and times are
    tz-naive UTC, as Spark's session time zone (UTC) expects.
    """
    columns = {}
    for name, hint in result_fields():
        values = [record.get(name) for record in records]
        if hint is int:
            columns[name] = pd.array(values, dtype="Int64")
        elif hint is float:
            columns[name] = pd.array([float("nan") if v is None else v for v in values], dtype="float64")
        elif hint is dt.datetime:
            stamps = [None if v is None else pd.Timestamp(v) for v in values]
            naive = [
                s.tz_convert("UTC").tz_localize(None) if s is not None and s.tzinfo else s for s in stamps
            ]
            columns[name] = pd.to_datetime(naive)
        else:
            columns[name] = pd.Series(values, dtype=object)
    return pd.DataFrame(columns)


def spark_local_dir() -> str | None:
    """The first of Spark's local directories, if this process is a Spark Python worker.

    Spark hands its Python workers the executor's local directories in ``SPARK_LOCAL_DIRS``: the disk
    sized by ``spark.dataproc.executor.disk.size`` on Dataproc, where a group's downloaded bands
    belong, rather than a container's small ``/tmp``.
    """
    for directory in os.environ.get("SPARK_LOCAL_DIRS", "").split(","):
        if directory and os.path.isdir(directory):
            return directory
    return None


def make_group_function(
    config: JobConfig,
    run_id: str,
    clock: Callable[[], dt.datetime] | None = None,
    canvases: Mapping[str, Canvas] | None = None,
    with_zones: bool = False,
) -> Callable[..., pd.DataFrame]:
    """The function ``groupBy(...).applyInPandas`` calls for each (tile, period) group.

    It makes the group's outputs under a new attempt's names, then publishes the group's commit
    record (:meth:`evi_udf.run.ledger.Ledger.commit`) and returns the committed rows: a commit row, the
    composite row, one row per scene and per failure, all stamped with ``run_id`` and the commit id.

    The closure captures only the frozen config (picklable); files and clients are opened inside.
    This is the one place where any exception is caught: it becomes a failure row for the group, so
    one broken group never fails the Spark job. If even the commit record cannot be published, the
    rows come back without a commit id, with a ``commit`` failure row: the group is not done and the
    next run remakes it. With ``canvases`` (period -> run mosaic canvas), the composite's piece of the
    mosaic comes back too, as a ``mosaic_piece`` row that no table or record holds.

    With ``with_zones`` it takes two frames, for ``groupBy(...).cogroup(...).applyInPandas``: the
    group's scenes and the zones that may meet its tile (``zone``, ``zone_id``, ``wkb`` in
    longitude/latitude), and the zone rows commit with the group.
    """
    now = clock or (lambda: dt.datetime.now(dt.timezone.utc))

    # applyInPandas passes the grouping key first to a function of two parameters: each variant has
    # exactly the parameters of its call.
    def process_with_zones(group: pd.DataFrame, zones: pd.DataFrame) -> pd.DataFrame:
        if group.empty:  # zones of a tile with no group in this run
            return result_frame([])
        return run_group(group, zones)

    def process(group: pd.DataFrame) -> pd.DataFrame:
        return run_group(group, None)

    def run_group(group: pd.DataFrame, zones: pd.DataFrame | None) -> pd.DataFrame:
        ledger = Ledger(config.output.root, _storage(config))
        scratch = spark_local_dir()
        try:
            key = group_key_from_pandas(group)
            scenes = scene_refs_from_pandas(group)
        except Exception as exc:  # the UDF edge: a malformed group cannot even be named
            records = to_result_records("failure", [_group_failure(group, exc, config)])
            return result_frame([{**record, "run_id": run_id} for record in records])
        attempt = new_attempt()
        pieces: list[dict[str, Any]] = []
        zone_input, zone_ids, zone_fingerprint = None, {}, None
        try:
            if zones is not None and len(zones):  # a tile no zone meets is processed as without zones
                zone_input, zone_ids = zones_from_pandas(zones)
                zone_fingerprint = tile_zone_fingerprint(zones)
            result = process_group(
                key,
                scenes,
                config,
                storage=ledger.storage,
                now=now,
                scratch_dir=scratch,
                outputs=group_outputs(config, key, attempt),
                canvas=(canvases or {}).get(key.period),
                zones=zone_input,
            )
            if result.mosaic_piece is not None:
                piece = result.mosaic_piece
                height, width = piece.values.shape
                row = MosaicPieceRow(
                    key.mgrs_tile, key.period, piece.row, piece.col, height, width, piece.to_bytes()
                )
                pieces = [{**record, "run_id": run_id} for record in to_result_records("mosaic_piece", [row])]
            records = to_result_records("scene", result.scenes) + to_result_records(
                "failure", result.failures
            )
            if result.composite is not None:
                records = to_result_records("composite", [result.composite]) + records
            if zone_input is not None:
                records += zone_records(key, result, zone_ids, parameter_hash(config.raster))
        except Exception as exc:  # the UDF edge: every failure becomes a row
            records = to_result_records("failure", [_group_failure(group, exc, config)])
        try:
            return result_frame(
                ledger.commit(config, key, scenes, attempt, records, run_id, now, scratch, zone_fingerprint)
                + pieces
            )
        except EviError as exc:
            unrecorded = records + to_result_records("failure", [_group_failure(group, exc, config)])
            return result_frame([{**record, "run_id": run_id} for record in unrecorded])

    return process_with_zones if with_zones else process


def tile_zone_fingerprint(zones: pd.DataFrame) -> str | None:
    """The fingerprint of the zones a group was given (None when there are none)."""
    return zone_set_fingerprint(zip(map(str, zones["zone_id"]), map(bytes, zones["wkb"]), strict=True))


def zones_from_pandas(zones: pd.DataFrame) -> tuple[ZoneInput, dict[int, str]]:
    """The zones handed to a group (``zone``, ``zone_id``, ``wkb``) as :class:`ZoneInput` and the id
    of each zone number."""
    zones = zones.drop_duplicates("zone").sort_values("zone")
    numbers = [int(number) for number in zones["zone"]]
    geometries = list(shapely.from_wkb(np.asarray(zones["wkb"].map(bytes), dtype=object)))
    return ZoneInput(numbers, geometries), dict(zip(numbers, map(str, zones["zone_id"]), strict=True))


# New-format product ids: mission, level, datatake start, baseline, relative orbit, tile, discriminator.
_PASS_IN_PRODUCT_ID = re.compile(r"^(S2[A-D])_MSI(?:L1C|L2A)_(\d{8}T\d{6})_N\d{4}_R(\d{3})_T")


def acquisition_of(product_id: str) -> str:
    """The pass a product belongs to, the same on every tile it covers: mission, datatake start and
    relative orbit (``S2B_20220113T002709_R016``). A product id of the 2015-2016 format (one product
    for many tiles) is its own pass."""
    match = _PASS_IN_PRODUCT_ID.match(product_id)
    return f"{match[1]}_{match[2]}_R{match[3]}" if match else product_id


def _zone_parts(statistics: ZoneStatistics, zone_ids: Mapping[int, str]) -> list[tuple[str, ZonePartColumns]]:
    """(zone id, its columns) for each zone of ``statistics``: whole zones, then the parts."""
    parts: list[tuple[str, ZonePartColumns]] = []
    whole = statistics.whole
    for i, number in enumerate(whole.zone):
        n = int(whole.valid[i])
        parts.append(
            (
                zone_ids[int(number)],
                ZonePartColumns(
                    zone_whole=True,
                    **_pixel_columns(whole, i),
                    evi_sum=float(whole.mean[i]) * n if n else 0.0,
                    evi_m2=float(whole.std[i]) ** 2 * n if n else 0.0,
                    **_value_columns(whole, i),
                    **{f"evi_{name}": _float(values[i]) for name, values in whole.quantiles.items()},
                    evi_steps=[],
                    evi_step_counts=[],
                ),
            )
        )
    split = statistics.split
    summary = summarize(split)
    starts = np.searchsorted(split.hist_zone, split.zone)
    ends = np.searchsorted(split.hist_zone, split.zone, side="right")
    for i, number in enumerate(split.zone):
        parts.append(
            (
                zone_ids[int(number)],
                ZonePartColumns(
                    zone_whole=False,
                    **_pixel_columns(summary, i),
                    evi_sum=float(split.total[i]),
                    evi_m2=float(split.m2[i]),
                    **_value_columns(summary, i),
                    **{f"evi_{name}": None for name in summary.quantiles},
                    evi_steps=split.hist_step[starts[i] : ends[i]].tolist(),
                    evi_step_counts=split.hist_count[starts[i] : ends[i]].tolist(),
                ),
            )
        )
    return parts


def _float(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _pixel_columns(summary: ZoneSummary, i: int) -> dict[str, int]:
    return {
        "total_pixels": int(summary.pixels[i]),
        "valid_pixels": int(summary.valid[i]),
        "masked_pixels": int(summary.masked[i]),
        "nodata_pixels": int(summary.nodata[i]),
        "invalid_pixels": int(summary.invalid[i]),
    }


def _value_columns(summary: ZoneSummary, i: int) -> dict[str, float | None]:
    return {name: _float(getattr(summary, name.removeprefix("evi_"))[i]) for name in ZONE_VALUE_COLUMNS}


ZONE_VALUE_COLUMNS = ("evi_mean", "evi_std", "evi_min", "evi_max")


def zone_records(
    key: GroupKey, result: GroupResult, zone_ids: Mapping[int, str], params: str
) -> list[dict[str, Any]]:
    """The group's zone rows (``zone_scene`` per scene and zone, ``zone_composite`` per zone) as
    result records."""
    scene_rows = [
        ZoneSceneRow(
            mgrs_tile=key.mgrs_tile,
            period=key.period,
            acquisition=acquisition_of(scene.product_id),
            granule_id=scene.granule_id,
            product_id=scene.product_id,
            sensing_time=scene.sensing_time,
            parameter_hash=params,
            zone_id=zone_id,
            statistics=columns,
        )
        for scene, statistics in zip(result.scenes, result.zone_scenes, strict=True)
        for zone_id, columns in _zone_parts(statistics, zone_ids)
    ]
    composite_rows = []
    if result.zone_composite is not None and result.composite is not None:
        composite_rows = [
            ZoneCompositeRow(
                mgrs_tile=key.mgrs_tile,
                period=key.period,
                period_start=key.period_start,
                period_end=key.period_end,
                parameter_hash=params,
                zone_id=zone_id,
                statistics=columns,
            )
            for zone_id, columns in _zone_parts(result.zone_composite, zone_ids)
        ]
    return to_result_records("zone_scene", scene_rows) + to_result_records("zone_composite", composite_rows)


def _storage(config: JobConfig) -> Storage:
    return Storage(config.storage.anonymous_buckets, config.storage.project)


def _group_failure(group: pd.DataFrame, exc: Exception, config: JobConfig) -> FailureRow:
    tiles = sorted(set(map(str, group.get("mgrs_tile", pd.Series(dtype=object)))))
    periods = sorted(set(map(str, group.get("period", pd.Series(dtype=object)))))
    if isinstance(exc, EviError):
        stage, message = exc.stage, str(exc)
    else:
        frames = traceback.format_exception(exc)[-TRACEBACK_FRAMES - 1 :]
        stage, message = "udf", "".join(frames).strip()
    return FailureRow(
        mgrs_tile=",".join(tiles),
        period=",".join(periods),
        granule_id=None,
        product_id=None,
        stage=stage,
        error_class=type(exc).__name__,
        message=message,
        parameter_hash=parameter_hash(config.raster),
    )
