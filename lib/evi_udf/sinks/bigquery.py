"""The BigQuery statistics sink: ``evi_composites``, ``evi_scenes`` and ``evi_failures``.

Tables are created when missing, with the columns of :mod:`evi_udf.schema`, partitioning (composites
by month of ``period_start``, scenes by day of ``sensing_time``), clustering by tile, and for
composites a GEOGRAPHY ``footprint`` built from the WKT.

Reruns are idempotent through staging tables and SQL: each run's rows are loaded (Parquet) into a
staging table, the rows of every group the run processed are deleted from the target, and the staged
rows are merged on the table's natural key. Replacing whole groups (rather than overwriting date
partitions) is what makes a rerun with fewer rows for a group (a scene that now fails) correct, and it
touches only the groups that ran. Identifiers are validated and quoted; no value is pasted into SQL.

Credentials: Application Default Credentials (``bigquery.Client(project=...)``); tests inject a
client pointed at the BigQuery emulator.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import requests
from google.api_core.exceptions import GoogleAPIError

from evi_udf.errors import SinkError
from evi_udf.schema import GROUP_KEY_COLUMNS, NATURAL_KEYS, TABLE_NAMES, table_fields

PROJECT_ID = re.compile(r"^(?:[a-z][a-z0-9.-]*:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
DATASET_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
REPLACED_GROUPS = "_evi_replaced_groups"
PARTITIONING: dict[str, tuple[str, str] | None] = {
    "evi_composites": ("period_start", "MONTH"),
    "evi_scenes": ("sensing_time", "DAY"),
    "evi_failures": None,
}
GEOGRAPHY_COLUMNS = {"evi_composites": ("footprint", "footprint_wkt")}
_ARROW_TYPES = {
    "STRING": pa.string(),
    "INT64": pa.int64(),
    "FLOAT64": pa.float64(),
    "BOOL": pa.bool_(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
}
_KIND_OF_TABLE = {table: kind for kind, table in TABLE_NAMES.items()}
# What a failed load or query raises once the client's own retries are spent.
_API_ERRORS = (GoogleAPIError, requests.RequestException)


def _quote(name: str) -> str:
    return f"`{name}`"


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

    @property
    def client(self) -> Any:
        if self._client is None:
            from google.cloud import bigquery

            self._client = bigquery.Client(project=self.project)
        return self._client

    def table_id(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"

    def _schema(self, table: str, staging: bool) -> list[Any]:
        from google.cloud import bigquery

        if table == REPLACED_GROUPS:
            return [bigquery.SchemaField(column, "STRING") for column in GROUP_KEY_COLUMNS]
        fields = [bigquery.SchemaField(n, t, mode=m) for n, t, m in table_fields(_KIND_OF_TABLE[table])]
        if not staging and table in GEOGRAPHY_COLUMNS:
            fields.append(bigquery.SchemaField(GEOGRAPHY_COLUMNS[table][0], "GEOGRAPHY"))
        return fields

    def ensure_tables(self) -> None:
        """Create the dataset, the three tables and their staging tables when missing."""
        from google.cloud import bigquery

        dataset = bigquery.Dataset(f"{self.project}.{self.dataset}")
        dataset.location = self.location
        self.client.create_dataset(dataset, exists_ok=True)
        for table in TABLE_NAMES.values():
            target = bigquery.Table(self.table_id(table), schema=self._schema(table, staging=False))
            partition = PARTITIONING[table]
            if partition:
                target.time_partitioning = bigquery.TimePartitioning(type_=partition[1], field=partition[0])
            target.clustering_fields = ["mgrs_tile"]
            self.client.create_table(target, exists_ok=True)
            staging = bigquery.Table(
                self.table_id(f"{table}_staging"), schema=self._schema(table, staging=True)
            )
            self.client.create_table(staging, exists_ok=True)
        replaced = bigquery.Table(self.table_id(REPLACED_GROUPS), schema=self._schema(REPLACED_GROUPS, True))
        self.client.create_table(replaced, exists_ok=True)

    def _load(self, frame: pd.DataFrame, table: str) -> None:
        """Replace the content of a staging table with ``frame`` (as Parquet)."""
        from google.cloud import bigquery

        if table == REPLACED_GROUPS:
            arrow_schema = pa.schema([(column, pa.string()) for column in GROUP_KEY_COLUMNS])
        else:
            base = table.removesuffix("_staging")
            arrow_schema = pa.schema(
                [
                    (name, pa.list_(_ARROW_TYPES[kind]) if mode == "REPEATED" else _ARROW_TYPES[kind])
                    for name, kind, mode in table_fields(_KIND_OF_TABLE[base])
                ]
            )
        frame = frame.reindex(columns=arrow_schema.names)
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(frame, schema=arrow_schema, preserve_index=False), buffer)
        buffer.seek(0)
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        )
        options = bigquery.ParquetOptions()
        options.enable_list_inference = True  # REPEATED columns from Parquet lists
        config.parquet_options = options
        try:
            self.client.load_table_from_file(buffer, self.table_id(table), job_config=config).result()
        except _API_ERRORS as exc:
            raise SinkError(f"{self.table_id(table)}: load failed ({exc})") from exc

    def _query(self, sql: str) -> None:
        try:
            self.client.query(sql).result()
        except _API_ERRORS as exc:
            raise SinkError(f"BigQuery statement failed on {self.project}.{self.dataset}: {exc}") from exc

    def _merge_sql(self, table: str) -> str:
        target, staging = _quote(self.table_id(table)), _quote(self.table_id(f"{table}_staging"))
        replaced = _quote(self.table_id(REPLACED_GROUPS))
        columns = [name for name, _, _ in table_fields(_KIND_OF_TABLE[table])]
        source_columns = [f"S.{_quote(c)}" for c in columns]
        insert_columns = [_quote(c) for c in columns]
        select = "*"
        if table in GEOGRAPHY_COLUMNS:
            geography, wkt = GEOGRAPHY_COLUMNS[table]
            select = f"*, ST_GEOGFROMTEXT({_quote(wkt)}) AS {_quote(geography)}"
            source_columns.append(f"S.{_quote(geography)}")
            insert_columns.append(_quote(geography))
        # NULL-safe equality: failure rows may have no granule or product.
        on = " AND ".join(
            f"IFNULL(T.{_quote(k)}, '') = IFNULL(S.{_quote(k)}, '')" for k in NATURAL_KEYS[table]
        )
        group_match = " AND ".join(f"R.{_quote(k)} = T.{_quote(k)}" for k in GROUP_KEY_COLUMNS)
        updates = ", ".join(
            f"{column} = {value}" for column, value in zip(insert_columns, source_columns, strict=True)
        )
        return (
            f"DELETE FROM {target} T WHERE EXISTS (SELECT 1 FROM {replaced} R WHERE {group_match});\n"
            f"MERGE {target} T USING (SELECT {select} FROM {staging}) S ON {on}\n"
            f"WHEN MATCHED THEN UPDATE SET {updates}\n"
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(insert_columns)}) VALUES ({', '.join(source_columns)})"
        )

    def write(
        self, tables: Mapping[str, pd.DataFrame], replaced_groups: Iterable[tuple[str, str, str]]
    ) -> None:
        """Merge one run's rows; the rows of ``replaced_groups`` (tile, period, hash) are replaced first."""
        self.ensure_tables()
        groups = pd.DataFrame(sorted(set(replaced_groups)), columns=list(GROUP_KEY_COLUMNS))
        self._load(groups, REPLACED_GROUPS)
        for table, frame in tables.items():
            if table not in NATURAL_KEYS:
                raise SinkError(f"unknown table {table!r}; expected one of {', '.join(TABLE_NAMES.values())}")
            self._load(frame, f"{table}_staging")
            for statement in self._merge_sql(table).split(";\n"):
                self._query(statement)
