"""MkDocs hooks of the documentation site (``hooks:`` in mkdocs.yml).

``BENCHMARKS.md`` stays at the repository root, where ``make bench`` rewrites it; this hook adds it to
the site as the page ``benchmarks/results.md`` each time the site is built, so the page and the file
are never two copies that can disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parents[1]
RESULTS_PAGE = "benchmarks/results.md"


def on_files(files: Files, config: Any) -> Files:
    """Add BENCHMARKS.md to the site's files as :data:`RESULTS_PAGE`."""
    text = (REPO / "BENCHMARKS.md").read_text(encoding="utf-8")
    files.append(File.generated(config, RESULTS_PAGE, content=text))
    return files
