"""Raster I/O at the edge of the pipeline: the GDAL environment, block reads on a grid, COG writing.

Everything here goes through rasterio (GDAL). The pure raster math lives in numpy-only modules;
this module only moves pixels between files and arrays.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window, from_bounds

from evi_udf.errors import RasterReadError, RasterWriteError
from evi_udf.raster.grid import PixelGrid, block_windows

# The GDAL configuration every read and write runs under (applied with rasterio.Env inside the UDF,
# never globally at import time).
GDAL_ENV: dict[str, Any] = {
    # Opening a band must not list its folder: on GCS that is one slow LIST request per file, and the
    # Sentinel-2 .SAFE folders hold hundreds of objects.
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # Decode JPEG2000 code-blocks on every core of the executor: decoding is the floor of the run time.
    "GDAL_NUM_THREADS": "ALL_CPUS",
    # GDAL's block cache, in bytes: rasterio hands this value to GDALSetCacheMax64, so a bare 128 was
    # 128 bytes (no cache at all, until 2026-12-02: every band of a pixel-interleaved scratch raster
    # was decoded once per band read, 40x slower). Cloud masks do not rely on it (MaskTileRows keeps
    # their tile rows); it serves the scratch rasters and the COG writer's overviews.
    "GDAL_CACHEMAX": 64 * 1024 * 1024,
    # Transient HTTP errors (429, 5xx) from GCS are retried instead of failing a scene.
    "GDAL_HTTP_MAX_RETRY": 5,
    "GDAL_HTTP_RETRY_DELAY": 1,
    # Remote reads are cached in memory so neighbouring small range requests are not repeated. The size
    # is per open file: a group keeps 4 files per scene open, so 64 MB cost ~770 MB of RSS on a full
    # tile with 3 scenes (BENCHMARKS.md); 4 MB still holds a whole 1024 x 1024 JP2 tile's code-blocks.
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": 4 * 1024 * 1024,
    # Only these extensions are probed when opening; avoids requests for .aux.xml, .ovr, .msk sidecars.
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".jp2,.tif,.tiff,.xml,.gml",
    # Overview tiles the same size as the COG's full-resolution tiles (512), as readers expect.
    "GDAL_TIFF_OVR_BLOCKSIZE": 512,
}

# Named creation profiles for the published rasters (the COG driver's options).
COG_PROFILES: dict[str, dict[str, Any]] = {
    # zstd level 6, not 9: the same size within 0.1% on a full tile, written in two thirds of the time
    # (bench/NOTES.md).
    "zstd": {"COMPRESS": "ZSTD", "LEVEL": 6, "PREDICTOR": "YES", "BLOCKSIZE": 512},
    "deflate": {"COMPRESS": "DEFLATE", "LEVEL": 6, "PREDICTOR": "YES", "BLOCKSIZE": 512},
}

# Scratch rasters (native-grid composites before warping): fast, lightly compressed, tiled.
SCRATCH_PROFILE: dict[str, Any] = {
    "driver": "GTiff",
    "tiled": True,
    "blockxsize": 512,
    "blockysize": 512,
    "compress": "ZSTD",
    "zstd_level": 1,
    "bigtiff": "IF_SAFER",
    # Each band in its own tiles: the warp reads one band at a time, and pixel-interleaved tiles
    # would be decompressed once per band.
    "interleave": "band",
}


def gdal_path(uri: str) -> str:
    """The path GDAL opens for ``uri``: ``gs://bucket/key`` becomes ``/vsigs/bucket/key``."""
    if uri.startswith("gs://"):
        return "/vsigs/" + uri[len("gs://") :]
    return uri


def join_uri(base: str, relative: str) -> str:
    """Join a product folder (local path or ``gs://`` URI) and a path inside it."""
    return f"{base.rstrip('/')}/{relative.lstrip('/')}"


def dataset_grid(dataset: DatasetReader) -> PixelGrid:
    """The grid of an open north-up dataset."""
    transform = dataset.transform
    if transform.b != 0 or transform.d != 0 or not math.isclose(transform.a, -transform.e):
        raise RasterReadError(f"{dataset.name}: only north-up rasters with square pixels are supported")
    return PixelGrid(
        crs=dataset.crs.to_wkt(),
        resolution=transform.a,
        left=transform.c,
        top=transform.f,
        width=dataset.width,
        height=dataset.height,
    )


def open_raster(uri: str) -> DatasetReader:
    """Open a raster for reading, with an error that names the file.

    Raises
    ------
    RasterReadError
        If GDAL cannot open it (missing, corrupt, not a raster).
    """
    try:
        return rasterio.open(gdal_path(uri))
    except rasterio.errors.RasterioIOError as exc:
        raise RasterReadError(f"{uri}: cannot open ({exc})") from exc


def open_resolution_level(uri: str, native: PixelGrid, factor: int) -> DatasetReader | None:
    """The raster's resolution level ``factor`` times coarser than full resolution, or ``None`` when
    the raster is not on ``native`` (it is then read at full resolution and resampled).

    GDAL exposes a JPEG2000 file's resolution levels as overviews: reading one decodes only the
    wavelet levels down to it, not the full-resolution pixels. The level's pixel (row, col) covers
    the full raster's pixels [row * factor, (row + 1) * factor) x [col * factor, ...)
    (:meth:`~evi_udf.raster.grid.PixelGrid.coarsened`); GDAL's own geotransform of an overview stretches it to
    the full extent, so it is read by pixel window (:func:`read_level_window`), not by coordinates.

    Raises
    ------
    RasterReadError
        If the file cannot be opened or has no level of that factor, naming the file.
    """
    with open_raster(uri) as full:
        if not dataset_grid(full).same_as(native) or full.shape != (native.height, native.width):
            return None
        factors = full.overviews(1)
    if factor not in factors:
        raise RasterReadError(
            f"{uri}: has no resolution level {factor}x coarser than full resolution (it has "
            f"{', '.join(f'{f}x' for f in factors) or 'none'}); raster.coarse_reads: full decodes it whole"
        )
    try:
        return rasterio.open(gdal_path(uri), overview_level=factors.index(factor))
    except rasterio.errors.RasterioIOError as exc:
        raise RasterReadError(f"{uri}: cannot open its {factor}x resolution level ({exc})") from exc


def read_level_window(dataset: DatasetReader, window: Window, nodata: float = 0) -> np.ndarray:
    """Read ``window`` (pixels of the coarsened grid) from a resolution level opened by
    :func:`open_resolution_level`; pixels past the level's edge are ``nodata``.

    Raises
    ------
    RasterReadError
        If decoding fails, naming the file.
    """
    col, row = int(window.col_off), int(window.row_off)
    width, height = int(window.width), int(window.height)
    # Padded by hand: rasterio's boundless reads go through a VRT of the file, which would not be the
    # level this dataset was opened at.
    inside_width, inside_height = min(width, dataset.width - col), min(height, dataset.height - row)
    try:
        if (inside_width, inside_height) == (width, height):
            return dataset.read(1, window=window)
        block = np.full((height, width), nodata, dtype=dataset.dtypes[0])
        if inside_width > 0 and inside_height > 0:
            block[:inside_height, :inside_width] = dataset.read(
                1, window=Window(col, row, inside_width, inside_height)
            )
        return block
    except rasterio.errors.RasterioIOError as exc:
        raise RasterReadError(f"{dataset.name}: cannot read block {window} ({exc})") from exc


class MaskTileRows:
    """Windows of one raster read through whole rows of its tiles, each row decoded once.

    Blocks walk the grid row by row, and a cloud mask coarser than the blocks (SCL at 20 m under
    1024 px blocks at 10 m) has each 1024 px JPEG2000 tile under two block rows and two block
    columns: read block by block it would be decoded four times. GDAL's block cache cannot keep it
    between block rows (the band tiles of every scene pass through it meanwhile), so the tile rows in
    use are kept here, and dropped once the blocks have moved below them: one row of tiles per mask
    (about 5.5 MB for a full-size SCL).
    """

    def __init__(self, dataset: DatasetReader) -> None:
        self.dataset = dataset
        self.tile_height = dataset.block_shapes[0][0]
        self._rows: dict[int, np.ndarray] = {}

    def read(self, window: Window) -> np.ndarray:
        """All bands of ``window`` (whole pixels; 0 where it reaches past the raster), shape
        (bands, rows, cols)."""
        dataset = self.dataset
        col, row = int(window.col_off), int(window.row_off)
        width, height = int(window.width), int(window.height)
        block = np.zeros((dataset.count, height, width), dtype=dataset.dtypes[0])
        top, bottom = max(row, 0), min(row + height, dataset.height)
        left, right = max(col, 0), min(col + width, dataset.width)
        if top >= bottom or left >= right:
            return block
        first, last = top // self.tile_height, (bottom - 1) // self.tile_height
        for index in [i for i in self._rows if i < first]:
            del self._rows[index]
        for index in range(first, last + 1):
            if index not in self._rows:
                start = index * self.tile_height
                tile_row = Window(0, start, dataset.width, min(self.tile_height, dataset.height - start))
                try:
                    self._rows[index] = dataset.read(window=tile_row)
                except rasterio.errors.RasterioIOError as exc:
                    raise RasterReadError(f"{dataset.name}: cannot read rows {tile_row} ({exc})") from exc
            start = index * self.tile_height
            data = self._rows[index]
            rows = slice(max(top, start), min(bottom, start + data.shape[1]))
            block[:, rows.start - row : rows.stop - row, left - col : right - col] = data[
                :, rows.start - start : rows.stop - start, left:right
            ]
        return block


def read_mask_block(tiles: MaskTileRows, grid: PixelGrid, window: Window, band: int = 1) -> np.ndarray:
    """``window`` of ``grid`` from a class raster by nearest neighbour, through its tile rows.

    Where the grid is the raster's own or finer by a whole factor and shares its pixel edges (a tile's
    masks under its bands), each mask pixel is repeated over the grid pixels it covers (what GDAL's
    nearest neighbour gives there); otherwise GDAL resamples (:func:`read_block`, no tile-row reuse).
    """
    dataset = tiles.dataset
    source = _aligned_window(dataset, grid, window)
    repeat = abs(dataset.res[0]) / grid.resolution
    starts_on_a_pixel = source is not None and all(float(v).is_integer() for v in source.flatten()[:2])
    if not starts_on_a_pixel or not math.isclose(repeat, round(repeat)) or round(repeat) < 1:
        return read_block(dataset, grid, window, Resampling.nearest, band=band)
    factor = round(repeat)
    # A block of odd width ends within a mask pixel: that whole pixel is read, then cropped.
    source = Window(source.col_off, source.row_off, math.ceil(source.width), math.ceil(source.height))
    pixels = tiles.read(source)[band - 1]
    if factor > 1:
        pixels = np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)
    return pixels[: int(window.height), : int(window.width)]


def _aligned_window(dataset: DatasetReader, grid: PixelGrid, window: Window) -> Window | None:
    """The dataset window covering ``window`` of ``grid`` when both grids share CRS and pixel edges."""
    if dataset.crs is None or dataset.crs != rasterio.crs.CRS.from_user_input(grid.crs):
        return None
    source = dataset_grid(dataset)
    ratio = grid.resolution / source.resolution
    col_off = (grid.left - source.left) / source.resolution
    row_off = (source.top - grid.top) / source.resolution
    # Aligned: pixel edges of the target fall on pixel edges of the source (same or integer ratio).
    scale = source.resolution / grid.resolution
    integer_ratio = any(math.isclose(r, round(r)) and round(r) >= 1 for r in (ratio, scale))
    if not (
        integer_ratio and math.isclose(col_off, round(col_off)) and math.isclose(row_off, round(row_off))
    ):
        return None
    left, bottom, right, top = _window_bounds(grid, window)
    exact = from_bounds(left, bottom, right, top, transform=dataset.transform)
    # Snap to whole pixels: from_bounds gives e.g. col_off 2047.999999999999, and GDAL reads a
    # fractional window through its resampling path, which decodes the neighbouring JPEG2000 tiles too
    # (a 1024 px block then cost ~9x the decode of its own tile, bench/NOTES.md).
    snapped = [round(value) for value in (exact.col_off, exact.row_off, exact.width, exact.height)]
    if all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(snapped, exact.flatten(), strict=True)):
        return Window(*snapped)
    return exact


def _window_bounds(grid: PixelGrid, window: Window) -> tuple[float, float, float, float]:
    left = grid.left + window.col_off * grid.resolution
    top = grid.top - window.row_off * grid.resolution
    return left, top - window.height * grid.resolution, left + window.width * grid.resolution, top


def read_block(
    dataset: DatasetReader,
    grid: PixelGrid,
    window: Window,
    resampling: Resampling,
    nodata: float = 0,
    band: int = 1,
) -> np.ndarray:
    """Read ``window`` of ``grid`` from ``dataset``, resampled onto the grid's pixels.

    When the dataset shares the grid's CRS and pixel edges (all scenes of a tile on the tile's own
    grid; SCL at 20 m under a 10 m block) the read is a plain windowed read, replicated or decimated
    by an integer factor. Otherwise GDAL warps it; source pixels equal to ``nodata`` take no part in
    the resampling, so swath and tile edges leave no stripes, and target pixels with no valid source
    are ``nodata``.

    Raises
    ------
    RasterReadError
        If decoding fails (corrupt or truncated file), naming the file.
    """
    shape = (int(window.height), int(window.width))
    try:
        source_window = _aligned_window(dataset, grid, window)
        if source_window is not None:
            inside = (
                source_window.col_off >= 0
                and source_window.row_off >= 0
                and source_window.col_off + source_window.width <= dataset.width + 1e-6
                and source_window.row_off + source_window.height <= dataset.height + 1e-6
            )
            # Boundless reads go through a VRT: only pay for it where the block overhangs the file.
            return dataset.read(
                band,
                window=source_window,
                out_shape=shape,
                resampling=resampling,
                boundless=not inside,
                fill_value=nodata,
            )
        with WarpedVRT(
            dataset,
            crs=grid.crs,
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            resampling=resampling,
            src_nodata=nodata,
            nodata=nodata,
            # Exact coordinate transformation for every pixel: the default approximation (0.125 px)
            # shifts values by a DN here and there, differently in each block, and even 1e-6 px left
            # rounding that differed between block sizes. With the fixed kernel scale below, a block
            # is warped exactly as a whole-raster warp would warp it.
            tolerance=1e-9,
            **kernel_scale(dataset.res, grid.resolution),
        ) as warped:
            return warped.read(band, window=window)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterReadError(f"{dataset.name}: cannot read block {window} ({exc})") from exc


def kernel_scale(source_resolution: tuple[float, float], target_resolution: float) -> dict[str, str]:
    """GDAL's XSCALE / YSCALE warp options: the resampling kernel's scale, fixed for the whole raster.

    Left to itself, GDAL estimates the scale for each chunk it warps from the chunk's shape, so
    neighbouring blocks of one output get slightly different kernels (a widened, smoothing bilinear
    in some, the plain one in others) and the output shows seams at block edges and depends on the
    block size. The rule here: destination pixels per source pixel, from the nominal resolutions:
    1 (the plain kernel) when the output grid has the source's resolution, below 1 (a kernel
    widened to cover the source pixels under each output pixel) for a coarser grid, above 1 (plain)
    for a finer one.
    """
    x_res, y_res = (abs(value) for value in source_resolution)
    return {"XSCALE": f"{x_res / target_resolution:.12g}", "YSCALE": f"{y_res / target_resolution:.12g}"}


@contextlib.contextmanager
def scratch_raster(
    grid: PixelGrid, count: int, dtype: str, nodata: float, directory: str | None = None
) -> Iterator[tuple[Path, rasterio.io.DatasetWriter]]:
    """A temporary tiled GeoTIFF on ``grid``, removed when the context exits."""
    handle, name = tempfile.mkstemp(suffix=".tif", dir=directory)
    os.close(handle)
    path = Path(name)
    try:
        with rasterio.open(
            path,
            "w",
            width=grid.width,
            height=grid.height,
            count=count,
            dtype=dtype,
            crs=grid.crs,
            transform=grid.transform,
            nodata=nodata,
            **SCRATCH_PROFILE,
        ) as dataset:
            yield path, dataset
    finally:
        path.unlink(missing_ok=True)


def warp_to_grid(
    source: Path,
    target: PixelGrid,
    destination: Path,
    resampling_by_band: Mapping[int, Resampling],
    nodata: float,
    block_size: int = 1024,
) -> None:
    """Warp every band of ``source`` onto ``target`` block by block into a new tiled GeoTIFF.

    The result does not depend on ``block_size``: the coordinate transformation is exact and the
    kernel scale fixed (:func:`kernel_scale`), so every block is warped as one whole-raster warp would.
    """
    with rasterio.open(source) as src:
        profile = {**SCRATCH_PROFILE, "count": src.count, "dtype": src.dtypes[0]}
        with rasterio.open(
            destination,
            "w",
            width=target.width,
            height=target.height,
            crs=target.crs,
            transform=target.transform,
            nodata=nodata,
            **profile,
        ) as dst:
            for band in range(1, src.count + 1):
                for window in block_windows(target.width, target.height, block_size):
                    block = read_block(
                        src, target, window, resampling_by_band[band], nodata=nodata, band=band
                    )
                    dst.write(block, band, window=window)


def write_cog(
    source: Path, destination: Path, profile_name: str, tags: Mapping[str, str] | None = None
) -> None:
    """Copy a tiled GeoTIFF into a Cloud-Optimized GeoTIFF with internal overviews.

    Raises
    ------
    RasterWriteError
        If the profile is unknown or GDAL fails, naming the destination.
    """
    if profile_name not in COG_PROFILES:
        raise RasterWriteError(
            f"unknown COG profile {profile_name!r}; choose one of {', '.join(COG_PROFILES)}"
        )
    options = dict(COG_PROFILES[profile_name])
    try:
        with rasterio.open(source, "r+") as dataset:
            if tags:
                dataset.update_tags(**tags)
        rasterio.shutil.copy(
            source, destination, driver="COG", OVERVIEWS="AUTO", OVERVIEW_RESAMPLING="AVERAGE", **options
        )
    except rasterio.errors.RasterioError as exc:
        raise RasterWriteError(f"{destination}: cannot write the COG ({exc})") from exc
