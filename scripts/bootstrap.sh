#!/usr/bin/env bash
# Prepare a fresh machine for `make run` / `make test`: Java 17 for Spark (apt, only if `java` is
# missing), then .venv with the package and its pinned dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PYTHON=${PYTHON:-python3}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "bootstrap: need root (or sudo) to run: $*" >&2; exit 1; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v java >/dev/null 2>&1; then
  echo "bootstrap: java not found; installing OpenJDK 17 (Spark 3.5 runs on Java 8/11/17)"
  apt_install openjdk-17-jre-headless
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "bootstrap: $PYTHON not found; installing python3"
  apt_install python3 python3-venv
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "bootstrap: $("$PYTHON" --version) is too old; Python >= 3.10 is required (set PYTHON=...)" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    echo "bootstrap: python venv module missing; installing python3-venv"
    apt_install python3-venv
    "$PYTHON" -m venv "$VENV"
  fi
fi

# Reinstall only when the requirements changed: the stamp records what was installed.
stamp="$VENV/.installed"
wanted=$(cat setup.py constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "bootstrap: installing evi_udf and its dependencies into $VENV (pinned by constraints.txt)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[dev]"
  echo "$wanted" > "$stamp"
fi

# The BigQuery emulator lives in its own venv: its pins (grpcio-tools, DuckDB 1.5.5) clash with the
# project's. DuckDB would download the spatial extension at start-up, which this network forbids, so
# the copy shipped on PyPI is placed where DuckDB looks for it (HOME is set to this folder when the
# tests start the emulator).
EMULATORS=.venv-emulators
emulator_stamp="$EMULATORS/.installed"
emulator_wanted=$(sha256sum constraints-emulators.txt | cut -d' ' -f1)
if [ ! -f "$emulator_stamp" ] || [ "$(cat "$emulator_stamp")" != "$emulator_wanted" ]; then
  echo "bootstrap: installing the BigQuery emulator into $EMULATORS"
  rm -rf "$EMULATORS"
  "$PYTHON" -m venv "$EMULATORS"
  "$EMULATORS/bin/python" -m pip install -q --upgrade pip
  "$EMULATORS/bin/python" -m pip install -q -r constraints-emulators.txt
  extension=$(find "$EMULATORS" -name spatial.duckdb_extension | head -n 1)
  home="$EMULATORS/duckdb-home/.duckdb/extensions/v1.5.5/linux_amd64"
  mkdir -p "$home"
  cp "$extension" "$home/"
  echo "$emulator_wanted" > "$emulator_stamp"
fi
