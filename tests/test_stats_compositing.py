"""Statistics against numpy on the whole array, and each compositor on small hand-made stacks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from evi_udf.pixels.compositing import COMPOSITORS, get_compositor
from evi_udf.pixels.stats import EviAccumulator

NAN = np.nan


@pytest.fixture
def evi_field() -> np.ndarray:
    rng = np.random.default_rng(42)
    values = np.clip(rng.normal(0.35, 0.25, (300, 400)), -1, 1).astype(np.float32)
    values[rng.random(values.shape) < 0.2] = np.nan
    return values


def accumulate_in_blocks(values: np.ndarray) -> EviAccumulator:
    # Two accumulators over different blocks, merged: the way scenes and tiles combine.
    left, right = EviAccumulator(), EviAccumulator()
    for rows in (slice(0, 128), slice(128, 300)):
        left.add(values[rows, :250], masked=3, nodata=2, invalid=1)
        right.add(values[rows, 250:])
    left.merge(right)
    return left


def test_statistics_merged_over_blocks_equal_numpy_on_the_full_array(evi_field: np.ndarray) -> None:
    summary = accumulate_in_blocks(evi_field).summary()
    valid = evi_field[np.isfinite(evi_field)].astype(np.float64)
    assert summary.total_pixels == evi_field.size
    assert summary.valid_pixels == valid.size
    assert (summary.masked_pixels, summary.nodata_pixels, summary.invalid_pixels) == (6, 4, 2)
    assert summary.mean == pytest.approx(valid.mean(), abs=1e-12)
    assert summary.std == pytest.approx(valid.std(), abs=1e-12)
    assert summary.min == valid.min()
    assert summary.max == valid.max()
    quantized = np.rint(valid * 10000) / 10000
    for name, q in (("p05", 0.05), ("p25", 0.25), ("p50", 0.5), ("p75", 0.75), ("p95", 0.95)):
        # Exact on the int16 quantization, and within half a step of the float quantile.
        assert summary.quantiles[name] == np.quantile(quantized, q, method="inverted_cdf")
        assert abs(summary.quantiles[name] - np.quantile(valid, q, method="inverted_cdf")) <= 0.5e-4 + 1e-9
    counts, edges = np.histogram(quantized, bins=20, range=(-1.0, 1.0))
    assert summary.histogram_counts == tuple(int(c) for c in counts)
    np.testing.assert_allclose(summary.histogram_edges, edges)


def test_empty_accumulator_reports_nan_statistics() -> None:
    accumulator = EviAccumulator()
    accumulator.add(np.full((4, 4), np.nan, dtype=np.float32), masked=16)
    summary = accumulator.summary()
    assert summary.valid_pixels == 0 and summary.masked_pixels == 16 and summary.total_pixels == 16
    assert math.isnan(summary.mean) and math.isnan(summary.quantiles["p50"])
    assert sum(summary.histogram_counts) == 0


def test_values_outside_the_range_are_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        EviAccumulator().add(np.array([0.5, 1.5], dtype=np.float32))


def test_merging_different_ranges_is_refused() -> None:
    with pytest.raises(ValueError, match="different ranges"):
        EviAccumulator().merge(EviAccumulator(-2.0, 2.0))


SCENES = [
    np.array([0.2, NAN, 0.5, NAN], dtype=np.float32),
    np.array([0.4, 0.3, NAN, NAN], dtype=np.float32),
    np.array([0.9, 0.1, 0.6, NAN], dtype=np.float32),
]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("first_by_date", [0.2, 0.3, 0.5, NAN]),
        ("first_by_least_cloud", [0.2, 0.3, 0.5, NAN]),
        ("mean", [0.5, 0.2, 0.55, NAN]),
        ("median", [0.4, 0.2, 0.55, NAN]),
        ("max_evi", [0.9, 0.3, 0.6, NAN]),
    ],
)
def test_compositors_on_a_small_stack(name: str, expected: list[float]) -> None:
    compositor = get_compositor(name).factory((4,))
    for scene in SCENES:
        compositor.add(scene)
    value, count = compositor.finish()
    assert value.dtype == np.float32
    np.testing.assert_allclose(value, expected, atol=1e-7)
    assert count.tolist() == [3, 2, 2, 0]


def test_first_by_least_cloud_is_fed_in_cloud_order() -> None:
    assert get_compositor("first_by_least_cloud").scene_order == "cloud"
    assert get_compositor("first_by_date").scene_order == "date"


def test_median_with_even_count_averages_the_middle_two() -> None:
    compositor = get_compositor("median").factory((1,))
    for value in (0.1, 0.7, 0.3, 0.5):
        compositor.add(np.array([value], dtype=np.float32))
    assert compositor.finish()[0][0] == pytest.approx(0.4)


def test_unknown_compositor_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown compositor 'mode'; choose one of " + ", ".join(COMPOSITORS)):
        get_compositor("mode")


def test_median_equals_numpy_nanmedian_on_random_stacks() -> None:
    rng = np.random.default_rng(7)
    for layers in (1, 2, 3, 6, 11):
        stack = rng.uniform(-0.2, 0.9, size=(layers, 64, 48)).astype(np.float32)
        stack[rng.random(stack.shape) < 0.35] = np.nan
        compositor = get_compositor("median").factory((64, 48))
        for layer in stack:
            compositor.add(layer)
        value, count = compositor.finish()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
            expected = np.nanmedian(stack.astype(np.float64), axis=0)
        np.testing.assert_array_equal(count, np.isfinite(stack).sum(axis=0))
        np.testing.assert_array_equal(np.isnan(value), np.isnan(expected))
        np.testing.assert_allclose(value, expected, rtol=0, atol=1e-7, equal_nan=True)
