"""Shared fixtures: one local Spark session per test run."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """A ``local[2]`` SparkSession shared by every test that needs Spark."""
    # Workers must run this interpreter (the venv's), or they start the system Python without pandas.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from evi_udf.run.session import build_session

    session = build_session(
        "evi-udf-tests",
        master="local[2]",
        conf={
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "4",
            "spark.default.parallelism": "2",
        },
    )
    yield session
    session.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(
    command: list[str], probe_url: str, name: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.Popen[bytes]:
    """Start a server process and wait until ``probe_url`` answers; fail with its log otherwise.

    The server's output goes to a file, never to a pipe: the GCS emulator logs every request, and a
    pipe nobody reads fills up and blocks the server mid-test.
    """
    log = Path(tempfile.mkstemp(prefix=f"{name.replace(' ', '-')}-", suffix=".log")[1])
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(probe_url, timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"{name} did not start ({log}): {log.read_text()[-2000:]}") from None
            time.sleep(0.3)


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """A GCS emulator (gcp-storage-emulator, in memory) on a free loopback port for the whole run.

    Sets ``STORAGE_EMULATOR_HOST`` so that google-cloud-storage clients use it with anonymous
    credentials. The emulator does not enforce generation preconditions (real GCS does).
    """
    port = _free_port()
    executable = Path(sys.executable).parent / "gcp-storage-emulator"
    url = f"http://127.0.0.1:{port}"
    process = _start_server(
        [str(executable), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
        f"{url}/storage/v1/b?project=test",
        "GCS emulator",
    )
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    yield url
    if previous is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = previous
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def bigquery_emulator_url() -> Iterator[str]:
    """A BigQuery emulator (bqemulator, DuckDB behind the REST API) on free loopback ports; its URL.

    The emulator runs from ``.venv-emulators`` (installed by scripts/bootstrap.sh) with HOME set to
    the folder holding DuckDB's offline spatial extension. Its default project is ``evi-test``.
    """
    emulators = Path(__file__).resolve().parents[1] / ".venv-emulators"
    executable = emulators / "bin" / "bqemulator"
    if not executable.exists():
        raise RuntimeError(f"{executable} is missing: run scripts/bootstrap.sh (make test does)")
    rest, grpc = _free_port(), _free_port()
    url = f"http://127.0.0.1:{rest}"
    process = _start_server(
        [
            str(executable),
            "start",
            "--rest-port",
            str(rest),
            "--grpc-port",
            str(grpc),
            "--project",
            "evi-test",
            "--log-level",
            "warning",
        ],
        f"{url}/bigquery/v2/projects/evi-test/datasets",
        "BigQuery emulator",
        env={**os.environ, "HOME": str(emulators / "duckdb-home")},
        timeout=60,
    )
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def bigquery_emulator(bigquery_emulator_url: str) -> object:
    """A real ``google.cloud.bigquery.Client`` on the emulator, with anonymous credentials."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project="evi-test",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=bigquery_emulator_url),
    )
