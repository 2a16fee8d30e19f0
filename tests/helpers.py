"""Helpers shared by several test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def spark_submit(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the job exactly as users do: ``spark-submit spark_jobs/evi_job.py --config ...`` in local[2]."""
    return spark_submit_script("evi_job.py", "--config", str(config), *args, env=env)


def start_spark_submit(
    config: Path, *args: str, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[str]:
    """Start the job like :func:`spark_submit`, in its own process group (so that a test can kill the
    driver, its JVM and its Python workers at once with ``os.killpg``); output goes to ``log``."""
    command, environment = _spark_submit_command("evi_job.py", "--config", str(config), *args, env=env)
    output = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        command, stdout=output, stderr=subprocess.STDOUT, text=True, env=environment, start_new_session=True
    )


def spark_submit_script(
    script: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``spark-submit --master local[2] spark_jobs/<script> <args>``, with the venv's interpreter."""
    command, environment = _spark_submit_command(script, *args, env=env)
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=900, env=environment)


def _spark_submit_command(
    script: str, *args: str, env: dict[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    environment = {
        **os.environ,
        **(env or {}),
        # Workers must run this interpreter (the venv's); loopback keeps Spark off the network.
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    command = [
        str(Path(sys.executable).parent / "spark-submit"),
        "--master",
        "local[2]",
        "--conf",
        "spark.ui.enabled=false",
        str(REPO / "spark_jobs" / script),
        *args,
    ]
    return command, environment


def sample_in_gcs_emulator(archive: Path, **spec: object) -> tuple[str, str, str]:
    """Generate a sample archive whose BASE_URLs point at a new emulator bucket and upload it there.

    Returns (source bucket, a new empty output bucket, a new BigQuery dataset name). Needs
    ``STORAGE_EMULATOR_HOST`` (the ``gcs_emulator`` fixture sets it).
    """
    import uuid

    from google.cloud import storage

    from evi_udf.sample.generate import SampleSpec, generate_archive

    source, output = f"s2-{uuid.uuid4().hex[:6]}", f"evi-{uuid.uuid4().hex[:6]}"
    client = storage.Client()
    for name in (source, output):
        client.create_bucket(name)
    generate_archive(SampleSpec(out=archive, bucket_url=f"gs://{source}", **spec))  # type: ignore[arg-type]
    bucket = client.bucket(source)
    for path in sorted(p for p in archive.rglob("*") if p.is_file()):
        bucket.blob(path.relative_to(archive).as_posix()).upload_from_filename(str(path))
    return source, output, f"evi_{uuid.uuid4().hex[:6]}"


def evi_cogs(folder: Path) -> set[str]:
    """The EVI COGs under ``folder`` (not their ``_clear_count.tif`` companions), each checked to have
    its clear-count COG beside it."""
    cogs = {str(p) for p in folder.rglob("*.tif") if not p.name.endswith("_clear_count.tif")}
    for cog in cogs:
        assert Path(cog.removesuffix(".tif") + "_clear_count.tif").is_file(), cog
    return cogs
