"""One group (the scenes of one tile and period) end to end: EVI composite COG, STAC item and rows.

Memory is bounded by the block size and the number of scenes, never by the tile size: the tile's
native grid is walked in blocks aligned with the 1024 x 1024 JPEG2000 tiles; for each block every
scene's bands are read, turned into reflectance with the scene's own offset, masked, turned into EVI
and fed to the compositor and the scene's statistics. The native composite goes to a scratch file,
is warped once onto the output grid when that is not the native one, quantized, written as a COG and
published under its final name only when complete.

A scene that fails (missing file, corrupt JPEG2000, bad XML) becomes a failure row and the composite
is made from the others; if a scene fails halfway through the blocks, the composite restarts without
it so that no block holds its partial contribution.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import math
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

import evi_udf
from evi_udf.config import JobConfig, RasterConfig
from evi_udf.errors import EviError, MetadataError, RasterWriteError, StorageError
from evi_udf.outputs.mosaic import Canvas, MosaicPiece, paint
from evi_udf.outputs.rows import CompositeRow, EviStatisticsColumns, FailureRow, SceneRow
from evi_udf.outputs.stac import composite_item, footprint_ring, ring_wkt, to_json
from evi_udf.pixels.compositing import get_compositor
from evi_udf.pixels.evi import EviRules, compute_evi
from evi_udf.pixels.radiometry import (
    SCL_NO_DATA,
    classi_clear_mask,
    coarsen_mask,
    dn_to_reflectance,
    observed_and_clear,
    scl_clear_mask,
)
from evi_udf.pixels.stats import QUANTIZATION, EviAccumulator, EviSummary
from evi_udf.raster.grid import PixelGrid, SharedGrid, block_windows
from evi_udf.raster.io import (
    GDAL_ENV,
    MaskTileRows,
    dataset_grid,
    join_uri,
    open_raster,
    open_resolution_level,
    read_block,
    read_level_window,
    read_mask_block,
    scratch_raster,
    warp_to_grid,
    write_cog,
)
from evi_udf.raster.metadata import (
    FIRST_BASELINE_WITH_OFFSETS,
    ProductMetadata,
    parse_cloud_mask_gml,
    parse_product_metadata,
)
from evi_udf.storage import Storage
from evi_udf.task.group import GroupKey, SceneRef
from evi_udf.task.identity import grid_name, parameter_hash
from evi_udf.task.names import GroupOutputs, group_outputs, new_attempt
from evi_udf.zones.pixels import ZoneInput, tile_zones
from evi_udf.zones.statistics import ZoneCollector, ZoneStatistics, block_zones

EVI_BANDS = ("B02", "B04", "B08")
INT16_NODATA = -32768
# Colour ramp of the quick-look: EVI stops and RGB (water blue, bare soil brown, vegetation greens).
QUICKLOOK_STOPS = np.array([-0.2, -0.03, 0.05, 0.2, 0.4, 0.6, 0.8], dtype=np.float32)
QUICKLOOK_COLOURS = np.array(
    [
        [20, 60, 150],
        [70, 120, 200],
        [166, 97, 26],
        [223, 194, 125],
        [166, 219, 160],
        [90, 174, 97],
        [0, 90, 50],
    ],
    dtype=np.float32,
)


@dataclasses.dataclass(frozen=True)
class GroupResult:
    """What one group produced: the composite row (None if the group failed), scene and failure rows,
    the composite's piece of the run mosaic when a canvas was given, and with zones, each scene's
    zone statistics (in the order of ``scenes``) and the composite's."""

    composite: CompositeRow | None
    scenes: list[SceneRow]
    failures: list[FailureRow]
    mosaic_piece: MosaicPiece | None = None
    zone_scenes: list[ZoneStatistics] = dataclasses.field(default_factory=list)
    zone_composite: ZoneStatistics | None = None


@dataclasses.dataclass
class _PreparedScene:
    ref: SceneRef
    metadata: ProductMetadata
    band_uris: dict[str, str]
    mask_kind: str  # "scl", "classi" or "gml"
    mask_uri: str
    cloud_polygons: list[dict[str, object]]


@dataclasses.dataclass
class _Acquisition:
    """One observation of the tile: the products (parts) of one datatake and baseline, newest
    generation first; usually one, two for a tile ESA delivered in two parts."""

    parts: list[_PreparedScene]
    accumulator: EviAccumulator

    @property
    def primary(self) -> _PreparedScene:
        return self.parts[0]

    @property
    def ref(self) -> SceneRef:
        return self.parts[0].ref


class _SceneFailed(Exception):
    def __init__(self, scene: _PreparedScene, error: EviError) -> None:
        super().__init__(str(error))
        self.scene = scene
        self.error = error


# The oldest L1C products (PSD 13, 2015-2016) name their metadata after the product, not MTD_MSIL1C.xml:
# S2A_OPER_PRD_MSIL1C_PDMC_<...>.SAFE holds S2A_OPER_MTD_SAFL1C_PDMC_<...>.xml.
_OLD_PRODUCT_FOLDER = re.compile(r"^(S2[A-D])_OPER_PRD_MSIL1C_(.+?)(?:\.SAFE)?/?$")


def product_metadata_candidates(base_url: str, level: str) -> list[str]:
    """Where a product's metadata may be: ``MTD_MSI<level>.xml``, then the oldest format's name."""
    candidates = [join_uri(base_url, f"MTD_MSI{level}.xml")]
    match = _OLD_PRODUCT_FOLDER.match(base_url.rstrip("/").rsplit("/", 1)[-1])
    if level == "L1C" and match:
        candidates.append(join_uri(base_url, f"{match[1]}_OPER_MTD_SAFL1C_{match[2]}.xml"))
    return candidates


def _read_product_metadata(ref: SceneRef, store: Storage) -> ProductMetadata:
    candidates = product_metadata_candidates(ref.base_url, ref.level)
    for number, uri in enumerate(candidates):
        try:
            data = store.read_bytes(uri)
        except StorageError:
            if number + 1 < len(candidates):
                continue
            raise
        return parse_product_metadata(data, uri, tile=ref.mgrs_tile, granule_id=ref.granule_id)
    raise AssertionError("unreachable")  # the loop returns or raises


# L1C cloud masks (QI_DATA of the granule): a raster from baseline 04.00, GML vectors before. Found by
# listing the folder, as their names differ between the old and the compact naming.
_CLASSI_MASK = re.compile(r"MSK_CLASSI_B00\.jp2$")
_GML_MASK = re.compile(r"MSK_CLOUDS_.*B00.*\.gml$|MSK_CLOUDS_B00\.gml$")


def _l1c_mask(ref: SceneRef, metadata: ProductMetadata, store: Storage) -> tuple[str, str]:
    granule_dir = metadata.band_file("B02").split("/IMG_DATA/")[0]
    folder = join_uri(ref.base_url, f"{granule_dir}/QI_DATA")
    kind, pattern = (
        ("classi", _CLASSI_MASK)
        if metadata.processing_baseline >= FIRST_BASELINE_WITH_OFFSETS
        else ("gml", _GML_MASK)
    )
    found = sorted(item.uri for item in store.list_objects(folder + "/") if pattern.search(item.uri))
    if not found:
        raise MetadataError(
            f"{folder}: no {'MSK_CLASSI_B00.jp2' if kind == 'classi' else 'MSK_CLOUDS ... B00 .gml'} cloud "
            f"mask for a baseline {metadata.processing_baseline} L1C product"
        )
    return kind, found[0]


def _prepare_scene(ref: SceneRef, config: RasterConfig, store: Storage, inputs: Path) -> _PreparedScene:
    """Read a scene's metadata and make its band and mask files local (downloaded when remote)."""
    metadata = _read_product_metadata(ref, store)
    if metadata.level != ref.level:
        raise MetadataError(
            f"{metadata.source}: is a {metadata.level} product but the index row says {ref.level}"
        )
    for band in EVI_BANDS:
        metadata.offset(band)  # a product with offsets for some bands only is unusable
    polygons: list[dict[str, object]] = []
    if ref.level == "L2A":
        mask_kind, mask_uri = "scl", join_uri(ref.base_url, metadata.band_file("SCL"))
    else:
        mask_kind, mask_uri = _l1c_mask(ref, metadata, store)
        if mask_kind == "gml":
            polygons = parse_cloud_mask_gml(store.read_bytes(mask_uri), mask_uri)
    band_paths = {
        band: str(store.fetch(join_uri(ref.base_url, metadata.band_file(band)), inputs)) for band in EVI_BANDS
    }
    mask_path = str(store.fetch(mask_uri, inputs)) if mask_kind != "gml" else mask_uri
    return _PreparedScene(ref, metadata, band_paths, mask_kind, mask_path, polygons)


@dataclasses.dataclass
class _RawBlock:
    """One product over one block: what its cloud mask keeps and has data for, and the DN of its bands
    (``None`` when the mask keeps no pixel of the block, so that the bands were not decoded)."""

    mask_clear: np.ndarray
    mask_data: np.ndarray
    dn: dict[str, np.ndarray] | None


@dataclasses.dataclass
class _SceneReaders:
    """One product's open files during a composite: its bands (full resolution, or the resolution
    level of a coarsened grid when ``bands_at_level``) and its cloud mask raster, if any."""

    bands: dict[str, rasterio.io.DatasetReader]
    mask: MaskTileRows | None
    bands_at_level: bool = False


def _mask_layers(
    scene: _PreparedScene,
    readers: _SceneReaders,
    grid: PixelGrid,
    window: Window,
    config: RasterConfig,
    coarsened: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(clear, has data) by the product's cloud mask over one block.

    SCL says both (class 0 is no data); the L1C masks only say clear or not, so they count as having
    data everywhere and the bands decide (a pixel outside the swath is clear by them, then no data).
    On a grid coarser than the mask (resolution levels) the mask is read at its own resolution, never
    from its JPEG2000 levels (a wavelet average of class codes is no class), and a coarse pixel is
    clear only if every mask pixel under it is, has data if any has (:func:`coarsen_mask`).
    """
    shape = (int(window.height), int(window.width))
    everywhere = np.ones(shape, dtype=bool)
    if readers.mask is not None:
        mask = readers.mask
        factor = max(1, math.ceil(grid.resolution / abs(mask.dataset.res[0]) - 1e-9))
        fine_grid, fine_window = grid, window
        if factor > 1:
            fine_grid = grid.refined(factor)
            fine_window = Window(*(value * factor for value in window.flatten()))
        if scene.mask_kind == "scl":
            scl = read_mask_block(mask, fine_grid, fine_window)
            clear, has_data = scl_clear_mask(scl, config.scl_clear_classes), scl != SCL_NO_DATA
        else:
            classi = np.stack([read_mask_block(mask, fine_grid, fine_window, band=b) for b in (1, 2, 3)])
            clear = classi_clear_mask(classi, mask_snow=config.l1c_mask_snow)
            has_data = np.ones(clear.shape, dtype=bool)
        if factor > 1:
            clear, has_data = coarsen_mask(clear, factor, "all"), coarsen_mask(has_data, factor, "any")
        return clear, has_data
    if scene.cloud_polygons:
        cloudy = rasterize(
            [(polygon, 1) for polygon in scene.cloud_polygons],
            out_shape=shape,
            transform=window_transform(window, grid.transform),
            fill=0,
            dtype="uint8",
            # On a coarsened grid every pixel a cloud polygon touches is cloudy, as above.
            all_touched=coarsened,
        )
        return cloudy == 0, everywhere
    return everywhere, everywhere


def _read_scene_block(
    scene: _PreparedScene,
    readers: _SceneReaders,
    grid: PixelGrid,
    window: Window,
    config: RasterConfig,
    level: int = 1,
) -> _RawBlock:
    """Read one product's cloud mask over one block, then its bands only if the mask keeps a pixel.

    Decoding the three 10 m bands is most of a group's time, and in a cloudy month most blocks of most
    scenes have no clear pixel: their bands cannot change any output (:func:`observed_and_clear`).
    ``level``: how many times coarser than the tile's own grid ``grid`` is.
    """
    mask_clear, mask_data = _mask_layers(scene, readers, grid, window, config, coarsened=level > 1)
    if config.skip_masked_blocks and not (mask_clear & mask_data).any():
        return _RawBlock(mask_clear, mask_data, None)
    if readers.bands_at_level:
        dn = {band: read_level_window(readers.bands[band], window, nodata=0) for band in EVI_BANDS}
    else:
        resampling = Resampling[config.resampling]
        dn = {band: read_block(readers.bands[band], grid, window, resampling, nodata=0) for band in EVI_BANDS}
    return _RawBlock(mask_clear, mask_data, dn)


def _part_evi(
    scene: _PreparedScene, raw: _RawBlock, config: RasterConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EVI of one product over one block (NaN = not a clear valid observation), where it has data,
    and where it is clear (:func:`observed_and_clear`)."""
    if raw.dn is None:
        has_data, clear = observed_and_clear(raw.mask_clear, raw.mask_data, None)
        return np.full(clear.shape, np.nan, dtype=np.float32), has_data, clear
    reflectance = {
        band: dn_to_reflectance(raw.dn[band], scene.metadata.offset(band), scene.metadata.quantification)
        for band in EVI_BANDS
    }
    bands_valid = (
        np.isfinite(reflectance["B02"]) & np.isfinite(reflectance["B04"]) & np.isfinite(reflectance["B08"])
    )
    has_data, clear = observed_and_clear(raw.mask_clear, raw.mask_data, bands_valid)
    for band in EVI_BANDS:
        reflectance[band][~clear] = np.nan
    result = compute_evi(
        reflectance["B02"],
        reflectance["B04"],
        reflectance["B08"],
        EviRules(config.evi_valid_min, config.evi_valid_max, config.evi_min_denominator),
    )
    return result.values, has_data, clear


def merge_parts(
    parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One observation from the parts of a split acquisition, newest generation first.

    Each part is (EVI, has data, clear). A pixel takes the EVI of the first part with a valid one;
    it has data, or is clear, if any part has or is. With one part this is that part.
    """
    values, has_data, clear = (array.copy() for array in parts[0])
    for part_values, part_data, part_clear in parts[1:]:
        fill = np.isnan(values) & ~np.isnan(part_values)
        values[fill] = part_values[fill]
        has_data |= part_data
        clear |= part_clear
    return values, has_data, clear


def _acquisition_evi(
    acquisition: _Acquisition, raws: Sequence[_RawBlock], config: RasterConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EVI of one acquisition over one block, where it has data and where it is clear; feeds its
    statistics."""
    values, has_data, clear = merge_parts(
        [_part_evi(part, raw, config) for part, raw in zip(acquisition.parts, raws, strict=True)]
    )
    acquisition.accumulator.add(
        values,
        masked=int((has_data & ~clear).sum()),
        nodata=int((~has_data).sum()),
        invalid=int((clear & np.isnan(values)).sum()),
    )
    return values, has_data, clear


BlockWriter = Callable[[Window, np.ndarray, np.ndarray, np.ndarray], None]


@dataclasses.dataclass(frozen=True)
class _ZoneResults:
    scenes: list[ZoneStatistics]
    composite: ZoneStatistics


def _composite_native(
    acquisitions: list[_Acquisition],
    native: PixelGrid,
    config: RasterConfig,
    write: BlockWriter,
    level: int = 1,
    zones: ZoneInput | None = None,
) -> _ZoneResults | None:
    """Walk the tile's grid block by block (coarsened ``level`` times, reading the bands' JPEG2000
    resolution level, when ``level`` > 1), handing each composite block (EVI, clear count, data
    coverage) to ``write``; raise _SceneFailed naming the product that broke.

    With ``zones``, each block's zone labels are drawn once and every acquisition's EVI and the
    composite's feed per-zone statistics from the same block (no band is read twice); a zone is
    finished as soon as the walk has passed its last row.

    The next block's bands are decoded on a reader thread while this block's EVI and composite are
    computed: GDAL releases the GIL while it decodes, so the arithmetic (single-threaded numpy) no
    longer leaves the decoder waiting. One reader, so each dataset is used by one thread at a time.
    """
    spec = get_compositor(config.compositor)
    parts = [part for acquisition in acquisitions for part in acquisition.parts]
    grid = native.coarsened(level) if level > 1 else native
    with contextlib.ExitStack() as stack:
        readers: dict[str, _SceneReaders] = {}
        for scene in parts:
            try:
                levels = (
                    {b: open_resolution_level(u, native, level) for b, u in scene.band_uris.items()}
                    if level > 1
                    else {}
                )
                if any(dataset is None for dataset in levels.values()):
                    # Full resolution; off the tile's grid (never seen in ESA's archive) it is resampled.
                    for dataset in levels.values():
                        if dataset is not None:
                            dataset.close()
                    levels = {}
                bands = {
                    band: stack.enter_context(levels.get(band) or open_raster(uri))
                    for band, uri in scene.band_uris.items()
                }
                at_level = bool(levels)
                mask = None
                if scene.mask_kind in ("scl", "classi"):
                    mask = MaskTileRows(stack.enter_context(open_raster(scene.mask_uri)))
            except EviError as exc:
                raise _SceneFailed(scene, exc) from exc
            readers[scene.ref.product_id] = _SceneReaders(bands, mask, at_level)

        def read_window(window: Window) -> list[_RawBlock | EviError]:
            # GDAL configuration options set by rasterio.Env are per thread.
            with rasterio.Env(**GDAL_ENV):
                blocks: list[_RawBlock | EviError] = []
                for scene in parts:
                    try:
                        scene_readers = readers[scene.ref.product_id]
                        blocks.append(_read_scene_block(scene, scene_readers, grid, window, config, level))
                    except EviError as exc:
                        blocks.append(exc)
                        break  # the group restarts without this product: reading further is wasted
                return blocks

        tile_zone_set = None
        collectors: list[ZoneCollector] = []
        if zones is not None:
            tile_zone_set = tile_zones(acquisitions[0].ref.mgrs_tile, grid, zones.numbers, zones.geometries)
            whole = tile_zone_set.numbers[tile_zone_set.whole]
            # One per acquisition, then the composite's.
            collectors = [
                ZoneCollector(whole, config.evi_valid_min, config.evi_valid_max)
                for _ in range(len(acquisitions) + 1)
            ]

        windows = list(block_windows(grid.width, grid.height, config.block_size))
        # Shut down before the datasets close (ExitStack unwinds after this block).
        reader = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="evi-read"))
        pending = reader.submit(read_window, windows[0])
        for index, window in enumerate(windows):
            raw_blocks = pending.result()
            if index + 1 < len(windows):
                pending = reader.submit(read_window, windows[index + 1])
            for scene, raw in zip(parts, raw_blocks, strict=False):
                if isinstance(raw, EviError):
                    raise _SceneFailed(scene, raw) from raw
            raws = iter(raw_blocks)
            compositor = spec.factory((int(window.height), int(window.width)))
            observed = np.zeros((int(window.height), int(window.width)), dtype=bool)
            labels = tile_zone_set.labels(window) if tile_zone_set is not None else []
            # Grouped once per block, shared by every scene and the composite.
            labels = [block for block in map(block_zones, labels) if block is not None]
            for position, acquisition in enumerate(acquisitions):
                mine = [next(raws) for _ in acquisition.parts]  # type: ignore[misc]
                values, has_data, clear = _acquisition_evi(acquisition, mine, config)  # type: ignore[arg-type]
                compositor.add(values)
                observed |= has_data
                if labels:
                    collectors[position].add(labels, values, has_data, clear)
            value, count = compositor.finish()
            write(window, value, count, observed)
            if tile_zone_set is not None:
                if labels:
                    collectors[-1].add(labels, value, observed, count > 0)
                if window.col_off + window.width >= grid.width:
                    # Only the zones whose last row is in this row of blocks: earlier ones are released.
                    row_end = int(window.row_off + window.height)
                    finished = tile_zone_set.finished_by(row_end, since=int(window.row_off))
                    for collector in collectors:
                        collector.release(finished)
        if not collectors:
            return None
        results = [collector.result() for collector in collectors]
        return _ZoneResults(results[:-1], results[-1])


def _acquisitions(scenes: list[_PreparedScene], config: RasterConfig) -> list[_Acquisition]:
    """Products grouped into acquisitions (parts newest generation first, then by product id)."""
    by_id: dict[str, list[_PreparedScene]] = {}
    for scene in scenes:
        by_id.setdefault(scene.ref.acquisition_id or scene.ref.product_id, []).append(scene)

    def newest_first(parts: list[_PreparedScene]) -> list[_PreparedScene]:
        # Two stable sorts: newest generation first (a missing one is oldest), ties by product id,
        # largest first, as the catalog chooses an acquisition's primary part.
        ordered = sorted(parts, key=lambda s: s.ref.product_id, reverse=True)
        ordered.sort(key=lambda s: s.ref.generation_time or dt.datetime.min, reverse=True)
        return ordered

    return [
        _Acquisition(
            newest_first(parts),
            EviAccumulator(config.evi_valid_min, config.evi_valid_max, config.histogram_bins),
        )
        for parts in by_id.values()
    ]


def _order(acquisitions: list[_Acquisition], scene_order: str) -> list[_Acquisition]:
    if scene_order == "cloud":
        return sorted(acquisitions, key=lambda a: (a.ref.cloud_cover, a.ref.sensing_time, a.ref.product_id))
    return sorted(acquisitions, key=lambda a: (a.ref.sensing_time, a.ref.product_id))


def _native_grid(scene: _PreparedScene) -> PixelGrid:
    with open_raster(scene.band_uris["B02"]) as dataset:
        return dataset_grid(dataset)


# Sentinel-2's JPEG2000 bands hold 5 resolution levels below full resolution; 16x (160 m) is the
# coarsest one the grid is read at.
MAX_LEVEL_FACTOR = 16


def resolution_level(native: PixelGrid, config: RasterConfig) -> int:
    """How many times coarser than the tile's grid a composite for a shared grid is made: the
    coarsest JPEG2000 level (a power of two) not coarser than the grid, or 1 (full resolution) for a
    finer grid, the native grid or ``coarse_reads: full``."""
    if config.grid.kind == "native" or config.coarse_reads == "full":
        return 1
    factor = 1
    while factor < MAX_LEVEL_FACTOR and native.resolution * factor * 2 <= config.grid.resolution * (1 + 1e-9):
        factor *= 2
    return factor


def _output_grid(native: PixelGrid, config: RasterConfig) -> PixelGrid:
    grid_config = config.grid
    if grid_config.kind == "native":
        return native
    return SharedGrid(grid_config.crs or "", grid_config.resolution, grid_config.origin).cover(native)


def _summary_columns(summary: EviSummary) -> EviStatisticsColumns:
    q = summary.quantiles
    return EviStatisticsColumns(
        evi_mean=summary.mean,
        evi_std=summary.std,
        evi_min=summary.min,
        evi_max=summary.max,
        evi_p05=q["p05"],
        evi_p25=q["p25"],
        evi_p50=q["p50"],
        evi_p75=q["p75"],
        evi_p95=q["p95"],
        histogram_edges=list(summary.histogram_edges),
        histogram_counts=list(summary.histogram_counts),
    )


COUNT_NODATA = 65535
# What a reader of the COGs needs to know without the STAC item: GDAL metadata, in every file.
EVI_ENCODING = {
    "int16": "EVI = value * 0.0001 (GDAL scale 0.0001, offset 0); -32768 = no data",
    "float32": "EVI as float32; NaN = no data",
}
COUNT_ENCODING = "number of clear, valid observations that made the pixel; 65535 = no scene covered it"


class _EncodedWriter:
    """Writes composite blocks in the published encoding and accumulates the composite's statistics.

    Two single-band rasters, each becoming its own COG (clients such as stackstac read one band per
    asset): EVI (int16: EVI x 10000 rounded, nodata -32768; float32: EVI, nodata NaN) and the number
    of clear observations (uint16, nodata 65535 where no scene covered the pixel). The statistics are
    those of the published values, so the table matches the raster exactly.
    """

    def __init__(self, evi_path: Path, count_path: Path, grid: PixelGrid, config: RasterConfig) -> None:
        self.int16 = config.output_dtype == "int16"
        self.stats = EviAccumulator(config.evi_valid_min, config.evi_valid_max, config.histogram_bins)
        # Uncompressed: the files live on local disk for seconds and are read once by the COG copy;
        # zstd level 1 here cost ~3 s per full tile (bench/NOTES.md) to save ~0.3 GB of scratch disk
        # (a full tile is 0.24 GB uncompressed per int16 band, 0.48 GB in float32).
        common = {
            "driver": "GTiff",
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "width": grid.width,
            "height": grid.height,
            "count": 1,
            "crs": grid.crs,
            "transform": grid.transform,
        }
        self.evi = rasterio.open(
            evi_path,
            "w",
            dtype=config.output_dtype,
            nodata=INT16_NODATA if self.int16 else float("nan"),
            **common,
        )
        self.count = rasterio.open(count_path, "w", dtype="uint16", nodata=COUNT_NODATA, **common)

    def write(self, window: Window, evi: np.ndarray, count: np.ndarray, covered: np.ndarray) -> None:
        """Encode and write one block; ``covered`` marks pixels where any scene had data."""
        valid = covered & np.isfinite(evi)
        if self.int16:
            steps = np.where(valid, np.rint(evi * QUANTIZATION), INT16_NODATA).astype(np.int16)
            published = np.where(valid, steps / np.float32(QUANTIZATION), np.nan).astype(np.float32)
            self.evi.write(steps, 1, window=window)
        else:
            published = np.where(valid, evi, np.nan).astype(np.float32)
            self.evi.write(published, 1, window=window)
        clear = np.where(covered, np.rint(np.nan_to_num(count)), COUNT_NODATA).astype(np.uint16)
        self.count.write(clear, 1, window=window)
        self.stats.add(published, masked=int((covered & ~valid).sum()), nodata=int((~covered).sum()))

    def close(self) -> None:
        """Tag the scale, names, units and encodings and close the files."""
        if self.evi.closed:
            return
        if self.int16:
            self.evi.scales = (1.0 / QUANTIZATION,)
            self.evi.offsets = (0.0,)
        self.evi.set_band_description(1, "EVI")
        self.evi.units = ("1",)  # dimensionless
        self.evi.update_tags(EVI_ENCODING=EVI_ENCODING["int16" if self.int16 else "float32"])
        self.evi.update_tags(
            1, EVI_FORMULA="2.5 * (B08 - B04) / (B08 + 6 * B04 - 7.5 * B02 + 1) on surface reflectance"
        )
        self.count.set_band_description(1, "clear_observations")
        self.count.units = ("count",)
        self.count.update_tags(CLEAR_OBSERVATIONS=COUNT_ENCODING)
        self.evi.close()
        self.count.close()


def _encode_warped(source: Path, writer: _EncodedWriter, grid: PixelGrid, block_size: int) -> None:
    """Encode a composite warped onto the output grid (bands: EVI, clear count, data coverage)."""
    with rasterio.open(source) as src:
        for window in block_windows(grid.width, grid.height, block_size):
            evi, count, observed = (src.read(band, window=window) for band in (1, 2, 3))
            writer.write(window, evi, count, observed > 0.5)


def evi_to_rgba(evi: np.ndarray) -> np.ndarray:
    """Colour-map EVI (NaN = no data) to an RGBA uint8 image of shape (4, rows, cols)."""
    values = np.clip(evi, QUICKLOOK_STOPS[0], QUICKLOOK_STOPS[-1])
    rgb = np.stack([np.interp(values, QUICKLOOK_STOPS, QUICKLOOK_COLOURS[:, c]) for c in range(3)])
    alpha = np.where(np.isfinite(values), 255, 0)
    # Rounded, not truncated: EVI 0.2 read back from int16 is 0.19999999 and would lose a step.
    return np.rint(np.nan_to_num(np.concatenate([rgb, alpha[None]]), nan=0)).astype(np.uint8)


def write_png(image: np.ndarray, destination: Path) -> None:
    """Write an RGBA image (4, rows, cols) as PNG."""
    # A picture, not a georeferenced raster: the PNG carries no transform on purpose.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            destination,
            "w",
            driver="PNG",
            width=image.shape[2],
            height=image.shape[1],
            count=4,
            dtype="uint8",
        ) as png:
            png.write(image)


def _quicklook(cog: Path, destination: Path, size: int) -> None:
    """A small colour-mapped PNG of the composite (transparent where there is no EVI).

    Averaged from the COG's overviews (GDAL picks the one just finer than ``size``): the same
    decimated read with nearest-neighbour took 2 s on a 5490 px composite, averaging 0.03 s.
    """
    with rasterio.open(cog) as dataset:
        scale = max(dataset.width, dataset.height) / size
        shape = (max(1, round(dataset.height / scale)), max(1, round(dataset.width / scale)))
        evi = dataset.read(1, out_shape=shape, resampling=Resampling.average, masked=True).astype(np.float32)
        evi = evi * np.float32(dataset.scales[0]) + np.float32(dataset.offsets[0])
    write_png(evi_to_rgba(evi.filled(np.nan)), destination)


def _footprint(grid: PixelGrid) -> list[tuple[float, float]]:
    """The grid's outline in WGS84, densified, counter-clockwise
    (see :func:`evi_udf.outputs.stac.footprint_ring`)."""
    return footprint_ring(grid.crs, grid.bounds)


def _stac_item(
    key: GroupKey,
    outputs: GroupOutputs,
    ring: list[tuple[float, float]],
    grid: PixelGrid,
    acquisitions: list[_Acquisition],
    config: JobConfig,
    params: str,
    summary: EviSummary,
) -> dict[str, object]:
    """The composite's STAC item: footprint, period, inputs with their baselines and offsets, parameters."""
    raster = config.raster
    return composite_item(
        item_id=outputs.stem,
        root=config.output.root,
        grid_name=grid_name(raster),
        params=params,
        period=key.period,
        period_start=key.period_start,
        period_end=key.period_end,
        crs=grid.crs,
        shape=(grid.height, grid.width),
        transform=list(grid.transform)[:6],
        ring=ring,
        hrefs={
            "self": outputs.stac_uri,
            "evi": outputs.cog_uri,
            "clear_count": outputs.count_uri,
            "thumbnail": outputs.quicklook_uri,
        },
        output_dtype=raster.output_dtype,
        properties={
            "evi:mgrs_tile": key.mgrs_tile,
            "evi:period": key.period,
            "evi:method": raster.compositor,
            "evi:parameters": json.loads(json.dumps(dataclasses.asdict(raster), default=str)),
            "evi:parameter_hash": params,
            "evi:valid_pixels": summary.valid_pixels,
            "evi:software_version": evi_udf.__version__,
            "evi:inputs": [
                {
                    "product_id": s.ref.product_id,
                    "granule_id": s.ref.granule_id,
                    "acquisition_id": s.ref.acquisition_id or s.ref.product_id,
                    "sensing_time": s.ref.sensing_time.isoformat(),
                    "processing_baseline": s.metadata.processing_baseline,
                    "offsets": {band: s.metadata.offset(band) for band in EVI_BANDS},
                    "quantification": s.metadata.quantification,
                }
                for a in acquisitions
                for s in a.parts
            ],
        },
    )


def process_group(
    key: GroupKey,
    scenes: Sequence[SceneRef],
    config: JobConfig,
    storage: Storage | None = None,
    now: Callable[[], dt.datetime] | None = None,
    scratch_dir: str | None = None,
    outputs: GroupOutputs | None = None,
    canvas: Canvas | None = None,
    zones: ZoneInput | None = None,
) -> GroupResult:
    """Make the EVI composite of one tile and period and every row describing it.

    Parameters
    ----------
    key
        The tile and period.
    scenes
        The group's scenes as selected by the catalog (deduplicated).
    config
        The job configuration; ``config.raster`` drives the pixels and ``config.output.root`` says where
        the COG, STAC item and quick-look go.
    storage
        Reads inputs and publishes outputs (local or ``gs://``); by default built from
        ``config.storage``. Remote bands are downloaded into a temporary folder for the group's
        lifetime, so the executor needs disk for all the group's bands at once.
    scratch_dir
        Where that temporary folder goes (default: the system's temporary directory).
    outputs
        The names this attempt publishes its COG, STAC item and quick-look under
        (:func:`evi_udf.run.ledger.group_outputs`); by default those of a new attempt. The group is not
        committed here: :meth:`evi_udf.run.ledger.Ledger.commit` does that after this returns.
    canvas
        The run mosaic's canvas of the period: the composite is painted onto it while its COG is still
        on local disk (:func:`evi_udf.outputs.mosaic.paint`).
    zones
        User zones that may meet the tile: their statistics per scene and for the composite are
        computed from the same blocks (:mod:`evi_udf.zones.pixels` says which pixels each zone gets).

    Returns
    -------
    GroupResult
        The composite row (``None`` if no scene could be used), one row per usable scene and one per
        failure. Errors of the pipeline never escape: they become failure rows. The composite row's
        ``processing_seconds`` is the wall-clock time of this whole call.
    """
    started = time.perf_counter()
    outputs = outputs or group_outputs(config, key, new_attempt())
    result = _process_group(key, scenes, config, storage, now, scratch_dir, outputs, canvas, zones)
    if result.composite is None:
        return result
    # Timed here rather than in _finish so that the figure includes removing the group's scratch
    # folder (downloaded bands): everything a Spark task spends on the group outside Spark itself.
    composite = dataclasses.replace(result.composite, processing_seconds=time.perf_counter() - started)
    return dataclasses.replace(result, composite=composite)


def _process_group(
    key: GroupKey,
    scenes: Sequence[SceneRef],
    config: JobConfig,
    storage: Storage | None,
    now: Callable[[], dt.datetime] | None,
    scratch_dir: str | None,
    outputs: GroupOutputs,
    canvas: Canvas | None,
    zones: ZoneInput | None,
) -> GroupResult:
    raster = config.raster
    params = parameter_hash(raster)
    store = storage or Storage(config.storage.anonymous_buckets, config.storage.project)
    clock = now or (lambda: dt.datetime.now(dt.timezone.utc))
    failures: list[FailureRow] = []

    def fail(error: EviError, scene: SceneRef | None) -> None:
        failures.append(
            FailureRow(
                mgrs_tile=key.mgrs_tile,
                period=key.period,
                granule_id=scene.granule_id if scene else None,
                product_id=scene.product_id if scene else None,
                stage=error.stage,
                error_class=type(error).__name__,
                message=str(error),
                parameter_hash=params,
            )
        )

    with (
        rasterio.Env(**GDAL_ENV),
        tempfile.TemporaryDirectory(prefix=f"evi_{key.mgrs_tile}_", dir=scratch_dir) as workdir,
    ):
        prepared: list[_PreparedScene] = []
        for ref in scenes:
            try:
                prepared.append(_prepare_scene(ref, raster, store, Path(workdir) / "inputs"))
            except EviError as exc:
                fail(exc, ref)
        scene_order = get_compositor(raster.compositor).scene_order
        ordered = _order(_acquisitions(prepared, raster), scene_order)
        native: PixelGrid | None = None
        while ordered and native is None:
            try:
                native = _native_grid(ordered[0].primary)
            except EviError as exc:
                fail(exc, ordered[0].ref)
                prepared = [p for p in prepared if p is not ordered[0].primary]
                ordered = _order(_acquisitions(prepared, raster), scene_order)
        if native is None:
            fail(EviError(f"no usable scene among {len(scenes)} for {key.mgrs_tile} {key.period}"), None)
            return GroupResult(None, [], failures)
        while True:
            try:
                encoded, stats, zone_results = _composite_on_output_grid(
                    ordered, native, raster, Path(workdir), zones
                )
                result = _finish(
                    key,
                    ordered,
                    native,
                    encoded,
                    stats,
                    Path(workdir),
                    config,
                    params,
                    failures,
                    clock,
                    store,
                    outputs,
                    canvas,
                )
                if zone_results is None:
                    return result
                return dataclasses.replace(
                    result, zone_scenes=zone_results.scenes, zone_composite=zone_results.composite
                )
            except _SceneFailed as failed:
                # The composite restarts without the product that broke (a split acquisition keeps
                # its other part), so no block holds a partial contribution of it.
                fail(failed.error, failed.scene.ref)
                prepared = [p for p in prepared if p is not failed.scene]
                ordered = _order(_acquisitions(prepared, raster), scene_order)
                if not ordered:
                    fail(EviError(f"every scene of {key.mgrs_tile} {key.period} failed"), None)
                    return GroupResult(None, [], failures)
            except EviError as exc:
                fail(exc, None)
                return GroupResult(None, [], failures)


@dataclasses.dataclass(frozen=True)
class _Encoded:
    """The scratch rasters of a composite in its published encoding: EVI and the clear count."""

    evi: Path
    count: Path


def _composite_on_output_grid(
    acquisitions: list[_Acquisition],
    native: PixelGrid,
    raster: RasterConfig,
    workdir: Path,
    zones: ZoneInput | None = None,
) -> tuple[_Encoded, EviAccumulator, _ZoneResults | None]:
    """The composite in its published encoding on the output grid, its statistics and, with zones,
    the zones' statistics (always on the tile's own grid, before any warp).

    On the native grid blocks are encoded as they are composited. For a shared grid the float
    composite goes to a scratch raster first, is warped once and then encoded: resampling needs the
    unquantized values.
    """
    grid = _output_grid(native, raster)
    encoded = _Encoded(workdir / "encoded_evi.tif", workdir / "encoded_count.tif")
    writer = _EncodedWriter(encoded.evi, encoded.count, grid, raster)
    try:
        if raster.grid.kind == "native":
            zone_results = _composite_native(acquisitions, native, raster, writer.write, zones=zones)
        else:
            level = resolution_level(native, raster)
            work = native.coarsened(level) if level > 1 else native
            with scratch_raster(work, 3, "float32", float("nan"), str(workdir)) as (native_path, scratch):

                def to_scratch(
                    window: Window, value: np.ndarray, count: np.ndarray, seen: np.ndarray
                ) -> None:
                    scratch.write(value, 1, window=window)
                    scratch.write(count.astype(np.float32), 2, window=window)
                    scratch.write(seen.astype(np.float32), 3, window=window)

                zone_results = _composite_native(acquisitions, native, raster, to_scratch, level, zones)
                scratch.close()
                warped = workdir / "warped.tif"
                resampling = Resampling[raster.resampling]
                warp_to_grid(
                    native_path,
                    grid,
                    warped,
                    {1: resampling, 2: Resampling.nearest, 3: Resampling.nearest},
                    float("nan"),
                )
            _encode_warped(warped, writer, grid, raster.block_size)
    finally:
        writer.close()
    return encoded, writer.stats, zone_results


def _finish(
    key: GroupKey,
    acquisitions: list[_Acquisition],
    native: PixelGrid,
    encoded: _Encoded,
    composite_stats: EviAccumulator,
    workdir: Path,
    config: JobConfig,
    params: str,
    failures: list[FailureRow],
    clock: Callable[[], dt.datetime],
    store: Storage,
    outputs: GroupOutputs,
    canvas: Canvas | None,
) -> GroupResult:
    raster = config.raster
    grid = _output_grid(native, raster)
    prefix, stem = outputs.prefix, outputs.stem
    cog = workdir / f"{stem}.tif"
    count_cog = workdir / Path(outputs.count_uri).name
    tags = {"EVI_PARAMETER_HASH": params, "MGRS_TILE": key.mgrs_tile, "EVI_PERIOD": key.period}
    write_cog(encoded.evi, cog, raster.cog_profile, tags=tags)
    write_cog(encoded.count, count_cog, raster.cog_profile, tags=tags)
    quicklook = workdir / f"{stem}.png"
    _quicklook(cog, quicklook, raster.quicklook_size)
    piece = paint(cog, canvas) if canvas is not None else None
    summary = composite_stats.summary()
    ring = _footprint(grid)
    stac_path = workdir / f"{stem}.json"
    try:
        stac_path.write_text(
            to_json(_stac_item(key, outputs, ring, grid, acquisitions, config, params, summary))
        )
    except ValueError as exc:  # a NaN or infinity would make invalid JSON
        raise RasterWriteError(
            f"{outputs.stac_uri}: the STAC item has a value JSON cannot hold ({exc})"
        ) from exc
    # Names are this attempt's own; a Spark retry of the same task publishes them again. The group
    # is complete only when its commit record (evi_udf.run.ledger) is published after these.
    for path in (quicklook, stac_path, count_cog, cog):
        store.publish(path, f"{prefix}/{path.name}", overwrite=True)
    composite = CompositeRow(
        mgrs_tile=key.mgrs_tile,
        utm_zone=int(key.mgrs_tile[:2]),
        period=key.period,
        period_start=key.period_start,
        period_end=key.period_end,
        method=raster.compositor,
        grid=grid_name(raster),
        scene_count=len(acquisitions),
        scenes_failed=len({f.product_id for f in failures if f.product_id}),
        total_pixels=summary.total_pixels,
        valid_pixels=summary.valid_pixels,
        masked_pixels=summary.masked_pixels,
        nodata_pixels=summary.nodata_pixels,
        statistics=_summary_columns(summary),
        footprint_wkt=ring_wkt(ring),
        raster_uri=outputs.cog_uri,
        stac_uri=outputs.stac_uri,
        quicklook_uri=outputs.quicklook_uri,
        parameter_hash=params,
        software_version=evi_udf.__version__,
        processed_at=clock(),
        processing_seconds=math.nan,  # set by process_group, which times the whole call
    )
    scene_rows = []
    for acquisition in acquisitions:
        s = acquisition.accumulator.summary()
        with_data = s.total_pixels - s.nodata_pixels
        scene = acquisition.primary
        scene_rows.append(
            SceneRow(
                granule_id=scene.ref.granule_id,
                product_id=scene.ref.product_id,
                product_ids=[part.ref.product_id for part in acquisition.parts],
                mgrs_tile=scene.ref.mgrs_tile,
                sensing_time=scene.ref.sensing_time,
                period=key.period,
                processing_baseline=scene.metadata.processing_baseline,
                offset_b02=scene.metadata.offset("B02"),
                offset_b04=scene.metadata.offset("B04"),
                offset_b08=scene.metadata.offset("B08"),
                quantification=scene.metadata.quantification,
                index_cloud_cover=scene.ref.cloud_cover,
                total_pixels=s.total_pixels,
                valid_pixels=s.valid_pixels,
                masked_pixels=s.masked_pixels,
                nodata_pixels=s.nodata_pixels,
                invalid_pixels=s.invalid_pixels,
                masked_fraction=s.masked_pixels / with_data if with_data else math.nan,
                statistics=_summary_columns(s),
                parameter_hash=params,
            )
        )
    return GroupResult(composite, scene_rows, failures, piece)
