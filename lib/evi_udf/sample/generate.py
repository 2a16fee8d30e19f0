"""A realistic local Sentinel-2 archive: the data every test, demo and benchmark runs on.

No real imagery can be downloaded where this project is built and tested, so this module writes an
archive that looks like Google's public bucket to code that reads it:

* the bucket layout (``tiles/<zone>/<band>/<square>/<product>.SAFE`` for L1C, ``L2/tiles/...`` for L2A)
  and the two gzip indexes (``index.csv.gz``, ``L2/index.csv.gz``) with the real 14-column header;
* product metadata (``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml``) with processing baseline, quantification
  value, the radiometric offset lists from baseline 04.00 on (and none before) and the ``IMAGE_FILE``
  list; tile metadata (``MTD_TL.xml``) with the tile geocoding; a ``manifest.safe``;
* lossless JPEG2000 bands B02, B04, B08 (uint16, DN 0 = no data, 65535 = saturated) in the tile's UTM
  CRS on its MGRS footprint, SCL at 20 m for L2A, ``MSK_CLASSI_B00.jp2`` (baseline >= 04.00) or
  ``MSK_CLOUDS_B00.gml`` (older) for L1C.

The ground is a deterministic function of longitude and latitude (water, bare soil, vegetation of
varying density with a seasonal cycle) and the clouds are a function of longitude, latitude and date,
so overlapping tiles, also across a UTM zone boundary, show the same ground and the same clouds, as in
real data. SCL classes and the index CLOUD_COVER are computed from the same cloud field that brightens
the reflectances, so masks and pixels agree.

The default archive exercises the hard cases: baselines 02.14 (no offset), 04.00 and a reprocessed
Collection-1 duplicate with 05.10 (offset -1000) of a scene first processed with 02.14, a swath edge
(no-data wedge) in every other acquisition, an index row with an empty BASE_URL, a FAILED and an empty
geometric-quality flag, and four tiles in UTM zones 54 and 55 of which 54HYD and 55HBU overlap across
the zone boundary.

Run ``python -m evi_udf.sample.generate --help`` for the options.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import gzip
import hashlib
import io
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from statistics import NormalDist
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.features import shapes
from rasterio.transform import Affine
from rasterio.windows import Window

from evi_udf.config import normalize_tile
from evi_udf.errors import SampleError
from evi_udf.index.catalog import INDEX_COLUMNS
from evi_udf.raster.grid import mgrs_square_origin

# ---------------------------------------------------------------------------------------------
# Fixed facts of the Sentinel-2 products (sentinel2.md)
# ---------------------------------------------------------------------------------------------
TILE_SIZE_M = 109_800
NATIVE_PIXELS_10M = 10_980
# Every resolution (10, 20, 60 m) must shrink to whole pixels, so F must divide 1830.
VALID_RESOLUTION_FACTORS = tuple(f for f in range(1, 1831) if 1830 % f == 0)
QUANTIFICATION_VALUE = 10_000
OFFSET_BASELINE = (4, 0)
RADIOMETRIC_OFFSET = -1000
NODATA_DN = 0
SATURATED_DN = 65_535
BAND_IDS = {
    "B01": 0,
    "B02": 1,
    "B03": 2,
    "B04": 3,
    "B05": 4,
    "B06": 5,
    "B07": 6,
    "B08": 7,
    "B8A": 8,
    "B09": 9,
    "B10": 10,
    "B11": 11,
    "B12": 12,
}
EVI_BANDS = ("B02", "B04", "B08")

SCL_NO_DATA, SCL_SATURATED, SCL_DARK, SCL_SHADOW = 0, 1, 2, 3
SCL_VEGETATION, SCL_NOT_VEGETATED, SCL_WATER, SCL_UNCLASSIFIED = 4, 5, 6, 7
SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS, SCL_SNOW = 8, 9, 10, 11
SCL_CLOUDY = (SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS)

DEFAULT_TILES = ("55HBU", "55HCU", "54HYD", "54HXD")
DEFAULT_START = dt.date(2022, 1, 13)
REVISIT_DAYS = 5
# The date processing baseline 04.00 (with the -1000 offset) went live.
BASELINE_04_START = dt.date(2022, 1, 25)
COLLECTION1_GENERATION = dt.datetime(2023, 6, 14, 9, 41, 27)
LAUNCH = {"S2A": dt.datetime(2015, 6, 23, 1, 51), "S2B": dt.datetime(2017, 3, 7, 1, 49)}
ORBIT_MINUTES = 100.6

# Pure-surface reflectances (B02, B04, B08) of the three cover types: chosen so that EVI is dense
# vegetation ~0.75, bare soil ~0.16 and water ~-0.06, as over real ground.
VEGETATION_REFLECTANCE = np.array([0.030, 0.030, 0.450], dtype=np.float32)
SOIL_REFLECTANCE = np.array([0.080, 0.150, 0.250], dtype=np.float32)
WATER_REFLECTANCE = np.array([0.060, 0.040, 0.020], dtype=np.float32)
CLOUD_REFLECTANCE = np.array([0.550, 0.560, 0.600], dtype=np.float32)
# L1C is top of atmosphere: attenuated surface plus path radiance, strongest in the blue.
TOA_TRANSMITTANCE = np.float32(0.92)
TOA_PATH_REFLECTANCE = np.array([0.075, 0.035, 0.015], dtype=np.float32)
SHADOW_FACTOR = np.float32(0.35)
NOISE_SIGMA = np.float32(0.004)
# Cloud opacity thresholds that decide the SCL class.
OPACITY_HIGH, OPACITY_MEDIUM, OPACITY_CIRRUS = 0.7, 0.35, 0.08
# Rows per rendered block: a multiple of 6 so that the 20 m and 60 m grids subsample cleanly.
BLOCK_ROWS = 1020
# Sun-cast shadow offset in km (east, north): shadows fall to the south-west of their cloud.
SHADOW_SHIFT_KM = (-1.6, -1.1)


@dataclasses.dataclass(frozen=True)
class SampleSpec:
    """What archive to generate.

    ``resolution_factor`` F makes every band F times coarser than the real product (F=1 gives the full
    10980 x 10980 px tile); it must divide 1830. ``bucket_url`` (``gs://bucket``) makes BASE_URL point
    at that bucket instead of the local folder, for an archive that is uploaded to a GCS emulator.
    """

    out: Path
    levels: tuple[str, ...] = ("L2A",)
    tiles: tuple[str, ...] = DEFAULT_TILES
    scenes_per_tile: int = 6
    resolution_factor: int = 10
    seed: int = 0
    start_date: dt.date = DEFAULT_START
    bucket_url: str | None = None
    # How cloudy the dates are (CLOUD_PROFILES): "mixed" (the default sample), "clear" or "cloudy".
    cloud_profile: str = "mixed"

    def __post_init__(self) -> None:
        if self.cloud_profile not in CLOUD_PROFILES:
            raise SampleError(
                f"--cloud-profile {self.cloud_profile!r}: must be one of {', '.join(CLOUD_PROFILES)}"
            )
        if self.resolution_factor not in VALID_RESOLUTION_FACTORS:
            raise SampleError(
                f"--resolution-factor {self.resolution_factor}: must divide 1830 so that the 10, 20 and "
                f"60 m grids stay whole; choose one of {', '.join(map(str, VALID_RESOLUTION_FACTORS))}"
            )
        if not 1 <= self.scenes_per_tile <= 100:
            raise SampleError(f"--scenes-per-tile {self.scenes_per_tile}: must be between 1 and 100")
        if not self.tiles:
            raise SampleError("--tiles: at least one tile is needed")
        if self.bucket_url is not None and not self.bucket_url.startswith("gs://"):
            raise SampleError(f"--bucket-url {self.bucket_url!r}: must start with gs://")
        for level in self.levels:
            if level not in ("L1C", "L2A"):
                raise SampleError(f"--level {level!r}: must be L1C, L2A or both")


@dataclasses.dataclass(frozen=True)
class TileGrid:
    """The 10 m pixel grid of one MGRS tile in its UTM zone (scaled by the resolution factor)."""

    tile: str
    epsg: int
    ulx: float
    uly: float
    pixels: int
    pixel_size: float

    @property
    def transform(self) -> Affine:
        return Affine(self.pixel_size, 0.0, self.ulx, 0.0, -self.pixel_size, self.uly)

    @property
    def utm_zone(self) -> int:
        return int(self.tile[:2])

    @property
    def hemisphere(self) -> str:
        return "S" if self.epsg > 32700 else "N"


def tile_grid(tile: str, resolution_factor: int = 1) -> TileGrid:
    """The grid of an MGRS tile (:func:`evi_udf.raster.grid.mgrs_square_origin`).

    The upper-left corner is the north-west corner of the 100 km MGRS square and the tile extends
    109.8 km east and south, overlapping its neighbours by 9.8 km. (ESA's tiling grid places some tiles
    20-40 m off this corner; readers must take the geocoding from the files, never assume it.)

    Raises
    ------
    SampleError
        If the tile is not an MGRS square that meets its latitude band.
    """
    tile = normalize_tile(tile)
    try:
        epsg, west, south = mgrs_square_origin(tile)
    except ValueError as exc:
        raise SampleError(f"tile {tile}: {exc}") from exc
    pixels = NATIVE_PIXELS_10M // resolution_factor
    return TileGrid(tile, epsg, float(west), float(south + 100_000), pixels, TILE_SIZE_M / pixels)


@dataclasses.dataclass(frozen=True)
class Acquisition:
    """One overpass: a datatake that covers every sample tile on one date."""

    index: int
    sensing: dt.datetime
    mission: str
    relative_orbit: int
    swath_edge: bool

    @property
    def absolute_orbit(self) -> int:
        return int((self.sensing - LAUNCH[self.mission]).total_seconds() / 60 / ORBIT_MINUTES)

    @property
    def datatake_key(self) -> str:
        return f"G{self.mission}_{_compact(self.sensing)}_{self.absolute_orbit:06d}"


@dataclasses.dataclass(frozen=True)
class Product:
    """One product (one granule of one tile) to write, with the index row it gets."""

    level: str
    tile: str
    acquisition: Acquisition
    baseline: str
    generation: dt.datetime
    quality_flag: str
    has_files: bool = True

    @property
    def has_offset(self) -> bool:
        major, minor = (int(part) for part in self.baseline.split("."))
        return (major, minor) >= OFFSET_BASELINE

    @property
    def granule_sensing(self) -> dt.datetime:
        # The granule starts a moment after the datatake; real granule times differ in the same way.
        return self.acquisition.sensing + dt.timedelta(seconds=2, microseconds=24_000)

    @property
    def product_id(self) -> str:
        acq = self.acquisition
        return (
            f"{acq.mission}_MSI{self.level}_{_compact(acq.sensing)}_N{self.baseline.replace('.', '')}"
            f"_R{acq.relative_orbit:03d}_T{self.tile}_{_compact(self.generation)}"
        )

    @property
    def granule_id(self) -> str:
        return (
            f"{self.level}_T{self.tile}_A{self.acquisition.absolute_orbit:06d}_"
            f"{_compact(self.granule_sensing)}"
        )

    @property
    def datatake_identifier(self) -> str:
        return f"{self.acquisition.datatake_key}_N{self.baseline}"

    @property
    def relative_dir(self) -> str:
        prefix = "L2/tiles" if self.level == "L2A" else "tiles"
        zone, band, square = self.tile[:2], self.tile[2], self.tile[3:]
        return f"{prefix}/{int(zone)}/{band}/{square}/{self.product_id}.SAFE"

    @property
    def file_stem(self) -> str:
        return f"T{self.tile}_{_compact(self.acquisition.sensing)}"

    def band_paths(self) -> dict[str, str]:
        """Band name -> path inside the .SAFE folder, as the product metadata lists them (no .jp2)."""
        granule = f"GRANULE/{self.granule_id}/IMG_DATA"
        if self.level == "L2A":
            paths = {band: f"{granule}/R10m/{self.file_stem}_{band}_10m" for band in EVI_BANDS}
            paths["SCL"] = f"{granule}/R20m/{self.file_stem}_SCL_20m"
            return paths
        return {band: f"{granule}/{self.file_stem}_{band}" for band in EVI_BANDS}


def _compact(moment: dt.datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S")


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def original_baseline(sensing_date: dt.date) -> str:
    """The baseline a scene got when first processed (simplified: the sample uses 02.14 before 04.00)."""
    return "04.00" if sensing_date >= BASELINE_04_START else "02.14"


def plan_archive(spec: SampleSpec) -> list[Product]:
    """Every product of the archive, in index order (sensing time, then tile, then level).

    Deterministic for a spec. Adds, per level: a reprocessed Collection-1 (05.10) duplicate of the
    first tile's first scene, a FAILED and an empty geometric-quality flag, and an index row with an
    empty BASE_URL (a product of an adjacent orbit whose files are absent).
    """
    tiles = tuple(normalize_tile(tile) for tile in spec.tiles)
    acquisitions = []
    for k in range(spec.scenes_per_tile):
        sensing = dt.datetime.combine(
            spec.start_date + dt.timedelta(days=REVISIT_DAYS * k), dt.time(0, 27, 9)
        )
        mission = "S2B" if k % 2 == 0 else "S2A"
        acquisitions.append(Acquisition(k, sensing, mission, 16, swath_edge=k % 2 == 1))
    products: list[Product] = []
    for level in spec.levels:
        for acq in acquisitions:
            for t, tile in enumerate(tiles):
                baseline = original_baseline(acq.sensing.date())
                generation = acq.sensing + dt.timedelta(hours=1, minutes=48, seconds=13 + t)
                quality = "PASSED"
                if acq.index == 2 and t == len(tiles) - 1:
                    quality = "FAILED"
                if acq.index == 1 and t == 0:
                    quality = ""
                products.append(Product(level, tile, acq, baseline, generation, quality))
                if acq.index == 0 and t == 0:
                    products.append(Product(level, tile, acq, "05.10", COLLECTION1_GENERATION, "PASSED"))
        # An overpass of the neighbouring orbit whose product never reached the bucket.
        first = acquisitions[0]
        orphan = Acquisition(-1, first.sensing + dt.timedelta(days=2, minutes=10), "S2A", 59, False)
        products.append(
            Product(
                level,
                tiles[min(1, len(tiles) - 1)],
                orphan,
                original_baseline(orphan.sensing.date()),
                orphan.sensing + dt.timedelta(hours=2),
                "PASSED",
                has_files=False,
            )
        )
    products.sort(key=lambda p: (p.acquisition.sensing, p.tile, p.level, p.baseline))
    return products


# ---------------------------------------------------------------------------------------------
# The synthetic Earth: ground and clouds as functions of longitude, latitude and date
# ---------------------------------------------------------------------------------------------
class _WaveField:
    """A smooth random field of longitude/latitude: a sum of plane waves, roughly N(0, 1)."""

    def __init__(self, rng: np.random.Generator, wavelengths_km: Sequence[float]) -> None:
        angles = rng.uniform(0, np.pi, len(wavelengths_km))
        self._kx = (2 * np.pi * np.cos(angles) / np.asarray(wavelengths_km)).astype(np.float64)
        self._ky = (2 * np.pi * np.sin(angles) / np.asarray(wavelengths_km)).astype(np.float64)
        self._phase = rng.uniform(0, 2 * np.pi, len(wavelengths_km))
        self._scale = math.sqrt(2.0 / len(wavelengths_km))

    def __call__(self, x_km: np.ndarray, y_km: np.ndarray) -> np.ndarray:
        total = np.zeros(x_km.shape, dtype=np.float32)
        for kx, ky, phase in zip(self._kx, self._ky, self._phase, strict=True):
            total += np.sin(kx * x_km + ky * y_km + phase).astype(np.float32)
        return total * np.float32(self._scale)


def _local_km(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # An equirectangular frame (scaled at a fixed latitude) keeps features roughly isotropic for the
    # few hundred kilometres a sample spans; it is the same everywhere, so tiles agree in overlaps.
    return lon * 111.32 * math.cos(math.radians(37.0)), lat * 110.57


@dataclasses.dataclass(frozen=True)
class CloudProfile:
    """How the cloud fraction of a date is drawn, and the size of the cloud cells.

    With probability ``clear_share`` a date's fraction is drawn from ``clear_fractions``, otherwise
    uniformly from ``cloudy_range``; ``fractions`` (when set) replaces both with one uniform choice.
    The cloud field sums plane waves of ``wavelengths_km``: longer waves make larger cells.
    """

    wavelengths_km: tuple[float, ...]
    fractions: tuple[float, ...] = ()
    clear_share: float = 0.0
    clear_fractions: tuple[float, ...] = ()
    cloudy_range: tuple[float, float] = (0.0, 0.0)


CLOUD_PROFILES: dict[str, CloudProfile] = {
    # The default sample: every kind of date, small cells (a few km).
    "mixed": CloudProfile((3.0, 5.0, 8.0, 12.0, 20.0, 33.0), fractions=(0.02, 0.1, 0.25, 0.45, 0.7)),
    # A dry month: a few scattered small clouds.
    "clear": CloudProfile((3.0, 5.0, 8.0, 12.0, 20.0, 33.0), fractions=(0.0, 0.01, 0.03)),
    # A typical month of a temperate winter as the index keeps it (CLOUD_COVER <= 90): a fifth of the
    # dates nearly clear, the rest 40-90 % cloudy in frontal cells tens to hundreds of km across, so
    # that whole 10 km blocks are often overcast (about a third of them over the month).
    "cloudy": CloudProfile(
        (30.0, 50.0, 80.0, 130.0, 200.0),
        clear_share=0.2,
        clear_fractions=(0.02, 0.05, 0.1),
        cloudy_range=(0.4, 0.9),
    ),
}


class SyntheticEarth:
    """Deterministic surface reflectance and clouds for a seed (and a cloud profile)."""

    def __init__(self, seed: int, cloud_profile: str = "mixed") -> None:
        rng = np.random.default_rng([seed, 1])
        self._seed = seed
        self._clouds = CLOUD_PROFILES[cloud_profile]
        self._water = _WaveField(rng, [9.0, 13.0, 17.0, 23.0, 31.0, 41.0])
        self._vegetation = _WaveField(rng, [2.5, 4.0, 6.5, 9.0, 14.0, 22.0, 35.0])
        self._soil_tone = _WaveField(rng, [1.5, 3.0, 7.0])

    def surface(self, x_km: np.ndarray, y_km: np.ndarray, date: dt.date) -> tuple[np.ndarray, np.ndarray]:
        """Surface reflectance (3, H, W) for B02, B04, B08 and the ground class (SCL codes 4, 5, 6)."""
        water = self._water(x_km, y_km) > np.float32(1.35)
        # Vegetation cover in [0, 1] with a seasonal cycle (southern-hemisphere summer peak).
        season = np.float32(0.8 + 0.2 * math.cos(2 * math.pi * (date.timetuple().tm_yday - 15) / 365.25))
        cover = 1.0 / (1.0 + np.exp(-2.2 * self._vegetation(x_km, y_km)))
        cover = np.clip(cover * season, 0.0, 1.0).astype(np.float32)
        tone = np.float32(1.0) + np.float32(0.08) * self._soil_tone(x_km, y_km)
        soil = SOIL_REFLECTANCE[:, None, None] * tone
        reflectance = cover * VEGETATION_REFLECTANCE[:, None, None] + (1 - cover) * soil
        reflectance = np.where(water, WATER_REFLECTANCE[:, None, None], reflectance).astype(np.float32)
        ground = np.where(water, SCL_WATER, np.where(cover > 0.3, SCL_VEGETATION, SCL_NOT_VEGETATED))
        return reflectance, ground.astype(np.uint8)

    def cloud_opacity(self, x_km: np.ndarray, y_km: np.ndarray, date: dt.date) -> np.ndarray:
        """Cloud opacity in [0, 1] for a date; the cloud fraction of the date is drawn from the seed."""
        rng = np.random.default_rng([self._seed, 2, date.toordinal()])
        profile = self._clouds
        if profile.fractions:
            fraction = float(rng.choice(profile.fractions))
        elif rng.random() < profile.clear_share:
            fraction = float(rng.choice(profile.clear_fractions))
        else:
            fraction = float(rng.uniform(*profile.cloudy_range))
        if fraction <= 0.0:
            return np.zeros(x_km.shape, dtype=np.float32)
        field = _WaveField(rng, profile.wavelengths_km)(x_km, y_km)
        threshold = np.float32(NormalDist().inv_cdf(1.0 - fraction))
        return np.clip((field - threshold) / np.float32(0.9), 0.0, 1.0)

    def noise(self, shape: tuple[int, ...], key: Sequence[int]) -> np.ndarray:
        return np.random.default_rng([self._seed, 3, *key]).normal(0.0, NOISE_SIGMA, shape).astype(np.float32)


def _swath_outside(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    # A slanted swath edge near the zone 54/55 boundary: everything west of it has no data.
    return lon < 142.75 + 0.35 * (lat + 37.5)


@dataclasses.dataclass
class SceneRender:
    """Pixels of one block of one scene: reflectance per level, SCL, and validity."""

    boa: np.ndarray
    toa: np.ndarray
    scl: np.ndarray
    saturated: np.ndarray
    nodata: np.ndarray


def render_block(
    earth: SyntheticEarth, acq: Acquisition, lon: np.ndarray, lat: np.ndarray, noise_key: Sequence[int]
) -> SceneRender:
    """Everything the sensor sees over one block of pixels for one acquisition."""
    date = acq.sensing.date()
    x_km, y_km = _local_km(lon, lat)
    surface, ground = earth.surface(x_km, y_km, date)
    opacity = earth.cloud_opacity(x_km, y_km, date)
    shadow_opacity = earth.cloud_opacity(x_km - SHADOW_SHIFT_KM[0], y_km - SHADOW_SHIFT_KM[1], date)
    shadow = (shadow_opacity > OPACITY_MEDIUM) & (opacity < OPACITY_CIRRUS)
    shaded = np.where(shadow, surface * SHADOW_FACTOR, surface)
    boa = shaded * (1 - opacity) + CLOUD_REFLECTANCE[:, None, None] * opacity
    boa = boa + earth.noise(boa.shape, noise_key)
    toa = TOA_TRANSMITTANCE * boa + TOA_PATH_REFLECTANCE[:, None, None] * (1 - opacity)
    scl = ground.copy()
    scl[shadow] = SCL_SHADOW
    scl[opacity > OPACITY_CIRRUS] = SCL_CIRRUS
    scl[opacity > OPACITY_MEDIUM] = SCL_CLOUD_MEDIUM
    scl[opacity > OPACITY_HIGH] = SCL_CLOUD_HIGH
    # Sparse saturated pixels in the thickest cloud cores, as bright cumulus tops saturate the MSI.
    sparkle = np.random.default_rng([*noise_key, 4]).random(opacity.shape) < 0.01
    saturated = (opacity >= 0.999) & sparkle
    scl[saturated] = SCL_SATURATED
    nodata = _swath_outside(lon, lat) if acq.swath_edge else np.zeros(lon.shape, dtype=bool)
    scl[nodata] = SCL_NO_DATA
    return SceneRender(boa, toa, scl, saturated, nodata)


def reflectance_to_dn(
    reflectance: np.ndarray, has_offset: bool, saturated: np.ndarray, nodata: np.ndarray
) -> np.ndarray:
    """Encode reflectance as the L1C/L2A digital number: DN = reflectance * 10000 - offset."""
    offset = RADIOMETRIC_OFFSET if has_offset else 0
    # Quantize first, then shift in integers, so a reprocessing with an offset encodes exactly the
    # same reflectance (float rounding of refl * 10000 + 1000 would differ by one DN now and then).
    dn = np.rint(reflectance * QUANTIFICATION_VALUE).astype(np.int32) - offset
    dn = np.clip(dn, 1, SATURATED_DN - 1).astype(np.uint16)
    dn[:, saturated] = SATURATED_DN
    dn[:, nodata] = NODATA_DN
    return dn


class _LonLatGrid:
    """Longitude/latitude of pixel centres of a tile grid, interpolated from a coarse exact lattice.

    UTM-to-geographic is smooth at this scale: bilinear interpolation from every 32nd pixel is
    within millimetres of the exact transform and a hundred times cheaper for full-size tiles.
    """

    STEP = 32

    def __init__(self, grid: TileGrid) -> None:
        to_geographic = Transformer.from_crs(grid.epsg, 4326, always_xy=True)
        nodes = np.unique(np.r_[np.arange(0, grid.pixels, self.STEP), grid.pixels - 1])
        centres = (nodes + 0.5) * grid.pixel_size
        xx, yy = np.meshgrid(grid.ulx + centres, grid.uly - centres)
        self._lon, self._lat = to_geographic.transform(xx, yy)
        self._nodes = nodes
        self._pixels = grid.pixels

    def block(self, row_start: int, row_stop: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(row_start, row_stop)
        cols = np.arange(self._pixels)
        return self._interpolate(self._lon, rows, cols), self._interpolate(self._lat, rows, cols)

    def _interpolate(self, lattice: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        def weights(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            upper = np.clip(np.searchsorted(self._nodes, positions, side="right"), 1, len(self._nodes) - 1)
            lower = upper - 1
            span = self._nodes[upper] - self._nodes[lower]
            return lower, upper, (positions - self._nodes[lower]) / span

        r0, r1, wr = weights(rows)
        c0, c1, wc = weights(cols)
        top = lattice[r0][:, c0] * (1 - wc) + lattice[r0][:, c1] * wc
        bottom = lattice[r1][:, c0] * (1 - wc) + lattice[r1][:, c1] * wc
        return top * (1 - wr)[:, None] + bottom * wr[:, None]


# ---------------------------------------------------------------------------------------------
# Writing the products
# ---------------------------------------------------------------------------------------------
JP2_OPTIONS = {"QUALITY": 100, "REVERSIBLE": "YES", "BLOCKXSIZE": 1024, "BLOCKYSIZE": 1024}
# ESA's bands hold 6 resolution levels (GDAL lists 5 overviews of a 10980 px band: 2x to 32x).
JP2_RESOLUTIONS = 6


def jp2_resolutions(size: int) -> int:
    """ESA's number of resolution levels, or fewer for a raster too small for them (GDAL refuses
    levels whose coarsest image would be a pixel or two across)."""
    return max(1, min(JP2_RESOLUTIONS, min(size, JP2_OPTIONS["BLOCKXSIZE"]).bit_length() - 1))


@dataclasses.dataclass
class _ProductStats:
    valid_pixels: int = 0
    cloudy_pixels: int = 0
    nodata_pixels: int = 0
    total_pixels: int = 0

    @property
    def cloud_cover(self) -> float:
        return 100.0 * self.cloudy_pixels / self.valid_pixels if self.valid_pixels else 0.0

    @property
    def nodata_percentage(self) -> float:
        return 100.0 * self.nodata_pixels / self.total_pixels if self.total_pixels else 100.0


def _open_jp2(path: Path, grid: TileGrid, scale: int, count: int = 1, dtype: str = "uint16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    size = grid.pixels // scale
    transform = grid.transform @ Affine.scale(scale)
    return rasterio.open(
        path,
        "w",
        driver="JP2OpenJPEG",
        width=size,
        height=size,
        count=count,
        dtype=dtype,
        crs=f"EPSG:{grid.epsg}",
        transform=transform,
        **JP2_OPTIONS,
        RESOLUTIONS=jp2_resolutions(size),
    )


def write_products(
    earth: SyntheticEarth,
    grid: TileGrid,
    products: Sequence[Product],
    root: Path,
) -> dict[Product, _ProductStats]:
    """Render one tile for one acquisition and write every product of it (levels, reprocessings)."""
    lonlat = _LonLatGrid(grid)
    acq = products[0].acquisition
    stats = {product: _ProductStats() for product in products}
    datasets: dict[tuple[Product, str], rasterio.io.DatasetWriter] = {}
    cloud_masks: dict[Product, list[np.ndarray]] = {}
    try:
        for product in products:
            folder = root / product.relative_dir
            for band, relative in product.band_paths().items():
                scale = 2 if band == "SCL" else 1
                dtype = "uint8" if band == "SCL" else "uint16"
                datasets[product, band] = _open_jp2(folder / f"{relative}.jp2", grid, scale, dtype=dtype)
            if product.level == "L1C" and product.has_offset:
                path = folder / f"GRANULE/{product.granule_id}/QI_DATA/MSK_CLASSI_B00.jp2"
                datasets[product, "MSK_CLASSI"] = _open_jp2(path, grid, 6, count=3, dtype="uint8")
            elif product.level == "L1C":
                cloud_masks[product] = []
        for row_start in range(0, grid.pixels, BLOCK_ROWS):
            row_stop = min(row_start + BLOCK_ROWS, grid.pixels)
            lon, lat = lonlat.block(row_start, row_stop)
            render = render_block(
                earth,
                acq,
                lon,
                lat,
                (grid.epsg, int(grid.ulx), int(grid.uly), acq.sensing.toordinal(), row_start),
            )
            width = grid.pixels
            for product in products:
                reflectance = render.boa if product.level == "L2A" else render.toa
                dn = reflectance_to_dn(reflectance, product.has_offset, render.saturated, render.nodata)
                for b, band in enumerate(EVI_BANDS):
                    datasets[product, band].write(
                        dn[b], 1, window=Window(0, row_start, width, row_stop - row_start)
                    )
                scl20 = render.scl[::2, ::2]
                if product.level == "L2A":
                    datasets[product, "SCL"].write(
                        scl20, 1, window=Window(0, row_start // 2, width // 2, scl20.shape[0])
                    )
                scl60 = render.scl[::6, ::6]
                opaque = np.isin(scl60, (SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH)).astype(np.uint8)
                cirrus = (scl60 == SCL_CIRRUS).astype(np.uint8)
                if (product, "MSK_CLASSI") in datasets:
                    datasets[product, "MSK_CLASSI"].write(
                        np.stack([opaque, cirrus, np.zeros_like(opaque)]),
                        window=Window(0, row_start // 6, width // 6, scl60.shape[0]),
                    )
                if product in cloud_masks:
                    cloud_masks[product].append(opaque)
                # Cloud cover as ESA reports it: from the 20 m scene classification that ships.
                counts = stats[product]
                counts.total_pixels += scl20.size
                counts.nodata_pixels += int((scl20 == SCL_NO_DATA).sum())
                counts.valid_pixels += int((scl20 != SCL_NO_DATA).sum())
                counts.cloudy_pixels += int(np.isin(scl20, SCL_CLOUDY).sum())
    finally:
        for dataset in datasets.values():
            dataset.close()
    for product, rows in cloud_masks.items():
        gml = cloud_mask_gml(np.concatenate(rows), grid)
        path = root / product.relative_dir / f"GRANULE/{product.granule_id}/QI_DATA/MSK_CLOUDS_B00.gml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(gml, encoding="utf-8")
    return stats


def cloud_mask_gml(opaque_60m: np.ndarray, grid: TileGrid) -> str:
    """The pre-04.00 L1C cloud mask: opaque-cloud polygons as GML 3.2 in the tile's CRS."""
    transform = grid.transform @ Affine.scale(6)
    srs = f"urn:ogc:def:crs:EPSG::{grid.epsg}"
    features = []
    for n, (geometry, _value) in enumerate(
        shapes(opaque_60m, mask=opaque_60m.astype(bool), transform=transform)
    ):
        rings = []
        for r, ring in enumerate(geometry["coordinates"]):
            pos = " ".join(f"{x:.0f} {y:.0f}" for x, y in ring)
            tag = "exterior" if r == 0 else "interior"
            rings.append(
                f'<gml:{tag}><gml:LinearRing><gml:posList srsDimension="2">{pos}</gml:posList>'
                f"</gml:LinearRing></gml:{tag}>"
            )
        features.append(
            f'  <eop:MaskFeature gml:id="OPAQUE.{n}">\n'
            f'    <eop:maskType codeSpace="urn:gs2:S2PDGS:maskType">OPAQUE</eop:maskType>\n'
            f'    <eop:extentOf><gml:Polygon gml:id="OPAQUE.{n}.Polygon" srsName="{srs}">{"".join(rings)}'
            f"</gml:Polygon></eop:extentOf>\n  </eop:MaskFeature>"
        )
    right, bottom = grid.ulx + TILE_SIZE_M, grid.uly - TILE_SIZE_M
    members = "\n".join(features)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<eop:Mask xmlns:eop="http://www.opengis.net/eop/2.0" xmlns:gml="http://www.opengis.net/gml/3.2" '
        'gml:id="MSK_CLOUDS_B00">\n'
        f'<gml:boundedBy><gml:Envelope srsName="{srs}"><gml:lowerCorner>{grid.ulx:.0f} {bottom:.0f}'
        f"</gml:lowerCorner><gml:upperCorner>{right:.0f} {grid.uly:.0f}</gml:upperCorner></gml:Envelope>"
        "</gml:boundedBy>\n"
        f"<eop:maskMembers>\n{members}\n</eop:maskMembers>\n</eop:Mask>\n"
    )


def tile_footprint(grid: TileGrid, points_per_edge: int = 16) -> list[tuple[float, float]]:
    """The tile outline as (lon, lat) points, clockwise from the upper-left corner."""
    to_geographic = Transformer.from_crs(grid.epsg, 4326, always_xy=True)
    steps = np.linspace(0.0, TILE_SIZE_M, points_per_edge)
    xs = np.r_[
        grid.ulx + steps,
        np.full(points_per_edge, grid.ulx + TILE_SIZE_M),
        grid.ulx + steps[::-1],
        np.full(points_per_edge, grid.ulx),
    ]
    ys = np.r_[
        np.full(points_per_edge, grid.uly),
        grid.uly - steps,
        np.full(points_per_edge, grid.uly - TILE_SIZE_M),
        grid.uly - steps[::-1],
    ]
    lon, lat = to_geographic.transform(xs, ys)
    return list(zip(lon.tolist(), lat.tolist(), strict=True))


def product_metadata_xml(product: Product, grid: TileGrid, cloud_cover: float) -> str:
    """``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml`` with the fields readers need, in ESA's structure."""
    acq = product.acquisition
    l2a = product.level == "L2A"
    root = "Level-2A_User_Product" if l2a else "Level-1C_User_Product"
    namespace = (
        f"https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_{'Level-2A' if l2a else 'Level-1C'}.xsd"
    )
    files = "\n".join(
        f"            <IMAGE_FILE>{escape(path)}</IMAGE_FILE>" for path in product.band_paths().values()
    )
    offset_tag = "BOA_ADD_OFFSET" if l2a else "RADIO_ADD_OFFSET"
    offsets = ""
    if product.has_offset:
        items = "\n".join(
            f'        <{offset_tag} band_id="{band_id}">{RADIOMETRIC_OFFSET}</{offset_tag}>'
            for band_id in BAND_IDS.values()
        )
        list_tag = "BOA_ADD_OFFSET_VALUES_LIST" if l2a else "Radiometric_Offset_List"
        offsets = f"      <{list_tag}>\n{items}\n      </{list_tag}>\n"
    if l2a:
        quantification = (
            "      <QUANTIFICATION_VALUES_LIST>\n"
            '        <BOA_QUANTIFICATION_VALUE unit="none">'
            f"{QUANTIFICATION_VALUE}</BOA_QUANTIFICATION_VALUE>\n"
            '        <AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE>\n'
            '        <WVP_QUANTIFICATION_VALUE unit="cm">1000.0</WVP_QUANTIFICATION_VALUE>\n'
            "      </QUANTIFICATION_VALUES_LIST>\n"
        )
    else:
        quantification = (
            f'      <QUANTIFICATION_VALUE unit="none">{QUANTIFICATION_VALUE}</QUANTIFICATION_VALUE>\n'
        )
    spectral = "\n".join(
        f'        <Spectral_Information bandId="{band_id}" physicalBand="{band.replace("B0", "B")}"/>'
        for band, band_id in BAND_IDS.items()
    )
    footprint = " ".join(f"{lat:.9f} {lon:.9f}" for lon, lat in tile_footprint(grid, 2))
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:{root} xmlns:n1="{namespace}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>{_iso(acq.sensing)}</PRODUCT_START_TIME>
      <PRODUCT_STOP_TIME>{_iso(acq.sensing)}</PRODUCT_STOP_TIME>
      <PRODUCT_URI>{product.product_id}.SAFE</PRODUCT_URI>
      <PROCESSING_LEVEL>Level-{product.level[1:]}</PROCESSING_LEVEL>
      <PRODUCT_TYPE>S2MSI{product.level[1:]}</PRODUCT_TYPE>
      <PROCESSING_BASELINE>{product.baseline}</PROCESSING_BASELINE>
      <GENERATION_TIME>{_iso(product.generation)}</GENERATION_TIME>
      <Datatake datatakeIdentifier="{product.datatake_identifier}">
        <SPACECRAFT_NAME>Sentinel-{acq.mission[2:]}</SPACECRAFT_NAME>
        <DATATAKE_TYPE>INS-NOBS</DATATAKE_TYPE>
        <DATATAKE_SENSING_START>{_iso(acq.sensing)}</DATATAKE_SENSING_START>
        <SENSING_ORBIT_NUMBER>{acq.relative_orbit}</SENSING_ORBIT_NUMBER>
        <SENSING_ORBIT_DIRECTION>DESCENDING</SENSING_ORBIT_DIRECTION>
      </Datatake>
      <Product_Organisation>
        <Granule_List>
          <Granule granuleIdentifier="{product.granule_id}" imageFormat="JPEG2000">
{files}
          </Granule>
        </Granule_List>
      </Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
      <Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>{NODATA_DN}</SPECIAL_VALUE_INDEX></Special_Values>
      <Special_Values><SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>{SATURATED_DN}</SPECIAL_VALUE_INDEX></Special_Values>
{quantification}{offsets}      <Spectral_Information_List>
{spectral}
      </Spectral_Information_List>
    </Product_Image_Characteristics>
  </n1:General_Info>
  <n1:Geometric_Info>
    <Product_Footprint><Product_Footprint><Global_Footprint><EXT_POS_LIST>{footprint}</EXT_POS_LIST></Global_Footprint></Product_Footprint></Product_Footprint>
    <Coordinate_Reference_System><GEO_TABLES version="1">EPSG</GEO_TABLES>
      <HORIZONTAL_CS_TYPE>GEOGRAPHIC</HORIZONTAL_CS_TYPE></Coordinate_Reference_System>
  </n1:Geometric_Info>
  <n1:Quality_Indicators_Info>
    <Cloud_Coverage_Assessment>{cloud_cover:.6f}</Cloud_Coverage_Assessment>
  </n1:Quality_Indicators_Info>
</n1:{root}>
"""


def tile_metadata_xml(product: Product, grid: TileGrid, stats: _ProductStats) -> str:
    """``MTD_TL.xml``: the granule's sensing time, UTM geocoding at 10/20/60 m and quality figures."""
    l2a = product.level == "L2A"
    root = "Level-2A_Tile_ID" if l2a else "Level-1C_Tile_ID"
    sizes, positions = [], []
    for native, scale in ((10, 1), (20, 2), (60, 6)):
        n = grid.pixels // scale
        step = grid.pixel_size * scale
        sizes.append(f'      <Size resolution="{native}"><NROWS>{n}</NROWS><NCOLS>{n}</NCOLS></Size>')
        positions.append(
            f'      <Geoposition resolution="{native}"><ULX>{grid.ulx:.0f}</ULX><ULY>{grid.uly:.0f}</ULY>'
            f"<XDIM>{step:g}</XDIM><YDIM>{-step:g}</YDIM></Geoposition>"
        )
    zone_name = f"WGS84 / UTM zone {grid.utm_zone}{grid.hemisphere}"
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:{root} xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_{root}_Metadata.xsd">
  <n1:General_Info>
    <TILE_ID metadataLevel="Brief">{product.granule_id}</TILE_ID>
    <SENSING_TIME metadataLevel="Standard">{_iso(product.granule_sensing)}</SENSING_TIME>
  </n1:General_Info>
  <n1:Geometric_Info>
    <Tile_Geocoding metadataLevel="Brief">
      <HORIZONTAL_CS_NAME>{zone_name}</HORIZONTAL_CS_NAME>
      <HORIZONTAL_CS_CODE>EPSG:{grid.epsg}</HORIZONTAL_CS_CODE>
{chr(10).join(sizes)}
{chr(10).join(positions)}
    </Tile_Geocoding>
  </n1:Geometric_Info>
  <n1:Quality_Indicators_Info metadataLevel="Standard">
    <Image_Content_QI>
      <NODATA_PIXEL_PERCENTAGE>{stats.nodata_percentage:.6f}</NODATA_PIXEL_PERCENTAGE>
      <CLOUDY_PIXEL_PERCENTAGE>{stats.cloud_cover:.6f}</CLOUDY_PIXEL_PERCENTAGE>
    </Image_Content_QI>
  </n1:Quality_Indicators_Info>
</n1:{root}>
"""


def _manifest_xml(folder: Path) -> str:
    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        digest = hashlib.md5(path.read_bytes()).hexdigest()  # noqa: S324 - the SAFE format uses MD5
        entries.append(
            f'  <dataObject ID="{escape(relative)}"><byteStream size="{path.stat().st_size}">'
            f'<fileLocation locatorType="URL" href="./{escape(relative)}"/>'
            f'<checksum checksumName="MD5">{digest}</checksum></byteStream></dataObject>'
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<xfdu:XFDU xmlns:xfdu="urn:ccsds:schema:xfdu:1">\n'
        "<dataObjectSection>\n" + "\n".join(entries) + "\n</dataObjectSection>\n</xfdu:XFDU>\n"
    )


def _index_row(
    product: Product,
    grid: TileGrid,
    base_url: str,
    cloud_cover: float,
    total_size: int | None,
) -> dict[str, str]:
    lons, lats = zip(*tile_footprint(grid), strict=True)
    return {
        "GRANULE_ID": product.granule_id,
        "PRODUCT_ID": product.product_id,
        "DATATAKE_IDENTIFIER": product.datatake_identifier,
        "MGRS_TILE": product.tile,
        "SENSING_TIME": _iso(product.granule_sensing),
        "TOTAL_SIZE": "" if total_size is None else str(total_size),
        "CLOUD_COVER": f"{cloud_cover:.6f}",
        "GEOMETRIC_QUALITY_FLAG": product.quality_flag,
        "GENERATION_TIME": _iso(product.generation),
        "NORTH_LAT": f"{max(lats):.7f}",
        "SOUTH_LAT": f"{min(lats):.7f}",
        "WEST_LON": f"{min(lons):.7f}",
        "EAST_LON": f"{max(lons):.7f}",
        "BASE_URL": base_url,
    }


def _write_index(path: Path, rows: Sequence[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=INDEX_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    # mtime=0 keeps the gzip bytes identical for the same seed.
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        handle.write(buffer.getvalue().encode("utf-8"))


def index_path(root: Path, level: str) -> Path:
    """Where the index of a level lives in an archive, as in the public bucket."""
    return root / "L2" / "index.csv.gz" if level == "L2A" else root / "index.csv.gz"


def generate_archive(spec: SampleSpec, progress: bool = False) -> dict[str, Path]:
    """Write the archive described by ``spec`` and return the index path of each level.

    Raises
    ------
    SampleError
        If the options are invalid or the output folder cannot be written.
    """
    root = spec.out.resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SampleError(f"--out {spec.out}: cannot create the folder ({exc.strerror})") from exc
    earth = SyntheticEarth(spec.seed, spec.cloud_profile)
    products = plan_archive(spec)
    grids = {tile: tile_grid(tile, spec.resolution_factor) for tile in {p.tile for p in products}}
    rows: dict[str, list[dict[str, str]]] = {level: [] for level in spec.levels}
    for (tile, sensing), group in _by_tile_and_acquisition(products):
        grid = grids[tile]
        with_files = [p for p in group if p.has_files]
        if progress:
            print(f"  T{tile} {sensing:%Y-%m-%d}: {', '.join(p.product_id for p in group)}", file=sys.stderr)
        stats = write_products(earth, grid, with_files, root) if with_files else {}
        for product in group:
            if not product.has_files:
                rows[product.level].append(_index_row(product, grid, "", 0.0, None))
                continue
            folder = root / product.relative_dir
            cloud = stats[product].cloud_cover
            (folder / f"MTD_MSI{product.level}.xml").write_text(
                product_metadata_xml(product, grid, cloud), encoding="utf-8"
            )
            (folder / f"GRANULE/{product.granule_id}/MTD_TL.xml").write_text(
                tile_metadata_xml(product, grid, stats[product]), encoding="utf-8"
            )
            (folder / "manifest.safe").write_text(_manifest_xml(folder), encoding="utf-8")
            total_size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
            base = spec.bucket_url.rstrip("/") if spec.bucket_url else root.as_posix()
            rows[product.level].append(
                _index_row(product, grid, f"{base}/{product.relative_dir}", cloud, total_size)
            )
    written = {}
    for level, level_rows in rows.items():
        path = index_path(root, level)
        _write_index(path, level_rows)
        written[level] = path
    written["zones"] = write_sample_zones(root, spec.tiles, spec.seed)
    return written


ZONES_FILE = "zones.parquet"


def sample_zones(tiles: Sequence[str], seed: int) -> tuple[list[str], list[object]]:
    """User zones over the sample tiles, like a real zones file: a few hundred fields of 100-600 m,
    farms of 2-5 km, districts of 20-40 km, fields smaller than a sample pixel, and zones across the
    54/55 UTM boundary (144 E) and in the swath-edge no-data west of it.

    Returns
    -------
    (ids, geometries)
        Zone ids and shapely polygons in longitude/latitude.
    """
    import shapely

    rng = np.random.default_rng([seed, 14])
    boxes = [shapely.Polygon(tile_footprint(tile_grid(tile, 10))).bounds for tile in tiles]
    west, south = min(b[0] for b in boxes), min(b[1] for b in boxes)
    east, north = max(b[2] for b in boxes), max(b[3] for b in boxes)
    metres = 1 / 111_320.0  # degrees of latitude per metre; longitude is stretched by 1/cos(lat)
    stretch = 1 / np.cos(np.radians((south + north) / 2))
    ids: list[str] = []
    geometries: list[object] = []

    def add(prefix: str, count: int, low_m: float, high_m: float, lon_range: tuple[float, float]) -> None:
        for number in range(count):
            size = rng.uniform(low_m, high_m) * metres
            lon = rng.uniform(*lon_range)
            lat = rng.uniform(south + 0.05, north - 0.05)
            half_lon, half_lat = size * stretch / 2, size / 2
            if rng.random() < 0.3:  # a triangle
                polygon = shapely.Polygon(
                    [
                        (lon - half_lon, lat - half_lat),
                        (lon + half_lon, lat - half_lat),
                        (lon, lat + half_lat),
                    ]
                )
            else:
                polygon = shapely.box(lon - half_lon, lat - half_lat, lon + half_lon, lat + half_lat)
            ids.append(f"{prefix}-{number:03d}")
            geometries.append(polygon)

    inside = (west + 0.05, east - 0.05)
    add("field", 250, 100.0, 600.0, inside)
    add("farm", 20, 2_000.0, 5_000.0, inside)
    add("district", 5, 20_000.0, 40_000.0, inside)
    add("tiny", 10, 5.0, 15.0, inside)
    add("boundary", 10, 500.0, 3_000.0, (143.98, 144.02))  # across 144 E
    return ids, geometries


def write_sample_zones(root: Path, tiles: Sequence[str], seed: int) -> Path:
    """Write :func:`sample_zones` as ``<root>/zones.parquet`` (GeoParquet)."""
    from evi_udf.zones.input import write_zones_geoparquet

    ids, geometries = sample_zones(tiles, seed)
    return write_zones_geoparquet(root / ZONES_FILE, ids, geometries)


def _by_tile_and_acquisition(
    products: Sequence[Product],
) -> Iterator[tuple[tuple[str, dt.datetime], list[Product]]]:
    groups: dict[tuple[str, dt.datetime], list[Product]] = {}
    for product in products:
        groups.setdefault((product.tile, product.acquisition.sensing), []).append(product)
    yield from groups.items()


def _parse_args(argv: Sequence[str] | None) -> SampleSpec:
    parser = argparse.ArgumentParser(
        prog="python -m evi_udf.sample.generate",
        description="Generate a realistic local Sentinel-2 archive (bucket layout, indexes, SAFE products).",
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write the archive into")
    parser.add_argument("--level", choices=("L2A", "L1C", "both"), default="L2A")
    parser.add_argument(
        "--tiles", default=",".join(DEFAULT_TILES), help="comma-separated MGRS tiles (default: %(default)s)"
    )
    parser.add_argument("--scenes-per-tile", type=int, default=6, help="acquisitions per tile, 5 days apart")
    parser.add_argument(
        "--resolution-factor",
        type=int,
        default=10,
        help="F times coarser than the real 10 m product; 1 = full size (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--start-date",
        type=dt.date.fromisoformat,
        default=DEFAULT_START,
        help="first acquisition date (default %(default)s)",
    )
    parser.add_argument("--bucket-url", help="make BASE_URL gs://BUCKET/... instead of the local folder")
    parser.add_argument(
        "--zones-only", action="store_true", help=f"write only the sample zones ({ZONES_FILE}) into --out"
    )
    parser.add_argument(
        "--cloud-profile",
        default="mixed",
        help="mixed (default), clear (a dry month) or cloudy (a fifth of the dates clear, the rest 40-90%% "
        "cloud in cells tens of km across)",
    )
    args = parser.parse_args(argv)
    levels = ("L1C", "L2A") if args.level == "both" else (args.level,)
    tiles = tuple(part for part in args.tiles.split(",") if part.strip())
    try:
        tiles = tuple(normalize_tile(tile) for tile in tiles)
    except ValueError as exc:
        raise SampleError(f"--tiles: {exc}") from exc
    if args.zones_only:
        write_sample_zones(args.out, tiles, args.seed)
        raise SystemExit(0)
    return SampleSpec(
        out=args.out,
        levels=levels,
        tiles=tiles,
        scenes_per_tile=args.scenes_per_tile,
        resolution_factor=args.resolution_factor,
        seed=args.seed,
        start_date=args.start_date,
        bucket_url=args.bucket_url,
        cloud_profile=args.cloud_profile,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    try:
        spec = _parse_args(argv)
        print(
            f"Writing a Sentinel-2 sample archive to {spec.out} (levels {'+'.join(spec.levels)}, "
            f"tiles {','.join(spec.tiles)}, {spec.scenes_per_tile} scenes/tile, "
            f"{NATIVE_PIXELS_10M // spec.resolution_factor} px/band)",
            file=sys.stderr,
        )
        written = generate_archive(spec, progress=True)
    except SampleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for level, path in written.items():
        print(f"{level} index: {path}" if level != "zones" else f"zones: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
