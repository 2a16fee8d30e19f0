#!/usr/bin/env bash
# Submit the EVI job to Dataproc Serverless.
# Not yet implemented: the delivery issue (wheel, container image, Dataproc config) builds it.
set -euo pipefail
echo "scripts/submit.sh: Dataproc submission is not implemented yet (see the delivery issue)." >&2
echo "Run locally with: make run" >&2
exit 2
