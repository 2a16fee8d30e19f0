"""The run mosaic: one colour-mapped PNG per period of the composites a run made, drawn without the
driver reading any COG.

Before processing, the driver lays out a canvas per period (:func:`mosaic_canvases`) from the MGRS
tiles of the groups it is about to make (arithmetic only, no request). Each task, while it still has
its COG on local disk, warps it onto the part of the canvas its tile covers (:func:`paint`) and
returns that small piece with its rows. The driver pastes the pieces (:func:`render`): its memory
and time grow with the canvas, never with the number of groups.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds

from evi_udf.raster.grid import tile_bounds
from evi_udf.task.group import GroupKey

# A tall, narrow run (a strip of tiles north to south) would make a canvas many times taller than
# wide: the height is capped at this multiple of the width (the step grows to fit).
MAX_ASPECT = 4
TILE_SIZE_M = 109_800.0


@dataclasses.dataclass(frozen=True)
class Canvas:
    """A north-up longitude/latitude raster: ``step`` degrees per pixel from (west, north)."""

    west: float
    north: float
    step: float
    width: int
    height: int

    @property
    def transform(self) -> rasterio.Affine:
        return rasterio.Affine(self.step, 0.0, self.west, 0.0, -self.step, self.north)

    def window(self, bounds: tuple[float, float, float, float]) -> tuple[int, int, int, int] | None:
        """(row, col, height, width) of the canvas pixels ``bounds`` (west, south, east, north) covers."""
        west, south, east, north = bounds
        col0 = max(0, math.floor((west - self.west) / self.step))
        col1 = min(self.width, math.ceil((east - self.west) / self.step))
        row0 = max(0, math.floor((self.north - north) / self.step))
        row1 = min(self.height, math.ceil((self.north - south) / self.step))
        if col1 <= col0 or row1 <= row0:
            return None
        return row0, col0, row1 - row0, col1 - col0


@dataclasses.dataclass(frozen=True)
class MosaicPiece:
    """A composite warped onto its part of a canvas: EVI as float32, NaN where there is none."""

    row: int
    col: int
    values: np.ndarray

    def to_bytes(self) -> bytes:
        return self.values.astype("<f4").tobytes()

    @classmethod
    def from_bytes(cls, row: int, col: int, height: int, width: int, data: bytes) -> MosaicPiece:
        return cls(row, col, np.frombuffer(data, dtype="<f4").reshape(height, width))


def mosaic_canvases(keys: Iterable[GroupKey], width: int) -> dict[str, Canvas]:
    """One canvas per period covering the groups' tiles, ``width`` pixels wide (none when 0)."""
    if width <= 0:
        return {}
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    cache: dict[str, tuple[float, float, float, float]] = {}
    for key in keys:
        if key.mgrs_tile not in cache:
            cache[key.mgrs_tile] = tile_bounds(key.mgrs_tile)
        boxes.setdefault(key.period, []).append(cache[key.mgrs_tile])
    canvases = {}
    for period, bounds in boxes.items():
        west, south = min(b[0] for b in bounds), min(b[1] for b in bounds)
        east, north = max(b[2] for b in bounds), max(b[3] for b in bounds)
        step = max((east - west) / width, (north - south) / (MAX_ASPECT * width))
        canvases[period] = Canvas(
            west,
            north,
            step,
            max(1, math.ceil((east - west) / step)),
            max(1, math.ceil((north - south) / step)),
        )
    return canvases


def paint(cog: Path, canvas: Canvas) -> MosaicPiece | None:
    """The composite ``cog`` warped (nearest) onto the part of ``canvas`` it covers.

    Read from the COG's coarsest overview that is still finer than the canvas: warping the full
    resolution would decode all of it for a few hundred canvas pixels.
    """
    with rasterio.open(cog) as dataset:
        bounds = transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds, densify_pts=21)
        scale, offset = np.float32(dataset.scales[0]), np.float32(dataset.offsets[0])
        decimation = dataset.width * canvas.step / (bounds[2] - bounds[0])
        finer = [level for level, factor in enumerate(dataset.overviews(1)) if factor <= decimation]
    window = canvas.window(bounds)
    if window is None:
        return None
    row, col, height, width = window
    transform = canvas.transform * rasterio.Affine.translation(col, row)
    options = {"overview_level": finer[-1]} if finer else {}
    with (
        rasterio.open(cog, **options) as dataset,
        WarpedVRT(
            dataset,
            crs="EPSG:4326",
            transform=transform,
            width=width,
            height=height,
            resampling=Resampling.nearest,
        ) as warped,
    ):
        band = warped.read(1, masked=True).astype(np.float32) * scale + offset
    return MosaicPiece(row, col, band.filled(np.nan).astype(np.float32))


def render(canvas: Canvas, pieces: Sequence[MosaicPiece]) -> np.ndarray:
    """Paste the pieces onto the canvas (a later piece fills only what earlier ones left empty)."""
    image = np.full((canvas.height, canvas.width), np.nan, dtype=np.float32)
    for piece in pieces:
        height, width = piece.values.shape
        target = image[piece.row : piece.row + height, piece.col : piece.col + width]
        empty = np.isnan(target)
        target[empty] = piece.values[: target.shape[0], : target.shape[1]][empty]
    return image
