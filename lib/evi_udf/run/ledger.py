"""The ledger of groups: what a group is, where its outputs and commit record live, whether it is done.

A *group* is one MGRS tile x one period x one raster parameter set. Every attempt at a group writes
its outputs (COG, STAC item, quick-look) under names that carry a random *attempt* token, then
publishes a *commit record* last: a small Parquet file holding every row the group produced (its
commit, composite, scene and failure rows), with the parameters and the scene set it was made from in
the file's metadata. The record is the unit of completion, as in Spark's output committer or
odc-stats' per-task marker:

- a group is **done** when its latest commit record was made with the same raster parameters from
  the same scene set (the *fingerprint* of the selected products: ids, baselines, generation times)
  and did not fail. A new, vanished or reprocessed product changes the fingerprint and the group is
  remade; a failed group (no composite) is retried by the next run;
- of all commit records of a group, the **latest** (commit time, then attempt) is current. Tables are
  derived from current records (:mod:`evi_udf.run.job`), and the outputs of superseded records are deleted
  once the tables no longer point at them (:func:`superseded_files`), so readers of the tables or of
  the STAC items never meet two current composites;
- done-ness and currency come from **listing** the ledger, never from one request per group: the
  record's name says everything the driver needs::

      <root>/ledger/<grid>/<parameter hash>/<period>/<tile>/
          <committed at>_<attempt>_<status>_<scene count>s_<fingerprint>.parquet

Outputs of an attempt that never committed (a task killed between its COG and its record) are
*orphans*; the next commit of the group deletes those older than :data:`ORPHAN_GRACE`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import evi_udf
from evi_udf.config import JobConfig
from evi_udf.errors import StorageError
from evi_udf.outputs.rows import CommitRow, result_arrow_schema, to_result_records
from evi_udf.storage import Storage
from evi_udf.task.group import GroupKey, SceneRef
from evi_udf.task.identity import (
    fingerprint_of,
    format_generation_time,
    grid_name,
    group_fingerprint,
    parameter_hash,
)
from evi_udf.task.names import OUTPUT_SUFFIXES, group_outputs, output_prefix, output_stem_base

LEDGER_FOLDER = "ledger"
STATUSES: tuple[str, ...] = ("ok", "partial", "failed")
# Outputs of an attempt without a commit record are deleted only when older than this: a younger one
# may belong to a task of another run that is still working on the group.
ORPHAN_GRACE = dt.timedelta(hours=24)
COMMIT_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
RECORD_METADATA_KEY = b"evi_commit"

_RECORD_NAME = re.compile(
    r"^(?P<committed>\d{8}T\d{12}Z)_(?P<attempt>[0-9a-f]{8})_(?P<status>ok|partial|failed)_"
    r"(?P<scenes>\d+)s_(?P<fingerprint>[0-9a-f]{16})\.parquet$"
)


@dataclasses.dataclass(frozen=True)
class Commit:
    """One commit record, as its name describes it."""

    uri: str
    grid: str
    parameter_hash: str
    period: str
    mgrs_tile: str
    committed_at: dt.datetime
    attempt: str
    status: str
    scene_count: int
    fingerprint: str

    @property
    def commit_id(self) -> str:
        """Unique and ordered like the commits themselves (commit time, then attempt)."""
        return f"{self.committed_at:{COMMIT_TIME_FORMAT}}-{self.attempt}"

    @property
    def group(self) -> tuple[str, str, str]:
        """(tile, period, parameter hash): the group this commit is for."""
        return (self.mgrs_tile, self.period, self.parameter_hash)

    @property
    def name(self) -> str:
        return record_name(self.committed_at, self.attempt, self.status, self.scene_count, self.fingerprint)


def record_name(
    committed_at: dt.datetime, attempt: str, status: str, scene_count: int, fingerprint: str
) -> str:
    """The file name of a commit record (see the module docstring)."""
    return f"{committed_at:{COMMIT_TIME_FORMAT}}_{attempt}_{status}_{scene_count}s_{fingerprint}.parquet"


def parse_record_uri(uri: str, ledger_root: str) -> Commit | None:
    """The :class:`Commit` a record URI names, or ``None`` for anything else under the ledger."""
    relative = uri[len(ledger_root.rstrip("/")) + 1 :] if uri.startswith(ledger_root.rstrip("/")) else ""
    parts = relative.split("/")
    if len(parts) != 5:
        return None
    grid, params, period, tile, name = parts
    match = _RECORD_NAME.match(name)
    if not match:
        return None
    committed = dt.datetime.strptime(match["committed"], COMMIT_TIME_FORMAT).replace(tzinfo=dt.timezone.utc)
    return Commit(
        uri=uri,
        grid=grid,
        parameter_hash=params,
        period=period,
        mgrs_tile=tile,
        committed_at=committed,
        attempt=match["attempt"],
        status=match["status"],
        scene_count=int(match["scenes"]),
        fingerprint=match["fingerprint"],
    )


def latest_commits(commits: Iterable[Commit]) -> dict[tuple[str, str, str], Commit]:
    """The current commit of every group: the latest by commit time, then attempt."""
    latest: dict[tuple[str, str, str], Commit] = {}
    for commit in commits:
        held = latest.get(commit.group)
        if held is None or commit.commit_id > held.commit_id:
            latest[commit.group] = commit
    return latest


# ------------------------------------------------------------------------------------------------
# The ledger on storage
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ledger:
    """The commit records of one output root (local folder or ``gs://``)."""

    root: str
    storage: Storage

    @property
    def prefix(self) -> str:
        return f"{self.root.rstrip('/')}/{LEDGER_FOLDER}"

    def group_prefix(self, grid: str, params: str, key: GroupKey) -> str:
        return f"{self.prefix}/{grid}/{params}/{key.period}/{key.mgrs_tile}"

    def list_commits(self) -> list[Commit]:
        """Every commit record of the root, from one paged listing of the ledger."""
        listed = self.storage.list_objects(self.prefix + "/")
        commits = (parse_record_uri(item.uri, self.prefix) for item in listed)
        return [commit for commit in commits if commit is not None]

    def read_record(self, uri: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The result records and metadata of one commit record.

        Raises
        ------
        StorageError
            If the record cannot be read or is not a commit record; names the URI.
        """
        import pyarrow.parquet as pq

        data = self.storage.read_bytes(uri)
        try:
            table = pq.read_table(io.BytesIO(data))
            metadata = json.loads((table.schema.metadata or {})[RECORD_METADATA_KEY])
        except (KeyError, ValueError, OSError) as exc:
            raise StorageError(f"{uri}: not a readable commit record ({exc})") from exc
        return table.to_pylist(), metadata

    def commit(
        self,
        config: JobConfig,
        key: GroupKey,
        scenes: Sequence[SceneRef],
        attempt: str,
        records: list[dict[str, Any]],
        run_id: str,
        clock: Callable[[], dt.datetime],
        scratch_dir: str | None = None,
        zone_fingerprint: str | None = None,
    ) -> list[dict[str, Any]]:
        """Publish the commit record of one attempt at a group; return its rows, stamped.

        ``records`` are the group's composite, scene and failure result records. They are stamped
        with ``run_id`` and the commit id, a commit row is added, and the record is published under
        its final name in one step (nothing else is written after it). Then orphans of earlier
        attempts are removed (see :data:`ORPHAN_GRACE`). ``zone_fingerprint``: the fingerprint of
        the zones the group was given, part of what the commit is made of (:func:`group_fingerprint`).

        Raises
        ------
        StorageError
            If the record cannot be published; the group then counts as not done.
        """
        raster = config.raster
        params, grid = parameter_hash(raster), grid_name(raster)
        composites = [r for r in records if r["kind"] == "composite"]
        scene_rows = [r for r in records if r["kind"] == "scene"]
        failed_products = {r.get("product_id") for r in records if r["kind"] == "failure"} - {None}
        status = "failed" if not composites else "partial" if failed_products else "ok"
        fingerprint = group_fingerprint(fingerprint_of(scenes), zone_fingerprint)
        committed_at = clock().astimezone(dt.timezone.utc)
        name = record_name(committed_at, attempt, status, len(scenes), fingerprint)
        uri = f"{self.group_prefix(grid, params, key)}/{name}"
        commit_id = f"{committed_at:{COMMIT_TIME_FORMAT}}-{attempt}"
        row = CommitRow(
            mgrs_tile=key.mgrs_tile,
            period=key.period,
            period_start=key.period_start,
            period_end=key.period_end,
            parameter_hash=params,
            grid=grid,
            method=raster.compositor,
            status=status,
            scene_set_fingerprint=fingerprint,
            scene_count=len(scenes),
            scenes_used=len(scene_rows),
            scenes_failed=len(failed_products),
            committed_at=committed_at,
            raster_uri=composites[0]["raster_uri"] if composites else None,
            record_uri=uri,
            software_version=evi_udf.__version__,
        )
        stamped = [
            {**record, "run_id": run_id, "commit_id": commit_id}
            for record in [*to_result_records("commit", [row]), *records]
        ]
        metadata = {
            "commit_id": commit_id,
            "run_id": run_id,
            "committed_at": committed_at.isoformat(),
            "status": status,
            "mgrs_tile": key.mgrs_tile,
            "period": key.period,
            "period_start": key.period_start.isoformat(),
            "period_end": key.period_end.isoformat(),
            "grid": grid,
            "parameter_hash": params,
            "parameters": json.loads(json.dumps(dataclasses.asdict(raster), default=str)),
            "scene_set_fingerprint": fingerprint,
            "products": [
                {
                    "product_id": s.product_id,
                    "processing_baseline": s.processing_baseline,
                    "generation_time": format_generation_time(s.generation_time) or None,
                }
                for s in sorted(scenes, key=lambda s: s.product_id)
            ],
            "outputs": list(group_outputs(config, key, attempt).uris) if composites else [],
            "software_version": evi_udf.__version__,
        }
        with tempfile.TemporaryDirectory(prefix="evi_commit_", dir=scratch_dir) as scratch:
            local = Path(scratch) / name
            write_record(local, stamped, metadata)
            self.storage.publish(local, uri, overwrite=False)
        self.remove_orphans(config, key, attempt, clock())
        return stamped

    def remove_orphans(
        self, config: JobConfig, key: GroupKey, own_attempt: str, now: dt.datetime
    ) -> list[str]:
        """Delete outputs of this group's attempts that have no commit record and are old enough.

        Two listings (the group's output folder and its ledger folder); returns the URIs deleted.
        """
        raster = config.raster
        base = output_stem_base(key, raster)
        folder = output_prefix(config.output.root, grid_name(raster), key)
        committed = {
            commit.attempt for commit in self.list_commits_of(grid_name(raster), parameter_hash(raster), key)
        }
        deleted = []
        for item in self.storage.list_objects(folder + "/"):
            attempt = _attempt_of(item.uri.rsplit("/", 1)[-1], base)
            if attempt is None or attempt == own_attempt or attempt in committed:
                continue
            if now - item.updated < ORPHAN_GRACE:
                continue
            self.storage.delete(item.uri)
            deleted.append(item.uri)
        return deleted

    def list_commits_of(self, grid: str, params: str, key: GroupKey) -> list[Commit]:
        """The commit records of one group (one listing of its ledger folder)."""
        prefix = self.group_prefix(grid, params, key) + "/"
        commits = (parse_record_uri(item.uri, self.prefix) for item in self.storage.list_objects(prefix))
        return [commit for commit in commits if commit is not None]


def _attempt_of(name: str, stem_base: str) -> str | None:
    for suffix in OUTPUT_SUFFIXES:
        if name.startswith(stem_base + "_") and name.endswith(suffix):
            attempt = name[len(stem_base) + 1 : -len(suffix)]
            return attempt if re.fullmatch(r"[0-9a-f]{8}", attempt) else None
    return None


def write_record(path: Path, records: Sequence[Mapping[str, Any]], metadata: Mapping[str, Any]) -> Path:
    """Write result records as a commit record (Parquet, :func:`result_arrow_schema`, metadata)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = result_arrow_schema()
    columns = {name: [_arrow_value(record.get(name)) for record in records] for name in schema.names}
    table = pa.Table.from_pydict(columns, schema=schema)
    table = table.replace_schema_metadata({RECORD_METADATA_KEY: json.dumps(metadata).encode()})
    pq.write_table(table, path)
    return path


def _arrow_value(value: Any) -> Any:
    # Result records use NaN for "no value" in float columns and naive UTC datetimes.
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def superseded_files(
    commits: Iterable[Commit], held: Mapping[tuple[str, str, str], str], config: JobConfig
) -> list[str]:
    """Records and outputs of commits of this run's parameter set that are no longer current.

    Only groups whose current commit the tables hold (``held``: group -> commit id) are cleaned, so no
    table row ever points at a deleted file; outputs shared with the current commit (a task retried
    by Spark commits the same attempt twice) are kept.
    """
    params, grid = parameter_hash(config.raster), grid_name(config.raster)
    mine = [c for c in commits if c.parameter_hash == params and c.grid == grid]
    latest = latest_commits(mine)
    doomed: list[str] = []
    for commit in mine:
        current = latest[commit.group]
        if commit.commit_id == current.commit_id or held.get(commit.group) != current.commit_id:
            continue
        doomed.append(commit.uri)
        if commit.attempt != current.attempt:
            key = GroupKey(commit.mgrs_tile, commit.period, dt.date.min, dt.date.min)
            doomed.extend(group_outputs(config, key, commit.attempt).uris)
    return doomed
