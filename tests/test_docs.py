"""The README stays a short front page whose links lead into the documentation site.

The site itself (docs/, mkdocs.yml) is checked by ``mkdocs build --strict`` in ``make test``: every
link and anchor between its pages resolves. The README is not part of the site, so its links are
checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# A newcomer's front page: what it is, the quick start, the first query, links (issue 21).
README_MAX_LINES = 200


def test_the_readme_is_a_short_front_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move details into docs/"


def test_every_relative_link_of_the_readme_names_a_file_of_the_repository() -> None:
    text = README.read_text(encoding="utf-8")
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t and not t.startswith("#")]
    assert any(t.startswith("docs/") for t in targets)
    missing = [t for t in targets if not (REPO / t.split("#", 1)[0]).is_file()]
    assert not missing, missing
