"""The tables document themselves: every column has a description and a mode, in BigQuery, in the
Parquet files and in the documentation's table reference, all from the one schema module."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from evi_udf.cli.tables import DOCS_PAGE, main, reference_page
from evi_udf.outputs.rows import (
    TABLE_DESCRIPTIONS,
    TABLE_NAMES,
    table_arrow_schema,
    table_fields,
    tables_markdown,
)
from evi_udf.outputs.sinks.bigquery import BigQuerySink
from evi_udf.outputs.sinks.parquet import ParquetSink

REPO = Path(__file__).resolve().parents[1]


def test_every_column_of_every_table_is_described_and_has_a_mode() -> None:
    for kind, table in TABLE_NAMES.items():
        assert len(TABLE_DESCRIPTIONS[table]) > 40
        columns = table_fields(kind)
        for column in columns:
            assert len(column.description) > 15, (table, column.name)
            assert column.mode in ("REQUIRED", "NULLABLE", "REPEATED")
        modes = {column.name: column.mode for column in columns}
        # The stamps are always set; statistics of a composite without valid pixels are NULL.
        assert modes["run_id"] == "REQUIRED"
        if table in ("evi_composites", "evi_scenes"):
            assert modes["valid_pixels"] == "REQUIRED" and modes["evi_mean"] == "NULLABLE"
            assert modes["histogram_counts"] == "REPEATED"
    failures = {c.name: c.mode for c in table_fields("failure")}
    assert (failures["product_id"], failures["stage"]) == ("NULLABLE", "REQUIRED")


def test_the_docs_table_reference_is_generated_from_the_schema() -> None:
    page = (REPO / DOCS_PAGE).read_text(encoding="utf-8")
    assert page == reference_page(), f"run: .venv/bin/python -m evi_udf.cli.tables --write {DOCS_PAGE}"
    assert tables_markdown() in page


def _tracked_files() -> dict[str, tuple[int, int]]:
    """Every file git tracks in the checkout, with its modification time and size."""
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    files = [name for name in listing.decode().split("\0") if name and (REPO / name).is_file()]
    assert DOCS_PAGE in files and "README.md" in files
    return {name: ((REPO / name).stat().st_mtime_ns, (REPO / name).stat().st_size) for name in files}


def test_the_tables_command_prints_the_reference_and_writes_no_file() -> None:
    before = _tracked_files()
    result = subprocess.run(
        [sys.executable, "-m", "evi_udf.cli.tables"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == reference_page()
    # Not one tracked file was rewritten, not even with the same text (the old --readme did that).
    assert _tracked_files() == before


def test_the_tables_command_writes_only_the_file_it_is_given(tmp_path: Path) -> None:
    page = tmp_path / "tables.md"
    assert main(["--write", str(page)]) == 0
    assert page.read_text(encoding="utf-8") == reference_page()
    assert sorted(tmp_path.iterdir()) == [page]
    assert main(["--write", str(tmp_path / "missing" / "tables.md")]) == 2


def test_parquet_tables_carry_descriptions_and_required_columns(tmp_path: Path) -> None:
    ParquetSink(str(tmp_path)).load({}, "run")
    for kind, table in TABLE_NAMES.items():
        schema = pq.read_schema(tmp_path / "tables" / table / "schema.parquet")
        assert schema.metadata[b"description"].decode() == TABLE_DESCRIPTIONS[table]
        for column in table_fields(kind):
            field = schema.field(column.name)
            assert field.metadata[b"description"].decode() == column.description
            assert field.nullable == (column.mode != "REQUIRED"), (table, column.name)
    assert table_arrow_schema("composite").field("evi_mean").nullable


@pytest.mark.integration
def test_bigquery_tables_carry_descriptions_and_modes(bigquery_emulator) -> None:
    sink = BigQuerySink("evi-test", f"evi_{uuid.uuid4().hex[:8]}", client=bigquery_emulator)
    sink.ensure_tables()
    for kind, table in TABLE_NAMES.items():
        created = bigquery_emulator.get_table(sink.table_id(table))
        assert created.description == TABLE_DESCRIPTIONS[table]
        found = {field.name: field for field in created.schema}
        for column in table_fields(kind):
            assert found[column.name].description == column.description, (table, column.name)
            assert found[column.name].mode == column.mode, (table, column.name)
