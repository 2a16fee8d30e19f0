"""Reflectance, masks and EVI on hand-worked pixels (no files, numpy only)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evi_udf.pixels.evi import EviRules, compute_evi
from evi_udf.pixels.radiometry import classi_clear_mask, dn_to_reflectance, observed_and_clear, scl_clear_mask


def test_reflectance_with_the_baseline_04_offset() -> None:
    dn = np.array([1500, 1000, 500, 11000], dtype=np.uint16)
    # (DN - 1000) / 10000 worked by hand; 500 is a legitimately negative reflectance (dark water).
    np.testing.assert_allclose(
        dn_to_reflectance(dn, -1000, 10000), [0.05, 0.0, -0.05, 1.0], rtol=0, atol=1e-7
    )


def test_reflectance_without_offset_before_baseline_04() -> None:
    dn = np.array([1500, 1, 10000], dtype=np.uint16)
    np.testing.assert_allclose(dn_to_reflectance(dn, 0, 10000), [0.15, 0.0001, 1.0], rtol=0, atol=1e-7)


def test_nodata_and_saturated_become_nan_and_result_is_float32() -> None:
    dn = np.array([[0, 65535], [1200, 0]], dtype=np.uint16)
    reflectance = dn_to_reflectance(dn, -1000, 10000)
    assert reflectance.dtype == np.float32
    assert np.isnan(reflectance[0, 0]) and np.isnan(reflectance[0, 1]) and np.isnan(reflectance[1, 1])
    assert reflectance[1, 0] == pytest.approx(0.02)


def test_quantification_must_be_positive() -> None:
    with pytest.raises(ValueError, match="quantification"):
        dn_to_reflectance(np.ones(2, dtype=np.uint16), 0, 0)


def test_scl_default_keeps_vegetation_soil_water_only() -> None:
    scl = np.arange(12, dtype=np.uint8)
    expected = [False, False, False, False, True, True, True, False, False, False, False, False]
    assert scl_clear_mask(scl).tolist() == expected
    # Configurable: also keep unclassified (7) and snow (11).
    assert np.flatnonzero(scl_clear_mask(scl, (4, 5, 6, 7, 11))).tolist() == [4, 5, 6, 7, 11]


def test_classi_mask_flags_opaque_cirrus_and_optionally_snow() -> None:
    classi = np.zeros((3, 1, 4), dtype=np.uint8)
    classi[0, 0, 1] = 1  # opaque
    classi[1, 0, 2] = 1  # cirrus
    classi[2, 0, 3] = 1  # snow
    assert classi_clear_mask(classi).tolist() == [[True, False, False, False]]
    assert classi_clear_mask(classi, mask_snow=False).tolist() == [[True, False, False, True]]


def test_the_mask_decides_masked_and_no_data_before_the_bands() -> None:
    # Pixels: clear + valid bands, clear + a band DN 0, cloud + valid bands, cloud + DN 0, SCL no data
    # + valid bands, SCL no data + DN 0.
    mask_clear = np.array([True, True, False, False, False, False])
    mask_data = np.array([True, True, True, True, False, False])
    bands_valid = np.array([True, False, True, False, True, False])
    has_data, clear = observed_and_clear(mask_clear, mask_data, bands_valid)
    np.testing.assert_array_equal(clear, [True, False, False, False, False, False])
    # Clear needs the bands; a cloud is masked whatever the bands hold; SCL's no data is no data.
    np.testing.assert_array_equal(has_data, [True, False, True, True, False, False])


def test_without_the_bands_a_block_the_mask_keeps_nothing_of_is_the_same() -> None:
    mask_clear = np.array([False, False, True])
    mask_data = np.array([True, True, False])
    for bands_valid in (np.array([True, False, True]), np.array([False, False, False])):
        with_bands = observed_and_clear(mask_clear, mask_data, bands_valid)
        without = observed_and_clear(mask_clear, mask_data, None)
        for a, b in zip(with_bands, without, strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="bands are needed"):
        observed_and_clear(np.array([True]), np.array([True]), None)


@pytest.mark.parametrize(
    ("blue", "red", "nir", "expected"),
    [
        # dense vegetation: 2.5 * 0.42 / (0.45 + 0.18 - 0.225 + 1) = 1.05 / 1.405
        (0.03, 0.03, 0.45, 1.05 / 1.405),
        # bare soil: 2.5 * 0.10 / (0.25 + 0.90 - 0.60 + 1) = 0.25 / 1.55
        (0.08, 0.15, 0.25, 0.25 / 1.55),
        # water: 2.5 * -0.02 / (0.02 + 0.24 - 0.45 + 1) = -0.05 / 0.81
        (0.06, 0.04, 0.02, -0.05 / 0.81),
    ],
)
def test_evi_on_hand_worked_pixels(blue: float, red: float, nir: float, expected: float) -> None:
    result = compute_evi(np.array([blue]), np.array([red]), np.array([nir]))
    assert result.values.dtype == np.float32
    assert float(result.values[0]) == pytest.approx(expected, abs=1e-6)
    assert (result.invalid_input, result.small_denominator, result.out_of_range) == (0, 0, 0)


def test_evi_invalid_pixels_are_nan_and_counted_by_reason() -> None:
    blue = np.array([np.nan, 0.2, 0.25, 0.03], dtype=np.float32)
    red = np.array([0.03, 0.0, 0.0, 0.03], dtype=np.float32)
    nir = np.array([0.45, 0.5, 0.9, np.nan], dtype=np.float32)
    # pixel 1: 0.5 + 0 - 1.5 + 1 = 0 -> denominator zero; pixel 2: 2.25 / 0.025 = 90 -> out of range.
    result = compute_evi(blue, red, nir)
    assert np.isnan(result.values).all()
    assert result.invalid_input == 2
    assert result.small_denominator == 1
    assert result.out_of_range == 1


def test_evi_valid_range_is_configurable() -> None:
    blue, red, nir = (np.array([v], dtype=np.float32) for v in (0.03, 0.03, 0.45))
    result = compute_evi(blue, red, nir, EviRules(valid_min=-1.0, valid_max=0.5))
    assert math.isnan(float(result.values[0]))
    assert result.out_of_range == 1


def test_a_coarsened_mask_is_all_or_any_of_the_pixels_under_it() -> None:
    from evi_udf.pixels.radiometry import coarsen_mask

    mask = np.array(
        [
            [1, 1, 0, 0, 1, 1],
            [1, 1, 0, 1, 1, 1],
            [0, 0, 0, 0, 1, 1],
            [0, 1, 0, 0, 1, 0],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(coarsen_mask(mask, 2, "all"), [[True, False, True], [False, False, False]])
    np.testing.assert_array_equal(coarsen_mask(mask, 2, "any"), [[True, True, True], [True, False, True]])
    with pytest.raises(ValueError, match="not a whole number of 4 x 4 cells"):
        coarsen_mask(mask, 4, "all")
    with pytest.raises(ValueError, match="rule must be"):
        coarsen_mask(mask, 2, "most")
