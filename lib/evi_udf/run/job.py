"""The Spark job: index -> groups -> ``applyInPandas`` -> committed groups -> tables.

:func:`run` is what ``spark_jobs/evi_job.py`` calls. It is a short sequence of steps:

1. **plan**: select scenes with the catalog, compute each group's scene-set fingerprint (one Spark
   job) and list the ledger (:mod:`evi_udf.run.ledger`): each group is new, changed, failed or done;
2. **process**: the groups that are not done, one per task; each task publishes its outputs and then
   its commit record, and returns the committed rows;
3. **load**: the tables take every current commit they do not hold yet, this run's and any earlier
   run's (read from the records by one Spark job), and the run's rejected index rows;
4. **clean**: records and outputs of commits that are no longer current are deleted, once the tables
   point at the newer ones;
5. **report**: a run report (printed and written as JSON next to the outputs) and a quick-look mosaic
   of the composites this run made.

A run killed at any point leaves only complete commit records behind, so a plain rerun processes the
groups that have none and loads whatever the tables lack.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import shapely

from evi_udf.config import JobConfig
from evi_udf.errors import StorageError, ZonesError
from evi_udf.index.arrow import select_on_driver
from evi_udf.index.catalog import (
    RAW_COLUMNS,
    CatalogSelection,
    index_read_errors,
    select_scenes,
    selection_from_pandas,
)
from evi_udf.outputs.mosaic import Canvas, MosaicPiece, mosaic_canvases, render
from evi_udf.outputs.rows import (
    GROUP_KINDS,
    TABLE_NAMES,
    RejectedRow,
    result_spark_schema,
    table_columns,
    to_result_records,
)
from evi_udf.outputs.sinks import emulator_client
from evi_udf.outputs.stac import STAC_FOLDER, collection_uri, publish_catalog
from evi_udf.run.ledger import (
    Commit,
    GroupPlan,
    Ledger,
    PlannedGroup,
    latest_commits,
    plan_groups,
    superseded_files,
)
from evi_udf.run.process import evi_to_rgba, write_png
from evi_udf.run.udf import make_group_function, result_frame
from evi_udf.storage import Storage
from evi_udf.task.group import GroupKey
from evi_udf.task.identity import (
    FINGERPRINT_DIGITS,
    SPARK_GENERATION_TIME_PATTERN,
    format_generation_time,
    grid_name,
    group_fingerprint,
    parameter_hash,
    scene_line,
    scene_set_fingerprint,
    zone_line,
)
from evi_udf.zones.assignment import BOX_COLUMNS, assign_zones, assign_zones_pandas
from evi_udf.zones.input import ZoneSet, read_zones

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

GROUP_COLUMNS = ("mgrs_tile", "period", "period_start", "period_end")


class ResultSink(Protocol):
    """Where the result tables go (local Parquet, BigQuery)."""

    def probe(self) -> None:
        """Raise a ``SinkError`` now if the tables cannot be written (before any group is processed)."""

    def held_commits(self) -> dict[tuple[str, str, str], str]:
        """(tile, period, parameter hash) -> the commit id the tables hold for each group."""

    def load(self, tables: Mapping[str, pd.DataFrame], run_id: str) -> None:
        """Load commits' rows (a newer commit of a group replaces the group's rows) and rejected rows."""

    def current_composites(self, parameter_hash: str) -> pd.DataFrame:
        """The composites of one parameter set the tables hold (``evi_udf.outputs.stac.CURRENT_COLUMNS``)."""

    def load_zones(self, zones: pd.DataFrame, run_id: str) -> None:
        """Replace the zones table with the run's zones (``zone_id``, ``geometry_wkt``)."""


@dataclasses.dataclass(frozen=True)
class RunReport:
    """What a run did, for people (printed) and machines (JSON next to the outputs).

    Counts of rows (scenes, failures, rejected index rows) are those of the rows this run wrote to
    the tables: the commits it made, and the rejected lines of its selection.
    """

    run_id: str
    status: str
    started_at: str
    wall_seconds: float
    groups_planned: int
    groups_new: int
    groups_changed: int
    groups_retried: int
    groups_skipped: int
    groups_processed: int
    groups_failed: int
    groups_uncommitted: int
    failed_share: float
    commits_loaded: int
    commits_recovered: int
    scenes_read: int
    scenes_failed: int
    rejected_index_rows: int
    superseded_files_deleted: int
    total_pixels: int
    valid_pixels: int
    output_root: str
    report_uri: str
    stac_catalog: str | None
    mosaics: dict[str, str]
    composites: list[str]
    # Wall seconds of each step on the driver: plan, process (the Spark job that makes the groups),
    # load, clean, stac, mosaic. All but process are the driver's own cost of the run.
    phase_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    # The zones of zones.uri the run used, and those it rejected (id, position in the file, reason).
    zones: int = 0
    zones_rejected: list[dict[str, object]] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the console."""
        return "\n".join(
            [
                f"run {self.run_id}: {self.status.upper()} in {self.wall_seconds:.1f} s",
                f"  groups: {self.groups_planned} planned ({self.groups_new} new, {self.groups_changed} "
                f"changed, {self.groups_retried} retried), {self.groups_processed} processed, "
                f"{self.groups_skipped} skipped (already done), {self.groups_failed} failed",
                f"  tables: {self.commits_loaded} commits loaded "
                f"({self.commits_recovered} made by earlier runs)",
                f"  scenes: {self.scenes_read} read, {self.scenes_failed} failed; "
                f"{self.rejected_index_rows} index rows rejected",
                f"  pixels: {self.valid_pixels:,} valid EVI of {self.total_pixels:,} in the composites",
                *(
                    [f"  zones: {self.zones} used, {len(self.zones_rejected)} rejected (see the report)"]
                    if self.zones or self.zones_rejected
                    else []
                ),
                f"  outputs: {self.output_root} (report {self.report_uri})",
                *([f"  STAC: {self.stac_catalog}"] if self.stac_catalog else []),
                *(f"  mosaic {period}: {uri}" for period, uri in sorted(self.mosaics.items())),
            ]
        )


def new_run_id(now: dt.datetime) -> str:
    """A readable, unique run id: UTC time plus a random suffix."""
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def planned_groups(scenes: DataFrame) -> list[PlannedGroup]:
    """Every (tile, period) group of the selection with its scene count and scene-set fingerprint.

    One Spark job, whatever the number of groups; the fingerprint lines are formatted by Spark in the
    session time zone (UTC), exactly as :func:`evi_udf.run.ledger.fingerprint_of` formats them in a task.
    """
    from pyspark.sql import functions as F

    generation = F.coalesce(F.date_format("generation_time", SPARK_GENERATION_TIME_PATTERN), F.lit(""))
    line = F.concat_ws("|", "product_id", "processing_baseline", generation)
    rows = (
        scenes.groupBy(*GROUP_COLUMNS)
        .agg(F.count("*").alias("scenes"), F.collect_list(line).alias("lines"))
        .orderBy(F.desc("scenes"), "mgrs_tile", "period")
        .collect()
    )
    return [
        PlannedGroup(
            GroupKey(r.mgrs_tile, r.period, r.period_start, r.period_end),
            r.scenes,
            scene_set_fingerprint(r.lines),
        )
        for r in rows
    ]


def planned_groups_pandas(scenes: pd.DataFrame) -> list[PlannedGroup]:
    """:func:`planned_groups` of a scenes frame selected on the driver (no Spark job)."""
    lines = [
        scene_line(product, baseline, format_generation_time(None if pd.isna(generated) else generated))
        for product, baseline, generated in zip(
            scenes["product_id"], scenes["processing_baseline"], scenes["generation_time"], strict=True
        )
    ]
    groups = scenes.assign(_line=lines).groupby(list(GROUP_COLUMNS), sort=False)["_line"]
    planned = [
        PlannedGroup(GroupKey(*key), len(group_lines), scene_set_fingerprint(group_lines))
        for key, group_lines in groups
    ]
    return sorted(planned, key=lambda p: (-p.scene_count, p.key.mgrs_tile, p.key.period))


@dataclasses.dataclass(frozen=True)
class RunZones:
    """The run's user zones: those read from ``zones.uri`` (with the rejected ones) and, in Spark,
    the zones that may meet each selected tile (``mgrs_tile``, ``zone``, ``zone_id``, ``wkb``)."""

    zone_set: ZoneSet
    by_tile: DataFrame


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


def prepare_zones(
    spark: SparkSession, config: JobConfig, store: Storage, tiles: Sequence[str]
) -> RunZones | None:
    """Read and check the zones (before any group runs) and assign them to the selected tiles.

    Raises
    ------
    ZonesError
        If the zones file is unusable, or no zone in it is.
    """
    if config.zones.uri is None:
        return None
    zone_set = read_zones(config.zones, store, emulator_client(config))
    if not len(zone_set):
        reasons = "; ".join(f"{r.zone_id}: {r.reason}" for r in zone_set.rejected[:5])
        raise ZonesError(
            f"zones file {zone_set.uri}: no usable zone ({len(zone_set.rejected)} rejected: {reasons})"
        )
    zones = spark.createDataFrame(zones_frame(zone_set))
    tile_frame = spark.createDataFrame(
        pd.DataFrame({"mgrs_tile": list(tiles)}, dtype=object), "mgrs_tile string"
    )
    pairs = assign_zones(zones, tile_frame)
    # Used twice (the fingerprints, then the groups): computed once.
    by_tile = pairs.join(zones.select("zone", "zone_id", "wkb"), "zone").cache()
    return RunZones(zone_set, by_tile)


def tile_zone_fingerprints(by_tile: DataFrame) -> dict[str, str]:
    """Each tile's zone fingerprint, as the group computes it (:func:`evi_udf.run.udf.tile_zone_fingerprint`):
    one Spark job, one row per tile."""
    from pyspark.sql import functions as F

    # zone_line in Spark SQL: sha2 of binary is the lowercase hex digest, as hashlib's.
    line = F.concat(
        F.lit("zone|"), "zone_id", F.lit("|"), F.substring(F.sha2("wkb", 256), 1, FINGERPRINT_DIGITS)
    )
    joined = F.concat_ws("\n", F.array_sort(F.collect_set(line)))
    fingerprint = F.substring(F.sha2(joined, 256), 1, FINGERPRINT_DIGITS)
    return {
        r.mgrs_tile: r.fingerprint
        for r in by_tile.groupBy("mgrs_tile").agg(fingerprint.alias("fingerprint")).collect()
    }


def tile_zone_fingerprints_pandas(zone_set: ZoneSet, tiles: Sequence[str]) -> dict[str, str]:
    """:func:`tile_zone_fingerprints` without Spark (``make plan`` on the driver)."""
    frame = zones_frame(zone_set)
    pairs = assign_zones_pandas(frame, pd.Series(list(tiles), dtype=object))
    lines = pairs.merge(frame[["zone", "zone_id", "wkb"]], on="zone")
    lines["line"] = [zone_line(str(i), bytes(w)) for i, w in zip(lines["zone_id"], lines["wkb"], strict=True)]
    return {tile: scene_set_fingerprint(set(group["line"])) for tile, group in lines.groupby("mgrs_tile")}


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


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """The scenes a run selected and what it does with each group."""

    selection: CatalogSelection
    groups: list[GroupPlan]
    zones: RunZones | None = None

    @property
    def todo(self) -> list[GroupPlan]:
        return [plan for plan in self.groups if plan.todo]

    def count(self, state: str) -> int:
        return sum(1 for plan in self.groups if plan.state == state)


def plan_run(spark: SparkSession, config: JobConfig, ledger: Ledger) -> RunPlan:
    """Select scenes, assign the zones to their tiles and decide, from one listing of the ledger,
    which groups to (re)make."""
    on_driver = select_on_driver(config.catalog)
    if on_driver is not None:
        scenes, rejected = on_driver
        selection = selection_from_pandas(spark, scenes, rejected)
        planned = planned_groups_pandas(scenes)
    else:
        selection = select_scenes(spark, config.catalog)
        with index_read_errors(config.catalog.index_uri):
            planned = planned_groups(selection.scenes)
    zones = prepare_zones(spark, config, ledger.storage, sorted({p.key.mgrs_tile for p in planned}))
    if zones is not None:
        fingerprints = tile_zone_fingerprints(zones.by_tile)
        planned = zone_tiles_only(planned, fingerprints, config)
        planned = with_zone_fingerprints(planned, fingerprints)
    plans = plan_groups(planned, ledger.list_commits(), parameter_hash(config.raster), config.run.overwrite)
    return RunPlan(selection, plans, zones)


def bucket_ids(spark: SparkSession, partitions: int) -> list[int]:
    """One integer per shuffle partition whose Spark hash lands in that partition.

    Grouping by these integers with ``spark.sql.shuffle.partitions = partitions`` puts exactly one
    group in each task: groups are never queued behind each other on one executor by a hash collision.
    """
    from pyspark.sql import functions as F

    candidates = (
        spark.range(0, 64 * partitions)
        .select("id", F.pmod(F.hash("id"), F.lit(partitions)).alias("partition"))
        .groupBy("partition")
        .agg(F.min("id").alias("id"))
        .orderBy("partition")
        .collect()
    )
    if len(candidates) != partitions:
        raise RuntimeError(f"could not find a bucket id for each of {partitions} partitions")
    return [row.id for row in candidates]


@contextlib.contextmanager
def _one_group_per_task(spark: SparkSession, groups: int) -> Iterator[None]:
    # Adaptive execution would coalesce the tiny scene-row partitions into one task, which is exactly
    # the accident to avoid: the work is in the rasters, not in the rows.
    settings = {
        "spark.sql.shuffle.partitions": str(groups),
        "spark.sql.adaptive.coalescePartitions.enabled": "false",
    }
    previous = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def _process(
    spark: SparkSession,
    scenes: DataFrame,
    todo: Sequence[GroupKey],
    config: JobConfig,
    run_id: str,
    canvases: Mapping[str, Canvas],
    zones: RunZones | None = None,
) -> pd.DataFrame:
    from pyspark.sql import functions as F

    if not todo:
        return result_frame([])
    ids = bucket_ids(spark, len(todo))
    rows = [(key.mgrs_tile, key.period, bucket) for key, bucket in zip(todo, ids, strict=True)]
    schema = "mgrs_tile string, period string, bucket long"
    buckets = spark.createDataFrame(rows, schema)
    grouped = scenes.join(F.broadcast(buckets), ["mgrs_tile", "period"]).groupBy("bucket")
    with _one_group_per_task(spark, len(todo)):
        if zones is None:
            function = make_group_function(config, run_id, canvases=canvases)
            results = grouped.applyInPandas(function, schema=result_spark_schema())
        else:
            # Each group gets the zones of its tile (every period of a tile gets them all).
            # A frame of its own: the same one on both sides of a cogroup makes its columns ambiguous.
            zone_buckets = spark.createDataFrame(rows, schema)
            zone_groups = zones.by_tile.join(F.broadcast(zone_buckets), "mgrs_tile").groupBy("bucket")
            function = make_group_function(config, run_id, canvases=canvases, with_zones=True)
            results = grouped.cogroup(zone_groups).applyInPandas(function, schema=result_spark_schema())
        return results.toPandas()


def index_row_id(raw: Mapping[str, Any]) -> str:
    """The identity of an index line: a hash of its 14 raw fields (null fields as empty)."""
    text = "\x1f".join("" if raw.get(name) is None else str(raw.get(name)) for name in RAW_COLUMNS)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rejected_records(rejected: pd.DataFrame, run_id: str) -> list[dict[str, Any]]:
    """The catalog's rejected index rows as ``evi_rejected`` records, one per line and reason."""
    rows = {}
    for raw in rejected.astype(object).where(rejected.notna(), None).to_dict("records"):
        row = RejectedRow(
            index_row_id=index_row_id(raw),
            granule_id=raw.get("granule_id"),
            product_id=raw.get("product_id"),
            mgrs_tile=raw.get("mgrs_tile"),
            raw_sensing_time=raw.get("sensing_time"),
            stage=str(raw["stage"]),
            reason=str(raw["reason"]),
        )
        rows[(row.index_row_id, row.stage, row.reason)] = row
    return [{**record, "run_id": run_id} for record in to_result_records("rejected", list(rows.values()))]


def split_tables(results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Result rows split by ``kind`` into the tables, each with its own columns."""
    return {
        table: results.loc[results["kind"] == kind, table_columns(kind)].reset_index(drop=True)
        for kind, table in TABLE_NAMES.items()
    }


def _read_commit_records(spark: SparkSession, ledger: Ledger, uris: Sequence[str]) -> pd.DataFrame:
    """The rows of commit records written by earlier runs, read by the executors (one Spark job).

    A record that vanished meanwhile (superseded and cleaned by another run) is left out.
    """
    if not uris:
        return result_frame([])

    def read(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            records: list[dict[str, Any]] = []
            for uri in batch["uri"]:
                try:
                    rows, _ = ledger.read_record(uri)
                except StorageError:
                    continue
                records.extend(rows)
            yield result_frame(records)

    frame = spark.createDataFrame([(uri,) for uri in uris], "uri string").repartition(min(len(uris), 64))
    return frame.mapInPandas(read, result_spark_schema()).toPandas()


@dataclasses.dataclass(frozen=True)
class LoadOutcome:
    """What the load step put in the tables."""

    loaded: list[Commit]
    recovered: list[Commit]
    unreadable: list[Commit]
    held: dict[tuple[str, str, str], str]
    commits: list[Commit]


def load_tables(
    spark: SparkSession,
    ledger: Ledger,
    sink: ResultSink,
    results: pd.DataFrame,
    rejected: list[dict[str, Any]],
    run_id: str,
) -> LoadOutcome:
    """Load every current commit the tables do not hold, and the run's rejected index rows.

    ``results`` are this run's committed rows (already in memory); records of earlier runs are read
    from the ledger. Returns what the tables hold afterwards (one more query), for the clean step.
    """
    held = sink.held_commits()
    commits = ledger.list_commits()
    wanted = [c for group, c in latest_commits(commits).items() if held.get(group) != c.commit_id]
    made_here = set(results["commit_id"].dropna()) if len(results) else set()
    earlier = [c for c in wanted if c.commit_id not in made_here]
    recovered_rows = _read_commit_records(spark, ledger, [c.uri for c in earlier])
    ids = {c.commit_id for c in wanted}
    rows = [
        frame[frame["commit_id"].isin(ids)]
        for frame in (results, recovered_rows)
        if len(frame) and "commit_id" in frame
    ]
    records = [
        r for frame in rows for r in frame.astype(object).where(frame.notna(), None).to_dict("records")
    ]
    tables = split_tables(result_frame(records + rejected))
    sink.load(tables, run_id)
    found = set(tables[TABLE_NAMES["commit"]]["commit_id"])
    loaded = [c for c in wanted if c.commit_id in found]
    return LoadOutcome(
        loaded=loaded,
        recovered=[c for c in loaded if c.commit_id not in made_here],
        unreadable=[c for c in wanted if c.commit_id not in found],
        held=sink.held_commits(),
        commits=commits,
    )


def clean_superseded(spark: SparkSession, store: Storage, uris: Sequence[str]) -> int:
    """Delete superseded records and outputs on the executors (one Spark job); returns how many."""
    if not uris:
        return 0

    def delete(items: Iterator[str]) -> Iterator[int]:
        done = 0
        for uri in items:
            with contextlib.suppress(StorageError):  # best effort: the next run's clean step retries
                store.delete(uri)
                done += 1
        yield done

    return int(
        sum(spark.sparkContext.parallelize(list(uris), min(len(uris), 64)).mapPartitions(delete).collect())
    )


def run(
    spark: SparkSession,
    config: JobConfig,
    sink: ResultSink,
    log: Callable[[str], None] = print,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
) -> RunReport:
    """Run the whole job once and return its report.

    Raises
    ------
    EviError
        When the run cannot start or finish as a whole (unreadable index, sink failure); failures of
        single scenes and groups are rows, not exceptions. Whatever the groups committed before such
        an error stays committed: a rerun loads it without processing it again.
    """
    started = clock()
    started_clock = time.perf_counter()
    store = Storage(config.storage.anonymous_buckets, config.storage.project)
    ledger = Ledger(config.output.root, store)
    run_id = new_run_id(started)

    phases: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[phase] = round(now - mark, 3)
        mark = now

    plan = plan_run(spark, config, ledger)
    probe_outputs(store, sink, config, run_id)
    todo = [group.group.key for group in plan.todo]
    log(
        f"run {run_id}: {len(plan.groups)} groups planned, {plan.count('done')} already done, "
        f"{len(todo)} to process ({plan.count('new')} new, {plan.count('changed')} changed, "
        f"{plan.count('failed')} failed before, {plan.count('overwrite')} overwritten)"
    )
    canvases = mosaic_canvases(todo, config.run.mosaic_size)
    lap("plan")
    if plan.zones is not None:
        zone_set = plan.zones.zone_set
        log(f"zones {zone_set.uri}: {len(zone_set)} zones, {len(zone_set.rejected)} rejected")
        for rejection in zone_set.rejected[:20]:
            log(f"  zone {rejection.zone_id!r} (feature {rejection.position}): {rejection.reason}")
    results = _process(spark, plan.selection.scenes, todo, config, run_id, canvases, plan.zones)
    lap("process")
    rejected = rejected_records(plan.selection.rejected.toPandas(), run_id)
    outcome = load_tables(spark, ledger, sink, results, rejected, run_id)
    if plan.zones is not None:
        # With the tables, at the end: a sink that is down stops no group from being made and committed.
        zone_set = plan.zones.zone_set
        wkt = shapely.to_wkt(zone_set.geometries, rounding_precision=-1)
        sink.load_zones(pd.DataFrame({"zone_id": list(zone_set.ids), "geometry_wkt": list(wkt)}), run_id)
    for commit in outcome.unreadable:
        log(f"warning: commit record {commit.uri} could not be read; the next run retries it")
    lap("load")
    deleted = clean_superseded(spark, store, superseded_files(outcome.commits, outcome.held, config))
    lap("clean")
    catalog = publish_stac(store, sink, config, outcome)
    lap("stac")

    tables = split_tables(results)
    commits = tables[TABLE_NAMES["commit"]]
    composites = tables[TABLE_NAMES["composite"]]
    failures = tables[TABLE_NAMES["failure"]]
    group_rows = results[results["kind"].isin(GROUP_KINDS)] if len(results) else results
    uncommitted = group_rows[group_rows["commit_id"].isna()] if len(group_rows) else group_rows
    failed_groups = int((commits["status"] == "failed").sum()) + len(
        {(r.mgrs_tile, r.period) for r in uncommitted.itertuples(index=False)}
    )
    root = config.output.root.rstrip("/")
    mosaics = _mosaics(store, results, canvases, run_id, root)
    lap("mosaic")
    failed_share = failed_groups / len(todo) if todo else 0.0
    report = RunReport(
        run_id=run_id,
        status="failed" if failed_share > config.run.max_failed_group_share else "ok",
        started_at=started.isoformat(timespec="seconds"),
        wall_seconds=round(time.perf_counter() - started_clock, 2),
        groups_planned=len(plan.groups),
        groups_new=plan.count("new"),
        groups_changed=plan.count("changed"),
        groups_retried=plan.count("failed"),
        groups_skipped=plan.count("done"),
        groups_processed=len(todo),
        groups_failed=failed_groups,
        groups_uncommitted=len({(r.mgrs_tile, r.period) for r in uncommitted.itertuples(index=False)}),
        failed_share=round(failed_share, 4),
        commits_loaded=len(outcome.loaded),
        commits_recovered=len(outcome.recovered),
        scenes_read=int((results["kind"] == "scene").sum()) if len(results) else 0,
        scenes_failed=failures["product_id"].dropna().nunique(),
        rejected_index_rows=len(rejected),
        superseded_files_deleted=deleted,
        total_pixels=int(composites["total_pixels"].sum()),
        valid_pixels=int(composites["valid_pixels"].sum()),
        output_root=root,
        report_uri=f"{root}/runs/{run_id}.json",
        stac_catalog=catalog,
        mosaics=mosaics,
        composites=list(composites["raster_uri"]),
        phase_seconds=phases,
        zones=len(plan.zones.zone_set) if plan.zones else 0,
        zones_rejected=[dataclasses.asdict(r) for r in plan.zones.zone_set.rejected] if plan.zones else [],
    )
    with tempfile.TemporaryDirectory(prefix="evi_run_") as scratch:
        report_file = Path(scratch) / "report.json"
        report_file.write_text(json.dumps(dataclasses.asdict(report), indent=2))
        store.publish(report_file, report.report_uri, overwrite=True)
    log(report.summary())
    return report


def probe_outputs(store: Storage, sink: ResultSink, config: JobConfig, run_id: str) -> None:
    """Write and delete a small file under the output root and probe the sink, so that an unwritable
    root or unreachable tables stop the run before any group is processed, not after all of them.

    Raises
    ------
    StorageError, SinkError
        Naming the root or the tables.
    """
    with tempfile.TemporaryDirectory(prefix="evi_probe_") as scratch:
        local = Path(scratch) / "probe.txt"
        local.write_text(f"write probe of run {run_id}\n")
        uri = f"{config.output.root}/runs/.probe-{run_id}.txt"
        try:
            store.publish(local, uri, overwrite=True)
            store.delete(uri)
        except StorageError as exc:
            raise StorageError(f"{config.output.root}: the output root is not writable ({exc})") from exc
    sink.probe()


def publish_stac(store: Storage, sink: ResultSink, config: JobConfig, outcome: LoadOutcome) -> str | None:
    """Rewrite the output root's STAC catalog for the periods whose composites this run loaded.

    One query of the tables and one listing; nothing when no composite of this parameter set changed
    and the collection exists. Returns the root catalog's URI (None when nothing was written).
    """
    params = parameter_hash(config.raster)
    touched = {c.period for c in outcome.loaded if c.parameter_hash == params and c.status != "failed"}
    collection = collection_uri(config.output.root, grid_name(config.raster), params)
    if not touched and store.exists(collection):
        return None
    written = publish_catalog(store, config, sink.current_composites(params), touched)
    return next((uri for uri in written if uri.endswith(f"/{STAC_FOLDER}/catalog.json")), None)


def _mosaics(
    store: Storage, results: pd.DataFrame, canvases: Mapping[str, Canvas], run_id: str, root: str
) -> dict[str, str]:
    """One mosaic PNG per period, pasted from the pieces the tasks returned (no COG is read here)."""
    pieces = results[results["kind"] == "mosaic_piece"] if len(results) else results
    mosaics = {}
    with tempfile.TemporaryDirectory(prefix="evi_run_") as scratch:
        for period, rows in pieces.groupby("period", sort=True) if len(pieces) else []:
            image = render(
                canvases[str(period)],
                [
                    MosaicPiece.from_bytes(
                        int(r.piece_row),
                        int(r.piece_col),
                        int(r.piece_height),
                        int(r.piece_width),
                        r.piece_values,
                    )
                    for r in rows.itertuples(index=False)
                ],
            )
            local = Path(scratch) / f"{period}.png"
            write_png(evi_to_rgba(image), local)
            mosaics[str(period)] = f"{root}/runs/{run_id}_mosaic_{period}.png"
            store.publish(local, mosaics[str(period)], overwrite=True)
    return mosaics
