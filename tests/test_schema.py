"""The tables document themselves: every column has a description and a mode, in BigQuery, in the
Parquet files and in the README's table reference, all from the one schema module."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

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


def test_the_readme_table_reference_is_generated_from_the_schema() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert tables_markdown() in readme, "run: .venv/bin/python -m evi_udf.outputs.rows --readme"


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
