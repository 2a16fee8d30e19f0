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


def observed_and_clear(
    mask_clear: np.ndarray, mask_data: np.ndarray, bands_valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Where a product has data, and where it has a clear valid observation, over one block.

    The cloud mask decides first: a pixel it has data for but does not keep is *masked* whatever
    the bands hold there, and a pixel it has no data for (SCL 0) is *no data*. Only where the mask
    keeps the pixel do the bands matter: all three must hold a valid DN for it to be clear, and if
    one does not the pixel is no data. So the bands are needed only where the mask keeps some pixel,
    and a block where it keeps none gives the same result without them (``bands_valid=None``).

    Parameters
    ----------
    mask_clear, mask_data
        Boolean arrays: the mask keeps the pixel as clear sky; the mask has data there.
    bands_valid
        True where B02, B04 and B08 all hold valid reflectance; ``None`` when they were not read.

    Returns
    -------
    (has_data, clear)
        Boolean arrays; ``has_data & ~clear`` is the masked part.
    """
    kept = mask_clear & mask_data
    if bands_valid is None:
        if kept.any():
            raise ValueError("the bands are needed where the mask keeps a pixel")
        return mask_data.copy(), np.zeros(mask_data.shape, dtype=bool)
    return mask_data & (~mask_clear | bands_valid), kept & bands_valid


def coarsen_mask(mask: np.ndarray, factor: int, rule: str) -> np.ndarray:
    """A boolean mask made ``factor`` times coarser: each output pixel is ``all`` or ``any`` of the
    ``factor`` x ``factor`` pixels under it. ``mask``'s sides must be multiples of ``factor``.

    ``all`` keeps a coarse pixel as clear only if every mask pixel under it is clear (a cloud edge or
    a no-data border never leaks into a value averaged over the coarse pixel); ``any`` says a coarse
    pixel has data if some pixel under it has.
    """
    rows, cols = mask.shape
    if rows % factor or cols % factor:
        raise ValueError(f"mask of shape {mask.shape} is not a whole number of {factor} x {factor} cells")
    cells = mask.reshape(rows // factor, factor, cols // factor, factor)
    if rule == "all":
        return cells.all(axis=(1, 3))
    if rule == "any":
        return cells.any(axis=(1, 3))
    raise ValueError(f"rule must be 'all' or 'any', got {rule!r}")
