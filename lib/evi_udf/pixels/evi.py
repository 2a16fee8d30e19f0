"""The Enhanced Vegetation Index and its validity rules. Imports numpy only.

EVI = G * (NIR - RED) / (NIR + C1 * RED - C2 * BLUE + L) with the MODIS constants G = 2.5, C1 = 6,
C2 = 7.5, L = 1 (Huete et al. 2002), on reflectance. The denominator can come close to zero over
water, snow or bad pixels, where EVI explodes: such pixels, non-finite results and values outside the
valid range are invalid (NaN) and counted.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# float32 constants: a Python float would promote the whole computation to float64 (3x slower).
G = np.float32(2.5)
C1 = np.float32(6.0)
C2 = np.float32(7.5)
L = np.float32(1.0)


@dataclasses.dataclass(frozen=True)
class EviRules:
    """When an EVI value is valid: inside ``valid_range`` and with ``|denominator| >= min_denominator``."""

    valid_min: float = -1.0
    valid_max: float = 1.0
    min_denominator: float = 1e-3


@dataclasses.dataclass(frozen=True)
class EviResult:
    """EVI (float32, NaN where invalid) and why pixels were rejected.

    ``invalid_input`` counts pixels where an input reflectance was NaN (no data, saturated, masked);
    ``small_denominator`` and ``out_of_range`` count pixels whose inputs were valid but whose EVI was
    rejected for that reason.
    """

    values: np.ndarray
    invalid_input: int
    small_denominator: int
    out_of_range: int


def compute_evi(
    blue: np.ndarray, red: np.ndarray, nir: np.ndarray, rules: EviRules = EviRules()
) -> EviResult:
    """EVI from blue (B02), red (B04) and NIR (B08) reflectance arrays of the same shape."""
    blue, red, nir = (np.asarray(band, dtype=np.float32) for band in (blue, red, nir))
    inputs_valid = np.isfinite(blue) & np.isfinite(red) & np.isfinite(nir)
    denominator = nir + C1 * red - C2 * blue + L
    small = inputs_valid & (np.abs(denominator) < np.float32(rules.min_denominator))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        values = G * (nir - red) / denominator
    computed = inputs_valid & ~small
    out_of_range = computed & ~(
        np.isfinite(values)
        & (values >= np.float32(rules.valid_min))
        & (values <= np.float32(rules.valid_max))
    )
    values = np.where(computed & ~out_of_range, values, np.float32(np.nan)).astype(np.float32, copy=False)
    return EviResult(
        values=values,
        invalid_input=int((~inputs_valid).sum()),
        small_denominator=int(small.sum()),
        out_of_range=int(out_of_range.sum()),
    )
