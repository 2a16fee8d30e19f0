"""The BigQuery statistics sink: ``evi_commits``, ``evi_composites``, ``evi_scenes``, ``evi_failures``
and ``evi_rejected``.

Tables are created when missing, with the columns of :mod:`evi_udf.outputs.rows`, partitioning (commits and
composites by month of ``period_start``, scenes by day of ``sensing_time``), clustering by tile, and
for composites a GEOGRAPHY ``footprint`` built from the WKT.

A load is one multi-statement transaction over per-run staging tables (``_evi_staging_<token>_<table>``,
created with a one-day expiration so that a crashed run leaves nothing for long, and deleted at the
end):

1. ``evi_commits`` takes each staged commit unless it already holds a newer commit of the group;
2. each group table takes the staged rows of the commits that are now current, and loses the rows of
   the touched groups whose commit is no longer current (one ``MERGE`` per table);
3. ``evi_rejected`` takes the rejected index rows it does not have (the first run to reject a line
   keeps it).

So a rerun or a second load of the same commits changes nothing, and two runs loading at the same
time converge on the newest commit of every group: BigQuery runs the transactions one after the other
or aborts one of them, which is retried. Identifiers are validated and quoted; no value is pasted into
SQL.

Calls and the permissions they need (the README lists the roles): ``datasets.get`` (and
``datasets.create`` only when the dataset is missing), ``tables.get``/``tables.create`` (the five tables,
once; the staging tables, every load), ``tables.updateData`` and ``jobs.create`` (loads and queries),
``tables.getData`` (queries), ``tables.delete`` (staging tables). Every API error is a
:class:`~evi_udf.errors.SinkError` naming the dataset and table.

Credentials: Application Default Credentials (``bigquery.Client(project=...)``); tests inject a
client pointed at the BigQuery emulator.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import requests
from google.api_core.exceptions import GoogleAPIError, NotFound

from evi_udf.errors import SinkError
from evi_udf.outputs.rows import (
    GROUP_KEY_COLUMNS,
    GROUP_TABLES,
    KIND_OF_TABLE,
    NATURAL_KEYS,
    TABLE_DESCRIPTIONS,
    TABLE_NAMES,
    table_arrow_schema,
    table_fields,
)
from evi_udf.outputs.zone_views import ZONE_VIEWS, zone_view_sql

PROJECT_ID = re.compile(r"^(?:[a-z][a-z0-9.-]*:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
DATASET_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
STAGING_PREFIX = "_evi_staging_"
STAGING_LIFETIME = dt.timedelta(days=1)
PARTITIONING: dict[str, tuple[str, str] | None] = {
    "evi_commits": ("period_start", "MONTH"),
    "evi_composites": ("period_start", "MONTH"),
    "evi_scenes": ("sensing_time", "DAY"),
    "evi_failures": None,
    "evi_rejected": None,
    "evi_zone_scene_parts": ("sensing_time", "DAY"),
    "evi_zone_composite_parts": ("period_start", "MONTH"),
}
# Zone tables are read by zone: cluster them by it.
CLUSTERING: dict[str, list[str]] = {
    "evi_zone_scene_parts": ["zone_id", "mgrs_tile"],
    "evi_zone_composite_parts": ["zone_id", "mgrs_tile"],
}
GEOGRAPHY_COLUMNS = {"evi_composites": ("footprint", "footprint_wkt")}
# What a failed load or query raises once the client's own retries are spent.
_API_ERRORS = (GoogleAPIError, requests.RequestException)
# BigQuery aborts one of two transactions that change the same table at the same time; its message
# says so. Such a load is run again from the start (it is idempotent).
_CONFLICT = re.compile(r"concurrent update|could not serialize|aborted due to concurrent", re.IGNORECASE)
CONFLICT_RETRIES = 6
# The user zones of the latest run, with their geometry as GEOGRAPHY (replaced by every run with zones).
ZONES_TABLE = "evi_zones"
ZONE_VIEW_DESCRIPTIONS = {
    "evi_zone_scenes": (
        "One row per user zone and Sentinel-2 acquisition: the zone's EVI statistics over all its pixels, "
        "merged over the tiles that counted them (each pixel once)."
    ),
    "evi_zone_composites": (
        "One row per user zone and period: the zone's EVI statistics in the composites, merged over tiles."
    ),
}


def _quote(name: str) -> str:
    return f"`{name}`"


def _period_window(commits: pd.DataFrame) -> tuple[dt.date, dt.date]:
    """The first and last day of the periods of the commits being loaded."""
    starts = pd.to_datetime(commits["period_start"]).dt.date
    ends = pd.to_datetime(commits["period_end"]).dt.date
    return min(starts), max(ends)


def _window_filter(table: str, alias: str, window: tuple[dt.date, dt.date]) -> str:
    """A condition on ``table``'s partitioning column that keeps the rows of periods in ``window``.

    Constant bounds: BigQuery prunes partitions only by filters it can evaluate before reading. Rows of
    a group lie in its period (scenes by UTC sensing date), so the filter never hides a row the
    statement must see. ``TRUE`` for an unpartitioned table.
    """
    partition = PARTITIONING[table]
    if partition is None:
        return "TRUE"
    first, last = (day.isoformat() for day in window)
    column = f"{alias}.{_quote(partition[0])}"
    if partition[0] == "sensing_time":
        after_last = (window[1] + dt.timedelta(days=1)).isoformat()
        return f"({column} >= TIMESTAMP '{first}' AND {column} < TIMESTAMP '{after_last}')"
    return f"{column} BETWEEN DATE '{first}' AND DATE '{last}'"


class BigQuerySink:
    """Writes the result tables into one BigQuery dataset.

    Parameters
    ----------
    project, dataset
        Where the tables live; both validated (``project`` like ``my-project``, ``dataset`` letters,
        digits and underscores).
    location
        Dataset location when it is created (e.g. ``US``, ``australia-southeast1``).
    client
        A ``google.cloud.bigquery.Client``; by default one with Application Default Credentials.
    """

    def __init__(self, project: str, dataset: str, location: str = "US", client: Any | None = None) -> None:
        if not PROJECT_ID.match(project):
            raise SinkError(f"bigquery project {project!r} is not a valid project id")
        if not DATASET_ID.match(dataset):
            raise SinkError(f"bigquery dataset {dataset!r}: use letters, digits and underscores only")
        self.project, self.dataset, self.location = project, dataset, location
        self._client = client
        self._tables_ready = False

    @property
    def client(self) -> Any:
        if self._client is None:
            from google.cloud import bigquery

            self._client = bigquery.Client(project=self.project)
        return self._client

    @property
    def dataset_id(self) -> str:
        return f"{self.project}.{self.dataset}"

    def table_id(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"

    def _schema(self, table: str, staging: bool) -> list[Any]:
        from google.cloud import bigquery

        fields = [
            bigquery.SchemaField(c.name, c.bigquery_type, mode=c.mode, description=c.description)
            for c in table_fields(KIND_OF_TABLE[table])
        ]
        if not staging and table in GEOGRAPHY_COLUMNS:
            geography, wkt = GEOGRAPHY_COLUMNS[table]
            description = f"{wkt} as a GEOGRAPHY, for spatial filters and joins (ST_INTERSECTS, ...)."
            fields.append(
                bigquery.SchemaField(geography, "GEOGRAPHY", mode="REQUIRED", description=description)
            )
        return fields

    def ensure_tables(self) -> None:
        """Get the dataset and the five tables, creating only what is missing.

        Raises
        ------
        SinkError
            On any API error, or when an existing table lacks columns this release writes (a table
            made by an earlier release); names the dataset or table.
        """
        if self._tables_ready:
            return
        from google.cloud import bigquery

        try:
            self.client.get_dataset(self.dataset_id)
        except NotFound:
            dataset = bigquery.Dataset(self.dataset_id)
            dataset.location = self.location
            self._call(
                self.dataset_id, "create the dataset", self.client.create_dataset, dataset, exists_ok=True
            )
        except _API_ERRORS as exc:
            raise SinkError(f"{self.dataset_id}: cannot get the dataset ({exc})") from exc
        for table in TABLE_NAMES.values():
            table_id = self.table_id(table)
            try:
                existing = self.client.get_table(table_id)
            except NotFound:
                target = bigquery.Table(table_id, schema=self._schema(table, staging=False))
                target.description = TABLE_DESCRIPTIONS[table]
                partition = PARTITIONING[table]
                if partition:
                    target.time_partitioning = bigquery.TimePartitioning(
                        type_=partition[1], field=partition[0]
                    )
                target.clustering_fields = CLUSTERING.get(table, ["mgrs_tile"])
                self._call(table_id, "create the table", self.client.create_table, target, exists_ok=True)
                continue
            except _API_ERRORS as exc:
                raise SinkError(f"{table_id}: cannot get the table ({exc})") from exc
            have = {field.name for field in existing.schema}
            missing = [field.name for field in self._schema(table, staging=False) if field.name not in have]
            if missing:
                raise SinkError(
                    f"{table_id}: lacks the columns {', '.join(missing)} (made by an earlier release); "
                    f"write to a new dataset, or drop the table and rerun: the tables are rebuilt from "
                    f"the commit records"
                )
        self._ensure_views()
        self._tables_ready = True

    def _ensure_views(self) -> None:
        """The zone views (:mod:`evi_udf.outputs.zone_views`) over the parts tables, made or brought up to
        date (a release that changes a view's SQL replaces it)."""
        from google.cloud import bigquery

        for view, (parts, _, _) in ZONE_VIEWS.items():
            view_id = self.table_id(view)
            sql = zone_view_sql(view, f"`{self.table_id(parts)}`", "bigquery")
            try:
                existing = self.client.get_table(view_id)
            except NotFound:
                target = bigquery.Table(view_id)
                target.view_query = sql
                target.description = ZONE_VIEW_DESCRIPTIONS[view]
                self._call(view_id, "create the view", self.client.create_table, target, exists_ok=True)
                continue
            except _API_ERRORS as exc:
                raise SinkError(f"{view_id}: cannot get the view ({exc})") from exc
            if existing.view_query != sql:
                existing.view_query = sql
                self._call(view_id, "update the view", self.client.update_table, existing, ["view_query"])

    def _call(self, what: str, action: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except _API_ERRORS as exc:
            raise SinkError(f"{what}: cannot {action} ({exc})") from exc

    def _rows(self, table: str, sql: str) -> list[Any]:
        try:
            return list(self.client.query(sql).result())
        except _API_ERRORS as exc:
            raise SinkError(f"{self.table_id(table)}: query failed ({exc})") from exc

    def probe(self) -> None:
        """Check, before any group is processed, that the dataset and tables can be reached (and made)."""
        self.ensure_tables()

    def held_commits(self) -> dict[tuple[str, str, str], str]:
        """(tile, period, parameter hash) -> the commit id ``evi_commits`` holds for that group."""
        self.ensure_tables()
        table = TABLE_NAMES["commit"]
        columns = ", ".join(_quote(c) for c in (*GROUP_KEY_COLUMNS, "commit_id"))
        rows = self._rows(table, f"SELECT {columns} FROM {_quote(self.table_id(table))}")
        return {tuple(row[c] for c in GROUP_KEY_COLUMNS): row["commit_id"] for row in rows}

    def current_composites(self, parameter_hash: str) -> pd.DataFrame:
        """The composites of one parameter set the tables hold (the STAC catalog is made from them)."""
        from google.cloud import bigquery

        from evi_udf.outputs.stac import CURRENT_COLUMNS

        self.ensure_tables()
        table = self.table_id(TABLE_NAMES["composite"])
        columns = ", ".join(_quote(c) for c in CURRENT_COLUMNS)
        sql = f"SELECT {columns} FROM {_quote(table)} WHERE parameter_hash = @p"
        config = bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("p", "STRING", parameter_hash)]
        )
        try:
            rows = list(self.client.query(sql, job_config=config).result())
        except _API_ERRORS as exc:
            raise SinkError(f"{table}: query failed ({exc})") from exc
        return pd.DataFrame([dict(row) for row in rows], columns=list(CURRENT_COLUMNS))

    def read(self, table: str) -> pd.DataFrame:
        """A whole table as a frame (GEOGRAPHY as WKT text): for tests and small tables."""
        self.ensure_tables()
        select = "*"
        if table in GEOGRAPHY_COLUMNS:
            geography = GEOGRAPHY_COLUMNS[table][0]
            select = f"* EXCEPT ({_quote(geography)}), ST_ASTEXT({_quote(geography)}) AS {_quote(geography)}"
        rows = self._rows(table, f"SELECT {select} FROM {_quote(self.table_id(table))}")
        return pd.DataFrame([dict(row) for row in rows])

    def _stage(self, token: str, table: str, frame: pd.DataFrame) -> str:
        """Create this load's staging table for ``table`` and load ``frame`` into it (Parquet)."""
        from google.cloud import bigquery

        staging_id = self.table_id(f"{STAGING_PREFIX}{token}_{table}")
        staging = bigquery.Table(staging_id, schema=self._schema(table, staging=True))
        staging.expires = dt.datetime.now(dt.timezone.utc) + STAGING_LIFETIME
        self._call(staging_id, "create the staging table", self.client.create_table, staging)
        schema = table_arrow_schema(KIND_OF_TABLE[table])
        buffer = io.BytesIO()
        # An empty frame's columns may hold any dtype (nothing to convert): the schema's empty table.
        arrow = (
            pa.Table.from_pandas(frame.reindex(columns=schema.names), schema=schema, preserve_index=False)
            if len(frame)
            else schema.empty_table()
        )
        pq.write_table(arrow, buffer)
        buffer.seek(0)
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
        )
        options = bigquery.ParquetOptions()
        options.enable_list_inference = True  # REPEATED columns from Parquet lists
        config.parquet_options = options
        try:
            self.client.load_table_from_file(buffer, staging_id, job_config=config).result()
        except _API_ERRORS as exc:
            raise SinkError(f"{staging_id}: load failed ({exc})") from exc
        return staging_id

    def load_zones(self, zones: pd.DataFrame, run_id: str) -> None:
        """Replace ``evi_zones`` with the run's zones (``zone_id``, ``geometry_wkt`` in lon/lat): the
        geometry as a GEOGRAPHY, for spatial joins with the zone views, clustered by zone id."""
        from google.cloud import bigquery

        self.ensure_tables()
        staging_id = self.table_id(f"{STAGING_PREFIX}{run_id.replace('-', '_').lower()}_zones")
        schema = [bigquery.SchemaField("zone_id", "STRING"), bigquery.SchemaField("geometry_wkt", "STRING")]
        staging = bigquery.Table(staging_id, schema=schema)
        staging.expires = dt.datetime.now(dt.timezone.utc) + STAGING_LIFETIME
        self._call(staging_id, "create the staging table", self.client.create_table, staging, exists_ok=True)
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(zones[["zone_id", "geometry_wkt"]], preserve_index=False), buffer)
        buffer.seek(0)
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        )
        try:
            self.client.load_table_from_file(buffer, staging_id, job_config=config).result()
        except _API_ERRORS as exc:
            raise SinkError(f"{staging_id}: load failed ({exc})") from exc
        target = _quote(self.table_id(ZONES_TABLE))
        sql = (
            f"CREATE OR REPLACE TABLE {target} CLUSTER BY zone_id AS SELECT zone_id, geometry_wkt, "
            f"ST_GEOGFROMTEXT(geometry_wkt, make_valid => TRUE) AS geometry FROM {_quote(staging_id)}"
        )
        self._rows(ZONES_TABLE, sql)
        self._call(
            staging_id, "drop the staging table", self.client.delete_table, staging_id, not_found_ok=True
        )

    def load(self, tables: Mapping[str, pd.DataFrame], run_id: str) -> None:
        """Load commits' rows and this run's rejected index rows in one transaction.

        Parameters
        ----------
        tables
            ``evi_commits`` (one row per commit to load, at most one per group), the other group tables
            (the same commits' rows, each with its ``commit_id``) and ``evi_rejected`` (the run's
            rejected index rows). A commit older than the one the tables hold for its group changes
            nothing.
        run_id
            Part of the staging tables' names.
        """
        unknown = set(tables) - set(NATURAL_KEYS)
        if unknown:
            raise SinkError(
                f"unknown table {sorted(unknown)[0]!r}; expected one of {', '.join(NATURAL_KEYS)}"
            )
        self.ensure_tables()
        commits = tables.get(TABLE_NAMES["commit"])
        rejected = tables.get(TABLE_NAMES["rejected"])
        has_commits = commits is not None and len(commits) > 0
        has_rejected = rejected is not None and len(rejected) > 0
        if not has_commits and not has_rejected:
            return
        token = f"{re.sub(r'[^0-9A-Za-z]', '_', run_id)}_{secrets.token_hex(3)}"
        staged: dict[str, str] = {}
        try:
            if has_commits:
                for table in GROUP_TABLES:
                    frame = tables.get(table)
                    empty = pd.DataFrame(columns=table_arrow_schema(KIND_OF_TABLE[table]).names)
                    staged[table] = self._stage(token, table, frame if frame is not None else empty)
            if has_rejected:
                key = list(NATURAL_KEYS[TABLE_NAMES["rejected"]])
                staged[TABLE_NAMES["rejected"]] = self._stage(
                    token, TABLE_NAMES["rejected"], rejected.drop_duplicates(key)
                )
            window = _period_window(commits) if has_commits else None
            self._run_transaction(self._transaction_sql(staged, window))
        finally:
            for staging_id in staged.values():
                # Best effort: a staging table left behind expires within a day.
                with contextlib.suppress(*_API_ERRORS):
                    self.client.delete_table(staging_id, not_found_ok=True)

    def _run_transaction(self, sql: str) -> None:
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                self.client.query(sql).result()
                return
            except _API_ERRORS as exc:
                if attempt < CONFLICT_RETRIES and _CONFLICT.search(str(exc)):
                    time.sleep(min(2.0**attempt, 30.0))
                    continue
                raise SinkError(f"{self.dataset_id}: loading the tables failed ({exc})") from exc

    def _transaction_sql(self, staged: Mapping[str, str], window: tuple[dt.date, dt.date] | None) -> str:
        statements = []
        commits_table = TABLE_NAMES["commit"]
        if commits_table in staged and window is not None:
            statements.append(self._commits_merge(staged[commits_table], window))
            for table in GROUP_TABLES:
                if table != commits_table:
                    statements.append(self._group_merge(table, staged[table], staged[commits_table], window))
        if TABLE_NAMES["rejected"] in staged:
            statements.append(self._rejected_merge(staged[TABLE_NAMES["rejected"]]))
        return "BEGIN TRANSACTION;\n" + ";\n".join(statements) + ";\nCOMMIT TRANSACTION;"

    def _columns(self, table: str) -> list[str]:
        return [column.name for column in table_fields(KIND_OF_TABLE[table])]

    def _commits_merge(self, staging_id: str, window: tuple[dt.date, dt.date]) -> str:
        table = TABLE_NAMES["commit"]
        columns = [_quote(c) for c in self._columns(table)]
        on = " AND ".join(
            [f"T.{_quote(k)} = S.{_quote(k)}" for k in GROUP_KEY_COLUMNS]
            + [_window_filter(table, "T", window)]
        )
        updates = ", ".join(f"{c} = S.{c}" for c in columns)
        return (
            f"MERGE {_quote(self.table_id(table))} T USING {_quote(staging_id)} S ON {on}\n"
            f"WHEN MATCHED AND S.`commit_id` > T.`commit_id` THEN UPDATE SET {updates}\n"
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(columns)}) "
            f"VALUES ({', '.join('S.' + c for c in columns)})"
        )

    def _group_merge(
        self, table: str, staging_id: str, staged_commits_id: str, window: tuple[dt.date, dt.date]
    ) -> str:
        target = _quote(self.table_id(table))
        commits = TABLE_NAMES["commit"]
        current = (
            f"(SELECT `commit_id` FROM {_quote(self.table_id(commits))} C "
            f"WHERE {_window_filter(commits, 'C', window)})"
        )
        columns = [_quote(c) for c in self._columns(table)]
        staged_columns, target_columns = list(columns), [f"T2.{c}" for c in columns]
        if table in GEOGRAPHY_COLUMNS:
            geography, wkt = (_quote(name) for name in GEOGRAPHY_COLUMNS[table])
            staged_columns.append(f"ST_GEOGFROMTEXT({wkt}) AS {geography}")
            target_columns.append(f"T2.{geography}")
            columns.append(geography)
        group_key = "CONCAT({})".format(", '|', ".join(f"{{p}}{_quote(k)}" for k in GROUP_KEY_COLUMNS))
        touched = f"(SELECT {group_key.format(p='')} FROM {_quote(staged_commits_id)})"
        # NULL-safe equality: failure rows may have no granule or product.
        on = " AND ".join(
            [
                f"IFNULL(T.{_quote(k)}, '') = IFNULL(S.{_quote(k)}, '')"
                for k in ("commit_id", *NATURAL_KEYS[table])
            ]
            + [_window_filter(table, "T", window)]
        )
        return (
            f"MERGE {target} T USING (\n"
            f"  SELECT {', '.join(staged_columns)}, FALSE AS _stale FROM {_quote(staging_id)}\n"
            f"  WHERE `commit_id` IN {current}\n"
            f"  UNION ALL\n"
            f"  SELECT {', '.join(target_columns)}, TRUE AS _stale FROM {target} T2\n"
            f"  WHERE {group_key.format(p='T2.')} IN {touched} AND T2.`commit_id` NOT IN {current}\n"
            f"  AND {_window_filter(table, 'T2', window)}\n"
            f") S ON {on}\n"
            f"WHEN MATCHED AND S._stale THEN DELETE\n"
            f"WHEN NOT MATCHED AND NOT S._stale THEN INSERT ({', '.join(columns)}) "
            f"VALUES ({', '.join('S.' + c for c in columns)})"
        )

    def _rejected_merge(self, staging_id: str) -> str:
        table = TABLE_NAMES["rejected"]
        columns = [_quote(c) for c in self._columns(table)]
        on = " AND ".join(f"T.{_quote(k)} = S.{_quote(k)}" for k in NATURAL_KEYS[table])
        return (
            f"MERGE {_quote(self.table_id(table))} T USING {_quote(staging_id)} S ON {on}\n"
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(columns)}) "
            f"VALUES ({', '.join('S.' + c for c in columns)})"
        )
