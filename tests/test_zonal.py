"""Zone statistics (evi_udf.zones.statistics) against numpy on each zone's pixels, computed independently."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from evi_udf.zones.statistics import NO_ZONE, ZoneAccumulator, merge_parts, summarize

ZONES = 40


def scene(
    seed: int, shape: tuple[int, int] = (300, 260)
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels (some pixels in no zone), EVI with NaNs, has-data and clear layers."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(NO_ZONE, ZONES, shape)
    evi = rng.uniform(-0.3, 0.95, shape).astype(np.float32)
    has_data = rng.random(shape) > 0.1
    clear = has_data & (rng.random(shape) > 0.3)
    invalid = clear & (rng.random(shape) < 0.05)
    evi[~clear | invalid] = np.nan
    # Zone 7 is entirely outside the swath, zone 8 entirely cloudy: no valid pixel.
    has_data[labels == 7] = False
    clear[labels == 7] = False
    clear[labels == 8] = False
    evi[(labels == 7) | (labels == 8)] = np.nan
    return labels, evi, has_data, clear


def expected(labels: np.ndarray, evi: np.ndarray, has_data: np.ndarray, clear: np.ndarray, zone: int) -> dict:
    """One zone's statistics from its pixels, by numpy."""
    inside = labels == zone
    values = evi[inside & np.isfinite(evi)].astype(np.float64)
    quantized = np.rint(values * 10_000) / 10_000
    observed = int((inside & has_data).sum())
    result = {
        "pixels": int(inside.sum()),
        "valid": values.size,
        "nodata": int((inside & ~has_data).sum()),
        "masked": int((inside & has_data & ~clear).sum()),
        "masked_fraction": (inside & has_data & ~clear).sum() / observed if observed else np.nan,
    }
    if values.size:
        result.update(
            mean=values.mean(),
            std=values.std(),
            min=quantized.min(),
            max=quantized.max(),
            **{f"p{q}": np.quantile(quantized, q / 100, method="inverted_cdf") for q in (10, 50, 90)},
        )
    return result


def check(summary, labels, evi, has_data, clear, zones=range(ZONES)) -> None:
    assert list(summary.zone) == [z for z in zones if (labels == z).any()]
    for i, zone in enumerate(summary.zone):
        want = expected(labels, evi, has_data, clear, int(zone))
        assert summary.pixels[i] == want["pixels"]
        assert summary.valid[i] == want["valid"]
        assert summary.nodata[i] == want["nodata"]
        assert summary.masked[i] == want["masked"]
        np.testing.assert_allclose(summary.masked_fraction[i], want["masked_fraction"], rtol=1e-12)
        if want["valid"] == 0:
            assert np.isnan(summary.mean[i]) and np.isnan(summary.quantiles["p50"][i])
            continue
        assert summary.mean[i] == pytest.approx(want["mean"], abs=1e-9)
        assert summary.std[i] == pytest.approx(want["std"], abs=1e-9)
        assert summary.min[i] == pytest.approx(want["min"], abs=1e-12)
        assert summary.max[i] == pytest.approx(want["max"], abs=1e-12)
        for q in ("p10", "p50", "p90"):
            assert summary.quantiles[q][i] == pytest.approx(want[q], abs=1e-12), (zone, q)


def test_blocks_in_any_order_give_each_zones_statistics() -> None:
    labels, evi, has_data, clear = scene(1)
    accumulator = ZoneAccumulator()
    # Uneven blocks, walked bottom-up and right-to-left: the result must not depend on the order.
    rows, cols = [0, 100, 190, 300], [0, 128, 260]
    for r0, r1 in reversed(list(itertools.pairwise(rows))):
        for c0, c1 in reversed(list(itertools.pairwise(cols))):
            window = (slice(r0, r1), slice(c0, c1))
            accumulator.add(labels[window], evi[window], has_data=has_data[window], clear=clear[window])
    summary = summarize(accumulator.parts())
    check(summary, labels, evi, has_data, clear)
    # Zone 7 was never observed (no masked fraction), zone 8 was and is all cloud.
    index = {int(z): i for i, z in enumerate(summary.zone)}
    assert np.isnan(summary.masked_fraction[index[7]]) and summary.masked_fraction[index[8]] == 1.0


def test_two_tiles_owning_disjoint_pixels_merge_to_the_whole() -> None:
    """A zone split between two tiles (each labels only the pixels it owns) is counted once."""
    labels, evi, has_data, clear = scene(2)
    owned_by_first = np.random.default_rng(3).random(labels.shape) < 0.4
    tiles = []
    for owned in (owned_by_first, ~owned_by_first):
        accumulator = ZoneAccumulator()
        accumulator.add(np.where(owned, labels, NO_ZONE), evi, has_data=has_data, clear=clear)
        tiles.append(accumulator.parts())
    check(summarize(merge_parts(tiles)), labels, evi, has_data, clear)
    # Each tile alone is not the whole: the merge is what makes it right.
    alone = summarize(tiles[0])
    assert (alone.pixels < np.bincount(labels[labels >= 0].ravel(), minlength=ZONES)[alone.zone]).all()


def test_pop_finished_releases_zones_and_keeps_the_rest() -> None:
    labels, evi, has_data, clear = scene(4)
    accumulator = ZoneAccumulator()
    accumulator.add(labels, evi, has_data=has_data, clear=clear)
    finished = np.arange(0, ZONES, 2)
    popped = accumulator.pop_finished(finished)
    rest = accumulator.parts()
    assert list(popped.zone) == list(finished)
    assert list(rest.zone) == list(range(1, ZONES, 2))
    assert set(popped.hist_zone) <= set(finished) and set(rest.hist_zone) <= set(rest.zone)
    check(summarize(merge_parts([popped, rest])), labels, evi, has_data, clear)


def test_state_grows_with_zones_present_not_zones_defined() -> None:
    """100,000 zone numbers, a block touching 3 of them: the state holds 3 zones."""
    labels = np.full((64, 64), NO_ZONE)
    labels[:10, :10], labels[20:22, 5:9], labels[40, 40] = 99_999, 5, 50_000
    evi = np.full(labels.shape, 0.5, dtype=np.float32)
    accumulator = ZoneAccumulator()
    accumulator.add(labels, evi)
    parts = accumulator.parts()
    assert list(parts.zone) == [5, 50_000, 99_999]
    assert list(parts.pixels) == [8, 1, 100]
    assert list(parts.hist_count) == [8, 1, 100]  # one EVI value each: one histogram entry per zone
    summary = summarize(parts)
    assert list(summary.quantiles["p50"]) == [0.5, 0.5, 0.5]


def test_out_of_range_and_mismatched_shapes_are_errors() -> None:
    accumulator = ZoneAccumulator(-1.0, 1.0)
    with pytest.raises(ValueError, match="outside"):
        accumulator.add(np.zeros((2, 2), dtype=int), np.full((2, 2), 1.5, dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        accumulator.add(np.zeros((2, 2), dtype=int), np.zeros((2, 3), dtype=np.float32))


def test_quantile_ranks_on_exact_multiples() -> None:
    """q * n an integer (10 and 30 pixels): the rank-th smallest value, as numpy's inverted_cdf."""
    labels = np.repeat([0, 1], [10, 30])[None, :]
    evi = np.concatenate([np.arange(1, 11) / 100, np.arange(1, 31) / 100]).astype(np.float32)[None, :]
    accumulator = ZoneAccumulator()
    accumulator.add(labels, evi)
    summary = summarize(accumulator.parts())
    # Zone 0: p10 is the 1st of 10, p50 the 5th, p90 the 9th; zone 1: the 3rd, 15th and 27th of 30.
    assert summary.quantiles["p10"].tolist() == [0.01, 0.03]
    assert summary.quantiles["p50"].tolist() == [0.05, 0.15]
    assert summary.quantiles["p90"].tolist() == [0.09, 0.27]


def test_zones_without_any_valid_pixel_summarize_to_nan() -> None:
    """Every zone of the block under cloud: counts, and NaN statistics (no histogram at all)."""
    labels = np.array([[0, 0, 1], [1, 1, NO_ZONE]])
    evi = np.full(labels.shape, np.nan, dtype=np.float32)
    accumulator = ZoneAccumulator()
    accumulator.add(
        labels, evi, has_data=np.ones(labels.shape, dtype=bool), clear=np.zeros(labels.shape, dtype=bool)
    )
    summary = summarize(accumulator.parts())
    assert summary.pixels.tolist() == [2, 3] and summary.masked.tolist() == [2, 3]
    assert summary.valid.tolist() == [0, 0]
    assert np.isnan(summary.mean).all() and np.isnan(summary.quantiles["p50"]).all()
    assert summary.masked_fraction.tolist() == [1.0, 1.0]
