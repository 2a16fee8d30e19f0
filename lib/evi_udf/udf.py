"""The pandas edge of the raster core: catalog rows in, typed scene references out.

``groupBy(...).applyInPandas`` hands each group to Python as a pandas DataFrame with the catalog's
scene columns; these functions turn it into the plain dataclasses :mod:`evi_udf.process` takes, so
the raster core never sees pandas or Spark.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from evi_udf.schema import GroupKey, SceneRef


def _as_datetime(value: object) -> dt.datetime:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_pydatetime()


def _as_date(value: object) -> dt.date:
    return pd.Timestamp(value).date()


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
