"""Grids, block reads and warps against rasterio.warp.reproject of the whole array."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.warp import reproject
from rio_cogeo.cogeo import cog_validate

from evi_udf.raster.grid import PixelGrid, SharedGrid, block_windows
from evi_udf.raster.io import dataset_grid, open_raster, read_block, write_cog

RasterFactory = Callable[..., Path]


@pytest.fixture
def make_raster(tmp_path: Path) -> RasterFactory:
    """Factory: a GeoTIFF with any CRS, origin, pixel size, dtype and data."""

    def make(
        data: np.ndarray,
        crs: str,
        left: float,
        top: float,
        resolution: float,
        nodata: float = 0,
        name: str = "r.tif",
    ) -> Path:
        path = tmp_path / name
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=data.shape[1],
            height=data.shape[0],
            count=1,
            dtype=data.dtype,
            crs=crs,
            transform=Affine(resolution, 0, left, 0, -resolution, top),
            nodata=nodata,
        ) as dataset:
            dataset.write(data, 1)
        return path

    return make


def smooth_field(rows: int, cols: int) -> np.ndarray:
    y, x = np.mgrid[0:rows, 0:cols]
    return (1000 + 300 * np.sin(x / 17.0) + 200 * np.cos(y / 11.0)).astype(np.uint16)


def test_block_windows_tile_the_grid_exactly_once() -> None:
    covered = np.zeros((700, 1100), dtype=int)
    for window in block_windows(1100, 700, 256):
        covered[
            window.row_off : window.row_off + window.height, window.col_off : window.col_off + window.width
        ] += 1
        assert window.width <= 256 and window.height <= 256
    assert (covered == 1).all()


def test_shared_grid_cover_snaps_to_the_origin_and_contains_the_tile() -> None:
    native = PixelGrid("EPSG:32755", 10.0, 200000.0, 5900000.0, 10980, 10980)
    shared = SharedGrid("EPSG:3577", 10.0, origin=(5.0, -5.0)).cover(native)
    left, bottom, right, top = shared.bounds
    # Whole pixels of the shared grid: edges sit at origin + k * 10.
    for edge, origin in ((left, 5.0), (right, 5.0), (top, -5.0), (bottom, -5.0)):
        assert (edge - origin) / 10.0 == pytest.approx(round((edge - origin) / 10.0), abs=1e-9)
    # Every corner of the tile, transformed independently, lies inside.
    from pyproj import Transformer

    to_albers = Transformer.from_crs(32755, 3577, always_xy=True)
    for x, y in ((200000, 5900000), (309800, 5900000), (200000, 5790200), (309800, 5790200)):
        ax, ay = to_albers.transform(x, y)
        assert left <= ax <= right and bottom <= ay <= top
    # And no bigger than needed: the corners' span plus at most a pixel of snapping and the bulge of
    # edges that curve in Albers (well under a kilometre over 110 km).
    corners = [
        to_albers.transform(x, y)
        for x, y in ((200000, 5900000), (309800, 5900000), (200000, 5790200), (309800, 5790200))
    ]
    span_x = max(c[0] for c in corners) - min(c[0] for c in corners)
    span_y = max(c[1] for c in corners) - min(c[1] for c in corners)
    assert span_x <= shared.width * 10 <= span_x + 1000
    assert span_y <= shared.height * 10 <= span_y + 1000


def warp_in_blocks(path: Path, block_size: int = 128) -> tuple[np.ndarray, PixelGrid, PixelGrid]:
    with open_raster(str(path)) as dataset:
        native = dataset_grid(dataset)
        target = SharedGrid("EPSG:3577", 10.0).cover(native)
        mosaic = np.full((target.height, target.width), np.nan, dtype=np.float32)
        for window in block_windows(target.width, target.height, block_size):
            block = read_block(dataset, target, window, Resampling.bilinear, nodata=np.nan)
            mosaic[
                window.row_off : window.row_off + window.height,
                window.col_off : window.col_off + window.width,
            ] = block
    return mosaic, native, target


def test_warped_block_reads_match_a_whole_array_reproject(make_raster: RasterFactory) -> None:
    data = smooth_field(300, 300).astype(np.float32)
    data[:, :40] = np.nan  # a no-data edge, like a swath edge
    mosaic, native, target = warp_in_blocks(
        make_raster(data, "EPSG:32755", 200000.0, 5900000.0, 10.0, nodata=np.nan)
    )
    expected = np.full_like(mosaic, np.nan)
    reproject(
        data,
        expected,
        src_transform=native.transform,
        src_crs="EPSG:32755",
        src_nodata=np.nan,
        dst_transform=target.transform,
        dst_crs="EPSG:3577",
        dst_nodata=np.nan,
        resampling=Resampling.bilinear,
    )
    both = np.isfinite(mosaic) & np.isfinite(expected)
    assert both.sum() > 0.9 * np.isfinite(expected).sum() > 0
    # reproject() maps coordinates with GDAL's approximate transformer (up to 0.125 px off); the field
    # changes by at most ~26 per px, so values may differ by 0.125 * 26 = 3.3, and by far less typically.
    difference = np.abs(mosaic[both] - expected[both])
    assert difference.max() <= 3.3
    assert np.median(difference) < 0.5
    # Valid areas agree except along the no-data edge, where the two approximations place it a
    # fraction of a pixel apart.
    assert (np.isfinite(mosaic) != np.isfinite(expected)).sum() <= 2 * target.height


def test_warped_nearest_reads_equal_an_exact_pyproj_mapping(make_raster: RasterFactory) -> None:
    data = np.arange(300 * 300, dtype=np.float32).reshape(300, 300)
    path = make_raster(data, "EPSG:32755", 200000.0, 5900000.0, 10.0, nodata=-1)
    with open_raster(str(path)) as dataset:
        native = dataset_grid(dataset)
        target = SharedGrid("EPSG:3577", 10.0).cover(native)
        mosaic = np.full((target.height, target.width), -1, dtype=np.float32)
        for window in block_windows(target.width, target.height, 100):
            block = read_block(dataset, target, window, Resampling.nearest, nodata=-1)
            mosaic[
                window.row_off : window.row_off + window.height,
                window.col_off : window.col_off + window.width,
            ] = block
    # Independent reference: each target pixel centre mapped exactly with pyproj into the source.
    from pyproj import Transformer

    rows, cols = np.mgrid[0 : target.height, 0 : target.width]
    x = target.left + (cols + 0.5) * target.resolution
    y = target.top - (rows + 0.5) * target.resolution
    ux, uy = Transformer.from_crs(3577, 32755, always_xy=True).transform(x, y)
    col = np.floor((ux - native.left) / native.resolution).astype(int)
    row = np.floor((native.top - uy) / native.resolution).astype(int)
    inside = (col >= 0) & (row >= 0) & (col < 300) & (row < 300)
    expected = np.where(inside, data[np.clip(row, 0, 299), np.clip(col, 0, 299)], -1)
    # Every pixel the same source pixel, but for centres within a hair of a source pixel edge.
    assert (mosaic == expected).mean() > 0.999


def test_aligned_coarser_band_is_replicated_without_warping(make_raster: RasterFactory) -> None:
    scl = np.arange(36, dtype=np.uint8).reshape(6, 6)
    path = make_raster(scl, "EPSG:32755", 200000.0, 5900000.0, 20.0, name="scl.tif")
    grid_10m = PixelGrid("EPSG:32755", 10.0, 200000.0, 5900000.0, 12, 12)
    with open_raster(str(path)) as dataset:
        window = rasterio.windows.Window(4, 2, 6, 8)
        block = read_block(dataset, grid_10m, window, Resampling.nearest)
    expected = np.kron(scl, np.ones((2, 2), dtype=np.uint8))[2:10, 4:10]
    np.testing.assert_array_equal(block, expected)


def test_block_overhanging_the_file_is_filled_with_nodata(make_raster: RasterFactory) -> None:
    data = np.full((4, 4), 7, dtype=np.uint16)
    path = make_raster(data, "EPSG:32755", 1000.0, 2000.0, 10.0, name="small.tif")
    grid = PixelGrid("EPSG:32755", 10.0, 980.0, 2000.0, 6, 4)
    with open_raster(str(path)) as dataset:
        block = read_block(dataset, grid, rasterio.windows.Window(0, 0, 6, 4), Resampling.nearest)
    assert block[:, :2].tolist() == [[0, 0]] * 4
    assert (block[:, 2:] == 7).all()


def test_opening_a_missing_or_corrupt_file_names_it(tmp_path: Path) -> None:
    from evi_udf.errors import RasterReadError

    with pytest.raises(RasterReadError, match="nope.jp2: cannot open"):
        open_raster(str(tmp_path / "nope.jp2"))
    corrupt = tmp_path / "corrupt.jp2"
    corrupt.write_bytes(b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"garbage" * 10)
    with pytest.raises(RasterReadError, match="corrupt.jp2"):
        open_raster(str(corrupt))


def test_cog_has_average_overviews_and_validates(make_raster: RasterFactory, tmp_path: Path) -> None:
    data = np.zeros((1100, 1100), dtype=np.int16)
    data[:, 550:] = 4000  # two halves: the overview pixel on the boundary averages nothing across it
    data[:4, :4] = -32768  # a nodata corner
    with rasterio.open(make_raster(data, "EPSG:32755", 200000, 5900000, 10.0, nodata=-32768), "r") as src:
        profile = src.profile
    source = tmp_path / "tiled.tif"
    with rasterio.open(
        source, "w", **{**profile, "tiled": True, "blockxsize": 256, "blockysize": 256}
    ) as dst:
        dst.write(data, 1)
    cog = tmp_path / "out.tif"
    write_cog(source, cog, "zstd", tags={"MGRS_TILE": "55HBU"})
    assert cog_validate(str(cog))[0]
    with rasterio.open(cog) as dataset:
        assert dataset.overviews(1) == [2, 4]  # 1100 -> 550 -> 275 (fits a 512 px block)
        assert dataset.tags()["MGRS_TILE"] == "55HBU"
        np.testing.assert_array_equal(dataset.read(1), data)
    with rasterio.open(cog, overview_level=0) as half:
        overview = half.read(1)
    # Means of 2 x 2 pixels, worked out from the halves: 0 left of column 275, 4000 from it on, and
    # nodata where all four pixels are nodata.
    assert overview.shape == (550, 550)
    expected = np.zeros((550, 550), dtype=np.int16)
    expected[:, 275:] = 4000
    expected[:2, :2] = -32768
    np.testing.assert_array_equal(overview, expected)


def evi_like_field(rows: int, cols: int) -> np.ndarray:
    """Float values with sharp edges (what a warp kernel smears differently if its scale changes),
    and a no-data hole."""
    y, x = np.mgrid[0:rows, 0:cols]
    values = 0.4 + 0.3 * np.sin(x / 7.0) * np.cos(y / 5.0) + 0.2 * ((x // 9 + y // 13) % 2)
    values[rows // 3 : rows // 2, cols // 4 : cols // 3] = np.nan
    return values.astype(np.float32)


@pytest.mark.parametrize("resolution", [10.0, 30.0])
def test_a_shared_grid_warp_does_not_depend_on_how_it_is_cut_into_blocks(
    make_raster: RasterFactory, tmp_path: Path, resolution: float
) -> None:
    from evi_udf.raster.io import kernel_scale, warp_to_grid

    rows = cols = 900
    source = make_raster(evi_like_field(rows, cols), "EPSG:32755", 300000.0, 5900000.0, 10.0, float("nan"))
    with rasterio.open(source) as dataset:
        native = dataset_grid(dataset)
    target = SharedGrid("EPSG:3577", resolution, (0.0, 0.0)).cover(native)
    warped = {}
    for block in (256, 1024, max(target.width, target.height)):
        destination = tmp_path / f"warped_{block}.tif"
        warp_to_grid(source, target, destination, {1: Resampling.bilinear}, float("nan"), block_size=block)
        with rasterio.open(destination) as dataset:
            warped[block] = dataset.read(1)
    first, *others = warped.values()
    for other in others:
        np.testing.assert_array_equal(first, other)

    # One whole-raster GDAL warp with the same settings (exact transformation, fixed kernel scale),
    # read in one request rather than cut into our blocks.
    with (
        rasterio.open(source) as dataset,
        WarpedVRT(
            dataset,
            crs=target.crs,
            transform=target.transform,
            width=target.width,
            height=target.height,
            resampling=Resampling.bilinear,
            src_nodata=float("nan"),
            nodata=float("nan"),
            tolerance=1e-9,
            **kernel_scale(dataset.res, resolution),
        ) as whole,
    ):
        reference = whole.read(1)
    both = np.isfinite(first) & np.isfinite(reference)
    assert both.sum() > 0.5 * first.size
    within_a_step = np.abs(first[both] - reference[both]) <= 1e-4
    assert within_a_step.mean() >= 0.9999, within_a_step.mean()
    assert np.mean(np.isfinite(first) == np.isfinite(reference)) >= 0.999


def test_the_kernel_scale_is_the_resolution_ratio() -> None:
    from evi_udf.raster.io import kernel_scale

    assert kernel_scale((10.0, -10.0), 10.0) == {"XSCALE": "1", "YSCALE": "1"}
    assert kernel_scale((10.0, 10.0), 60.0) == {"XSCALE": "0.166666666667", "YSCALE": "0.166666666667"}
    assert kernel_scale((20.0, 20.0), 10.0) == {"XSCALE": "2", "YSCALE": "2"}


def test_a_resolution_level_is_read_by_pixel_window_and_padded_past_its_edge(tmp_path: Path) -> None:
    from rasterio.windows import Window

    from evi_udf.errors import RasterReadError
    from evi_udf.raster.io import open_resolution_level, read_level_window

    native = PixelGrid("EPSG:32755", 10.0, 300000.0, 6000000.0, 600, 600)
    values = np.arange(600 * 600, dtype=np.uint16).reshape(600, 600) % 5000 + 1
    path = tmp_path / "band.tif"
    profile = {"driver": "GTiff", "width": 600, "height": 600, "count": 1, "dtype": "uint16"}
    with rasterio.open(path, "w", crs=native.crs, transform=native.transform, **profile) as dataset:
        dataset.write(values, 1)
    with pytest.raises(RasterReadError, match=r"band.tif: has no resolution level 4x .*\(it has none\)"):
        open_resolution_level(str(path), native, 4)
    with rasterio.open(path, "r+") as dataset:
        dataset.build_overviews([2, 4], Resampling.average)
    # GDAL's 4x overview: 150 px, the mean of each 4 x 4 cell.
    expected = values.reshape(150, 4, 150, 4).mean(axis=(1, 3))
    with open_resolution_level(str(path), native, 4) as level:
        assert level.shape == (150, 150)
        inside = read_level_window(level, Window(100, 120, 50, 30))
        np.testing.assert_allclose(inside, expected[120:150, 100:150], atol=0.5)
        # A block reaching past the level's edge: the missing part is the no-data value.
        edge = read_level_window(level, Window(128, 140, 64, 16), nodata=0)
        assert edge.shape == (16, 64)
        np.testing.assert_allclose(edge[:10, :22], expected[140:150, 128:150], atol=0.5)
        assert (edge[10:] == 0).all() and (edge[:, 22:] == 0).all()
    # A band on another grid is not read by pixel window: the caller resamples it.
    shifted = dataclasses.replace(native, left=native.left + 10.0)
    assert open_resolution_level(str(path), shifted, 4) is None


def test_mask_reads_through_tile_rows_equal_gdal_nearest_and_decode_each_row_once(tmp_path: Path) -> None:
    from evi_udf.raster.io import MaskTileRows, read_mask_block

    # A 20 m class raster in 64 px tiles under a 10 m grid read in 96 px blocks: blocks straddle
    # tile rows and columns, and the last ones reach past the raster.
    rng = np.random.default_rng(4)
    classes = rng.integers(0, 12, (150, 130), dtype=np.uint8)
    mask_grid = PixelGrid("EPSG:32755", 20.0, 300000.0, 6000000.0, 130, 150)
    path = tmp_path / "scl.tif"
    profile = {"driver": "GTiff", "width": 130, "height": 150, "count": 1, "dtype": "uint8"}
    tiling = {"tiled": True, "blockxsize": 64, "blockysize": 64}
    georef = {"crs": mask_grid.crs, "transform": mask_grid.transform}
    with rasterio.open(path, "w", **georef, **profile, **tiling) as out:
        out.write(classes, 1)
    grid = PixelGrid("EPSG:32755", 10.0, 300000.0, 6000000.0, 265, 305)

    class CountingReads:
        """The dataset, with its reads recorded."""

        def __init__(self, dataset: rasterio.io.DatasetReader) -> None:
            self.dataset, self.windows = dataset, []

        def read(self, *args: object, **kwargs: object) -> np.ndarray:
            self.windows.append(kwargs["window"])
            return self.dataset.read(*args, **kwargs)

        def __getattr__(self, name: str) -> object:
            return getattr(self.dataset, name)

    with rasterio.open(path) as dataset:
        counting = CountingReads(dataset)
        tiles = MaskTileRows(counting)  # type: ignore[arg-type]
        for window in block_windows(grid.width, grid.height, 96):
            got = read_mask_block(tiles, grid, window)
            # Independently: each 20 m class over the 2 x 2 grid pixels it covers, 0 past the edge.
            rows = np.arange(window.row_off, window.row_off + window.height) // 2
            cols = np.arange(window.col_off, window.col_off + window.width) // 2
            expected = np.zeros((len(rows), len(cols)), dtype=np.uint8)
            inside_rows, inside_cols = rows < 150, cols < 130
            expected[np.ix_(inside_rows, inside_cols)] = classes[np.ix_(rows[inside_rows], cols[inside_cols])]
            np.testing.assert_array_equal(got, expected)
        # Each of the three tile rows was decoded once, whole.
        decoded = [(w.row_off, w.height, w.width) for w in counting.windows]
        assert decoded == [(0, 64, 130), (64, 64, 130), (128, 22, 130)]
        # A grid that does not share the mask's pixel edges is resampled by GDAL instead.
        shifted = dataclasses.replace(grid, left=grid.left + 5.0)
        window = rasterio.windows.Window(0, 0, 50, 40)
        np.testing.assert_array_equal(
            read_mask_block(MaskTileRows(dataset), shifted, window),
            read_block(dataset, shifted, window, Resampling.nearest),
        )
