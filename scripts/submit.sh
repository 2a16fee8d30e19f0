#!/usr/bin/env bash
# Submit the Sentinel-2 EVI job to Dataproc Serverless (runtime 2.3, custom container image).
#
#   scripts/submit.sh --help
#   scripts/submit.sh --project P --region R --image IMAGE --service-account SA \
#       --deps-bucket gs://DEPS --output gs://BUCKET/evi [--dataset D] [--set key=value ...] [--dry-run]
#
# Builds the wheel, stages it with the resolved config under gs://DEPS/evi-udf/<batch id>/ and runs
# `gcloud dataproc batches submit pyspark spark_jobs/evi_job.py ... -- --config <staged config>`.
# --dry-run prints those commands (and the cost per hour and per scene) and runs none of them; --plan
# first prints what the run would process and its estimated cost. Settings come from conf/dataproc.yaml (or
# --config FILE) and the flags; the checks and the commands are in lib/evi_udf/deploy/submit.py.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${EVI_PYTHON:-.venv/bin/python}
if [ ! -x "$PYTHON" ]; then
  echo "submit.sh: $PYTHON not found; setting up .venv first (scripts/bootstrap.sh)" >&2
  scripts/bootstrap.sh >&2
fi
exec "$PYTHON" -m evi_udf.deploy.submit "$@"
