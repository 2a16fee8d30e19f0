"""User zones (fields, farms, districts) on a tile's pixel grid: which pixels each zone gets from this tile.

The rules, stated once:

* **Ownership (counted once).** A tile only counts the pixels whose centre lies in the ground it owns
  in ESA's no-overlap grid (:func:`evi_udf.raster.grid.mgrs_owned_ring`): its 100 km MGRS square within its
  UTM zone and latitude band. Neighbouring tiles overlap by about 10 km, and tiles of two UTM zones
  overlap across the zone edge; every point of the globe is owned by exactly one tile, so a zone on
  several tiles has each of its pixels counted by one of them, and the tiles' statistics merge
  exactly (:func:`evi_udf.zones.statistics.merge_parts`).
* **Pixel-centre rule.** A pixel belongs to a zone when its centre lies inside the zone (GDAL's
  default rasterization). A zone so small or thin that no pixel centre of the tile falls inside it
  takes every pixel it touches instead, so a field of a few pixels is never left without pixels.
* **Overlapping zones** (a field inside a district, two fields drawn over each other) each get all
  their pixels: zones are drawn in layers of mutually disjoint zones, one label raster per layer.

Geometries arrive in longitude/latitude (EPSG:4326) and are transformed once per tile into its UTM
CRS and clipped to the owned ground; each block then rasterizes only the zones that meet it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import shapely
from pyproj import Transformer
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from shapely.geometry.base import BaseGeometry

from evi_udf.raster.grid import PixelGrid, mgrs_owned_ring, mgrs_square_origin
from evi_udf.zones.statistics import NO_ZONE

_SQUARE_M = 100_000.0
# A zone whose extent is narrower than this many pixels in x or y is checked for pixel centres.
_TINY_PIXELS = 8
_POLYGON_TYPE = 3  # shapely.get_type_id of a Polygon
# Narrow zones with more candidate centres than this (a long thin zone across the tile) are not tested.
_MAX_TESTED_CENTRES = 4096
# About 50 m: a straight lon/lat segment this long is within a millimetre of its UTM chord.
_DENSIFY_DEGREES = 0.0005


@dataclasses.dataclass(frozen=True)
class ZoneInput:
    """The user zones that may meet a group's tile: their run-wide numbers and their geometries in
    longitude/latitude (EPSG:4326)."""

    numbers: Sequence[int]
    geometries: Sequence[BaseGeometry]


def owned_area(tile: str) -> BaseGeometry:
    """The ground ``tile`` owns, in its UTM coordinates (see the module docstring)."""
    _, west, south = mgrs_square_origin(tile)
    square = shapely.box(west, south, west + _SQUARE_M, south + _SQUARE_M)
    xs, ys = mgrs_owned_ring(tile)
    cell = shapely.make_valid(shapely.Polygon(zip(xs, ys, strict=True)))
    return shapely.intersection(square, cell)


@dataclasses.dataclass(frozen=True)
class TileZones:
    """The zones a tile counts, ready to rasterize block by block.

    Attributes
    ----------
    grid
        The tile's pixel grid (the native grid of its bands, or its coarsened grid).
    numbers
        The zone number of each geometry (indices into the run's zone list).
    geometries
        Each zone clipped to the tile's owned ground and to the grid, in the grid's CRS.
    layer
        The layer each zone is drawn in (zones of one layer are disjoint).
    touched
        Whether each zone is drawn with every pixel it touches (no pixel centre inside it).
    last_row
        The last pixel row of the grid each zone reaches: once the block walk has passed it, the
        zone's statistics on this tile are final.
    whole
        Whether each zone lies wholly in this tile's owned ground and grid, so that no other tile
        counts any of its pixels and its statistics here are its final ones.
    """

    grid: PixelGrid
    numbers: np.ndarray
    geometries: np.ndarray
    layer: np.ndarray
    touched: np.ndarray
    last_row: np.ndarray
    whole: np.ndarray
    _tree: shapely.STRtree
    # Each geometry as GeoJSON, built once: rasterio converts shapely objects one coordinate at a time.
    _shapes: np.ndarray

    @property
    def layers(self) -> int:
        return int(self.layer.max()) + 1 if self.layer.size else 0

    def labels(self, window: Window) -> list[np.ndarray]:
        """One label raster per layer with a zone in ``window``: zone numbers, :data:`NO_ZONE` elsewhere."""
        height, width = int(window.height), int(window.width)
        transform = window_transform(window, self.grid.transform)
        left, top = transform.c, transform.f
        right, bottom = left + width * self.grid.resolution, top - height * self.grid.resolution
        hits = self._tree.query(shapely.box(left, bottom, right, top))
        result = []
        for layer in range(self.layers):
            mine = hits[self.layer[hits] == layer]
            if not mine.size:
                continue
            labels = np.full((height, width), NO_ZONE, dtype=np.int32)
            for touched in (False, True):
                chosen = mine[self.touched[mine] == touched]
                if chosen.size:
                    drawn = rasterize(
                        zip(self._shapes[chosen], self.numbers[chosen].tolist(), strict=True),
                        out_shape=(height, width),
                        transform=transform,
                        fill=NO_ZONE,
                        dtype="int32",
                        all_touched=touched,
                    )
                    labels = np.where(drawn != NO_ZONE, drawn, labels)
            result.append(labels)
        return result

    def finished_by(self, row: int, since: int = 0) -> np.ndarray:
        """The zone numbers whose last row is above ``row`` (and not above ``since``: those were
        finished before)."""
        return self.numbers[(self.last_row >= since) & (self.last_row < row)]


def tile_zones(
    tile: str, grid: PixelGrid, numbers: Sequence[int], lonlat_geometries: Sequence[BaseGeometry]
) -> TileZones:
    """Prepare the zones that may meet ``tile`` for rasterizing on ``grid`` (the tile's UTM grid).

    Zones are transformed into the grid's CRS, clipped to the tile's owned ground and to the grid;
    zones left empty are dropped (another tile owns them).
    """
    transformer = Transformer.from_crs(4326, grid.crs, always_xy=True)
    # Edges are straight in longitude/latitude (as GeoJSON and GeoParquet define them): densify before
    # transforming, or a long edge would become a chord in UTM.
    densified = shapely.segmentize(np.asarray(lonlat_geometries, dtype=object), _DENSIFY_DEGREES)
    geometries = shapely.transform(
        densified,
        lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])),
    )
    left, bottom, right, top = grid.bounds
    ground = shapely.intersection(owned_area(tile), shapely.box(left, bottom, right, top))
    shapely.prepare(ground)
    # Most zones lie wholly inside the owned ground: only the others are clipped.
    whole = shapely.contains_properly(ground, geometries)
    clipped = geometries.copy()
    cut = np.flatnonzero(~whole)
    clipped[cut] = shapely.intersection(geometries[cut], ground)
    keep = ~shapely.is_empty(clipped) & (shapely.area(clipped) > 0)
    whole = whole[keep]
    clipped, zone_numbers = clipped[keep], np.asarray(numbers, dtype=np.int64)[keep]
    bounds = shapely.bounds(clipped).reshape(-1, 4)
    touched = _without_pixel_centres(clipped, bounds, grid)
    layer = _layers(clipped, bounds, touched, grid.resolution)
    last_row = np.floor((grid.top - bounds[:, 1]) / grid.resolution).astype(np.int64)
    return TileZones(
        grid=grid,
        numbers=zone_numbers,
        geometries=clipped,
        layer=layer,
        touched=touched,
        last_row=np.minimum(last_row, grid.height - 1),
        whole=whole,
        _tree=shapely.STRtree(clipped),
        _shapes=_geojson(clipped),
    )


def _geojson(geometries: np.ndarray) -> np.ndarray:
    """GeoJSON-like mappings of ``geometries``: simple polygons (one ring) from one vectorized
    coordinate dump, the rest through shapely's ``__geo_interface__``."""
    shapes = np.empty(len(geometries), dtype=object)
    simple = (shapely.get_type_id(geometries) == _POLYGON_TYPE) & (
        shapely.get_num_interior_rings(geometries) == 0
    )
    chosen = np.flatnonzero(simple)
    if chosen.size:
        coordinates, owner = shapely.get_coordinates(geometries[chosen], return_index=True)
        rings = np.split(coordinates, np.searchsorted(owner, np.arange(1, chosen.size)))
        shapes[chosen] = [{"type": "Polygon", "coordinates": (ring,)} for ring in rings]
    for index in np.flatnonzero(~simple):
        shapes[index] = geometries[index].__geo_interface__
    return shapes


def _without_pixel_centres(geometries: np.ndarray, bounds: np.ndarray, grid: PixelGrid) -> np.ndarray:
    """Whether each zone contains no pixel centre of ``grid`` (only narrow zones are checked).

    Vectorized over zones: every candidate centre of every narrow zone is tested in one call.
    """
    result = np.zeros(len(geometries), dtype=bool)
    size = grid.resolution
    narrow = np.flatnonzero(
        ((bounds[:, 2] - bounds[:, 0]) < _TINY_PIXELS * size)
        | ((bounds[:, 3] - bounds[:, 1]) < _TINY_PIXELS * size)
    )
    west, south, east, north = bounds[narrow].T
    first_col = np.ceil((west - grid.left) / size - 0.5)
    last_col = np.floor((east - grid.left) / size - 0.5)
    first_row = np.ceil((grid.top - north) / size - 0.5)
    last_row = np.floor((grid.top - south) / size - 0.5)
    columns = np.maximum(last_col - first_col + 1, 0).astype(np.int64)
    rows = np.maximum(last_row - first_row + 1, 0).astype(np.int64)
    counts = columns * rows
    result[narrow[counts == 0]] = True
    # A long thin zone crossing the tile has centres somewhere; the others are tested centre by centre.
    tested = (counts > 0) & (counts <= _MAX_TESTED_CENTRES)
    zone, columns, counts = narrow[tested], columns[tested], counts[tested]
    first_col, first_row = first_col[tested], first_row[tested]
    if zone.size:
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        position = np.arange(counts.sum()) - np.repeat(offsets, counts)
        col = np.repeat(first_col, counts) + position % np.repeat(columns, counts)
        row = np.repeat(first_row, counts) + position // np.repeat(columns, counts)
        inside = shapely.contains_xy(
            np.repeat(geometries[zone], counts), grid.left + (col + 0.5) * size, grid.top - (row + 0.5) * size
        )
        result[zone] = np.add.reduceat(inside.astype(np.int64), offsets) == 0
    return result


def _layers(geometries: np.ndarray, bounds: np.ndarray, touched: np.ndarray, resolution: float) -> np.ndarray:
    """A layer per zone such that zones of one layer share no pixel: disjoint interiors, and for zones
    drawn with every pixel they touch, extents at least a pixel apart from every other zone.

    Conflicting pairs are found in one tree query; the greedy colouring then walks the zones in order.
    """
    footprint = geometries.copy()
    footprint[touched] = shapely.buffer(shapely.box(*bounds[touched].T), resolution)
    zone, other = shapely.STRtree(footprint).query(footprint)
    earlier = other < zone
    zone, other = zone[earlier], other[earlier]
    conflict = touched[zone] | touched[other]
    # Zones that only share an edge split its pixels by the pixel-centre rule: one layer suffices.
    check = np.flatnonzero(~conflict)
    if check.size:
        shared = shapely.area(shapely.intersection(footprint[zone[check]], footprint[other[check]]))
        conflict[check] = shared > 0
    zone, other = zone[conflict], other[conflict]
    order = np.argsort(zone, kind="stable")
    zone, other = zone[order], other[order]
    starts = np.searchsorted(zone, np.arange(len(geometries)))
    ends = np.searchsorted(zone, np.arange(len(geometries)), side="right")
    layer = np.zeros(len(geometries), dtype=np.int64)
    for index in np.flatnonzero(ends > starts):
        taken = set(layer[other[starts[index] : ends[index]]].tolist())
        candidate = 0
        while candidate in taken:
            candidate += 1
        layer[index] = candidate
    return layer
