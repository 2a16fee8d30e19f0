"""The local statistics sink: one Parquet file per table under ``<output root>/tables/``.

Queryable with DuckDB (``SELECT * FROM 'out/local/tables/evi_scenes/*.parquet'``) or pandas. Reruns
replace rather than duplicate: the rows of every group a run processed replace that group's earlier
rows, and rows with the same natural key replace each other.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from evi_udf.errors import SinkError
from evi_udf.schema import GROUP_KEY_COLUMNS, NATURAL_KEYS, TABLE_NAMES


class ParquetSink:
    """Writes the result tables as Parquet files under ``root/tables/<table>/data.parquet``."""

    def __init__(self, root: str) -> None:
        if root.startswith("gs://"):
            raise SinkError(
                f"{root}: the Parquet sink writes local folders; use the BigQuery sink for the cloud"
            )
        self.root = Path(root) / "tables"

    def table_path(self, table: str) -> Path:
        return self.root / table / "data.parquet"

    def read(self, table: str) -> pd.DataFrame:
        """A table as written so far (empty frame if none)."""
        path = self.table_path(table)
        return pd.read_parquet(path) if path.exists() else pd.DataFrame()

    def write(
        self, tables: Mapping[str, pd.DataFrame], replaced_groups: Iterable[tuple[str, str, str]]
    ) -> None:
        """Merge this run's rows into the tables.

        Parameters
        ----------
        tables
            Table name (``evi_composites``, ``evi_scenes``, ``evi_failures``) to this run's rows.
        replaced_groups
            (tile, period, parameter hash) of every group this run processed: their old rows go.
        """
        groups = set(replaced_groups)
        for table, rows in tables.items():
            if table not in NATURAL_KEYS:
                raise SinkError(f"unknown table {table!r}; expected one of {', '.join(TABLE_NAMES.values())}")
            merged = self._merge(self.read(table), rows, groups, NATURAL_KEYS[table])
            self._atomic_write(table, merged)

    @staticmethod
    def _merge(
        old: pd.DataFrame, new: pd.DataFrame, groups: set[tuple[str, str, str]], key: tuple[str, ...]
    ) -> pd.DataFrame:
        if not old.empty:
            in_group = pd.Series(
                [tuple(values) in groups for values in old[list(GROUP_KEY_COLUMNS)].itertuples(index=False)],
                index=old.index,
                dtype=bool,
            )
            old = old[~in_group]
        frames = [frame for frame in (old, new) if not frame.empty]
        if not frames:
            return new
        merged = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return merged.drop_duplicates(subset=list(key), keep="last").reset_index(drop=True)

    def _atomic_write(self, table: str, frame: pd.DataFrame) -> None:
        path = self.table_path(table)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(".data.parquet.partial")
        try:
            frame.to_parquet(staging, index=False)
            os.replace(staging, path)
        except OSError as exc:
            raise SinkError(f"{path}: cannot write table {table} ({exc})") from exc
