"""The local Parquet sink: commits replace their group's rows, and concurrent loads lose nothing."""

from __future__ import annotations

import datetime as dt
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from evi_udf.errors import SinkError
from evi_udf.outputs.rows import table_fields
from evi_udf.outputs.sinks.parquet import ParquetSink
from evi_udf.run.load import split_tables
from evi_udf.run.udf import result_frame

PARAMS = "c" * 12


def complete(record: dict) -> dict:
    """``record`` with every REQUIRED column of its table it lacks set to a value of the column's type."""
    defaults = {
        "STRING": "x",
        "INT64": 0,
        "DATE": dt.date(2022, 1, 1),
        "TIMESTAMP": dt.datetime(2026, 12, 1, 10, 0),
    }
    kind = record["kind"]
    filled = {c.name: defaults[c.bigquery_type] for c in table_fields(kind) if c.mode == "REQUIRED"}
    return {**filled, **record}


def group_tables(tile: str, commit_id: str, scenes: int, run_id: str = "run") -> dict[str, pd.DataFrame]:
    """The rows of one commit of one group: a commit row, a composite row and ``scenes`` scene rows."""
    group = {"mgrs_tile": tile, "period": "2022-01", "parameter_hash": PARAMS, "commit_id": commit_id}
    records = [
        {**group, "kind": "commit", "run_id": run_id, "status": "ok", "scene_count": scenes},
        {**group, "kind": "composite", "run_id": run_id, "valid_pixels": 100 * scenes},
        *(
            {**group, "kind": "scene", "run_id": run_id, "product_id": f"{tile}-P{n}", "evi_mean": n / 10}
            for n in range(scenes)
        ),
    ]
    return split_tables(result_frame([complete(record) for record in records]))


def merged(*batches: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {name: pd.concat([b[name] for b in batches], ignore_index=True) for name in batches[0]}


def commit_id(minute: int, attempt: str) -> str:
    return f"{dt.datetime(2026, 12, 1, 10, minute):%Y%m%dT%H%M%S%fZ}-{attempt}"


def test_a_newer_commit_replaces_the_group_and_an_older_one_is_ignored(tmp_path: Path) -> None:
    sink = ParquetSink(str(tmp_path))
    first = commit_id(0, "0000000a")
    sink.load(
        merged(group_tables("55HBU", first, 3), group_tables("54HYD", commit_id(0, "0000000b"), 2)), "r1"
    )
    assert len(sink.read("evi_scenes")) == 5
    newer = commit_id(5, "0000000c")
    sink.load(group_tables("55HBU", newer, 1), "r2")
    scenes = sink.read("evi_scenes")
    assert sorted(scenes.product_id) == ["54HYD-P0", "54HYD-P1", "55HBU-P0"]
    assert set(scenes[scenes.mgrs_tile == "55HBU"].commit_id) == {newer}
    sink.load(group_tables("55HBU", first, 3), "r3")  # a stale loader
    assert sink.held_commits() == {
        ("55HBU", "2022-01", PARAMS): newer,
        ("54HYD", "2022-01", PARAMS): commit_id(0, "0000000b"),
    }
    assert len(sink.read("evi_scenes")) == 3
    # One glob per table reads it, also a table without rows.
    glob = str(tmp_path / "tables" / "evi_scenes" / "*.parquet")
    assert duckdb.sql(f"SELECT count(*) FROM '{glob}'").fetchall() == [(3,)]
    failures = str(tmp_path / "tables" / "evi_failures" / "*.parquet")
    assert duckdb.sql(f"SELECT count(*) FROM '{failures}'").fetchall() == [(0,)]


def test_tables_of_an_earlier_release_are_refused_by_name(tmp_path: Path) -> None:
    legacy = tmp_path / "tables" / "evi_commits" / "data.parquet"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"PAR1")
    with pytest.raises(SinkError, match=f"{legacy}: a table written by a release before commit records"):
        ParquetSink(str(tmp_path)).held_commits()


LOADER = textwrap.dedent(
    """
    import pickle, sys, time
    from evi_udf.outputs.sinks.parquet import ParquetSink
    root, batch, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    tables = pickle.load(open(batch, "rb"))
    while time.time() < start:
        pass
    ParquetSink(root).load(tables, "run")
    """
)


@pytest.mark.integration
def test_two_processes_loading_at_the_same_moment_lose_nothing(tmp_path: Path) -> None:
    import time

    for trial in range(8):
        root = tmp_path / f"trial{trial}"
        # Each loader brings 12 groups of its own, and both bring the shared group 55HBU (b newer).
        a = merged(
            *(group_tables(f"{n:02d}HAA", commit_id(1, f"{n:08x}"), 2) for n in range(12)),
            group_tables("55HBU", commit_id(1, "aaaaaaaa"), 3),
        )
        b = merged(
            *(group_tables(f"{n:02d}HBB", commit_id(1, f"{n + 100:08x}"), 2) for n in range(12)),
            group_tables("55HBU", commit_id(2, "bbbbbbbb"), 1),
        )
        batches = []
        for name, tables in (("a", a), ("b", b)):
            path = tmp_path / f"{trial}{name}.pickle"
            path.write_bytes(pickle.dumps(tables))
            batches.append(path)
        start = time.time() + 1.5
        loaders = [
            subprocess.Popen([sys.executable, "-c", LOADER, str(root), str(batch), str(start)])
            for batch in batches
        ]
        assert [loader.wait(timeout=120) for loader in loaders] == [0, 0]
        sink = ParquetSink(str(root))
        scenes = sink.read("evi_scenes")
        assert len(scenes) == 12 * 2 * 2 + 1, trial
        assert set(scenes[scenes.mgrs_tile == "55HBU"].commit_id) == {commit_id(2, "bbbbbbbb")}
        assert len(sink.read("evi_commits")) == 25
        glob = str(root / "tables" / "evi_composites" / "*.parquet")
        assert duckdb.sql(f"SELECT count(*) FROM '{glob}'").fetchall() == [(25,)]
