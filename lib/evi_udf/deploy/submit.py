"""Submitting the job to Dataproc Serverless: the commands behind ``scripts/submit.sh``.

A submission is three commands, printed by ``--dry-run`` and otherwise run in order:

1. build the wheel of ``evi_udf`` (``pip wheel``), the code the batch runs;
2. stage the wheel and the resolved configuration under ``gs://<deps bucket>/evi-udf/<batch id>/``
   (one folder per batch, so a running batch never sees its files replaced);
3. ``gcloud dataproc batches submit pyspark spark_jobs/evi_job.py ... -- --config <staged config>``.

With ``--schedule CRON`` nothing is submitted now: the wheel, the config and the job file are staged
under ``gs://<deps bucket>/evi-udf/schedules/<name>/`` and a Cloud Scheduler job is created that
posts the same batch to the Dataproc API on that schedule (the service picks each batch id). With
relative catalog dates (``start_date: -45d``, ``end_date: today``) every scheduled batch covers the
recent periods as of its own day; groups whose scenes did not change are skipped, so only the months
that got new or reprocessed scenes are remade.

With ``--index-cache gs://...parquet`` the batch instead runs ``spark_jobs/build_index_cache.py`` once,
converting ``catalog.index_uri`` (the gzip CSV) into the partitioned Parquet cache that later batches
read in parallel; it needs the Dataproc settings but neither an output root nor a dataset.

``--dry-run`` also prints the DCUs and list price per hour and per scene of the configured shapes;
``--plan`` first prints, as ``make plan`` does, the groups the run would process and its estimated
DCU-hours and price (:mod:`evi_udf.deploy.cost`).

The staged configuration is the YAML file with every flag and ``--set`` applied and every default
spelled out, so the batch's inputs are exactly what the folder shows. Settings a submission cannot do
without are checked before anything runs, and all missing ones are reported at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from evi_udf import __version__
from evi_udf.config import JobConfig, config_from_mapping, is_relative_date, load_mapping
from evi_udf.deploy.cost import rate
from evi_udf.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[3]
JOB_FILE = "spark_jobs/evi_job.py"
INDEX_CACHE_JOB_FILE = "spark_jobs/build_index_cache.py"
STAGING_FOLDER = "evi-udf"
WHEEL_NAME = f"evi_udf-{__version__}-py3-none-any.whl"
# Dataproc batch ids: 4-63 characters, lowercase letters, digits and hyphens, starting with a letter.
BATCH_ID = re.compile(r"^[a-z][a-z0-9-]{2,61}[a-z0-9]$")

# (dotted key, flag, what it is): the settings without which a batch cannot run or write anywhere.
REQUIRED_SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("dataproc.project", "--project", "the Google Cloud project that runs the batch"),
    ("dataproc.region", "--region", "the Dataproc region, e.g. europe-west4"),
    ("dataproc.container_image", "--image", "the image built by scripts/build_image.sh"),
    ("dataproc.service_account", "--service-account", "the service account the batch runs as"),
    ("dataproc.deps_bucket", "--deps-bucket", "gs://BUCKET where the wheel and config are staged"),
    ("output.root", "--output", "gs://BUCKET/PREFIX for the COGs, STAC items and run reports"),
    ("sink.dataset", "--dataset", "the BigQuery dataset of the EVI tables"),
)
# Cloud Scheduler job names: letters, digits, hyphens and underscores, at most 500 characters.
SCHEDULE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,500}$")
# Five cron fields (minute hour day-of-month month day-of-week), as Cloud Scheduler takes them.
CRON = re.compile(r"^\S+(\s+\S+){4}$")
DATAPROC_API = "https://dataproc.googleapis.com/v1"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_TTL_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The index cache batch writes no COGs and no tables.
_NOT_NEEDED_FOR_INDEX_CACHE = ("output.root", "sink.dataset")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A Cloud Scheduler job that posts the batch to the Dataproc API on a cron schedule."""

    name: str
    cron: str
    time_zone: str = "UTC"
    # Who the scheduler calls the Dataproc API as; by default the batch's own service account.
    service_account: str | None = None
    # Replace the job of that name (gcloud scheduler jobs update) instead of creating it.
    update: bool = False


@dataclasses.dataclass(frozen=True)
class Submission:
    """One batch: its id, the resolved configuration and where its files are staged."""

    batch_id: str
    config: JobConfig
    staging_uri: str
    local_config: Path
    overwrite: bool = False
    run_async: bool = False
    # Set: the batch converts the index into this Parquet cache instead of running the EVI job.
    index_cache_uri: str | None = None
    # Catalog dates written relative to the run day (e.g. start_date: -45d): staged as written, so a
    # scheduled batch resolves them on the day it runs.
    relative_dates: dict[str, str] = dataclasses.field(default_factory=dict)
    # Set: create a Cloud Scheduler job that submits this batch on a cron schedule, instead of now.
    schedule: Schedule | None = None

    @property
    def staged_wheel(self) -> str:
        """The ``gs://`` URI of the wheel the batch imports ``evi_udf`` from."""
        return f"{self.staging_uri}/{WHEEL_NAME}"

    @property
    def staged_config(self) -> str:
        """The ``gs://`` URI of the resolved configuration the job reads."""
        return f"{self.staging_uri}/{self.local_config.name}"


def new_batch_id(prefix: str, now: dt.datetime | None = None, token: str | None = None) -> str:
    """A unique, readable batch id: ``<prefix>-<UTC date>-<time>-<random>`` (Dataproc: 4-63 chars)."""
    moment = now or dt.datetime.now(dt.timezone.utc)
    return f"{prefix}-{moment:%Y%m%d-%H%M%S}-{token or secrets.token_hex(3)}"


def _get(data: dict[str, Any], dotted: str) -> Any:
    value: Any = data
    for key in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def resolve_config(path: str, overrides: Sequence[str], index_cache_uri: str | None = None) -> JobConfig:
    """The job configuration of a submission, with every setting a batch needs checked.

    ``sink.project`` defaults to ``dataproc.project`` and the sink is BigQuery. With
    ``index_cache_uri`` (an index cache batch), the output root and dataset are not required and the
    cache URI is checked instead.

    Raises
    ------
    ConfigError
        Listing every missing required setting with its flag, or the first invalid value.
    """
    data = load_mapping(path, overrides)
    required = [
        setting
        for setting in REQUIRED_SETTINGS
        if index_cache_uri is None or setting[0] not in _NOT_NEEDED_FOR_INDEX_CACHE
    ]
    problems = [f"  {key} ({flag}): {what}" for key, flag, what in required if _get(data, key) in (None, "")]
    if index_cache_uri is not None:
        if not (index_cache_uri.startswith("gs://") and index_cache_uri.rstrip("/").endswith(".parquet")):
            problems.append(f"  --index-cache: must be a gs:// URI named *.parquet, got {index_cache_uri!r}")
        if str(_get(data, "catalog.index_uri") or "").rstrip("/").endswith(".parquet"):
            problems.append("  catalog.index_uri: the index cache is built from the index CSV, not a cache")
        if _get(data, "output.root") in (None, ""):
            data.setdefault("output", {}).pop("root", None)  # not used by this batch
    root = _get(data, "output.root")
    if root and not str(root).startswith("gs://"):
        problems.append(f"  output.root (--output): must be a gs:// URI on Dataproc, got {root!r}")
    index_uri = _get(data, "catalog.index_uri")
    if index_uri and not str(index_uri).startswith("gs://"):
        problems.append(f"  catalog.index_uri: must be a gs:// URI on Dataproc, got {index_uri!r}")
    sink = data.setdefault("sink", {}) or {}
    if sink.get("kind", "bigquery") != "bigquery":
        problems.append(f"  sink.kind: must be bigquery on Dataproc, got {sink.get('kind')!r}")
    if problems:
        raise ConfigError(
            f"{path}: cannot submit, missing or wrong settings (set them in the file or pass the flag):\n"
            + "\n".join(problems)
        )
    sink["kind"] = "bigquery"
    sink.setdefault("project", None)
    if sink["project"] is None:
        sink["project"] = _get(data, "dataproc.project")
    data["sink"] = sink
    try:
        return config_from_mapping(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def relative_dates(path: str, overrides: Sequence[str]) -> dict[str, str]:
    """The catalog dates of a config written relative to the run day, as written (``-45d``, ``today``)."""
    catalog = load_mapping(path, overrides).get("catalog") or {}
    return {
        key: str(catalog[key]).strip().lower()
        for key in ("start_date", "end_date")
        if isinstance(catalog, dict) and is_relative_date(catalog.get(key))
    }


def write_resolved_config(
    config: JobConfig, destination: Path, relative: dict[str, str] | None = None
) -> Path:
    """Write ``config`` as YAML with every default spelled out (the file the batch reads); return the path.

    ``relative`` catalog dates are written as given, to be resolved by the batch on its run day.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    data = config.to_dict()
    data["catalog"].update(relative or {})
    header = "# Resolved by scripts/submit.sh from the config file, its flags and --set overrides.\n"
    destination.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return destination


def _joined(values: dict[str, str]) -> str:
    """``k=v`` pairs for one gcloud flag (gcloud's ``^D^`` syntax picks a delimiter if values have commas)."""
    pairs = [f"{key}={value}" for key, value in values.items()]
    if not any("," in pair for pair in pairs):
        return ",".join(pairs)
    delimiter = next(d for d in "#|@;~" if not any(d in pair for pair in pairs))
    return f"^{delimiter}^" + delimiter.join(pairs)


def batch_labels(config: JobConfig, job: str = "evi") -> dict[str, str]:
    """The batch's labels: the job, package version and compositor (for cost reports), then the config's."""
    return {
        "app": "sentinel2-evi",
        "job": job,
        "evi-udf-version": __version__.replace(".", "-"),
        "compositor": config.raster.compositor.replace("_", "-"),
        **config.dataproc.labels,
    }


def ttl_seconds(ttl: str) -> int:
    """A Dataproc ttl (``6h``, ``1d``) in seconds, as the batches API takes it (``"21600s"``)."""
    return int(ttl[:-1]) * _TTL_SECONDS[ttl[-1]]


def batch_body(submission: Submission) -> dict[str, Any]:
    """The Dataproc ``Batch`` resource a scheduled submission posts (``projects.locations.batches``).

    No batch id: the service gives each scheduled batch its own.
    """
    config = submission.config
    dataproc = config.dataproc
    execution: dict[str, Any] = {
        "serviceAccount": dataproc.service_account,
        "ttl": f"{ttl_seconds(dataproc.ttl)}s",
    }
    if dataproc.subnet:
        execution["subnetworkUri"] = dataproc.subnet
    environment: dict[str, Any] = {"executionConfig": execution}
    if dataproc.history_server_cluster:
        environment["peripheralsConfig"] = {
            "sparkHistoryServerConfig": {"dataprocCluster": dataproc.history_server_cluster}
        }
    return {
        "pysparkBatch": {
            "mainPythonFileUri": f"{submission.staging_uri}/{Path(JOB_FILE).name}",
            "args": [
                "--config",
                submission.staged_config,
                *(["--overwrite"] if submission.overwrite else []),
            ],
            "pythonFileUris": [submission.staged_wheel],
            "fileUris": [submission.staged_config],
        },
        "runtimeConfig": {
            "version": dataproc.runtime_version,
            "containerImage": dataproc.container_image,
            "properties": dataproc.spark_properties(),
        },
        "environmentConfig": environment,
        "labels": {
            **batch_labels(config),
            "schedule": submission.schedule.name if submission.schedule else "",
        },
    }


def _schedule_commands(submission: Submission, build: list[str]) -> list[list[str]]:
    schedule = submission.schedule
    assert schedule is not None
    dataproc = submission.config.dataproc
    body_file = submission.local_config.parent / "batch.json"
    (REPO_ROOT / body_file).write_text(json.dumps(batch_body(submission), indent=2), encoding="utf-8")
    stage = [
        "gcloud",
        "storage",
        "cp",
        f"dist/{WHEEL_NAME}",
        str(submission.local_config),
        JOB_FILE,
        f"{submission.staging_uri}/",
    ]
    create = [
        "gcloud",
        "scheduler",
        "jobs",
        "update" if schedule.update else "create",
        "http",
        schedule.name,
        f"--project={dataproc.project}",
        f"--location={dataproc.region}",
        f"--schedule={schedule.cron}",
        f"--time-zone={schedule.time_zone}",
        f"--uri={DATAPROC_API}/projects/{dataproc.project}/locations/{dataproc.region}/batches",
        "--http-method=POST",
        "--headers=Content-Type=application/json",
        f"--message-body-from-file={body_file}",
        f"--oauth-service-account-email={schedule.service_account or dataproc.service_account}",
        f"--oauth-token-scope={CLOUD_PLATFORM_SCOPE}",
    ]
    return [build, stage, create]


def commands(submission: Submission, python: str = sys.executable) -> list[list[str]]:
    """The commands of a submission, in order: build the wheel, stage it with the config, submit (or,
    with a schedule, create the Cloud Scheduler job that submits it)."""
    config = submission.config
    dataproc = config.dataproc
    assert dataproc.deps_bucket and dataproc.region and dataproc.project  # checked by resolve_config
    building_cache = submission.index_cache_uri is not None
    build = [python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", "dist", "."]
    if submission.schedule is not None:
        return _schedule_commands(submission, build)
    staged_files = [f"dist/{WHEEL_NAME}", *([] if building_cache else [str(submission.local_config)])]
    stage = ["gcloud", "storage", "cp", *staged_files, f"{submission.staging_uri}/"]
    submit = [
        "gcloud",
        "dataproc",
        "batches",
        "submit",
        "pyspark",
        INDEX_CACHE_JOB_FILE if building_cache else JOB_FILE,
        f"--project={dataproc.project}",
        f"--region={dataproc.region}",
        f"--batch={submission.batch_id}",
        f"--version={dataproc.runtime_version}",
        f"--container-image={dataproc.container_image}",
        f"--deps-bucket={dataproc.deps_bucket}",
        f"--py-files={submission.staged_wheel}",
        *([] if building_cache else [f"--files={submission.staged_config}"]),
        f"--service-account={dataproc.service_account}",
    ]
    if dataproc.subnet:
        submit.append(f"--subnet={dataproc.subnet}")
    if dataproc.history_server_cluster:
        submit.append(f"--history-server-cluster={dataproc.history_server_cluster}")
    submit += [
        f"--properties={_joined(dataproc.spark_properties())}",
        f"--labels={_joined(batch_labels(config, 'index-cache' if building_cache else 'evi'))}",
        f"--ttl={dataproc.ttl}",
    ]
    if submission.run_async:
        submit.append("--async")
    if building_cache:
        submit += ["--", "--source", config.catalog.index_uri, "--out", str(submission.index_cache_uri)]
    else:
        submit += ["--", "--config", submission.staged_config]
        if submission.overwrite:
            submit.append("--overwrite")
    return [build, stage, submit]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/submit.sh",
        description="Submit the Sentinel-2 EVI job to Dataproc Serverless (runtime 2.3, custom container).",
        epilog="Every flag overrides the config file; anything else can be set with --set KEY=VALUE. "
        "Credentials: gcloud's own login; the batch runs as --service-account.",
    )
    parser.add_argument("--config", default="conf/dataproc.yaml", help="job config (default: %(default)s)")
    flags = parser.add_argument_group("settings (override the config file)")
    for key, flag, what in REQUIRED_SETTINGS:
        flags.add_argument(flag, dest=key, metavar="VALUE", help=f"{what} [{key}]")
    flags.add_argument(
        "--subnet", dest="dataproc.subnet", metavar="VALUE", help="VPC subnetwork [dataproc.subnet]"
    )
    flags.add_argument(
        "--max-executors", dest="dataproc.max_executors", metavar="N", help="bound on executors (and cost)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override any setting"
    )
    parser.add_argument("--batch", help="batch id (default: <batch_prefix>-<UTC time>-<random>)")
    parser.add_argument("--overwrite", action="store_true", help="reprocess groups that are already done")
    parser.add_argument(
        "--index-cache",
        metavar="GS_URI",
        help="instead of the EVI job, convert catalog.index_uri once into this Parquet cache "
        "(gs://BUCKET/.../index-DATE.parquet); then use it as catalog.index_uri",
    )
    scheduling = parser.add_argument_group("following the archive (Cloud Scheduler)")
    scheduling.add_argument(
        "--schedule",
        metavar="CRON",
        help="instead of submitting now, create a Cloud Scheduler job that submits the batch on this "
        "cron schedule, e.g. '0 6 * * *' (use relative dates such as catalog.start_date=-45d)",
    )
    scheduling.add_argument(
        "--schedule-name", metavar="NAME", help="the scheduler job's name (default: <batch_prefix>-schedule)"
    )
    scheduling.add_argument("--time-zone", default="UTC", help="time zone of the schedule (default: UTC)")
    scheduling.add_argument(
        "--scheduler-service-account",
        metavar="EMAIL",
        help="who the scheduler calls the Dataproc API as (default: the batch's service account)",
    )
    scheduling.add_argument(
        "--update-schedule", action="store_true", help="replace the scheduler job of that name"
    )
    parser.add_argument("--async", dest="run_async", action="store_true", help="return once submitted")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument(
        "--plan",
        action="store_true",
        help="first print what the run would process and its estimated cost (reads the index and the "
        "output root here, with local Spark and Application Default Credentials)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/submit.sh``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.index_cache and args.overwrite:
        parser.error("--overwrite is for the EVI job; an index cache batch always replaces its output")
    if args.schedule and (args.index_cache or args.batch or args.run_async):
        parser.error(
            "--schedule: the scheduler submits the EVI job itself (no --index-cache, --batch or --async)"
        )
    if args.schedule is not None and not CRON.match(args.schedule.strip()):
        parser.error(f"--schedule {args.schedule!r}: give five cron fields, e.g. '0 6 * * *' (06:00 daily)")
    if (args.schedule_name or args.update_schedule or args.scheduler_service_account) and not args.schedule:
        parser.error("--schedule-name, --scheduler-service-account and --update-schedule need --schedule")
    # `is not None`: an explicitly empty flag (an unset shell variable in quotes) must be reported as
    # missing, not fall back silently to the config file's value.
    overrides = [
        f"{key}={value}" for key, _, _ in REQUIRED_SETTINGS if (value := getattr(args, key)) is not None
    ]
    for key in ("dataproc.subnet", "dataproc.max_executors"):
        if getattr(args, key):
            overrides.append(f"{key}={getattr(args, key)}")
    try:
        config = resolve_config(args.config, [*overrides, *args.set], args.index_cache)
    except ConfigError as exc:
        print(f"submit: {exc}", file=sys.stderr)
        return 2
    schedule = None
    if args.schedule:
        name = args.schedule_name or f"{config.dataproc.batch_prefix}-schedule"
        if not SCHEDULE_NAME.fullmatch(name):
            print(f"submit: --schedule-name {name!r}: use letters, digits, '-' and '_'", file=sys.stderr)
            return 2
        schedule = Schedule(
            name, args.schedule.strip(), args.time_zone, args.scheduler_service_account, args.update_schedule
        )
    batch_id = args.batch or new_batch_id(config.dataproc.batch_prefix)
    if not BATCH_ID.fullmatch(batch_id):
        print(
            f"submit: --batch {batch_id!r}: use 4-63 lowercase letters, digits and '-', starting with a "
            "letter and ending with a letter or digit",
            file=sys.stderr,
        )
        return 2
    assert config.dataproc.deps_bucket  # checked by resolve_config
    relative = relative_dates(args.config, [*overrides, *args.set])
    folder = f"schedules/{schedule.name}" if schedule else batch_id
    submission = Submission(
        batch_id=batch_id,
        config=config,
        staging_uri=f"{config.dataproc.deps_bucket.rstrip('/')}/{STAGING_FOLDER}/{folder}",
        local_config=write_resolved_config(
            config,
            REPO_ROOT
            / "dist"
            / ("schedules" if schedule else "batches")
            / folder.split("/")[-1]
            / "config.yaml",
            relative,
        ).relative_to(REPO_ROOT),
        overwrite=args.overwrite,
        run_async=args.run_async,
        index_cache_uri=args.index_cache,
        relative_dates=relative,
        schedule=schedule,
    )
    steps = commands(submission)
    if args.plan and not args.index_cache:
        planned = subprocess.run(
            [
                sys.executable,
                "-m",
                "evi_udf.cli.plan",
                "--config",
                str(submission.local_config),
                "--master",
                "local[*]",
            ]
            + (["--overwrite"] if args.overwrite else []),
            cwd=REPO_ROOT,
            check=False,
        )
        if planned.returncode != 0:
            print("submit: the plan failed; nothing was submitted", file=sys.stderr)
            return planned.returncode
    if args.dry_run:
        what = f"schedule {schedule.name}" if schedule else f"batch {submission.batch_id}"
        print(f"# {what}: resolved config written to {submission.local_config}")
        if not args.index_cache:
            print(f"# {rate(config.dataproc)}")
        for step in steps:
            print(shlex.join(step))
        return 0
    if shutil.which("gcloud") is None:
        print(
            "submit: gcloud not found; install the Google Cloud CLI (https://cloud.google.com/sdk)",
            file=sys.stderr,
        )
        return 2
    for step in steps:
        print("+ " + shlex.join(step), flush=True)
        completed = subprocess.run(step, cwd=REPO_ROOT, check=False)
        if completed.returncode != 0:
            print(
                f"submit: {step[0]} {step[1]} failed with exit status {completed.returncode}", file=sys.stderr
            )
            return completed.returncode
    region = config.dataproc.region
    if schedule:
        print(f"scheduled: gcloud scheduler jobs describe {schedule.name} --location={region}")
        print(f"run it now: gcloud scheduler jobs run {schedule.name} --location={region}")
        return 0
    print(f"watch: gcloud dataproc batches describe {submission.batch_id} --region={region}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
