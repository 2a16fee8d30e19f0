"""Run the job the way it runs in the cloud, on one machine: GCS and BigQuery emulators on loopback.

    .venv/bin/python scripts/run_emulators.py [--sample data/sample-gs] [job options, e.g. --overwrite]

Starts both emulators (installed by scripts/bootstrap.sh), generates the sample archive with gs://
BASE_URLs and uploads it, runs spark-submit with conf/emulators.yaml, prints the example queries'
answers, and stops the emulators. Emulator state is in memory: every invocation starts afresh.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
EMULATORS = REPO / ".venv-emulators"
CONFIG = REPO / "conf" / "emulators.yaml"
SOURCE_BUCKET, OUTPUT_BUCKET, PROJECT, DATASET = "s2-demo", "evi-demo", "evi-demo", "sentinel2_evi"
LOGS = REPO / "out" / "emulators"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(
    command: list[str], probe: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start an emulator that logs to ``log`` (a pipe nobody reads would fill up and block it)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(probe, timeout=1).close()
            print(f"started {Path(command[0]).name} (log: {log.relative_to(REPO)})", flush=True)
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit(f"could not start {command[0]} ({log}): {log.read_text()[-2000:]}") from None
            time.sleep(0.3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=REPO / "data" / "sample-gs")
    args, job_args = parser.parse_known_args()
    gcs_port, bq_port, grpc_port = free_port(), free_port(), free_port()
    gcs_url, bq_url = f"http://127.0.0.1:{gcs_port}", f"http://127.0.0.1:{bq_port}"
    processes = [
        start(
            [
                str(VENV_BIN / "gcp-storage-emulator"),
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(gcs_port),
                "--in-memory",
            ],
            f"{gcs_url}/storage/v1/b?project=x",
            LOGS / "gcs-emulator.log",
        ),
        start(
            [
                str(EMULATORS / "bin" / "bqemulator"),
                "start",
                "--rest-port",
                str(bq_port),
                "--grpc-port",
                str(grpc_port),
                "--project",
                PROJECT,
                "--log-level",
                "warning",
            ],
            f"{bq_url}/bigquery/v2/projects/{PROJECT}/datasets",
            LOGS / "bigquery-emulator.log",
            env={**os.environ, "HOME": str(EMULATORS / "duckdb-home")},
        ),
    ]
    os.environ["STORAGE_EMULATOR_HOST"] = gcs_url
    try:
        from google.cloud import storage

        from evi_udf.sample.generate import SampleSpec, generate_archive

        if not (args.sample / "L2" / "index.csv.gz").exists():
            print(
                f"generating the sample archive in {args.sample} (gs://{SOURCE_BUCKET} BASE_URLs)", flush=True
            )
            generate_archive(SampleSpec(out=args.sample, bucket_url=f"gs://{SOURCE_BUCKET}"), progress=True)
        client = storage.Client()
        source = client.create_bucket(SOURCE_BUCKET)
        client.create_bucket(OUTPUT_BUCKET)
        files = sorted(p for p in args.sample.rglob("*") if p.is_file())
        for number, path in enumerate(files, start=1):
            source.blob(path.relative_to(args.sample).as_posix()).upload_from_filename(str(path))
            if number % 50 == 0 or number == len(files):
                print(f"uploaded {number}/{len(files)} files to gs://{SOURCE_BUCKET}", flush=True)
        print(f"running the job on them ({gcs_url}): spark-submit spark_jobs/evi_job.py", flush=True)
        env = {
            **os.environ,
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1",
        }
        job = subprocess.run(
            [
                str(VENV_BIN / "spark-submit"),
                "--master",
                "local[2]",
                "--conf",
                "spark.log.level=WARN",
                str(REPO / "spark_jobs" / "evi_job.py"),
                "--config",
                str(CONFIG),
                "--set",
                f"sink.api_endpoint={bq_url}",
                *job_args,
            ],
            env=env,
            check=False,
        )
        if job.returncode != 0:
            return job.returncode
        print_queries(bq_url)
        return 0
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def print_queries(bq_url: str) -> None:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    from evi_udf.outputs.queries import load_query

    client = bigquery.Client(
        project=PROJECT, credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=bq_url)
    )

    def show(title: str, name: str, *parameters: object) -> None:
        config = bigquery.QueryJobConfig(query_parameters=list(parameters))
        rows = client.query(load_query(name, PROJECT, DATASET), job_config=config).result()
        print(f"\n{title} (evi_udf/sql/{name}.sql):")
        for row in rows:
            print("  " + ", ".join(f"{key}={value}" for key, value in dict(row).items()))

    show(
        "EVI time series of 55HBU",
        "evi_time_series",
        bigquery.ScalarQueryParameter("tile", "STRING", "55HBU"),
        bigquery.ScalarQueryParameter("start", "TIMESTAMP", dt.datetime(2022, 1, 1, tzinfo=dt.timezone.utc)),
        bigquery.ScalarQueryParameter(
            "end", "TIMESTAMP", dt.datetime(2022, 2, 28, 23, 59, tzinfo=dt.timezone.utc)
        ),
    )
    area = "POLYGON((143.9 -37.2, 144.4 -37.2, 144.4 -37.7, 143.9 -37.7, 143.9 -37.2))"
    show(
        "Monthly mean EVI around 144.1 E, 37.45 S",
        "monthly_mean_in_area",
        bigquery.ScalarQueryParameter("area_wkt", "STRING", area),
    )


if __name__ == "__main__":
    sys.exit(main())
