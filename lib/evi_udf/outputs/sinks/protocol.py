"""What every statistics sink does: the one interface the job loads tables through."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import pandas as pd


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
