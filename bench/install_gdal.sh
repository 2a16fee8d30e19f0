#!/usr/bin/env bash
# Install Debian's GDAL command-line tools (gdal-bin) and Python bindings (python3-gdal, which gives
# gdal_calc.py) for the GDAL CLI comparison of bench/speed.py, when they are missing.
# Needs root (apt-get); does nothing when the tools are already there.
set -euo pipefail

missing=()
command -v gdalbuildvrt >/dev/null 2>&1 || missing+=(gdal-bin)
command -v gdal_calc.py >/dev/null 2>&1 || missing+=(python3-gdal)
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "error: ${missing[*]} missing and not root; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "installing ${missing[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
gdalinfo --version
