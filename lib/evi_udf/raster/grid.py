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


# MGRS letters skip I and O. Columns: 24 letters in three sets of 8 (zones 1, 4, 7, ... use A-H; 2, 5,
# ... J-R; 3, 6, ... S-Z), eastings 100-800 km. Rows: 20 letters repeating every 2,000 km of northing,
# starting at A in odd zones and at F in even zones. Latitude bands C-X are 8 degrees tall from 80 S
# (X: 72-84 N), and decide which 2,000 km cycle a row letter is in.
MGRS_COLUMN_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
MGRS_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
MGRS_BAND_LETTERS = "CDEFGHJKLMNPQRSTUVWX"
_ROW_CYCLE_M = 2_000_000
_SQUARE_M = 100_000
_BAND_SLACK_M = 100_000
_BAND_C_SLACK_M = 500_000


def _band_latitudes(band: str) -> tuple[float, float]:
    south = -80.0 + 8.0 * MGRS_BAND_LETTERS.index(band)
    return south, 84.0 if band == "X" else south + 8.0


def mgrs_square_origin(tile: str) -> tuple[int, float, float]:
    """(EPSG, west easting, south northing) of an MGRS 100 km square, e.g. ``55HBU``.

    Works for every latitude band (C to X) and for the squares of ESA's tiling grid outside the
    standard zone widths (the 31V and 32V exceptions, squares reaching past a zone's edge): the row
    letter's 2,000 km cycle is the one whose square overlaps the latitude band.
    """
    zone, band, column, row = int(tile[:2]), tile[2].upper(), tile[3].upper(), tile[4].upper()
    west = (MGRS_COLUMN_LETTERS.index(column) - 8 * ((zone - 1) % 3) + 1) * _SQUARE_M
    row_offset = 5 if zone % 2 == 0 else 0
    northing = ((MGRS_ROW_LETTERS.index(row) - row_offset) % 20) * _SQUARE_M
    epsg = mgrs_tile_epsg(tile)
    south_lat, north_lat = _band_latitudes(band)
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)
    central = -183.0 + 6.0 * zone
    # The band's northings on the central meridian, with slack below: a square is named by the band of
    # its points, so its south edge can lie in the band below (up to 46 km in ESA's grid), and band C
    # squares reach far past 80 S towards the pole (up to 418 km). With at most 1,330 km of band (X)
    # plus the slack, only one 2,000 km cycle fits.
    slack = _BAND_C_SLACK_M if band == "C" else _BAND_SLACK_M
    low = to_utm.transform(central, south_lat)[1] - slack
    high = to_utm.transform(central, north_lat)[1]
    while northing < low:
        northing += _ROW_CYCLE_M
    if northing > high:
        raise ValueError(f"{tile}: row {row} does not meet latitude band {band} in zone {zone}")
    return epsg, float(west), float(northing)


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

    def coarsened(self, factor: int) -> PixelGrid:
        """The grid with pixels ``factor`` times larger from the same corner: its pixel (row, col)
        covers this grid's pixels [row * factor, (row + 1) * factor) x [col * factor, ...), as a
        JPEG2000 resolution level does (the last row and column may reach past this grid's edge)."""
        return PixelGrid(
            crs=self.crs,
            resolution=self.resolution * factor,
            left=self.left,
            top=self.top,
            width=-(-self.width // factor),
            height=-(-self.height // factor),
        )

    def refined(self, factor: int) -> PixelGrid:
        """The grid with pixels ``factor`` times smaller over the same area."""
        return PixelGrid(
            crs=self.crs,
            resolution=self.resolution / factor,
            left=self.left,
            top=self.top,
            width=self.width * factor,
            height=self.height * factor,
        )

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


# Longitudes of the irregular UTM zones (Norway in band V, Svalbard in band X): (zone, band) -> span.
_IRREGULAR_ZONES: dict[tuple[int, str], tuple[float, float]] = {
    (31, "V"): (0.0, 3.0),
    (32, "V"): (3.0, 12.0),
    (31, "X"): (0.0, 9.0),
    (33, "X"): (9.0, 21.0),
    (35, "X"): (21.0, 33.0),
    (37, "X"): (33.0, 42.0),
}


def mgrs_cell_lonlat(tile: str) -> tuple[float, float, float, float]:
    """(west, south, east, north) in degrees of the part of the globe an MGRS tile's zone and
    latitude band name: its UTM zone's longitudes (the Norway and Svalbard exceptions included) by
    its band's latitudes. The tile's own area is this cell within its 100 km square."""
    zone, band = int(tile[:2]), tile[2].upper()
    west, east = _IRREGULAR_ZONES.get((zone, band), (-186.0 + 6.0 * zone, -180.0 + 6.0 * zone))
    south, north = _band_latitudes(band)
    return west, south, east, north


def mgrs_owned_ring(tile: str, edge_points: int = 201) -> tuple[list[float], list[float]]:
    """The outline of the ground an MGRS tile owns in ESA's no-overlap grid, in the tile's UTM
    coordinates: the lon/lat cell of :func:`mgrs_cell_lonlat` (edges densified, since meridians and
    parallels are curves in UTM), to be clipped to the tile's 100 km square (:func:`mgrs_square_origin`).

    Every point of the globe lies in exactly one such (cell, square): the square the MGRS reference of
    the point names. Neighbouring tiles overlap by about 10 km; this is how a pixel seen by two tiles
    is counted once.
    """
    epsg, _, _ = mgrs_square_origin(tile)
    west, south, east, north = mgrs_cell_lonlat(tile)
    steps = [i / (edge_points - 1) for i in range(edge_points)]
    lons = [west + t * (east - west) for t in steps] + [east] * edge_points
    lats = [south] * edge_points + [south + t * (north - south) for t in steps]
    lons += [east - t * (east - west) for t in steps] + [west] * edge_points
    lats += [north] * edge_points + [north - t * (north - south) for t in steps]
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)
    xs, ys = to_utm.transform(lons, lats)
    return list(xs), list(ys)


# An MGRS tile's grid is 109.8 km square from its 100 km square's north-west corner.
TILE_SIZE_M = 109_800.0


def tile_bounds(tile: str) -> tuple[float, float, float, float]:
    """An MGRS tile's extent in longitude/latitude (from its 100 km square, no file read)."""
    epsg, west, south = mgrs_square_origin(tile)
    north = south + 100_000.0
    to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
    return to_lonlat.transform_bounds(west, north - TILE_SIZE_M, west + TILE_SIZE_M, north, densify_pts=21)
