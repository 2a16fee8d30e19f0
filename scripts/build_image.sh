#!/usr/bin/env bash
# Build the custom container image of the EVI job and push it to Artifact Registry.
#
#   scripts/build_image.sh --project P --region R [--repository evi] [--image evi-udf] \
#       [--builder cloud-build|docker] [--dry-run]
#
# The tag is <package version>-<first 12 hex of sha256(constraints.txt + docker/Dockerfile)>: a new
# lock file or Dockerfile gives a new tag, the same inputs the same tag. The image URI is printed
# last; pass it to scripts/submit.sh --image.
# cloud-build (default) needs no local Docker: `gcloud builds submit` builds in the project.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }

project="" region="" repository="evi" image="evi-udf" builder="cloud-build" dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --project) project=${2:?--project needs a value}; shift 2 ;;
    --region) region=${2:?--region needs a value}; shift 2 ;;
    --repository) repository=${2:?--repository needs a value}; shift 2 ;;
    --image) image=${2:?--image needs a value}; shift 2 ;;
    --builder) builder=${2:?--builder needs a value}; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build_image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
missing=()
[ -n "$project" ] || missing+=("--project (the Google Cloud project of the Artifact Registry repository)")
[ -n "$region" ] || missing+=("--region (the repository's region, e.g. europe-west4; use the batch's region)")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'build_image.sh: missing %s\n' "${missing[@]}" >&2
  exit 2
fi
case "$builder" in cloud-build|docker) ;; *) echo "build_image.sh: --builder is cloud-build or docker" >&2; exit 2 ;; esac

PYTHON=${EVI_PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || scripts/bootstrap.sh >&2
version=$("$PYTHON" -c 'import re,pathlib; print(re.search(r"__version__ = \"([^\"]+)\"", pathlib.Path("lib/evi_udf/__init__.py").read_text()).group(1))')
lock_hash=$(cat constraints.txt docker/Dockerfile | sha256sum | cut -c1-12)
tag="${version}-${lock_hash}"
uri="${region}-docker.pkg.dev/${project}/${repository}/${image}:${tag}"
context="dist/image-context"

run() {
  printf '%q ' "$@"; echo
  if [ "$dry_run" -eq 0 ]; then "$@"; fi
}

# The build context holds only what the Dockerfile copies: the wheel, the lock file, the Dockerfile.
run rm -rf "$context"
run mkdir -p "$context"
run "$PYTHON" -m pip wheel --no-deps --no-build-isolation --wheel-dir "$context" .
run cp constraints.txt docker/Dockerfile "$context/"
if [ "$builder" = cloud-build ]; then
  run gcloud builds submit "$context" --project="$project" --region="$region" --tag="$uri"
else
  # Dataproc runs x86_64 machines and the image names an x86_64 library path (jemalloc): build for
  # linux/amd64 whatever this machine is (an arm64 laptop builds it through emulation).
  run docker build --platform linux/amd64 --tag "$uri" "$context"
  run docker push "$uri"
fi
echo "$uri"
