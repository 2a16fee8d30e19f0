"""Compositors: merge the EVI of several scenes into one value per pixel. Imports numpy only.

A compositor is made for one output block, fed the scenes' EVI blocks one at a time (NaN where a
scene has no clear, valid observation), and finished into the composite EVI and the number of clear
observations per pixel. Memory is one or two block-sized arrays, except for the median, which must
keep every scene's block (n_scenes x block) until it finishes.

Compositors are chosen by name from :data:`COMPOSITORS`; the same names validate the configuration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal, Protocol

import numpy as np

SceneOrder = Literal["date", "cloud"]


class Compositor(Protocol):
    """What every compositor does."""

    def add(self, evi: np.ndarray) -> None:
        """Feed one scene's EVI block (float32, NaN = no clear valid observation)."""

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the composite EVI (float32, NaN where no scene was clear) and the clear count (uint16)."""


class _Counting:
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.count = np.zeros(shape, dtype=np.uint16)

    def _count(self, evi: np.ndarray) -> np.ndarray:
        valid = np.isfinite(evi)
        self.count += valid
        return valid


class FirstValid(_Counting):
    """The first clear observation in feeding order (the caller orders scenes by date or by cloud)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__(shape)
        self.value = np.full(shape, np.nan, dtype=np.float32)

    def add(self, evi: np.ndarray) -> None:
        valid = self._count(evi)
        take = valid & np.isnan(self.value)
        self.value[take] = evi[take]

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        return self.value, self.count


class Mean(_Counting):
    """Arithmetic mean of the clear observations."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__(shape)
        self.total = np.zeros(shape, dtype=np.float64)

    def add(self, evi: np.ndarray) -> None:
        valid = self._count(evi)
        self.total[valid] += evi[valid]

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(self.count > 0, self.total / self.count, np.nan).astype(np.float32)
        return value, self.count


class MaxEvi(_Counting):
    """The greenest clear observation (maximum-value compositing, as MODIS vegetation indices)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__(shape)
        self.value = np.full(shape, np.nan, dtype=np.float32)

    def add(self, evi: np.ndarray) -> None:
        self._count(evi)
        # fmax ignores NaN on either side, so a missing observation never replaces a present one.
        np.fmax(self.value, evi, out=self.value)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        return self.value, self.count


class Median(_Counting):
    """Per-pixel median of the clear observations (mean of the two middle ones for an even count)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__(shape)
        self.layers: list[np.ndarray] = []

    def add(self, evi: np.ndarray) -> None:
        self._count(evi)
        self.layers.append(np.asarray(evi, dtype=np.float32))

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.layers:
            return np.full(self.count.shape, np.nan, dtype=np.float32), self.count
        # Sorted with missing observations last, a pixel's clear observations are its first `count`
        # layers and the median is picked by index: ~10x faster than np.nanmedian, which goes through
        # masked arrays for few layers.
        stack = _sort_layers(self.layers)
        count = self.count.astype(np.intp)
        last = len(self.layers) - 1
        low = np.take_along_axis(stack, np.clip((count - 1) // 2, 0, last)[np.newaxis], axis=0)[0]
        high = np.take_along_axis(stack, np.clip(count // 2, 0, last)[np.newaxis], axis=0)[0]
        value = ((low.astype(np.float64) + high) * 0.5).astype(np.float32)
        value[count == 0] = np.nan
        return value, self.count


# Up to this many layers a compare-exchange network beats np.sort along the (strided) layer axis.
_NETWORK_MAX_LAYERS = 8


def _sort_layers(layers: list[np.ndarray]) -> np.ndarray:
    """The layers stacked and sorted per pixel, NaN last (NaN becomes +inf, then back to NaN)."""
    if len(layers) > _NETWORK_MAX_LAYERS:
        return np.sort(np.stack(layers), axis=0)
    work = [np.where(np.isnan(layer), np.float32(np.inf), layer) for layer in layers]
    # Odd-even transposition sort: n rounds of neighbour compare-exchanges sort n items.
    for round_index in range(len(work)):
        for i in range(round_index % 2, len(work) - 1, 2):
            low = np.minimum(work[i], work[i + 1])
            np.maximum(work[i], work[i + 1], out=work[i + 1])
            work[i] = low
    stack = np.stack(work)
    stack[np.isinf(stack) & (stack > 0)] = np.nan
    return stack


@dataclasses.dataclass(frozen=True)
class CompositorSpec:
    """A registered compositing method: how to build it and in which order to feed scenes."""

    factory: Callable[[tuple[int, ...]], Compositor]
    scene_order: SceneOrder
    description: str


COMPOSITORS: dict[str, CompositorSpec] = {
    "first_by_date": CompositorSpec(FirstValid, "date", "earliest clear observation"),
    "first_by_least_cloud": CompositorSpec(
        FirstValid, "cloud", "clear observation of the least cloudy scene"
    ),
    "mean": CompositorSpec(Mean, "date", "mean of clear observations"),
    "median": CompositorSpec(Median, "date", "median of clear observations"),
    "max_evi": CompositorSpec(MaxEvi, "date", "greenest clear observation"),
}


def get_compositor(name: str) -> CompositorSpec:
    """The compositor registered under ``name``.

    Raises
    ------
    KeyError
        With the known names, if ``name`` is not registered.
    """
    try:
        return COMPOSITORS[name]
    except KeyError:
        raise KeyError(f"unknown compositor {name!r}; choose one of {', '.join(COMPOSITORS)}") from None
