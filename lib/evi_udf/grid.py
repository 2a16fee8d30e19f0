"""Output grids and block windows.

A composite is computed on the tile's native UTM grid (every scene of a tile shares it, so no scene is
resampled) and written either on that grid or, warped once, on a shared grid: one CRS, resolution and
origin for all tiles, so that composites of neighbouring tiles, also across UTM zones, line up pixel
for pixel. A tile's extent on the shared grid is its footprint transformed into the grid's CRS and
snapped outwards to whole pixels of the grid.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

from pyproj import CRS, Transformer
from rasterio.transform import Affine
from rasterio.windows import Window

# Densify tile edges when transforming them: straight UTM edges curve in another projection.
EDGE_POINTS = 21


def mgrs_tile_epsg(tile: str) -> int:
    """The EPSG code of an MGRS tile's UTM zone: 326zz north of the equator (bands N-X), 327zz south."""
    zone, band = int(tile[:2]), tile[2].upper()
    return (32600 if band >= "N" else 32700) + zone


@dataclasses.dataclass(frozen=True)
class PixelGrid:
    """A north-up raster grid: CRS, pixel size, upper-left corner and shape."""

    crs: str
    resolution: float
    left: float
    top: float
    width: int
    height: int

    @property
    def transform(self) -> Affine:
        return Affine(self.resolution, 0.0, self.left, 0.0, -self.resolution, self.top)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        return (
            self.left,
            self.top - self.height * self.resolution,
            self.left + self.width * self.resolution,
            self.top,
        )

    def same_as(self, other: PixelGrid) -> bool:
        """True when both grids have the same CRS and pixels (so no resampling is needed)."""
        return (
            CRS.from_user_input(self.crs) == CRS.from_user_input(other.crs)
            and math.isclose(self.resolution, other.resolution)
            and math.isclose(self.left, other.left, abs_tol=1e-6)
            and math.isclose(self.top, other.top, abs_tol=1e-6)
            and (self.width, self.height) == (other.width, other.height)
        )


@dataclasses.dataclass(frozen=True)
class SharedGrid:
    """A grid shared by all tiles: pixels of ``resolution`` in ``crs`` anchored at ``origin`` (x, y)."""

    crs: str
    resolution: float
    origin: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        CRS.from_user_input(self.crs)  # fails early with pyproj's message on a bad CRS
        if self.resolution <= 0:
            raise ValueError(f"grid resolution must be positive, got {self.resolution}")

    def cover(self, native: PixelGrid) -> PixelGrid:
        """The smallest block of this grid's whole pixels that covers ``native``'s footprint."""
        to_shared = Transformer.from_crs(native.crs, self.crs, always_xy=True)
        left, bottom, right, top = native.bounds
        xs, ys = [], []
        for i in range(EDGE_POINTS):
            t = i / (EDGE_POINTS - 1)
            for x, y in (
                (left + t * (right - left), top),
                (right, top - t * (top - bottom)),
                (left + t * (right - left), bottom),
                (left, top - t * (top - bottom)),
            ):
                xs.append(x)
                ys.append(y)
        gx, gy = to_shared.transform(xs, ys)
        x0, y0 = self.origin
        col_min = math.floor((min(gx) - x0) / self.resolution)
        col_max = math.ceil((max(gx) - x0) / self.resolution)
        row_min = math.floor((y0 - max(gy)) / self.resolution)
        row_max = math.ceil((y0 - min(gy)) / self.resolution)
        return PixelGrid(
            crs=self.crs,
            resolution=self.resolution,
            left=x0 + col_min * self.resolution,
            top=y0 - row_min * self.resolution,
            width=col_max - col_min,
            height=row_max - row_min,
        )


def block_windows(width: int, height: int, block_size: int = 1024) -> Iterator[Window]:
    """Windows of ``block_size`` square (smaller at the right and bottom edges), row by row.

    With the default 1024 they coincide with the 1024 x 1024 JPEG2000 tiles of Sentinel-2 bands, so
    each block decodes each JP2 tile once.
    """
    if block_size <= 0:
        raise ValueError(f"block size must be positive, got {block_size}")
    for row in range(0, height, block_size):
        for col in range(0, width, block_size):
            yield Window(col, row, min(block_size, width - col), min(block_size, height - row))
