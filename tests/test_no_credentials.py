"""No credential, key or token is committed: the pipeline relies on Application Default Credentials."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Shapes of Google credentials: service-account key JSON, PEM private keys, OAuth access and refresh
# tokens, API keys, HMAC secrets.
PATTERNS = {
    "service account key": re.compile(r'"type"\s*:\s*"service_account"'),
    "private key": re.compile(r"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----"),
    "OAuth access token": re.compile(r"\bya29\.[0-9A-Za-z_-]{20,}"),
    "OAuth refresh token": re.compile(r"\b1//[0-9A-Za-z_-]{30,}"),
    "API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "HMAC secret": re.compile(r"GOOG[0-9A-Z]{20,}"),
}


def test_no_tracked_file_holds_a_credential() -> None:
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "setup.py" in files  # the scan really sees the repository
    found = []
    for name in files:
        path = REPO / name
        if name == "tests/test_no_credentials.py" or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        found += [f"{name}: {kind}" for kind, pattern in PATTERNS.items() if pattern.search(text)]
    assert found == []
