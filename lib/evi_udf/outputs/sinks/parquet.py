"""The local statistics sink: Parquet part files under ``<output root>/tables/<table>/``.

Queryable with one glob per table, e.g. DuckDB's ``SELECT * FROM 'out/local/tables/evi_scenes/*.parquet'``
(or pandas / pyarrow on the folder). Each group's commit has one part file per table, named
``<tile>_<period>_<parameter hash>_<commit id>.parquet``; loading a newer commit of a group writes its
parts and then deletes the group's older parts, so a load costs what the loaded commits hold, not the
size of the tables. Rejected index rows go to ``evi_rejected/<run id>.parquet``, holding only the rows
no earlier run recorded. Every table folder also holds ``schema.parquet``, with no rows: a glob over a
table that has none yet still finds its columns.

Loads are serialized by an exclusive lock on ``tables/.lock`` (``fcntl.flock``: this sink writes a
local file system only), so two runs loading at the same time lose nothing and never leave a part
half-written: every part is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from evi_udf.errors import SinkError
from evi_udf.outputs.rows import (
    GROUP_KEY_COLUMNS,
    GROUP_TABLES,
    KIND_OF_TABLE,
    NATURAL_KEYS,
    TABLE_NAMES,
    table_arrow_schema,
)

# <tile>_<period>_<parameter hash>_<commit id>: periods may hold "_" (2022-01-01_2022-02-28), the
# other parts never do.
_PART = re.compile(
    r"^(?P<tile>[0-9A-Z]{5})_(?P<period>.+)_(?P<params>[0-9a-f]{12})_"
    r"(?P<commit>\d{8}T\d{12}Z-[0-9a-f]{8})\.parquet$"
)
LEGACY_FILE = "data.parquet"
# A part with no rows in every table folder, so that a glob over a table finds a file (and its
# columns) before any row of that table exists.
SCHEMA_FILE = "schema.parquet"


class ParquetSink:
    """Writes the result tables as Parquet part files under ``root/tables/<table>/``."""

    def __init__(self, root: str) -> None:
        if root.startswith("gs://"):
            raise SinkError(
                f"{root}: the Parquet sink writes local folders; use the BigQuery sink for the cloud"
            )
        self.root = Path(root) / "tables"

    def table_dir(self, table: str) -> Path:
        return self.root / table

    def read(self, table: str) -> pd.DataFrame:
        """A table as written so far (an empty frame with the table's columns if none)."""
        schema = table_arrow_schema(KIND_OF_TABLE[table])
        parts = sorted(self.table_dir(table).glob("*.parquet"))
        if not parts:
            return schema.empty_table().to_pandas()
        return pa.concat_tables([pq.read_table(part, schema=schema) for part in parts]).to_pandas()

    def probe(self) -> None:
        """Check, before any group is processed, that the tables folder can be locked and written.

        Raises
        ------
        SinkError
            Naming the folder, if not.
        """
        try:
            with self._locked():
                probe = self.root / f".probe-{uuid.uuid4().hex[:12]}"
                probe.write_bytes(b"")
                probe.unlink()
        except OSError as exc:
            raise SinkError(
                f"{self.root}: the tables folder is not writable ({exc.strerror or exc})"
            ) from exc

    def current_composites(self, parameter_hash: str) -> pd.DataFrame:
        """The composites of one parameter set the tables hold (the STAC catalog is made from them)."""
        from evi_udf.outputs.stac import CURRENT_COLUMNS

        composites = self.read(TABLE_NAMES["composite"])
        return composites.loc[composites["parameter_hash"] == parameter_hash, list(CURRENT_COLUMNS)]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = open(self.root / ".lock", "a+")  # noqa: SIM115 - held for the whole block
        except OSError as exc:
            raise SinkError(f"{self.root}: cannot open the tables folder ({exc.strerror or exc})") from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _parts(self, table: str) -> dict[tuple[str, str, str], list[tuple[str, Path]]]:
        folder = self.table_dir(table)
        legacy = folder / LEGACY_FILE
        if legacy.exists():
            raise SinkError(
                f"{legacy}: a table written by a release before commit records; move or delete "
                f"{self.root} (a rerun rebuilds every table from the commit records)"
            )
        found: dict[tuple[str, str, str], list[tuple[str, Path]]] = {}
        if folder.is_dir():
            for path in folder.iterdir():
                match = _PART.match(path.name)
                if match:
                    group = (match["tile"], match["period"], match["params"])
                    found.setdefault(group, []).append((match["commit"], path))
        return found

    def held_commits(self) -> dict[tuple[str, str, str], str]:
        """(tile, period, parameter hash) -> the commit id the tables hold for that group."""
        try:
            return {
                group: max(commit for commit, _ in parts)
                for group, parts in self._parts(TABLE_NAMES["commit"]).items()
            }
        except OSError as exc:
            raise SinkError(f"{self.root}: cannot list the tables ({exc.strerror or exc})") from exc

    def load(self, tables: Mapping[str, pd.DataFrame], run_id: str) -> None:
        """Load commits' rows and this run's rejected index rows.

        Parameters
        ----------
        tables
            ``evi_commits`` (one row per commit to load), the other group tables (the same commits'
            rows, each with its ``commit_id``) and ``evi_rejected`` (the run's rejected index rows).
            A commit older than the one the tables hold for its group is ignored.
        run_id
            Names the rejected rows' part file.
        """
        unknown = set(tables) - set(NATURAL_KEYS)
        if unknown:
            raise SinkError(
                f"unknown table {sorted(unknown)[0]!r}; expected one of {', '.join(NATURAL_KEYS)}"
            )
        try:
            with self._locked():
                for table in NATURAL_KEYS:
                    if not (self.table_dir(table) / SCHEMA_FILE).exists():
                        self._write(table, SCHEMA_FILE, pd.DataFrame())
                self._load_commits(tables)
                rejected = tables.get(TABLE_NAMES["rejected"])
                if rejected is not None and len(rejected):
                    self._load_rejected(rejected, run_id)
        except OSError as exc:
            raise SinkError(f"{self.root}: cannot write the tables ({exc.strerror or exc})") from exc

    def load_zones(self, zones: pd.DataFrame, run_id: str) -> None:
        """Replace ``evi_zones/zones.parquet`` with the run's zones (``zone_id``, ``geometry_wkt``)."""
        folder = self.root / "evi_zones"
        try:
            with self._locked():
                folder.mkdir(parents=True, exist_ok=True)
                staging = folder / f".zones.{run_id}.partial"
                table = pa.Table.from_pandas(zones[["zone_id", "geometry_wkt"]], preserve_index=False)
                pq.write_table(table, staging)
                os.replace(staging, folder / "zones.parquet")
        except OSError as exc:
            raise SinkError(f"{folder}: cannot write the zones ({exc.strerror or exc})") from exc

    def _load_commits(self, tables: Mapping[str, pd.DataFrame]) -> None:
        commits = tables.get(TABLE_NAMES["commit"])
        if commits is None or commits.empty:
            return
        held = {table: self._parts(table) for table in GROUP_TABLES}
        by_commit = {
            table: dict(tuple(frame.groupby("commit_id", sort=False)))
            for table, frame in tables.items()
            if table in GROUP_TABLES and len(frame)
        }
        for commit in commits.itertuples(index=False):
            group = tuple(getattr(commit, column) for column in GROUP_KEY_COLUMNS)
            current = [c for c, _ in held[TABLE_NAMES["commit"]].get(group, [])]
            if current and max(current) > commit.commit_id:
                continue  # the tables already hold a newer commit of this group
            name = f"{group[0]}_{group[1]}_{group[2]}_{commit.commit_id}.parquet"
            for table in GROUP_TABLES:
                rows = by_commit.get(table, {}).get(commit.commit_id)
                if rows is not None and len(rows):
                    self._write(table, name, rows)
            # The new parts are in place: now the group's older parts go.
            for table in GROUP_TABLES:
                for commit_id, path in held[table].get(group, []):
                    if commit_id != commit.commit_id:
                        path.unlink(missing_ok=True)
            for table in GROUP_TABLES:
                held[table][group] = [(commit.commit_id, self.table_dir(table) / name)]

    def _load_rejected(self, rejected: pd.DataFrame, run_id: str) -> None:
        table = TABLE_NAMES["rejected"]
        key = list(NATURAL_KEYS[table])
        known = self.read(table)[key].drop_duplicates()
        fresh = rejected.drop_duplicates(key).merge(known, on=key, how="left", indicator=True)
        fresh = fresh[fresh["_merge"] == "left_only"].drop(columns="_merge")
        if len(fresh):
            self._write(table, f"{run_id}.parquet", fresh)

    def _write(self, table: str, name: str, rows: pd.DataFrame) -> None:
        schema = table_arrow_schema(KIND_OF_TABLE[table])
        folder = self.table_dir(table)
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".{name}.{uuid.uuid4().hex[:12]}.partial"
        try:
            arrow = (
                pa.Table.from_pandas(rows.reindex(columns=schema.names), schema=schema, preserve_index=False)
                if len(rows)
                else schema.empty_table()
            )
            pq.write_table(arrow, staging)
            os.replace(staging, folder / name)
        finally:
            staging.unlink(missing_ok=True)
