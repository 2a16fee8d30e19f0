"""Digital numbers to reflectance, and the clear-sky masks. Imports numpy only.

Sentinel-2 stores reflectance as ``DN = reflectance * quantification - offset``: the offset is 0
before processing baseline 04.00 and -1000 from it (read from each product's metadata, never guessed
from a date). DN 0 means no data and DN 65535 saturation; both become NaN here so that every later
step treats them as invalid without a separate mask.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

NODATA_DN = 0
SATURATED_DN = 65535

# Scene Classification (L2A SCL) codes.
SCL_NO_DATA = 0
SCL_SATURATED_OR_DEFECTIVE = 1
SCL_DARK_AREA_PIXELS = 2
SCL_CLOUD_SHADOWS = 3
SCL_VEGETATION = 4
SCL_NOT_VEGETATED = 5
SCL_WATER = 6
SCL_UNCLASSIFIED = 7
SCL_CLOUD_MEDIUM_PROBABILITY = 8
SCL_CLOUD_HIGH_PROBABILITY = 9
SCL_THIN_CIRRUS = 10
SCL_SNOW = 11

# The usual clear-sky choice: vegetation, bare ground and water (sentinel2.md).
DEFAULT_SCL_CLEAR_CLASSES: tuple[int, ...] = (SCL_VEGETATION, SCL_NOT_VEGETATED, SCL_WATER)


def dn_to_reflectance(dn: np.ndarray, offset: float, quantification: float) -> np.ndarray:
    """Convert digital numbers to reflectance: ``(DN + offset) / quantification``, as float32.

    Parameters
    ----------
    dn
        uint16 digital numbers of one band.
    offset
        The band's additive offset from the product metadata (``BOA_ADD_OFFSET`` or
        ``RADIO_ADD_OFFSET``): -1000 from baseline 04.00, 0 before.
    quantification
        ``BOA_QUANTIFICATION_VALUE`` / ``QUANTIFICATION_VALUE`` (10000).

    Returns
    -------
    numpy.ndarray
        float32 reflectance with NaN where the DN is 0 (no data) or 65535 (saturated).
    """
    if quantification <= 0:
        raise ValueError(f"quantification value must be positive, got {quantification}")
    reflectance = (dn.astype(np.float32) + np.float32(offset)) / np.float32(quantification)
    reflectance[(dn == NODATA_DN) | (dn == SATURATED_DN)] = np.nan
    return reflectance


def scl_clear_mask(scl: np.ndarray, clear_classes: Iterable[int] = DEFAULT_SCL_CLEAR_CLASSES) -> np.ndarray:
    """True where the Scene Classification says the pixel is clear (one of ``clear_classes``)."""
    return np.isin(scl, np.fromiter(clear_classes, dtype=scl.dtype))


def classi_clear_mask(classi: np.ndarray, mask_snow: bool = True) -> np.ndarray:
    """True where the L1C ``MSK_CLASSI_B00`` raster (bands: opaque clouds, cirrus, snow) flags nothing.

    ``classi`` has shape (3, rows, cols) with nonzero meaning flagged.
    """
    if classi.ndim != 3 or classi.shape[0] < 2:
        raise ValueError(f"MSK_CLASSI must have bands (opaque, cirrus[, snow]), got shape {classi.shape}")
    flagged = (classi[0] != 0) | (classi[1] != 0)
    if mask_snow and classi.shape[0] > 2:
        flagged |= classi[2] != 0
    return ~flagged
