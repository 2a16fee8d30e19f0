"""What a group is: a tile and a period (:class:`GroupKey`) and the scenes it is made from
(:class:`SceneRef`)."""

from __future__ import annotations

import dataclasses
import datetime as dt


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
