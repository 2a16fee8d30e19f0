"""The Spark job: index -> groups -> ``applyInPandas`` -> committed groups -> tables.

:func:`run` is what ``spark_jobs/evi_job.py`` calls. It is a short sequence of steps:

1. **plan** (:mod:`evi_udf.run.planning`): select scenes, compute each group's fingerprint and list
   the ledger (:mod:`evi_udf.run.ledger`): each group is new, changed, failed or done;
2. **process** (:mod:`evi_udf.run.execute`): the groups that are not done, one per task; each task
   publishes its outputs and then its commit record, and returns the committed rows;
3. **load** (:mod:`evi_udf.run.load`): the tables take every current commit they do not hold yet,
   this run's and any earlier run's (read from the records by one Spark job), and the run's rejected
   index rows;
4. **clean** (:mod:`evi_udf.run.load`): records and outputs of commits that are no longer current are
   deleted, once the tables point at the newer ones;
5. **report** (:mod:`evi_udf.run.report`): a run report (printed and written as JSON next to the
   outputs) and a quick-look mosaic of the composites this run made.

A run killed at any point leaves only complete commit records behind, so a plain rerun processes the
groups that have none and loads whatever the tables lack.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import shapely

from evi_udf.config import JobConfig
from evi_udf.errors import StorageError
from evi_udf.outputs.mosaic import mosaic_canvases
from evi_udf.outputs.rows import GROUP_KINDS, TABLE_NAMES
from evi_udf.outputs.sinks.protocol import ResultSink
from evi_udf.outputs.stac import STAC_FOLDER, collection_uri, publish_catalog
from evi_udf.run.execute import process_groups
from evi_udf.run.ledger import Ledger, superseded_files
from evi_udf.run.load import LoadOutcome, clean_superseded, load_tables, rejected_records, split_tables
from evi_udf.run.planning import plan_run
from evi_udf.run.report import RunReport, new_run_id, publish_mosaics, publish_report
from evi_udf.storage import Storage
from evi_udf.task.identity import grid_name, parameter_hash

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


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

    plan = plan_run(config, ledger, lambda: spark)
    probe_outputs(store, sink, config, run_id)
    todo = [group.group.key for group in plan.todo]
    log(
        f"run {run_id}: {len(plan.groups)} groups planned, {plan.count('done')} already done, "
        f"{len(todo)} to process ({plan.count('new')} new, {plan.count('changed')} changed, "
        f"{plan.count('failed')} failed before, {plan.count('overwrite')} overwritten)"
    )
    canvases = mosaic_canvases(todo, config.run.mosaic_size)
    lap("plan")
    zone_set = plan.zone_set
    if zone_set is not None:
        log(f"zones {zone_set.uri}: {len(zone_set)} zones, {len(zone_set.rejected)} rejected")
        for rejection in zone_set.rejected[:20]:
            log(f"  zone {rejection.zone_id!r} (feature {rejection.position}): {rejection.reason}")
    frames = plan.selection.spark_frames(spark)
    zones = plan.zones_by_tile(spark)
    results = process_groups(spark, frames.scenes, todo, config, run_id, canvases, zones)
    lap("process")
    rejected = rejected_records(frames.rejected.toPandas(), run_id)
    outcome = load_tables(spark, ledger, sink, results, rejected, run_id)
    if zone_set is not None:
        # With the tables, at the end: a sink that is down stops no group from being made and committed.
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
    mosaics = publish_mosaics(store, results, canvases, run_id, root)
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
        zones=len(zone_set) if zone_set else 0,
        zones_rejected=[dataclasses.asdict(r) for r in zone_set.rejected] if zone_set else [],
    )
    publish_report(store, report)
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
