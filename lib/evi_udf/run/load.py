"""Loading the tables: every current commit record the tables do not hold yet (this run's, and any
an earlier run committed but did not load), the run's rejected index rows, then cleaning the records
and outputs that newer commits superseded once the tables no longer point at them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from evi_udf.errors import StorageError
from evi_udf.index.catalog import RAW_COLUMNS
from evi_udf.outputs.rows import (
    TABLE_NAMES,
    RejectedRow,
    result_spark_schema,
    table_columns,
    to_result_records,
)
from evi_udf.outputs.sinks.protocol import ResultSink
from evi_udf.run.ledger import Commit, Ledger, latest_commits
from evi_udf.run.udf import result_frame
from evi_udf.storage import Storage

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


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


def read_commit_records(spark: SparkSession, ledger: Ledger, uris: Sequence[str]) -> pd.DataFrame:
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
    recovered_rows = read_commit_records(spark, ledger, [c.uri for c in earlier])
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
