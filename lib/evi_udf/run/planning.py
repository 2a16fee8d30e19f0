"""The plan of a run: which groups the selection makes and, from one listing of the ledger, what to do
with each (new, changed, failed, overwrite, done). Nothing is read but the index, the zones and the
ledger's names: planning happens before any pixel is read.

One path for the job (:func:`evi_udf.run.job.run`) and ``make plan`` (:mod:`evi_udf.cli.plan`): the
selection engine is chosen once (:func:`select`): on the driver with pyarrow and pandas when the index
is a small enough local Parquet cache (:func:`evi_udf.index.arrow.select_on_driver`), else in Spark.
Both engines give the same groups and fingerprints (the fingerprints' two forms are side by side in
:mod:`evi_udf.task.identity`); ``make plan`` on the driver engine starts no Spark at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import shapely

from evi_udf.config import JobConfig
from evi_udf.errors import ZonesError
from evi_udf.index.arrow import select_on_driver
from evi_udf.index.catalog import (
    CatalogSelection,
    index_read_errors,
    rejected_summary,
    select_scenes,
    selection_from_pandas,
)
from evi_udf.outputs.sinks import emulator_client
from evi_udf.run.ledger import Commit, Ledger, latest_commits
from evi_udf.task.group import GroupKey
from evi_udf.task.identity import (
    fingerprint_column,
    format_generation_time,
    group_fingerprint,
    parameter_hash,
    scene_line,
    scene_line_column,
    scene_set_fingerprint,
    zone_line_column,
    zone_set_fingerprint,
)
from evi_udf.zones.assignment import BOX_COLUMNS, assign_zones, assign_zones_pandas
from evi_udf.zones.input import ZoneSet, read_zones

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

GROUP_COLUMNS = ("mgrs_tile", "period", "period_start", "period_end")
STATES: tuple[str, ...] = ("new", "changed", "failed", "overwrite", "done")


@dataclasses.dataclass(frozen=True)
class PlannedGroup:
    """A group the selection made: its key, scene count and fingerprint (scene set, and the tile's
    zones when the run has zones there)."""

    key: GroupKey
    scene_count: int
    fingerprint: str


@dataclasses.dataclass(frozen=True)
class GroupDecision:
    """What a run does with one group, and why.

    ``state`` is ``new`` (never committed), ``changed`` (committed from another scene set),
    ``failed`` (the last commit made no composite: retried), ``overwrite`` (done, remade on request)
    or ``done`` (skipped).
    """

    group: PlannedGroup
    state: str
    reason: str
    current: Commit | None

    @property
    def todo(self) -> bool:
        return self.state != "done"


def decide_groups(
    planned: Sequence[PlannedGroup], commits: Iterable[Commit], params: str, overwrite: bool
) -> list[GroupDecision]:
    """Decide for each planned group whether it is new, changed, failed, to overwrite or done.

    Parameters
    ----------
    planned
        The groups the selection made, with their fingerprints.
    commits
        Every commit record found by listing the ledger (any parameter set).
    params
        This run's parameter hash: only commits made with it count.
    overwrite
        Remake groups that are done.
    """
    latest = latest_commits(c for c in commits if c.parameter_hash == params)
    decisions = []
    for group in planned:
        current = latest.get((group.key.mgrs_tile, group.key.period, params))
        if current is None:
            state, reason = "new", "no commit for these parameters"
        elif current.fingerprint != group.fingerprint:
            state = "changed"
            if current.scene_count != group.scene_count:
                reason = f"scene set changed: {current.scene_count} -> {group.scene_count} scenes"
            else:
                reason = (
                    f"scene set changed: {group.scene_count} scenes, not the same products "
                    "(reprocessed, replaced or new generation)"
                )
        elif current.status == "failed":
            state, reason = "failed", f"last commit {current.commit_id} made no composite: retried"
        elif overwrite:
            state, reason = "overwrite", f"done by commit {current.commit_id}; remade (overwrite)"
        else:
            note = " (some scenes failed)" if current.status == "partial" else ""
            state, reason = "done", f"commit {current.commit_id}, same scene set{note}"
        decisions.append(GroupDecision(group, state, reason, current))
    return decisions


def _ordered(planned: list[PlannedGroup]) -> list[PlannedGroup]:
    # Largest groups first, so that the longest tasks start first.
    return sorted(planned, key=lambda p: (-p.scene_count, p.key.mgrs_tile, p.key.period))


def zones_frame(zone_set: ZoneSet) -> pd.DataFrame:
    """The accepted zones as rows: number, id, WKB (lon/lat) and bounding box."""
    bounds = shapely.bounds(zone_set.geometries).reshape(-1, 4)
    return pd.DataFrame(
        {
            "zone": np.arange(len(zone_set), dtype=np.int64),
            "zone_id": list(zone_set.ids),
            "wkb": list(shapely.to_wkb(zone_set.geometries)),
            **{name: bounds[:, i] for i, name in enumerate(BOX_COLUMNS)},
        }
    )


def zones_by_tile(spark: SparkSession, zone_set: ZoneSet, tiles: Sequence[str]) -> DataFrame:
    """The zones that may meet each tile, in Spark (``mgrs_tile``, ``zone``, ``zone_id``, ``wkb``),
    cached: the groups take their tile's zones from it (and the Spark engine its fingerprints)."""
    zones = spark.createDataFrame(zones_frame(zone_set))
    tile_frame = spark.createDataFrame(
        pd.DataFrame({"mgrs_tile": list(tiles)}, dtype=object), "mgrs_tile string"
    )
    return assign_zones(zones, tile_frame).join(zones.select("zone", "zone_id", "wkb"), "zone").cache()


class DriverSelection:
    """Scenes selected on the driver (pandas); Spark frames are made only when the run processes."""

    engine = "driver"

    def __init__(self, scenes: pd.DataFrame, rejected: pd.DataFrame) -> None:
        self.scenes = scenes
        self.rejected = rejected

    def planned_groups(self) -> list[PlannedGroup]:
        """Every (tile, period) group with its scene count and scene-set fingerprint."""
        scenes = self.scenes
        lines = [
            scene_line(product, baseline, format_generation_time(None if pd.isna(made) else made))
            for product, baseline, made in zip(
                scenes["product_id"], scenes["processing_baseline"], scenes["generation_time"], strict=True
            )
        ]
        groups = scenes.assign(_line=lines).groupby(list(GROUP_COLUMNS), sort=False)["_line"]
        return _ordered(
            [
                PlannedGroup(GroupKey(*key), len(group_lines), scene_set_fingerprint(group_lines))
                for key, group_lines in groups
            ]
        )

    def zone_fingerprints(self, zone_set: ZoneSet, tiles: Sequence[str]) -> dict[str, str]:
        """Each tile's zone fingerprint, for the tiles some zone may meet."""
        frame = zones_frame(zone_set)
        pairs = assign_zones_pandas(frame, pd.Series(list(tiles), dtype=object)).merge(
            frame[["zone", "zone_id", "wkb"]], on="zone"
        )
        fingerprints = {}
        for tile, group in pairs.groupby("mgrs_tile"):
            fingerprint = zone_set_fingerprint(
                zip(map(str, group["zone_id"]), map(bytes, group["wkb"]), strict=True)
            )
            if fingerprint is not None:
                fingerprints[str(tile)] = fingerprint
        return fingerprints

    def rejected_counts(self) -> pd.DataFrame:
        """The rejected index rows by stage and reason."""
        return rejected_summary(self.rejected)

    def spark_frames(self, spark: SparkSession) -> CatalogSelection:
        """The selection as Spark frames, for processing."""
        return selection_from_pandas(spark, self.scenes, self.rejected)


class SparkSelection:
    """Scenes selected in Spark; the plan costs one Spark job whatever the number of groups."""

    engine = "spark"

    def __init__(self, frames: CatalogSelection, index_uri: str) -> None:
        self.frames = frames
        self.index_uri = index_uri
        self.by_tile: DataFrame | None = None

    def planned_groups(self) -> list[PlannedGroup]:
        """Every (tile, period) group with its scene count and fingerprint, computed by Spark (only a
        short fingerprint per group reaches the driver)."""
        from pyspark.sql import functions as F

        with index_read_errors(self.index_uri):
            rows = (
                self.frames.scenes.groupBy(*GROUP_COLUMNS)
                .agg(
                    F.count("*").alias("scenes"), fingerprint_column(scene_line_column()).alias("fingerprint")
                )
                .collect()
            )
        return _ordered(
            [
                PlannedGroup(
                    GroupKey(r.mgrs_tile, r.period, r.period_start, r.period_end), r.scenes, r.fingerprint
                )
                for r in rows
            ]
        )

    def zone_fingerprints(self, zone_set: ZoneSet, tiles: Sequence[str]) -> dict[str, str]:
        """Each tile's zone fingerprint (one Spark job); keeps the tiles' zones for the groups."""
        spark = self.frames.scenes.sparkSession
        self.by_tile = zones_by_tile(spark, zone_set, tiles)
        rows = (
            self.by_tile.groupBy("mgrs_tile")
            .agg(fingerprint_column(zone_line_column(), distinct=True).alias("fingerprint"))
            .collect()
        )
        return {r.mgrs_tile: r.fingerprint for r in rows}

    def rejected_counts(self) -> pd.DataFrame:
        """The rejected index rows by stage and reason."""
        return rejected_summary(self.frames)

    def spark_frames(self, spark: SparkSession) -> CatalogSelection:
        """The selection's Spark frames."""
        return self.frames


Selection = DriverSelection | SparkSelection


def select(config: JobConfig, spark: Callable[[], SparkSession]) -> Selection:
    """Select the scenes with the engine that fits the index: the driver for a local Parquet cache
    whose partitions to read are small enough, else Spark (``spark`` is called only then)."""
    on_driver = select_on_driver(config.catalog)
    if on_driver is not None:
        return DriverSelection(*on_driver)
    return SparkSelection(select_scenes(spark(), config.catalog), config.catalog.index_uri)


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """The scenes a run selected, what it does with each group, and its zones."""

    selection: Selection
    groups: list[GroupDecision]
    zone_set: ZoneSet | None = None

    @property
    def todo(self) -> list[GroupDecision]:
        return [decision for decision in self.groups if decision.todo]

    def count(self, state: str) -> int:
        return sum(1 for decision in self.groups if decision.state == state)

    def zones_by_tile(self, spark: SparkSession) -> DataFrame | None:
        """The tiles' zones in Spark for processing (those the Spark engine made while planning)."""
        if self.zone_set is None:
            return None
        selection = self.selection
        if isinstance(selection, SparkSelection) and selection.by_tile is not None:
            return selection.by_tile
        tiles = sorted({decision.group.key.mgrs_tile for decision in self.groups})
        return zones_by_tile(spark, self.zone_set, tiles)

    def table(self) -> pd.DataFrame:
        """One row per group (tile, period, scenes, state, reason), by tile and period."""
        rows = [
            {
                "mgrs_tile": d.group.key.mgrs_tile,
                "period": d.group.key.period,
                "scenes": d.group.scene_count,
                "state": d.state,
                "reason": d.reason,
            }
            for d in self.groups
        ]
        frame = pd.DataFrame(rows, columns=["mgrs_tile", "period", "scenes", "state", "reason"])
        return frame.sort_values(["mgrs_tile", "period"]).reset_index(drop=True)


def read_run_zones(config: JobConfig, ledger: Ledger) -> ZoneSet | None:
    """The zones of ``zones.uri`` (checked before any group runs), or None without zones.

    Raises
    ------
    ZonesError
        If the zones file is unusable, or no zone in it is.
    """
    if config.zones.uri is None:
        return None
    zone_set = read_zones(config.zones, ledger.storage, emulator_client(config))
    if not len(zone_set):
        reasons = "; ".join(f"{r.zone_id}: {r.reason}" for r in zone_set.rejected[:5])
        raise ZonesError(
            f"zones file {zone_set.uri}: no usable zone ({len(zone_set.rejected)} rejected: {reasons})"
        )
    return zone_set


def zone_tiles_only(
    planned: list[PlannedGroup], fingerprints: Mapping[str, str], config: JobConfig
) -> list[PlannedGroup]:
    """With zones and neither ``catalog.tiles`` nor ``catalog.bbox``, only the groups of tiles some
    zone meets (``fingerprints`` has those tiles): the zones say where to work."""
    if config.catalog.tiles or config.catalog.bbox is not None:
        return planned
    return [p for p in planned if p.key.mgrs_tile in fingerprints]


def with_zone_fingerprints(
    planned: list[PlannedGroup], fingerprints: Mapping[str, str]
) -> list[PlannedGroup]:
    """The planned groups with their tile's zones in their fingerprints (:func:`group_fingerprint`)."""
    return [
        dataclasses.replace(
            p, fingerprint=group_fingerprint(p.fingerprint, fingerprints.get(p.key.mgrs_tile))
        )
        for p in planned
    ]


def plan_run(config: JobConfig, ledger: Ledger, spark: Callable[[], SparkSession]) -> RunPlan:
    """Select scenes, give the groups their tiles' zones and decide, from one listing of the ledger,
    which groups to (re)make.

    ``spark`` is called for a session only when the selection needs Spark.
    """
    selection = select(config, spark)
    planned = selection.planned_groups()
    zone_set = read_run_zones(config, ledger)
    if zone_set is not None:
        fingerprints = selection.zone_fingerprints(zone_set, sorted({p.key.mgrs_tile for p in planned}))
        planned = with_zone_fingerprints(zone_tiles_only(planned, fingerprints, config), fingerprints)
    decisions = decide_groups(
        planned, ledger.list_commits(), parameter_hash(config.raster), config.run.overwrite
    )
    return RunPlan(selection, decisions, zone_set)
