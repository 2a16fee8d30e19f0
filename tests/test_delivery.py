"""Delivery to Dataproc Serverless: the submit command, the container image rules and the wheel.

Nothing here can reach Google Cloud, so the submission is checked by what it would run: the
``gcloud dataproc batches submit pyspark`` line that ``scripts/submit.sh --dry-run`` prints is parsed
flag by flag against the documented rules (dataproc.md), the staged config is loaded back, and the
wheel runs the job in a fresh venv that has only pyspark and the third-party dependencies, as
Dataproc ships it.
"""

from __future__ import annotations

import dataclasses
import email
import hashlib
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import rasterio

from evi_udf import __version__
from evi_udf.config import load_config
from evi_udf.index.catalog import read_index_pandas, select_scenes_pandas
from evi_udf.sample.generate import SampleSpec, generate_archive

REPO = Path(__file__).resolve().parents[1]
SUBMIT = REPO / "scripts" / "submit.sh"
BUILD_IMAGE = REPO / "scripts" / "build_image.sh"
DOCKERFILE = REPO / "docker" / "Dockerfile"

REQUIRED_FLAGS = {
    "--project": "evi-prod",
    "--region": "europe-west4",
    "--image": "europe-west4-docker.pkg.dev/evi-prod/evi/evi-udf:0.1.0-0123456789ab",
    "--service-account": "evi-batch@evi-prod.iam.gserviceaccount.com",
    "--deps-bucket": "gs://evi-prod-deps",
    "--output": "gs://evi-prod-out/evi",
    "--dataset": "sentinel2_evi",
}


def run_script(script: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVI_PYTHON": sys.executable}
    return subprocess.run(
        [str(script), *args], capture_output=True, text=True, check=False, cwd=REPO, env=env, timeout=timeout
    )


def flags_of(*overrides: str, drop: str | tuple[str, ...] = ()) -> list[str]:
    dropped = (drop,) if isinstance(drop, str) else drop
    return [f"{flag}={value}" for flag, value in REQUIRED_FLAGS.items() if flag not in dropped] + list(
        overrides
    )


def parse_submit(
    stdout: str, job_file: str = "spark_jobs/evi_job.py"
) -> tuple[dict[str, str], list[str], list[list[str]]]:
    """The gcloud submit line of a dry run: (flags, job arguments, all printed commands)."""
    commands = [shlex.split(line) for line in stdout.splitlines() if line and not line.startswith("#")]
    (submit,) = [c for c in commands if c[:5] == ["gcloud", "dataproc", "batches", "submit", "pyspark"]]
    separator = submit.index("--")
    flags: dict[str, str] = {}
    for token in submit[6:separator]:
        name, _, value = token.partition("=")
        assert name not in flags, f"flag {name} given twice"
        flags[name] = value
    assert submit[5] == job_file
    return flags, submit[separator + 1 :], commands


def parse_properties(text: str) -> dict[str, str]:
    """gcloud's dictionary flag syntax: ``k=v,k=v`` or ``^D^k=vDk=v`` with another delimiter."""
    delimiter = ","
    match = re.match(r"^\^(.)\^", text)
    if match:
        delimiter, text = match.group(1), text[match.end() :]
    pairs = [pair.split("=", 1) for pair in text.split(delimiter)]
    return {key: value for key, value in pairs}


def test_dry_run_prints_a_complete_batch_submission(tmp_path: Path) -> None:
    result = run_script(SUBMIT, "--dry-run", "--batch", "evi-test-dryrun", "--overwrite", *flags_of())
    assert result.returncode == 0, result.stderr
    flags, job_args, commands = parse_submit(result.stdout)

    assert flags["--project"] == "evi-prod"
    assert flags["--region"] == "europe-west4"
    assert flags["--batch"] == "evi-test-dryrun"
    assert flags["--version"] == "2.3"
    assert flags["--container-image"] == REQUIRED_FLAGS["--image"]
    assert flags["--deps-bucket"] == "gs://evi-prod-deps"
    assert flags["--service-account"] == REQUIRED_FLAGS["--service-account"]
    staging = "gs://evi-prod-deps/evi-udf/evi-test-dryrun"
    assert flags["--py-files"] == f"{staging}/evi_udf-{__version__}-py3-none-any.whl"
    assert flags["--files"] == f"{staging}/config.yaml"
    assert "--subnet" not in flags and "--network" not in flags
    assert flags["--ttl"] == "1d"
    assert job_args == ["--config", f"{staging}/config.yaml", "--overwrite"]

    properties = parse_properties(flags["--properties"])
    assert not [key for key in properties if "yarn" in key.lower() or key.startswith("spark.shuffle.service")]
    assert "spark.master" not in properties
    assert properties["spark.executor.cores"] in {"4", "8", "16"}
    assert properties["spark.driver.cores"] in {"4", "8", "16"}
    assert int(properties["spark.dynamicAllocation.minExecutors"]) >= 2
    assert int(properties["spark.dynamicAllocation.maxExecutors"]) == 20
    assert properties["spark.dataproc.executor.disk.size"] == "250g"
    for name in ("GDAL_PAM_ENABLED", "PROJ_NETWORK"):
        assert properties[f"spark.executorEnv.{name}"] == properties[f"spark.dataproc.driverEnv.{name}"]
    assert properties["spark.executorEnv.PROJ_NETWORK"] == "OFF"
    labels = parse_properties(flags["--labels"])
    assert labels["evi-udf-version"] == __version__.replace(".", "-")
    assert all(re.fullmatch(r"[a-z][a-z0-9_-]*", key) for key in labels)

    # The wheel is built, then staged with the config, before the submission.
    build, stage = commands[0], commands[1]
    assert build[1:4] == ["-m", "pip", "wheel"] and "--no-deps" in build
    assert stage[:3] == ["gcloud", "storage", "cp"] and stage[-1] == f"{staging}/"
    assert f"dist/evi_udf-{__version__}-py3-none-any.whl" in stage

    # The staged config is the resolved one: flags applied, BigQuery in the batch's project.
    staged = load_config(REPO / stage[4])
    assert staged.output.root == "gs://evi-prod-out/evi"
    assert staged.sink.kind == "bigquery" and staged.sink.project == "evi-prod"
    assert staged.sink.dataset == "sentinel2_evi" and staged.sink.api_endpoint is None
    assert staged.catalog.index_uri == "gs://gcp-public-data-sentinel-2/L2/index.csv.gz"
    assert staged.dataproc.container_image == REQUIRED_FLAGS["--image"]
    assert staged == load_config(REPO / "conf/dataproc.yaml", _overrides_of_flags())


def test_dry_run_prints_the_cost_per_hour_and_per_scene() -> None:
    result = run_script(SUBMIT, "--dry-run", *flags_of("--set", "dataproc.max_executors=10"))
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("# cost:")]
    # conf/dataproc.yaml: a 4-core driver with 8g + 2g (2.4 + 1.0 DCU) and 4-core executors with
    # 4g + 8g (2.4 + 1.2 DCU): 3.4 + 10 x 3.6 = 39.4 DCU, $2.36 an hour at $0.06.
    assert "39.4 DCU with 10 executors (~$2.36/hour)" in line


@pytest.mark.integration
def test_plan_prints_the_groups_and_the_estimated_cost_before_submitting(tmp_path, gcs_emulator) -> None:
    from helpers import sample_in_gcs_emulator

    source, output, _ = sample_in_gcs_emulator(
        tmp_path / "archive", tiles=("55HBU", "54HYD"), scenes_per_tile=4, resolution_factor=61, seed=4
    )
    index = f"gs://{source}/L2/index.csv.gz"
    catalog = {
        "index_uri": index,
        "tiles": "[55HBU,54HYD]",
        "start_date": "2022-01-01",
        "end_date": "2022-02-28",
        "period": "all",
        "max_cloud_cover": "100",
        "geometric_quality": "any",
    }
    settings = [f"catalog.{key}={value}" for key, value in catalog.items()] + ["storage.anonymous_buckets=[]"]
    flags = flags_of(f"--output=gs://{output}/evi", *[arg for s in settings for arg in ("--set", s)])
    result = run_script(SUBMIT, "--dry-run", "--plan", "--batch", "evi-test-plan", *flags, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # The same selection by the pandas path of the catalog (the plan ran it in Spark).
    config = load_config(REPO / "conf/dataproc.yaml", [*_overrides_of_flags(), *settings])
    local = dataclasses.replace(config.catalog, index_uri=str(tmp_path / "archive" / "L2" / "index.csv.gz"))
    selected, _ = select_scenes_pandas(read_index_pandas(local.index_uri), local)
    scenes = len(selected)
    assert scenes >= 8
    assert f"estimate: {scenes} scenes in 2 groups on 2 executors x 4 cores" in result.stdout
    # The plan comes first, then the commands: nothing is submitted by a dry run.
    assert result.stdout.index("estimate:") < result.stdout.index("gcloud dataproc batches submit")


def _overrides_of_flags() -> list[str]:
    keys = {
        "--project": "dataproc.project",
        "--region": "dataproc.region",
        "--image": "dataproc.container_image",
        "--service-account": "dataproc.service_account",
        "--deps-bucket": "dataproc.deps_bucket",
        "--output": "output.root",
        "--dataset": "sink.dataset",
    }
    return [f"{keys[flag]}={value}" for flag, value in REQUIRED_FLAGS.items()] + ["sink.project=evi-prod"]


def test_a_schedule_stages_the_job_and_creates_a_scheduler_job_posting_the_batch() -> None:
    import datetime as dt
    import json

    result = run_script(
        SUBMIT,
        "--dry-run",
        "--schedule",
        "30 5 * * *",
        "--schedule-name",
        "evi-daily",
        "--set",
        "catalog.start_date=-45d",
        "--set",
        "catalog.end_date=today",
        *flags_of(),
    )
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 3 and not [c for c in commands if c[:3] == ["gcloud", "dataproc", "batches"]]
    build, stage, create = commands
    assert build[1:4] == ["-m", "pip", "wheel"]
    folder = "gs://evi-prod-deps/evi-udf/schedules/evi-daily"
    assert stage[:3] == ["gcloud", "storage", "cp"] and stage[-1] == f"{folder}/"
    assert "spark_jobs/evi_job.py" in stage
    assert create[:6] == ["gcloud", "scheduler", "jobs", "create", "http", "evi-daily"]
    flags = dict(token.split("=", 1) for token in create[6:])
    assert flags["--schedule"] == "30 5 * * *" and flags["--time-zone"] == "UTC"
    assert flags["--location"] == "europe-west4" and flags["--project"] == "evi-prod"
    assert (
        flags["--uri"]
        == "https://dataproc.googleapis.com/v1/projects/evi-prod/locations/europe-west4/batches"
    )
    assert flags["--http-method"] == "POST"
    assert flags["--oauth-service-account-email"] == REQUIRED_FLAGS["--service-account"]
    assert flags["--oauth-token-scope"] == "https://www.googleapis.com/auth/cloud-platform"

    body = json.loads((REPO / flags["--message-body-from-file"]).read_text())
    assert "batchId" not in body  # the service names each scheduled batch
    assert body["pysparkBatch"] == {
        "mainPythonFileUri": f"{folder}/evi_job.py",
        "args": ["--config", f"{folder}/config.yaml"],
        "pythonFileUris": [f"{folder}/evi_udf-{__version__}-py3-none-any.whl"],
        "fileUris": [f"{folder}/config.yaml"],
    }
    assert body["runtimeConfig"]["version"] == "2.3"
    assert body["runtimeConfig"]["containerImage"] == REQUIRED_FLAGS["--image"]
    assert body["runtimeConfig"]["properties"]["spark.dynamicAllocation.maxExecutors"] == "20"
    execution = body["environmentConfig"]["executionConfig"]
    assert execution == {"serviceAccount": REQUIRED_FLAGS["--service-account"], "ttl": "86400s"}
    assert body["labels"]["schedule"] == "evi-daily"

    # The staged config keeps the relative dates: each scheduled batch resolves them on its own day.
    staged_path = REPO / next(t for t in stage if t.endswith("config.yaml"))
    assert "start_date: -45d" in staged_path.read_text() and "end_date: today" in staged_path.read_text()
    on_day = load_config(staged_path, today=dt.date(2027, 3, 20))
    assert (on_day.catalog.start_date, on_day.catalog.end_date) == (dt.date(2027, 2, 1), dt.date(2027, 3, 20))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--schedule", "daily"), "--schedule 'daily': give five cron fields"),
        (("--schedule", "0 6 * * *", "--batch", "evi-x-1"), "--schedule: the scheduler submits"),
        (("--schedule-name", "x"), "need --schedule"),
        (("--schedule", "0 6 * * *", "--schedule-name", "bad name"), "--schedule-name 'bad name'"),
    ],
)
def test_schedule_flags_are_checked(args: tuple[str, ...], message: str) -> None:
    result = run_script(SUBMIT, "--dry-run", *args, *flags_of())
    assert result.returncode == 2
    assert message in result.stderr


def test_subnet_set_options_and_commas_in_properties() -> None:
    result = run_script(
        SUBMIT,
        "--dry-run",
        "--batch",
        "evi-test-subnet",
        "--subnet",
        "projects/evi-prod/regions/europe-west4/subnetworks/batch",
        "--max-executors",
        "50",
        "--set",
        "dataproc.environment.CPL_VSIL_CURL_ALLOWED_EXTENSIONS=.jp2,.tif",
        "--set",
        "catalog.tiles=[31UFT]",
        *flags_of(),
    )
    assert result.returncode == 0, result.stderr
    flags, job_args, _ = parse_submit(result.stdout)
    assert flags["--subnet"] == "projects/evi-prod/regions/europe-west4/subnetworks/batch"
    assert job_args == ["--config", "gs://evi-prod-deps/evi-udf/evi-test-subnet/config.yaml"]
    assert flags["--properties"].startswith("^")  # a value has a comma: another delimiter is used
    properties = parse_properties(flags["--properties"])
    assert properties["spark.executorEnv.CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] == ".jp2,.tif"
    assert properties["spark.dynamicAllocation.maxExecutors"] == "50"
    staged = load_config(REPO / "dist/batches/evi-test-subnet/config.yaml")
    assert staged.catalog.tiles == ("31UFT",)


@pytest.mark.parametrize(
    ("missing", "key"),
    [
        ("--project", "dataproc.project (--project)"),
        ("--region", "dataproc.region (--region)"),
        ("--output", "output.root (--output)"),
        ("--image", "dataproc.container_image (--image)"),
        ("--service-account", "dataproc.service_account (--service-account)"),
        ("--deps-bucket", "dataproc.deps_bucket (--deps-bucket)"),
    ],
)
def test_a_missing_required_setting_stops_before_anything_runs(missing: str, key: str) -> None:
    result = run_script(SUBMIT, "--dry-run", *flags_of(drop=missing))
    assert result.returncode == 2
    assert key in result.stderr
    assert "gcloud" not in result.stdout


def test_an_empty_flag_is_missing_not_the_config_files_value() -> None:
    # conf/dataproc.yaml has a dataset; `--dataset "$UNSET"` must not silently fall back to it.
    result = run_script(
        SUBMIT, "--dry-run", *flags_of("--dataset=", "--image=", drop=("--dataset", "--image"))
    )
    assert result.returncode == 2
    assert "sink.dataset (--dataset)" in result.stderr
    assert "dataproc.container_image (--image)" in result.stderr


def test_dataset_missing_and_wrong_values_are_named() -> None:
    result = run_script(SUBMIT, "--dry-run", *flags_of("--set", "sink.dataset=null", drop="--dataset"))
    assert result.returncode == 2 and "sink.dataset (--dataset)" in result.stderr

    local_output = run_script(SUBMIT, "--dry-run", *flags_of("--output=out/local", drop="--output"))
    assert (
        local_output.returncode == 2 and "output.root (--output): must be a gs:// URI" in local_output.stderr
    )

    yarn = run_script(SUBMIT, "--dry-run", *flags_of("--set", "dataproc.properties.spark.yarn.queue=x"))
    assert yarn.returncode == 2
    assert "dataproc.properties" in yarn.stderr and "YARN" in yarn.stderr

    cores = run_script(SUBMIT, "--dry-run", *flags_of("--set", "dataproc.executor_cores=3"))
    assert cores.returncode == 2 and "dataproc.executor_cores" in cores.stderr

    batch = run_script(SUBMIT, "--dry-run", "--batch", "Bad_Batch", *flags_of())
    assert batch.returncode == 2 and "--batch" in batch.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "dataproc.executor_memory=24g",
            "executor_memory + executor_memory_overhead (24g + 8g) over 4 cores",
        ),
        ("dataproc.driver_memory=40g", "Dataproc allows 1024m to 7424m per core"),
        ("dataproc.executor_memory=512m", "dataproc.executor_memory: must be at least 1024m"),
        ("dataproc.executor_disk_size=100g", "between 250g and 9000g on the standard disk tier, got 100g"),
        ("dataproc.executor_disk_size=10t", "between 250g and 9000g on the standard disk tier, got 10t"),
        ("dataproc.ttl=5m", "dataproc.ttl: must be between 10m and 14d"),
        ("dataproc.ttl=30d", "dataproc.ttl: must be between 10m and 14d"),
        ("dataproc.batch_prefix=" + "e" * 41, "dataproc.batch_prefix: use 1-40 lowercase letters"),
        ("dataproc.runtime_version=3.0", "must be text, got the number 3.0; quote it"),
    ],
)
def test_service_limits_stop_a_submission_before_anything_is_built(setting: str, message: str) -> None:
    result = run_script(SUBMIT, "--dry-run", *flags_of("--set", setting))
    assert result.returncode == 2
    assert message in result.stderr
    assert "pip wheel" not in result.stdout and "gcloud" not in result.stdout


def test_a_multi_region_is_not_a_region() -> None:
    result = run_script(SUBMIT, "--dry-run", *flags_of("--region=US", drop="--region"))
    assert (
        result.returncode == 2
        and "dataproc.region: must be a Google Cloud region like us-central1" in result.stderr
    )


def test_index_cache_batch_converts_the_configured_index() -> None:
    cache = "gs://evi-prod-out/index/L2-20261201.parquet"
    not_needed = ("--output", "--dataset")
    flags_without = [f for f in flags_of() if not f.startswith(not_needed)]
    result = run_script(
        SUBMIT, "--dry-run", "--batch", "evi-test-cache", "--index-cache", cache, *flags_without
    )
    assert result.returncode == 0, result.stderr
    flags, job_args, commands = parse_submit(result.stdout, job_file="spark_jobs/build_index_cache.py")
    assert job_args == ["--source", "gs://gcp-public-data-sentinel-2/L2/index.csv.gz", "--out", cache]
    staging = "gs://evi-prod-deps/evi-udf/evi-test-cache"
    assert flags["--py-files"] == f"{staging}/evi_udf-{__version__}-py3-none-any.whl"
    assert flags["--container-image"] == REQUIRED_FLAGS["--image"]
    assert "--files" not in flags  # the conversion reads no config
    assert commands[1] == [
        "gcloud",
        "storage",
        "cp",
        f"dist/evi_udf-{__version__}-py3-none-any.whl",
        f"{staging}/",
    ]
    assert parse_properties(flags["--labels"])["job"] == "index-cache"
    properties = parse_properties(flags["--properties"])
    assert not [key for key in properties if "yarn" in key.lower() or key.startswith("spark.shuffle.service")]

    # The EVI batch of the same flags is labelled as such.
    evi = run_script(SUBMIT, "--dry-run", *flags_of())
    assert parse_properties(parse_submit(evi.stdout)[0]["--labels"])["job"] == "evi"

    for wrong, message in [
        ("gs://evi-prod-out/index/L2", "--index-cache: must be a gs:// URI named *.parquet"),
        ("/tmp/index.parquet", "--index-cache: must be a gs:// URI named *.parquet"),
    ]:
        bad = run_script(SUBMIT, "--dry-run", "--index-cache", wrong, *flags_without)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    from_cache = run_script(
        SUBMIT,
        "--dry-run",
        "--index-cache",
        cache,
        "--set",
        "catalog.index_uri=gs://evi-prod-out/index/L2-20261101.parquet",
        *flags_without,
    )
    assert from_cache.returncode == 2 and "built from the index CSV" in from_cache.stderr
    missing = run_script(SUBMIT, "--dry-run", "--index-cache", cache, *flags_of(drop="--project"))
    assert missing.returncode == 2 and "dataproc.project (--project)" in missing.stderr
    both = run_script(SUBMIT, "--dry-run", "--index-cache", cache, "--overwrite", *flags_without)
    assert both.returncode == 2 and "--overwrite" in both.stderr


def test_help_explains_every_required_setting() -> None:
    result = run_script(SUBMIT, "--help")
    assert result.returncode == 0
    for flag in [*REQUIRED_FLAGS, "--dry-run", "--set", "--subnet", "--max-executors", "--index-cache"]:
        assert flag in result.stdout


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_follows_the_custom_container_rules() -> None:
    instructions = dockerfile_instructions()
    runs = " ".join(args for op, args in instructions if op == "RUN")
    env = " ".join(args for op, args in instructions if op == "ENV")

    assert instructions[0] == ("FROM", "debian:12-slim")
    # User spark with UID and GID 1099 and a home directory, and the image runs as that user.
    assert re.search(r"groupadd -g 1099 spark", runs)
    assert re.search(r"useradd -u 1099 -g 1099 -d /home/spark -m spark", runs)
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1] == "spark"
    # The packages Dataproc expects, and no Spark or JDK: the service mounts its own.
    apt = re.search(r"apt-get install ([^&]+)", runs)
    assert apt is not None
    packages = set(apt.group(1).split())
    assert {"procps", "tini", "python3"} <= packages
    assert not [p for p in packages if re.search(r"jdk|jre|java|spark", p)]
    pip_install = re.search(r"/bin/pip install ([^&]+)", runs)
    assert pip_install is not None and "spark" not in pip_install.group(1).lower()
    # PYSPARK_PYTHON is the venv that the image creates and installs into.
    python = re.search(r"PYSPARK_PYTHON=(\S+)", env)
    assert python is not None
    venv = python.group(1).removesuffix("/bin/python")
    assert f"python3 -m venv {venv}" in runs
    assert f"{venv}/bin/pip install" in runs and "-c /tmp/evi/constraints.txt" in runs


def test_the_wheel_does_not_pull_spark_and_ships_the_queries(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = email.message_from_bytes(archive.read(f"evi_udf-{__version__}.dist-info/METADATA"))
    required = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert not [r for r in required if r.lower().startswith("pyspark")]
    assert any(r.startswith("rasterio") for r in required)
    queries = {"evi_udf/outputs/sql/evi_time_series.sql", "evi_udf/outputs/sql/monthly_mean_in_area.sql"}
    assert queries <= set(names)
    assert "evi_udf/run/process.py" in names and not [n for n in names if n.startswith(("tests/", "bench/"))]


def test_image_tag_is_the_version_and_the_lock_hash() -> None:
    result = run_script(BUILD_IMAGE, "--project", "evi-prod", "--region", "europe-west4", "--dry-run")
    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256((REPO / "constraints.txt").read_bytes() + DOCKERFILE.read_bytes()).hexdigest()[
        :12
    ]
    uri = f"europe-west4-docker.pkg.dev/evi-prod/evi/evi-udf:{__version__}-{digest}"
    assert result.stdout.splitlines()[-1] == uri
    assert (
        f"gcloud builds submit dist/image-context --project=evi-prod --region=europe-west4 --tag={uri}"
        in (result.stdout)
    )
    missing = run_script(BUILD_IMAGE, "--region", "europe-west4", "--dry-run")
    assert missing.returncode == 2 and "--project" in missing.stderr
    # A local Docker build targets Dataproc's x86_64 machines whatever the builder's architecture.
    docker = run_script(
        BUILD_IMAGE, "--project", "evi-prod", "--region", "europe-west4", "--builder", "docker", "--dry-run"
    )
    assert docker.returncode == 0, docker.stderr
    assert f"docker build --platform linux/amd64 --tag {uri} dist/image-context" in docker.stdout


def build_wheel(directory: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(directory),
            ".",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return directory / f"evi_udf-{__version__}-py3-none-any.whl"


@pytest.mark.slow
def test_the_wheel_alone_runs_the_job_in_a_fresh_venv(tmp_path: Path) -> None:
    """Exactly as Dataproc ships it: a Python with pyspark and the dependencies, the code in --py-files."""
    wheel = build_wheel(tmp_path / "dist")
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.message_from_bytes(archive.read(f"evi_udf-{__version__}.dist-info/METADATA"))
    requirements = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "-c",
            str(REPO / "constraints.txt"),
            "pyspark",
            *requirements,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    # The package itself is not installed: only the wheel can provide it.
    absent = subprocess.run([str(python), "-c", "import evi_udf"], capture_output=True, check=False)
    assert absent.returncode != 0

    archive = tmp_path / "archive"
    generate_archive(
        SampleSpec(out=archive, tiles=("55HBU",), scenes_per_tile=3, resolution_factor=61, seed=3)
    )
    config = tmp_path / "job.yaml"
    config.write_text(
        f"catalog:\n  index_uri: {archive}/L2/index.csv.gz\n  period: all\noutput:\n  root: {tmp_path}/out\n",
        encoding="utf-8",
    )
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")} | {
        "PYSPARK_PYTHON": str(python),
        "PYSPARK_DRIVER_PYTHON": str(python),
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    job = subprocess.run(
        [
            str(venv / "bin" / "spark-submit"),
            "--master",
            "local[2]",
            "--conf",
            "spark.ui.enabled=false",
            "--py-files",
            str(wheel),
            str(REPO / "spark_jobs" / "evi_job.py"),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,  # not the repository: lib/ must not be importable
        env=env,
        timeout=900,
    )
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[:4000]
    composites = pd.read_parquet(tmp_path / "out" / "tables" / "evi_composites")
    assert len(composites) == 1
    (cog,) = [p for p in (tmp_path / "out" / "evi").rglob("*.tif") if not p.name.endswith("_clear_count.tif")]
    with rasterio.open(cog) as dataset:
        evi = dataset.read(1, masked=True)
        assert int(evi.count()) == int(composites["valid_pixels"].iloc[0]) > 0
    # The queries ship inside the wheel and load from it.
    query = subprocess.run(
        [
            str(python),
            "-m",
            "evi_udf.outputs.queries",
            "evi_time_series",
            "--project",
            "my-project",
            "--dataset",
            "evi",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**env, "PYTHONPATH": str(wheel)},
    )
    assert query.returncode == 0, query.stderr
    assert "FROM `my-project.evi.evi_scenes`" in query.stdout
