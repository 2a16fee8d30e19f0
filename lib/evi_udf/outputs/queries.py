"""The example BigQuery queries shipped with the package, with the project and dataset filled in safely.

Identifiers cannot be query parameters in BigQuery, so the ``{project}`` and ``{dataset}`` placeholders
are substituted only after the names pass the sink's validation; every value is a query parameter.
The queries live in ``evi_udf/outputs/sql/`` inside the package (also inside the wheel), so they can be
printed for the ``bq`` command line wherever the package is installed:

    python -m evi_udf.outputs.queries evi_time_series --project my-project --dataset sentinel2_evi
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from importlib.resources.abc import Traversable

from evi_udf.errors import SinkError
from evi_udf.outputs.sinks.bigquery import DATASET_ID, PROJECT_ID

SQL_DIR: Traversable = resources.files("evi_udf.outputs") / "sql"


def query_names(directory: Traversable = SQL_DIR) -> list[str]:
    """The names of the shipped queries (file names without ``.sql``)."""
    return sorted(entry.name[: -len(".sql")] for entry in directory.iterdir() if entry.name.endswith(".sql"))


def load_query(name: str, project: str, dataset: str, directory: Traversable = SQL_DIR) -> str:
    """The text of ``sql/<name>.sql`` for ``project.dataset``.

    Raises
    ------
    SinkError
        If a name is not a valid project or dataset id, or the query does not exist.
    """
    if not PROJECT_ID.match(project):
        raise SinkError(f"bigquery project {project!r} is not a valid project id")
    if not DATASET_ID.match(dataset):
        raise SinkError(f"bigquery dataset {dataset!r}: use letters, digits and underscores only")
    path = directory / f"{name}.sql"
    if not path.is_file():
        known = ", ".join(query_names(directory))
        raise SinkError(f"no query {name!r} in evi_udf/outputs/sql (known: {known})")
    return path.read_text(encoding="utf-8").replace("{project}", project).replace("{dataset}", dataset)


def main(argv: list[str] | None = None) -> int:
    """Print one shipped query for ``project.dataset`` (e.g. to pass to ``bq query``)."""
    parser = argparse.ArgumentParser(prog="python -m evi_udf.outputs.queries", description=main.__doc__)
    parser.add_argument("name", help=f"one of: {', '.join(query_names())}")
    parser.add_argument("--project", required=True, help="the project that holds the dataset")
    parser.add_argument("--dataset", default="sentinel2_evi", help="the dataset of the EVI tables")
    args = parser.parse_args(argv)
    try:
        print(load_query(args.name, args.project, args.dataset))
    except SinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
