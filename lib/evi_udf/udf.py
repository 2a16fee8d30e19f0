"""The pandas edge of the raster core: catalog rows in, committed result rows out.

``groupBy(...).applyInPandas`` hands each group to Python as a pandas DataFrame with the catalog's
scene columns; these functions turn it into the plain dataclasses :mod:`evi_udf.process` takes (so
the raster core never sees pandas or Spark), run the group, commit it in the ledger
(:mod:`evi_udf.ledger`) and hand the committed rows back to Spark.
"""

from __future__ import annotations

import datetime as dt
import os
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from evi_udf.config import JobConfig
from evi_udf.errors import EviError
from evi_udf.ledger import Ledger, group_outputs, new_attempt, parameter_hash
from evi_udf.mosaic import Canvas
from evi_udf.process import process_group
from evi_udf.schema import (
    FailureRow,
    GroupKey,
    MosaicPieceRow,
    SceneRef,
    result_fields,
    to_result_records,
)
from evi_udf.storage import Storage

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
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The function ``groupBy(...).applyInPandas`` calls for each (tile, period) group.

    It makes the group's outputs under a new attempt's names, then publishes the group's commit
    record (:meth:`evi_udf.ledger.Ledger.commit`) and returns the committed rows: a commit row, the
    composite row, one row per scene and per failure, all stamped with ``run_id`` and the commit id.

    The closure captures only the frozen config (picklable); files and clients are opened inside.
    This is the one place where any exception is caught: it becomes a failure row for the group, so
    one broken group never fails the Spark job. If even the commit record cannot be published, the
    rows come back without a commit id, with a ``commit`` failure row: the group is not done and the
    next run remakes it. With ``canvases`` (period -> run mosaic canvas), the composite's piece of the
    mosaic comes back too, as a ``mosaic_piece`` row that no table or record holds.
    """
    now = clock or (lambda: dt.datetime.now(dt.timezone.utc))

    def process(group: pd.DataFrame) -> pd.DataFrame:
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
        try:
            result = process_group(
                key,
                scenes,
                config,
                storage=ledger.storage,
                now=now,
                scratch_dir=scratch,
                outputs=group_outputs(config, key, attempt),
                canvas=(canvases or {}).get(key.period),
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
        except Exception as exc:  # the UDF edge: every failure becomes a row
            records = to_result_records("failure", [_group_failure(group, exc, config)])
        try:
            return result_frame(
                ledger.commit(config, key, scenes, attempt, records, run_id, now, scratch) + pieces
            )
        except EviError as exc:
            unrecorded = records + to_result_records("failure", [_group_failure(group, exc, config)])
            return result_frame([{**record, "run_id": run_id} for record in unrecorded])

    return process


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
