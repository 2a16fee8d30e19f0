"""The example BigQuery queries shipped in ``sql/``, with the project and dataset filled in safely.

Identifiers cannot be query parameters in BigQuery, so the ``{project}`` and ``{dataset}`` placeholders
are substituted only after the names pass the sink's validation; every value is a query parameter.
"""

from __future__ import annotations

from pathlib import Path

from evi_udf.errors import SinkError
from evi_udf.sinks.bigquery import DATASET_ID, PROJECT_ID

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"


def load_query(name: str, project: str, dataset: str, directory: Path = SQL_DIR) -> str:
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
        known = ", ".join(sorted(p.stem for p in directory.glob("*.sql")))
        raise SinkError(f"no query {name!r} in {directory} (known: {known})")
    return path.read_text(encoding="utf-8").replace("{project}", project).replace("{dataset}", dataset)
