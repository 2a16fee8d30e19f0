"""Mergeable EVI statistics, accumulated block by block. Imports numpy only.

An :class:`EviAccumulator` takes EVI blocks (float32, NaN = invalid) and pixel counts, and two
accumulators merge exactly (per-scene statistics summed over blocks, composites over tiles), so no
step ever needs a whole tile in memory.

How exact the numbers are:

* count, min, max: exact.
* mean and standard deviation (population, ddof=0): float64 with Chan et al.'s parallel update, exact
  to rounding whatever the block order.
* quantiles (p05, p25, p50, p75, p95): exact for the EVI quantized to 1e-4, the resolution of the
  int16 rasters (EVI * 10000) the pipeline writes. Each quantile is the smallest quantized value whose
  cumulative count reaches ``q * n`` (numpy's ``inverted_cdf`` method), so it differs from the
  quantile of the unquantized float values by at most 0.5e-4.
* histogram: fixed bins over the valid EVI range, counted from the same quantized values.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

QUANTIZATION = 10_000  # EVI units per step: the scale of the int16 rasters
QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.50, 0.75, 0.95)


@dataclasses.dataclass(frozen=True)
class EviSummary:
    """Final statistics of one accumulator (EVI values are NaN when no pixel was valid)."""

    total_pixels: int
    valid_pixels: int
    masked_pixels: int
    nodata_pixels: int
    invalid_pixels: int
    mean: float
    std: float
    min: float
    max: float
    quantiles: dict[str, float]
    histogram_edges: tuple[float, ...]
    histogram_counts: tuple[int, ...]


class EviAccumulator:
    """Accumulates EVI statistics over blocks; mergeable with another accumulator of the same range.

    Parameters
    ----------
    valid_min, valid_max
        The EVI range the values can take (the EVI validity rules); values outside are an error.
    histogram_bins
        Number of equal bins of the reported histogram over ``[valid_min, valid_max]``.
    """

    def __init__(self, valid_min: float = -1.0, valid_max: float = 1.0, histogram_bins: int = 20) -> None:
        if not valid_min < valid_max:
            raise ValueError(f"valid_min {valid_min} must be below valid_max {valid_max}")
        self.valid_min, self.valid_max, self.histogram_bins = valid_min, valid_max, histogram_bins
        self._offset = round(valid_min * QUANTIZATION)
        self._counts = np.zeros(round(valid_max * QUANTIZATION) - self._offset + 1, dtype=np.int64)
        self.total_pixels = self.masked_pixels = self.nodata_pixels = self.invalid_pixels = 0
        self._n = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._min = math.inf
        self._max = -math.inf

    @property
    def valid_pixels(self) -> int:
        return self._n

    def add(self, values: np.ndarray, *, masked: int = 0, nodata: int = 0, invalid: int = 0) -> None:
        """Add a block of EVI values (NaN where not valid) and how many pixels were lost to what.

        ``total_pixels`` grows by ``values.size``; ``masked`` (cloud, shadow...), ``nodata`` (outside
        the swath, saturated) and ``invalid`` (EVI rejected) are counts of the block's NaN pixels.
        """
        finite = values[np.isfinite(values)].astype(np.float64)
        self.total_pixels += int(values.size)
        self.masked_pixels += masked
        self.nodata_pixels += nodata
        self.invalid_pixels += invalid
        if finite.size == 0:
            return
        low, high = float(finite.min()), float(finite.max())
        if low < self.valid_min or high > self.valid_max:
            raise ValueError(f"EVI values [{low}, {high}] fall outside [{self.valid_min}, {self.valid_max}]")
        steps = np.rint(finite * QUANTIZATION).astype(np.int64) - self._offset
        self._counts += np.bincount(steps, minlength=self._counts.size)
        block_mean = float(finite.mean())
        block_m2 = float(((finite - block_mean) ** 2).sum())
        self._combine(finite.size, block_mean, block_m2, low, high)

    def _combine(self, n: int, mean: float, m2: float, low: float, high: float) -> None:
        total = self._n + n
        delta = mean - self._mean
        self._mean += delta * n / total
        self._m2 += m2 + delta * delta * self._n * n / total
        self._n = total
        self._min = min(self._min, low)
        self._max = max(self._max, high)

    def merge(self, other: EviAccumulator) -> None:
        """Fold ``other`` into this accumulator (same range required)."""
        if (other.valid_min, other.valid_max) != (self.valid_min, self.valid_max):
            raise ValueError("cannot merge EVI statistics accumulated over different ranges")
        self.total_pixels += other.total_pixels
        self.masked_pixels += other.masked_pixels
        self.nodata_pixels += other.nodata_pixels
        self.invalid_pixels += other.invalid_pixels
        self._counts += other._counts
        if other._n:
            self._combine(other._n, other._mean, other._m2, other._min, other._max)

    def quantile(self, q: float) -> float:
        """The ``inverted_cdf`` quantile of the quantized values; NaN with no valid pixel."""
        if self._n == 0:
            return math.nan
        rank = max(1, math.ceil(q * self._n))
        step = int(np.searchsorted(np.cumsum(self._counts), rank))
        return (step + self._offset) / QUANTIZATION

    def summary(self) -> EviSummary:
        """The statistics so far."""
        edges = np.linspace(self.valid_min, self.valid_max, self.histogram_bins + 1)
        values = (np.arange(self._counts.size) + self._offset) / QUANTIZATION
        bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, self.histogram_bins - 1)
        histogram = np.bincount(bins, weights=self._counts, minlength=self.histogram_bins).astype(np.int64)
        empty = self._n == 0
        return EviSummary(
            total_pixels=self.total_pixels,
            valid_pixels=self._n,
            masked_pixels=self.masked_pixels,
            nodata_pixels=self.nodata_pixels,
            invalid_pixels=self.invalid_pixels,
            mean=math.nan if empty else self._mean,
            std=math.nan if empty else math.sqrt(self._m2 / self._n),
            min=math.nan if empty else self._min,
            max=math.nan if empty else self._max,
            quantiles={f"p{round(q * 100):02d}": self.quantile(q) for q in QUANTILES},
            histogram_edges=tuple(float(edge) for edge in edges),
            histogram_counts=tuple(int(count) for count in histogram),
        )
