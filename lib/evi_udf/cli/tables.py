"""``python -m evi_udf.cli.tables``: the reference page of the output tables, made from the schema.

Prints the page (every table, its columns, types, modes and meaning, from
:func:`evi_udf.outputs.rows.tables_markdown`) to standard output; it writes a file only when asked,
with ``--write PATH``. The documentation keeps the page at ``docs/reference/tables.md``, and a test
checks that it is current, so after changing a column:

    .venv/bin/python -m evi_udf.cli.tables --write docs/reference/tables.md
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from evi_udf.outputs.rows import tables_markdown

# Where the documentation keeps the page (relative to the repository root).
DOCS_PAGE = "docs/reference/tables.md"

_HEADER = """\
# Tables reference

<!-- Generated from lib/evi_udf/outputs/rows.py: do not edit by hand. After changing a column, run
     .venv/bin/python -m evi_udf.cli.tables --write docs/reference/tables.md (tests/test_schema.py
     checks that this page is current). -->

Every run writes these tables: Parquet files under `<output.root>/tables/<table>/` with the local sink,
tables of one dataset with the BigQuery sink (see [Tables and queries](../tables.md) for how to query
them, and [BigQuery](../cloud/bigquery.md) for their partitioning). Every column of every table has a
description (in BigQuery's schema, in the Parquet files' field metadata, and below) and is REQUIRED
unless it can be empty; each table's description says what one of its rows is.

This page is generated from the schema, `lib/evi_udf/outputs/rows.py`, by
`python -m evi_udf.cli.tables`.

"""


def reference_page() -> str:
    """The whole page: a short introduction, then every table's columns.

    Returns
    -------
    str
        Markdown, ending with a newline; the same text ``--write`` writes.
    """
    return _HEADER + tables_markdown()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: print the page, or write it with ``--write PATH``; the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m evi_udf.cli.tables",
        description="Print the reference of the output tables, generated from the schema.",
    )
    parser.add_argument(
        "--write",
        type=Path,
        metavar="PATH",
        help=f"write the page to PATH instead of printing it (the documentation's page is {DOCS_PAGE})",
    )
    args = parser.parse_args(argv)
    page = reference_page()
    if args.write is None:
        sys.stdout.write(page)
        return 0
    if not args.write.parent.is_dir():
        print(f"error: {args.write.parent} is not a folder", file=sys.stderr)
        return 2
    args.write.write_text(page, encoding="utf-8")
    print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
