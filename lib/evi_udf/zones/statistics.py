"""EVI statistics per zone (a user's field, farm or district), accumulated block by block. Imports numpy only.

Zones are numbered ``0 .. n-1`` by the caller; a block of a tile comes with a label raster (the zone
number of each pixel, :data:`NO_ZONE` outside every zone, see :mod:`evi_udf.zones.pixels` for how zones are
rasterized and which tile owns a pixel) and the block's EVI with its mask layers. Everything is kept
sparse, per zone present and per distinct (zone, EVI step): memory grows with the zones and values
the blocks have shown, not with the number of zones defined, and a zone can be finished (its row
written, its state dropped) as soon as the block walk has passed its last row
(:meth:`ZoneAccumulator.pop_finished`).

Two accumulators, or the :class:`ZoneParts` of two tiles, merge exactly: counts and histograms add,
means and standard deviations combine with Chan et al.'s parallel update. So a zone seen by two tiles
(each counting only the pixels it owns) gets the statistics of all its pixels, counted once.

How exact the numbers are (as :mod:`evi_udf.pixels.stats`):

* counts: exact; mean and standard deviation (population): float64, exact to rounding;
* min, max and quantiles (p10, p50, p90): exact for the EVI quantized to 1e-4, the resolution of the
  int16 rasters the pipeline writes; a quantile is the smallest quantized value whose cumulative
  count reaches ``q * n`` (numpy's ``inverted_cdf`` method).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from evi_udf.pixels.stats import QUANTIZATION

#: The label of a pixel outside every zone (or owned by another tile).
NO_ZONE = -1
ZONE_QUANTILES: tuple[float, ...] = (0.10, 0.50, 0.90)
# Above this many pending histogram pairs, they are merged (sorted and summed) into the kept ones.
_COMPACT_PAIRS = 4_000_000


@dataclasses.dataclass(frozen=True)
class ZoneParts:
    """The mergeable state of some zones: one entry per zone present, sorted by zone number.

    ``pixels`` counts the zone's pixels (on the owning tile's grid), ``nodata`` those with no
    observation (outside the swath), ``masked`` those observed but cloudy (or shadow, snow...),
    ``invalid`` those clear but with an EVI the validity rules reject; ``count`` the valid EVI values,
    with their ``total`` and ``m2`` (sum of squared deviations from their mean). The histogram holds
    one entry per distinct (zone, EVI step) with its count, ``hist_zone`` sorted, then ``hist_step``.
    """

    zone: np.ndarray
    pixels: np.ndarray
    nodata: np.ndarray
    masked: np.ndarray
    invalid: np.ndarray
    count: np.ndarray
    total: np.ndarray
    m2: np.ndarray
    hist_zone: np.ndarray
    hist_step: np.ndarray
    hist_count: np.ndarray

    @classmethod
    def empty(cls) -> ZoneParts:
        """No zone."""
        ints, floats = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        return cls(ints, ints, ints, ints, ints, ints, floats, floats, ints, ints, ints)

    def select(self, keep: np.ndarray) -> ZoneParts:
        """The zones whose entry in ``keep`` (one bool per zone present) is true."""
        in_hist = np.isin(self.hist_zone, self.zone[keep])
        return ZoneParts(
            *(getattr(self, name)[keep] for name in _ZONE_FIELDS),
            self.hist_zone[in_hist],
            self.hist_step[in_hist],
            self.hist_count[in_hist],
        )


_ZONE_FIELDS = ("zone", "pixels", "nodata", "masked", "invalid", "count", "total", "m2")


def merge_parts(parts: Sequence[ZoneParts]) -> ZoneParts:
    """Exact union of zone states (the same zone in several parts is combined)."""
    parts = [p for p in parts if p.zone.size]
    if not parts:
        return ZoneParts.empty()
    if len(parts) == 1:
        return parts[0]
    zone_all = np.concatenate([p.zone for p in parts])
    zones, index = np.unique(zone_all, return_inverse=True)

    def summed(name: str) -> np.ndarray:
        values = np.concatenate([getattr(p, name) for p in parts])
        return np.bincount(index, weights=values, minlength=zones.size)

    count_all = np.concatenate([p.count for p in parts]).astype(np.float64)
    total_all = np.concatenate([p.total for p in parts])
    count, total = summed("count"), summed("total")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        part_mean = np.where(count_all > 0, total_all / np.maximum(count_all, 1), 0.0)
    # Chan et al.: m2 = sum of the parts' m2 + n_i * (mean_i - mean)^2.
    spread = count_all * (part_mean - mean[index]) ** 2
    m2 = summed("m2") + np.bincount(index, weights=spread, minlength=zones.size)

    hist_zone, hist_step, hist_count = _sum_pairs(
        np.concatenate([p.hist_zone for p in parts]),
        np.concatenate([p.hist_step for p in parts]),
        np.concatenate([p.hist_count for p in parts]),
    )
    as_int = {
        name: np.rint(summed(name)).astype(np.int64) for name in ("pixels", "nodata", "masked", "invalid")
    }
    return ZoneParts(
        zone=zones,
        count=np.rint(count).astype(np.int64),
        total=total,
        m2=m2,
        hist_zone=hist_zone,
        hist_step=hist_step,
        hist_count=hist_count,
        **as_int,
    )


# Histogram steps are EVI x 10000 in [-10000, 10000]: shifted into 15 bits, one int64 key holds
# (zone, step) and a single sort orders by zone, then step.
_STEP_BITS = 15
_STEP_SHIFT = 1 << (_STEP_BITS - 1)


def _sum_pairs(
    zone: np.ndarray, step: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (zone, step) pairs, sorted, with their counts summed."""
    if zone.size == 0:
        return zone.astype(np.int64), step.astype(np.int64), count.astype(np.int64)
    keys = (zone.astype(np.int64) << _STEP_BITS) | (step.astype(np.int64) + _STEP_SHIFT)
    distinct, inverse = np.unique(keys, return_inverse=True)
    summed = np.bincount(inverse, weights=count, minlength=distinct.size).astype(np.int64)
    return distinct >> _STEP_BITS, (distinct & ((1 << _STEP_BITS) - 1)) - _STEP_SHIFT, summed


@dataclasses.dataclass(frozen=True)
class ZoneSummary:
    """Final statistics of the zones of a :class:`ZoneParts`, one entry per zone (NaN: no valid pixel).

    ``masked_fraction`` is the share of the zone's observed pixels (``pixels - nodata``) that the
    cloud mask removed; NaN when the zone was not observed at all.
    """

    zone: np.ndarray
    pixels: np.ndarray
    valid: np.ndarray
    nodata: np.ndarray
    masked: np.ndarray
    invalid: np.ndarray
    masked_fraction: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    quantiles: dict[str, np.ndarray]


def summarize(parts: ZoneParts, quantiles: Sequence[float] = ZONE_QUANTILES) -> ZoneSummary:
    """The statistics of each zone in ``parts``."""
    count = parts.count
    has = count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(has, parts.total / np.maximum(count, 1), np.nan)
        std = np.where(has, np.sqrt(np.maximum(parts.m2, 0.0) / np.maximum(count, 1)), np.nan)
        observed = parts.pixels - parts.nodata
        masked_fraction = np.where(observed > 0, parts.masked / np.maximum(observed, 1), np.nan)
    # Histogram entries are sorted by zone then step: a zone's first and last entries are its min and
    # max, and its quantiles are found on the running count.
    position = np.searchsorted(parts.hist_zone, parts.zone)
    ends = np.searchsorted(parts.hist_zone, parts.zone, side="right")
    running = np.cumsum(parts.hist_count)
    if running.size:
        before = np.where(position > 0, running[np.maximum(position - 1, 0)], 0)
    else:  # no zone has a valid pixel (all under cloud or outside the swath)
        before = np.zeros(parts.zone.size, dtype=np.int64)
    steps = parts.hist_step

    def at(index: np.ndarray) -> np.ndarray:
        safe = np.clip(index, 0, max(steps.size - 1, 0))
        values = steps[safe] / QUANTIZATION if steps.size else np.zeros(index.shape)
        return np.where(has, values, np.nan)

    result_quantiles = {}
    for q in quantiles:
        rank = np.maximum(1, np.ceil(q * count - 1e-9)).astype(np.int64)
        result_quantiles[f"p{round(q * 100):02d}"] = at(np.searchsorted(running, before + rank))
    return ZoneSummary(
        zone=parts.zone,
        pixels=parts.pixels,
        valid=count,
        nodata=parts.nodata,
        masked=parts.masked,
        invalid=parts.invalid,
        masked_fraction=masked_fraction,
        mean=mean,
        std=std,
        min=at(position),
        max=at(ends - 1),
        quantiles=result_quantiles,
    )


@dataclasses.dataclass(frozen=True)
class BlockZones:
    """The pixels of a block that lie in some zone, grouped by zone: their flat positions, the
    distinct zone numbers, each pixel's position in them, and each zone's pixel count."""

    inside: np.ndarray
    zones: np.ndarray
    index: np.ndarray
    pixels: np.ndarray


def block_zones(labels: np.ndarray) -> BlockZones | None:
    """Group a block's labelled pixels by zone (None when no pixel is in a zone)."""
    flat = labels.ravel()
    inside = np.flatnonzero(flat != NO_ZONE)
    if inside.size == 0:
        return None
    zones, index = np.unique(flat[inside].astype(np.int64), return_inverse=True)
    return BlockZones(inside, zones, index, np.bincount(index, minlength=zones.size).astype(np.int64))


class ZoneAccumulator:
    """Per-zone EVI statistics over the blocks of one observation (a scene or a composite).

    Parameters
    ----------
    valid_min, valid_max
        The EVI range the values can take (the validity rules); a value outside is an error.
    """

    def __init__(self, valid_min: float = -1.0, valid_max: float = 1.0) -> None:
        if not valid_min < valid_max:
            raise ValueError(f"valid_min {valid_min} must be below valid_max {valid_max}")
        self.valid_min, self.valid_max = valid_min, valid_max
        self._kept = ZoneParts.empty()
        self._pending: list[ZoneParts] = []
        self._pending_pairs = 0

    def add(
        self,
        labels: np.ndarray,
        values: np.ndarray,
        *,
        has_data: np.ndarray | None = None,
        clear: np.ndarray | None = None,
    ) -> None:
        """Add one block: zone labels (int, :data:`NO_ZONE` outside), EVI (NaN = no valid value) and
        where the block has data and is clear (None: everywhere). A NaN pixel counts as ``nodata``
        without data, ``masked`` with data but not clear, ``invalid`` when clear."""
        if labels.shape != values.shape:
            raise ValueError(f"labels {labels.shape} and EVI {values.shape} differ in shape")
        block = block_zones(labels)
        if block is not None:
            self.add_block(block, values, has_data=has_data, clear=clear)

    def add_block(
        self,
        block: BlockZones,
        values: np.ndarray,
        *,
        has_data: np.ndarray | None = None,
        clear: np.ndarray | None = None,
    ) -> None:
        """:meth:`add` with the block's zones grouped already (:func:`block_zones`), so that the
        scenes and the composite of one block share the grouping."""
        inside, zones, index = block.inside, block.zones, block.index
        evi = values.ravel()[inside]
        data = np.ones(inside.size, dtype=bool) if has_data is None else has_data.ravel()[inside]
        clear_in = data.copy() if clear is None else clear.ravel()[inside] & data
        valid = np.isfinite(evi)
        size = zones.size

        def count(mask: np.ndarray) -> np.ndarray:
            return np.bincount(index[mask], minlength=size).astype(np.int64)

        good = evi[valid].astype(np.float64)
        if good.size:
            low, high = float(good.min()), float(good.max())
            if low < self.valid_min or high > self.valid_max:
                raise ValueError(
                    f"EVI values [{low}, {high}] fall outside [{self.valid_min}, {self.valid_max}]"
                )
        good_index = index[valid]
        n = count(valid)
        total = np.bincount(good_index, weights=good, minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, total / np.maximum(n, 1), 0.0)
        m2 = np.bincount(good_index, weights=(good - mean[good_index]) ** 2, minlength=size)
        steps = np.rint(good * QUANTIZATION).astype(np.int64)
        hist_zone, hist_step, hist_count = _sum_pairs(
            zones[good_index], steps, np.ones(steps.size, dtype=np.int64)
        )
        part = ZoneParts(
            zone=zones,
            pixels=block.pixels,
            nodata=count(~data),
            masked=count(data & ~clear_in),
            invalid=count(clear_in & ~valid),
            count=n,
            total=total,
            m2=m2,
            hist_zone=hist_zone,
            hist_step=hist_step,
            hist_count=hist_count,
        )
        self._pending.append(part)
        self._pending_pairs += hist_zone.size
        if self._pending_pairs > _COMPACT_PAIRS:
            self._compact()

    def _compact(self) -> None:
        self._kept = merge_parts([self._kept, *self._pending])
        self._pending, self._pending_pairs = [], 0

    def parts(self) -> ZoneParts:
        """The state of every zone seen so far."""
        self._compact()
        return self._kept

    def pop_finished(self, finished: np.ndarray) -> ZoneParts:
        """Remove and return the state of the zones in ``finished`` (zone numbers, e.g. those whose
        last pixel row the block walk has passed), so their memory is released."""
        self._compact()
        done = np.isin(self._kept.zone, finished)
        out = self._kept.select(done)
        self._kept = self._kept.select(~done)
        return out


@dataclasses.dataclass(frozen=True)
class ZoneStatistics:
    """One observation's zone statistics on one tile (a scene, or the composite).

    ``whole`` has the final statistics of the zones no other tile counts; ``split`` the mergeable
    state of zones other tiles also count, to be merged with theirs (:func:`merge_parts`) and only
    then summarized.
    """

    whole: ZoneSummary
    split: ZoneParts


def concat_summaries(summaries: Sequence[ZoneSummary]) -> ZoneSummary:
    """The summaries of disjoint sets of zones as one, sorted by zone number."""
    if not summaries:
        return summarize(ZoneParts.empty())
    zone = np.concatenate([s.zone for s in summaries])
    order = np.argsort(zone, kind="stable")
    fields = {
        field.name: np.concatenate([getattr(s, field.name) for s in summaries])[order]
        for field in dataclasses.fields(ZoneSummary)
        if field.name != "quantiles"
    }
    quantiles = {
        name: np.concatenate([s.quantiles[name] for s in summaries])[order] for name in summaries[0].quantiles
    }
    return ZoneSummary(**fields, quantiles=quantiles)


class ZoneCollector:
    """The zone statistics of one observation over a tile's block walk, kept small as it goes.

    Blocks are added with :meth:`add`; after each row of blocks :meth:`release` finishes the zones
    the walk has passed (given by the caller): zones wholly on this tile are summarized and their
    histograms dropped, the others keep their mergeable state. So the memory held is that of the
    zones on the current row of blocks plus one summary row per finished zone.
    """

    def __init__(self, whole_zones: np.ndarray, valid_min: float, valid_max: float) -> None:
        self._whole = np.asarray(whole_zones, dtype=np.int64)
        self._accumulator = ZoneAccumulator(valid_min, valid_max)
        self._summaries: list[ZoneSummary] = []
        self._split: list[ZoneParts] = []

    def add(
        self, blocks: Sequence[BlockZones], values: np.ndarray, has_data: np.ndarray, clear: np.ndarray
    ) -> None:
        """Add one block's EVI under each layer of zones (:func:`block_zones` of each label layer)."""
        for block in blocks:
            self._accumulator.add_block(block, values, has_data=has_data, clear=clear)

    def release(self, finished: np.ndarray) -> None:
        """Finish the zones in ``finished``: no later block has any of their pixels."""
        done = self._accumulator.pop_finished(finished)
        if done.zone.size == 0:
            return
        whole = np.isin(done.zone, self._whole)
        if whole.any():
            self._summaries.append(summarize(done.select(whole)))
        if (~whole).any():
            self._split.append(done.select(~whole))

    def result(self) -> ZoneStatistics:
        """Everything collected (the caller releases every zone first)."""
        rest = self._accumulator.parts()
        if rest.zone.size:
            self.release(rest.zone)
        return ZoneStatistics(concat_summaries(self._summaries), merge_parts(self._split))
