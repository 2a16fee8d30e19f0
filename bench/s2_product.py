"""What the baseline scripts need from an L2A product folder, in the standard library only.

Shared by ``naive_evi.py`` and ``gdal_cli.py`` (the latter runs under Debian's own Python, without the
project's virtual environment): band files found by name, as a user finds them, and the radiometric
offset and quantification from ``MTD_MSIL2A.xml``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

# ESA's band_id of each band in the offset lists of the product metadata.
BAND_IDS = {"B02": 1, "B04": 3, "B08": 7}
CLEAR_SCL = (4, 5, 6)  # vegetation, not vegetated, water: the pipeline's default clear classes


def band_files(safe: Path) -> dict[str, Path]:
    """The 10 m B02, B04, B08 and the 20 m SCL JPEG2000 files of an L2A product folder."""
    files = {band: next(safe.glob(f"GRANULE/*/IMG_DATA/R10m/*_{band}_10m.jp2")) for band in BAND_IDS}
    files["SCL"] = next(safe.glob("GRANULE/*/IMG_DATA/R20m/*_SCL_20m.jp2"))
    return files


def radiometry(safe: Path) -> tuple[dict[str, float], float]:
    """(offset per band, quantification) from ``MTD_MSIL2A.xml``; the offset is 0 when not listed
    (products before baseline 04.00)."""
    root = ET.parse(safe / "MTD_MSIL2A.xml").getroot()
    by_id = {int(e.get("band_id", -1)): float(e.text or 0) for e in root.iter("BOA_ADD_OFFSET")}
    quantification = float(next(root.iter("BOA_QUANTIFICATION_VALUE")).text or 10000)
    return {band: by_id.get(band_id, 0.0) for band, band_id in BAND_IDS.items()}, quantification
