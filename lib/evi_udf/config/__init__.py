"""The job configuration: one frozen, typed object loaded once on the driver and passed down.

A YAML file in ``conf/`` gives the values; ``--set section.key=value`` overrides on the command line
are applied on top. Every key is checked: an unknown key, a missing required key or a bad value
raises :class:`~evi_udf.errors.ConfigError` with the dotted name of the key, e.g.
``catalog.max_cloud_cover: must be between 0 and 100, got 140``.

The dataclasses below are the single source of truth for what can be configured; the loader reads
their type hints, so adding a field here is all it takes to make it configurable.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from evi_udf.errors import ConfigError

Level = Literal["L1C", "L2A"]
Period = Literal["day", "month", "quarter", "year", "all"]
QualityRule = Literal["passed", "passed_or_missing", "any"]

PERIODS: tuple[str, ...] = typing.get_args(Period)
LEVELS: tuple[str, ...] = typing.get_args(Level)

# Sentinel-2 pixels are 10 m: a grid finer than 1 m only multiplies pixels, one coarser than 100 km
# has none left in a tile.
MIN_GRID_RESOLUTION_M, MAX_GRID_RESOLUTION_M = 1.0, 100_000.0
# The run mosaic is one PNG on the driver: 8192 px wide is already 64 Mpx.
MAX_MOSAIC_SIZE = 8192

# Zone 01-60, latitude band C-X without I and O, 100 km square column A-Z and row A-V without I, O.
MGRS_TILE_PATTERN = re.compile(r"^(0[1-9]|[1-5][0-9]|60)[C-HJ-NP-X][A-HJ-NP-Z][A-HJ-NP-V]$")


def normalize_tile(tile: str) -> str:
    """Return ``tile`` as the index spells it (``55HBU``), accepting the file-name form ``T55HBU``.

    Raises
    ------
    ValueError
        If the text is not a valid MGRS 100 km square reference.
    """
    text = tile.strip().upper()
    if len(text) == 6 and text.startswith("T"):
        text = text[1:]
    if not MGRS_TILE_PATTERN.match(text):
        raise ValueError(f"{tile!r} is not an MGRS tile like 55HBU (zone 01-60, band C-X, square)")
    return text


def _fail(key: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{key}: {message}")


@dataclasses.dataclass(frozen=True)
class CatalogConfig:
    """Which scenes of the Sentinel-2 index to use and how to group them.

    Dates are UTC calendar dates of the sensing time, both ends inclusive. In the YAML they may be
    relative to the day the job starts (UTC): ``today``, ``yesterday`` or ``-<N>d`` / ``-<N>w`` /
    ``-<N>m`` (days, weeks, calendar months ago); a relative ``start_date`` moves back to the start of
    its period, so that a scheduled run never makes a composite from part of a period (see
    :func:`resolve_relative_dates`). ``bbox`` is
    ``[west, south, east, north]`` in degrees; ``west > east`` means the box crosses the antimeridian.
    A scene is kept when its index bounding box intersects ``bbox``.

    ``driver_selection_max_rows``: when ``index_uri`` is a Parquet cache on this machine and the
    partitions the query cannot skip hold at most this many rows (read from the Parquet footers), the
    scenes are selected on the driver with pyarrow and the same pandas rules, without a Spark job
    (:mod:`evi_udf.index.arrow`); ``0`` always selects in Spark.
    """

    index_uri: str
    level: Level = "L2A"
    start_date: dt.date | None = None
    end_date: dt.date | None = None
    tiles: tuple[str, ...] = ()
    bbox: tuple[float, float, float, float] | None = None
    max_cloud_cover: float = 100.0
    geometric_quality: QualityRule = "passed_or_missing"
    period: Period = "month"
    driver_selection_max_rows: int = 2_000_000

    def __post_init__(self) -> None:
        if not self.index_uri.strip():
            _fail("index_uri", "must name the index file (local path or gs:// URI)")
        if self.start_date and self.end_date and self.start_date > self.end_date:
            _fail("start_date", f"{self.start_date} is after end_date {self.end_date}")
        if self.driver_selection_max_rows < 0:
            _fail("driver_selection_max_rows", f"must be 0 or more, got {self.driver_selection_max_rows}")
        if not 0.0 <= self.max_cloud_cover <= 100.0:
            _fail("max_cloud_cover", f"must be between 0 and 100, got {self.max_cloud_cover}")
        normalized = []
        for tile in self.tiles:
            try:
                normalized.append(normalize_tile(tile))
            except ValueError as exc:
                _fail("tiles", str(exc))
        object.__setattr__(self, "tiles", tuple(dict.fromkeys(normalized)))
        if self.bbox is not None:
            west, south, east, north = self.bbox
            if not (-180.0 <= west <= 180.0 and -180.0 <= east <= 180.0):
                _fail("bbox", f"longitudes must be within [-180, 180], got {self.bbox}")
            if not (-90.0 <= south < north <= 90.0):
                _fail("bbox", f"latitudes must satisfy -90 <= south < north <= 90, got {self.bbox}")


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """The grid the composites are published on.

    ``native``: each tile's own UTM grid (10 m). ``shared``: one grid for all tiles, ``crs`` at
    ``resolution`` metres anchored at ``origin`` (x, y), e.g. EPSG:3577 at 10 m for Australia, so that
    neighbouring tiles, also across UTM zones, line up pixel for pixel.
    """

    kind: Literal["native", "shared"] = "native"
    crs: str | None = None
    resolution: float = 10.0
    origin: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.kind == "shared":
            if not self.crs:
                _fail("crs", "is required when kind is shared (e.g. EPSG:3577)")
            from pyproj import CRS
            from pyproj.exceptions import CRSError

            try:
                CRS.from_user_input(self.crs)
            except CRSError as exc:
                _fail("crs", f"{self.crs!r} is not a CRS pyproj knows ({exc})")
        if not (
            math.isfinite(self.resolution)
            and MIN_GRID_RESOLUTION_M <= self.resolution <= MAX_GRID_RESOLUTION_M
        ):
            _fail(
                "resolution",
                f"must be between {MIN_GRID_RESOLUTION_M:g} and {MAX_GRID_RESOLUTION_M:g} metres, "
                f"got {self.resolution}",
            )
        if not all(math.isfinite(value) for value in self.origin):
            _fail("origin", f"must be two finite coordinates, got {list(self.origin)}")


@dataclasses.dataclass(frozen=True)
class RasterConfig:
    """How a group of scenes becomes an EVI composite."""

    compositor: str = "median"
    # Scene Classification classes kept as clear sky (4 vegetation, 5 not vegetated, 6 water).
    scl_clear_classes: tuple[int, ...] = (4, 5, 6)
    # L1C MSK_CLASSI: also mask snow/ice.
    l1c_mask_snow: bool = True
    evi_valid_min: float = -1.0
    evi_valid_max: float = 1.0
    evi_min_denominator: float = 1e-3
    block_size: int = 1024
    # Read each product's cloud mask over a block first and decode its bands there only if the mask
    # keeps some pixel: the outputs are the same either way (so it is not part of the parameter hash);
    # false decodes every block of every band (for comparison and benchmarks).
    skip_masked_blocks: bool = True
    resampling: Literal["bilinear", "cubic", "average", "nearest"] = "bilinear"
    grid: GridConfig = GridConfig()
    # On a shared grid at least twice as coarse as the bands, where the composite is made before it is
    # warped: "resolution_levels" decodes B02/B04/B08 at the coarsest JPEG2000 resolution level not
    # coarser than the grid (20, 40, 80, 160 m; the wavelet low-pass, close to the mean DN of the
    # 10 m pixels it covers), so EVI is that of averaged reflectance; a coarse pixel is kept only if the
    # cloud mask keeps every mask pixel under it. "full" decodes 10 m and resamples the 10 m EVI.
    coarse_reads: Literal["resolution_levels", "full"] = "resolution_levels"
    # float32: EVI as it is, NaN = no data, what odc-stac and stackstac load as float without any
    # scaling. int16: EVI x 10000 with scale/offset tags, half the bytes; clients must apply the scale
    # (stackstac does, odc-stac 0.5 does not).
    output_dtype: Literal["int16", "float32"] = "float32"
    cog_profile: Literal["zstd", "deflate"] = "zstd"
    histogram_bins: int = 20
    quicklook_size: int = 512

    def __post_init__(self) -> None:
        from evi_udf.pixels.compositing import COMPOSITORS

        if self.compositor not in COMPOSITORS:
            _fail("compositor", f"must be one of {', '.join(COMPOSITORS)}; got {self.compositor!r}")
        bad = [cls for cls in self.scl_clear_classes if not 0 <= cls <= 11]
        if bad:
            _fail("scl_clear_classes", f"SCL classes are 0-11, got {bad}")
        if not self.scl_clear_classes:
            _fail("scl_clear_classes", "must list at least one class (4, 5, 6: vegetation, soil, water)")
        for name in ("evi_valid_min", "evi_valid_max", "evi_min_denominator"):
            if not math.isfinite(getattr(self, name)):
                _fail(name, f"must be a finite number, got {getattr(self, name)}")
        if not self.evi_min_denominator > 0:
            _fail("evi_min_denominator", f"must be positive, got {self.evi_min_denominator}")
        if not self.evi_valid_min < self.evi_valid_max:
            _fail("evi_valid_min", f"must be below evi_valid_max, got {self.evi_valid_min}")
        if self.output_dtype == "int16" and (self.evi_valid_min < -3.2767 or self.evi_valid_max > 3.2767):
            _fail("evi_valid_max", "int16 output scaled by 10000 holds EVI within [-3.2767, 3.2767]")
        if not 256 <= self.block_size <= 8192:
            _fail("block_size", f"must be between 256 and 8192, got {self.block_size}")
        if not 1 <= self.histogram_bins <= 1000:
            _fail("histogram_bins", f"must be between 1 and 1000, got {self.histogram_bins}")
        if not 16 <= self.quicklook_size <= 4096:
            _fail("quicklook_size", f"must be between 16 and 4096, got {self.quicklook_size}")


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """Where the run writes its rasters, tables and report: a local folder or ``gs://bucket[/prefix]``.

    A local root is made absolute (``~`` expanded) when the config is loaded, so that every path the
    run writes into its tables and STAC items names the file wherever it is read from.
    """

    root: str = "out"

    def __post_init__(self) -> None:
        root = self.root.strip()
        if not root:
            _fail("root", "must name a local folder or gs://bucket[/prefix], got an empty value")
        if root.startswith("gs://"):
            bucket = root[len("gs://") :].split("/", 1)[0]
            if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]", bucket):
                _fail("root", f"{root!r}: gs:// needs a bucket name, e.g. gs://my-bucket/evi")
            object.__setattr__(self, "root", root.rstrip("/"))
            return
        if "://" in root:
            _fail("root", f"{root!r}: only local folders and gs:// are supported")
        object.__setattr__(self, "root", str(Path(root).expanduser().resolve()))


@dataclasses.dataclass(frozen=True)
class StorageConfig:
    """How ``gs://`` is reached: Application Default Credentials, except for public buckets."""

    # Read without credentials (public data); everything else uses ADC.
    anonymous_buckets: tuple[str, ...] = ("gcp-public-data-sentinel-2",)
    # Billing/quota project of the storage client; null lets ADC decide.
    project: str | None = None


@dataclasses.dataclass(frozen=True)
class SinkConfig:
    """Where the statistics tables go.

    ``parquet``: ``<output.root>/tables/`` (local runs, queryable with DuckDB). ``bigquery``: tables
    in ``project.dataset``, through Application Default Credentials. ``api_endpoint`` is only for
    the BigQuery emulator (it then uses anonymous credentials); leave it null for real BigQuery.
    """

    kind: Literal["parquet", "bigquery"] = "parquet"
    project: str | None = None
    dataset: str = "sentinel2_evi"
    location: str = "US"
    api_endpoint: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "bigquery" and not self.project:
            _fail("project", "is required when kind is bigquery (the project that holds the dataset)")


@dataclasses.dataclass(frozen=True)
class ZonesConfig:
    """User zones (fields, farms, districts) to compute EVI statistics for, per scene and period.

    ``uri``: a vector file of polygons, local or ``gs://``: GeoParquet (``.parquet``), GeoPackage
    (``.gpkg``), GeoJSON (``.geojson``/``.json``) or FlatGeobuf (``.fgb``); or a BigQuery table
    ``bq://project.dataset.table`` whose ``geography_column`` is a GEOGRAPHY; null for no zones.
    ``id_column``: the column holding each zone's id (text or integer, unique); ``layer``: the layer
    of a multi-layer file (GeoPackage), null for the first.
    """

    uri: str | None = None
    id_column: str = "zone_id"
    layer: str | None = None
    geography_column: str = "geometry"

    def __post_init__(self) -> None:
        if self.uri is not None:
            uri = self.uri.strip()
            if not uri:
                _fail("uri", "must name a vector file of zones, or be null for no zones")
            if uri.startswith("bq://"):
                if not re.fullmatch(
                    r"bq://[a-z][a-z0-9-]{4,28}[a-z0-9]\.[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_-]*", uri
                ):
                    _fail("uri", f"{uri!r}: a BigQuery table is bq://project.dataset.table")
            elif not uri.lower().endswith(ZONE_FILE_SUFFIXES):
                _fail(
                    "uri",
                    f"{uri!r}: expected bq://project.dataset.table or one of {', '.join(ZONE_FILE_SUFFIXES)}",
                )
            object.__setattr__(self, "uri", uri)
        if not self.id_column.strip():
            _fail("id_column", "must name the column holding each zone's id")


ZONE_FILE_SUFFIXES = (".parquet", ".geoparquet", ".gpkg", ".geojson", ".json", ".fgb")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How a run behaves as a whole."""

    # Remake groups that are done (committed from the same scene set with the same parameters).
    overwrite: bool = False
    # The run fails (non-zero exit) when more than this share of the groups it processed failed.
    max_failed_group_share: float = 0.5
    # Width in pixels of the run's quick-look mosaic of all composites (0: none).
    mosaic_size: int = 1024

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_failed_group_share <= 1.0:
            _fail("max_failed_group_share", f"must be between 0 and 1, got {self.max_failed_group_share}")
        if not 0 <= self.mosaic_size <= MAX_MOSAIC_SIZE:
            _fail(
                "mosaic_size",
                f"must be between 0 (no mosaic) and {MAX_MOSAIC_SIZE} pixels, got {self.mosaic_size}",
            )


SPARK_SIZE = re.compile(r"^[1-9][0-9]*[kmgt]$")
_SIZE_MIB = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def size_mib(size: str) -> float:
    """A Spark size (``4g``, ``9600m``, ``1t``) in MiB."""
    return int(size[:-1]) * _SIZE_MIB[size[-1]]


# Limits of Serverless for Apache Spark, from Google's "Spark properties" page (Resource allocation
# properties) and the batch reference (cloud.google.com/dataproc-serverless/docs/concepts/properties,
# .../reference/rest/v1/projects.locations.batches). The service refuses a batch outside them.
# Total memory per core, heap plus overhead, for the driver and for each executor: 1024m to 7424m on
# the standard compute tier, up to 24576m on the premium tier.
MEMORY_PER_CORE_MIB = {"standard": (1024, 7424), "premium": (1024, 24576)}
# A JVM heap below 1024m is refused whatever the cores (the smallest value the page allows).
MIN_HEAP_MIB = 1024
# Executor disk: at least 250 GiB on the standard disk tier; on the premium (local SSD) tier only the
# listed sizes, and at least 750g with 16 cores. The largest documented size (9000g) bounds both.
MIN_STANDARD_DISK_GIB = 250
PREMIUM_DISK_GIB = (375, 750, 1500, 3000, 6000, 9000)
MAX_DISK_GIB = 9000
# Batch ttl (ExecutionConfig.ttl): 10 minutes to 14 days.
TTL_RANGE_SECONDS = (10 * 60, 14 * 24 * 3600)
_TTL_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Batch ids: 4-63 characters, lowercase letters, digits and hyphens, a letter first, no hyphen last.
# submit.sh appends "-<YYYYmmdd>-<HHMMSS>-<6 hex>" (23 characters) to the prefix.
BATCH_ID_SUFFIX_LENGTH = 23
MAX_BATCH_ID_LENGTH = 63
# Regions are named like us-central1 or australia-southeast1 (not multi-regions like US or EU).
REGION = re.compile(r"^[a-z]+(?:-[a-z]+)+[0-9]+$")
RUNTIME_VERSION = re.compile(r"^[0-9]+\.[0-9]+$")
# Properties the service rejects (the batch fails if any is set): YARN and the external shuffle service.
UNSUPPORTED_PROPERTY_PREFIXES: tuple[str, ...] = ("spark.yarn.", "spark.shuffle.service.", "spark.master")
# Properties that have their own typed setting below, so they are never given twice.
_TYPED_PROPERTIES: dict[str, str] = {
    "spark.driver.cores": "driver_cores",
    "spark.driver.memory": "driver_memory",
    "spark.driver.memoryOverhead": "driver_memory_overhead",
    "spark.executor.cores": "executor_cores",
    "spark.executor.memory": "executor_memory",
    "spark.executor.memoryOverhead": "executor_memory_overhead",
    "spark.dataproc.executor.disk.size": "executor_disk_size",
    "spark.dataproc.driver.compute.tier": "compute_tier",
    "spark.dataproc.executor.compute.tier": "compute_tier",
    "spark.dataproc.executor.disk.tier": "disk_tier",
    "spark.dynamicAllocation.initialExecutors": "initial_executors",
    "spark.dynamicAllocation.minExecutors": "min_executors",
    "spark.dynamicAllocation.maxExecutors": "max_executors",
}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class DataprocConfig:
    """How ``scripts/submit.sh`` submits the job to Dataproc Serverless; the job itself ignores it.

    The settings left ``None`` are required for a submission and can also be given as flags of
    ``submit.sh``; ``conf/dataproc.yaml`` explains each value.
    """

    project: str | None = None
    region: str | None = None
    runtime_version: str = "2.3"
    container_image: str | None = None
    service_account: str | None = None
    # gs://bucket[/prefix] where gcloud stages the job file and submit.sh the wheel and config.
    deps_bucket: str | None = None
    subnet: str | None = None
    # projects/P/regions/R/clusters/C: a Persistent History Server that keeps the Spark UI of batches.
    history_server_cluster: str | None = None
    batch_prefix: str = "evi"
    ttl: str = "1d"
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    # standard or premium (spark.dataproc.{driver,executor}.compute.tier): premium allows more memory
    # per core and bills more per DCU.
    compute_tier: Literal["standard", "premium"] = "standard"
    # standard (persistent disk) or premium (local SSD) executor disk: spark.dataproc.executor.disk.tier.
    disk_tier: Literal["standard", "premium"] = "standard"
    driver_cores: int = 4
    driver_memory: str = "8g"
    driver_memory_overhead: str = "2g"
    executor_cores: int = 4
    executor_memory: str = "4g"
    executor_memory_overhead: str = "8g"
    executor_disk_size: str = "250g"
    initial_executors: int = 2
    min_executors: int = 2
    max_executors: int = 20
    # Environment variables of the driver and every executor (spark.dataproc.driverEnv.* and
    # spark.executorEnv.*).
    environment: dict[str, str] = dataclasses.field(default_factory=dict)
    # Any other Spark properties (YARN and shuffle-service properties are refused).
    properties: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("driver_cores", "executor_cores"):
            if getattr(self, name) not in (4, 8, 16):
                _fail(name, f"Dataproc Serverless allows 4, 8 or 16 cores, got {getattr(self, name)}")
        for name in (
            "driver_memory",
            "driver_memory_overhead",
            "executor_memory",
            "executor_memory_overhead",
            "executor_disk_size",
        ):
            if not SPARK_SIZE.match(str(getattr(self, name))):
                _fail(name, f"must be a size like 4g or 9600m, got {getattr(self, name)!r}")
        if self.min_executors < 2:
            _fail("min_executors", f"Dataproc Serverless needs at least 2, got {self.min_executors}")
        if not self.min_executors <= self.initial_executors <= self.max_executors:
            _fail(
                "initial_executors",
                f"must satisfy min_executors <= initial_executors <= max_executors, got "
                f"{self.min_executors} <= {self.initial_executors} <= {self.max_executors}",
            )
        self._check_memory()
        self._check_disk()
        longest = MAX_BATCH_ID_LENGTH - BATCH_ID_SUFFIX_LENGTH
        if not re.fullmatch(rf"[a-z][a-z0-9-]{{0,{longest - 1}}}", self.batch_prefix):
            _fail(
                "batch_prefix",
                f"use 1-{longest} lowercase letters, digits and '-', starting with a letter (batch ids "
                f"are <prefix>-<date>-<time>-<random>, at most {MAX_BATCH_ID_LENGTH} characters), "
                f"got {self.batch_prefix!r} ({len(self.batch_prefix)} characters)",
            )
        if not re.fullmatch(r"[1-9][0-9]*[smhd]", self.ttl):
            _fail("ttl", f"must be a duration like 6h or 2d (10m to 14d), got {self.ttl!r}")
        ttl_seconds = int(self.ttl[:-1]) * _TTL_UNIT_SECONDS[self.ttl[-1]]
        if not TTL_RANGE_SECONDS[0] <= ttl_seconds <= TTL_RANGE_SECONDS[1]:
            _fail("ttl", f"must be between 10m and 14d (Dataproc's range), got {self.ttl}")
        if self.region is not None and not REGION.match(self.region):
            _fail(
                "region",
                f"must be a Google Cloud region like us-central1 or europe-west4 (not a multi-region "
                f"such as US or EU), got {self.region!r}",
            )
        if not RUNTIME_VERSION.match(self.runtime_version):
            _fail("runtime_version", f"must be a version like '2.3' or '3.0', got {self.runtime_version!r}")
        if self.deps_bucket is not None and not self.deps_bucket.startswith("gs://"):
            _fail("deps_bucket", f"must be a gs:// URI, got {self.deps_bucket!r}")
        for key, value in self.labels.items():
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", key) or not re.fullmatch(
                r"[a-z0-9_-]{0,63}", value
            ):
                _fail("labels", f"{key}={value}: keys and values use lowercase letters, digits, _ and -")
        for name in self.environment:
            if not _ENV_NAME.match(name):
                _fail("environment", f"{name!r} is not an environment variable name")
        for key in self.properties:
            if key.startswith(UNSUPPORTED_PROPERTY_PREFIXES):
                _fail("properties", f"{key}: YARN and shuffle-service properties make the batch fail")
            if key in _TYPED_PROPERTIES:
                _fail("properties", f"{key}: set dataproc.{_TYPED_PROPERTIES[key]} instead")

    def _check_memory(self) -> None:
        low, high = MEMORY_PER_CORE_MIB[self.compute_tier]
        for role, cores in (("driver", self.driver_cores), ("executor", self.executor_cores)):
            heap_name, overhead_name = f"{role}_memory", f"{role}_memory_overhead"
            heap, overhead = getattr(self, heap_name), getattr(self, overhead_name)
            if size_mib(heap) < MIN_HEAP_MIB:
                _fail(heap_name, f"must be at least {MIN_HEAP_MIB}m, got {heap}")
            per_core = (size_mib(heap) + size_mib(overhead)) / cores
            if not low <= per_core <= high:
                _fail(
                    heap_name,
                    f"{heap_name} + {overhead_name} ({heap} + {overhead}) over {cores} cores is "
                    f"{per_core:.0f}m per core; Dataproc allows {low}m to {high}m per core on the "
                    f"{self.compute_tier} compute tier (at most {high * cores // 1024}g in all with "
                    f"{cores} cores)",
                )

    def _check_disk(self) -> None:
        gib = size_mib(self.executor_disk_size) / 1024
        if self.disk_tier == "standard":
            if not MIN_STANDARD_DISK_GIB <= gib <= MAX_DISK_GIB:
                _fail(
                    "executor_disk_size",
                    f"must be between {MIN_STANDARD_DISK_GIB}g and {MAX_DISK_GIB}g on the standard disk "
                    f"tier, got {self.executor_disk_size}",
                )
            return
        allowed = [size for size in PREMIUM_DISK_GIB if self.executor_cores < 16 or size >= 750]
        if gib not in allowed:
            _fail(
                "executor_disk_size",
                f"on the premium disk tier with {self.executor_cores} executor cores must be one of "
                f"{', '.join(f'{size}g' for size in allowed)}, got {self.executor_disk_size}",
            )

    def spark_properties(self) -> dict[str, str]:
        """Every Spark property of the batch: resources, environment, then the extra properties."""
        properties = {key: str(getattr(self, name)) for key, name in _TYPED_PROPERTIES.items()}
        properties["spark.dynamicAllocation.enabled"] = "true"
        for name, value in self.environment.items():
            properties[f"spark.dataproc.driverEnv.{name}"] = value
            properties[f"spark.executorEnv.{name}"] = value
        properties.update(self.properties)
        return properties


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """The whole job's configuration."""

    catalog: CatalogConfig
    raster: RasterConfig = RasterConfig()
    output: OutputConfig = OutputConfig()
    run: RunConfig = RunConfig()
    storage: StorageConfig = StorageConfig()
    sink: SinkConfig = SinkConfig()
    dataproc: DataprocConfig = DataprocConfig()
    zones: ZonesConfig = ZonesConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (dates as ISO strings), e.g. for a run report or a parameter hash."""
        return _to_plain(dataclasses.asdict(self))


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(item) for item in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


RELATIVE_DATE = re.compile(r"^(?:today|yesterday|-(?P<count>[0-9]{1,5})(?P<unit>[dwm]))$")
_DATE_KEYS = ("start_date", "end_date")


def is_relative_date(value: Any) -> bool:
    """Whether a configured date is written relative to the run day (``today``, ``-45d``, ...)."""
    return isinstance(value, str) and RELATIVE_DATE.match(value.strip().lower()) is not None


def period_start_of(day: dt.date, period: str) -> dt.date:
    """The first day of the ``period`` (day, month, quarter, year, all) that holds ``day``."""
    if period == "month":
        return day.replace(day=1)
    if period == "quarter":
        return day.replace(month=3 * ((day.month - 1) // 3) + 1, day=1)
    if period == "year":
        return day.replace(month=1, day=1)
    return day


def _months_before(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    last = (dt.date(year + (month + 1) // 12, (month + 1) % 12 + 1, 1) - dt.timedelta(days=1)).day
    return dt.date(year, month + 1, min(day.day, last))


def resolve_relative_dates(data: Mapping[str, Any], today: dt.date) -> dict[str, Any]:
    """A copy of config data with relative ``catalog`` dates replaced by calendar dates.

    ``today`` is the run day (UTC). A relative ``start_date`` is moved back to the first day of its
    period (``catalog.period``, month by default): with ``start_date: -45d`` a monthly run covers
    whole months, and the oldest month it touches keeps every one of its scenes instead of being
    remade from the days inside the window. Absolute dates are kept as written.
    """
    resolved = {key: value for key, value in data.items()}
    catalog = resolved.get("catalog")
    if not isinstance(catalog, Mapping):
        return resolved
    catalog = dict(catalog)
    for key in _DATE_KEYS:
        value = catalog.get(key)
        if not is_relative_date(value):
            continue
        text = str(value).strip().lower()
        match = RELATIVE_DATE.match(text)
        assert match is not None
        if text == "today":
            day = today
        elif text == "yesterday":
            day = today - dt.timedelta(days=1)
        else:
            count, unit = int(match["count"]), match["unit"]
            if unit == "m":
                day = _months_before(today, count)
            else:
                day = today - dt.timedelta(days=count * (7 if unit == "w" else 1))
        if key == "start_date":
            day = period_start_of(day, str(catalog.get("period", "month")))
        catalog[key] = day
    resolved["catalog"] = catalog
    return resolved


def load_config(path: str | Path, overrides: Sequence[str] = (), today: dt.date | None = None) -> JobConfig:
    """Load the job configuration from a YAML file plus ``key.path=value`` overrides.

    Parameters
    ----------
    path
        A YAML file, e.g. ``conf/local.yaml``, or a ``gs://`` URI (read with Application Default
        Credentials).
    overrides
        Strings like ``catalog.max_cloud_cover=30``; the value is parsed as YAML, so lists
        (``catalog.tiles=[55HBU,55HCU]``) and ``null`` work.
    today
        The day relative dates count from (default: today in UTC).

    Raises
    ------
    ConfigError
        If the file cannot be read or parsed, or any key is unknown, missing or invalid.
    """
    config_path = str(path)
    data = load_mapping(config_path, overrides)
    try:
        return config_from_mapping(data, today)
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from None


def load_mapping(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The plain data of a YAML config file with ``key.path=value`` overrides applied, not yet checked.

    :func:`load_config` is this plus :func:`config_from_mapping`; ``evi_udf.deploy.submit`` fills in
    defaults between the two.
    """
    config_path = str(path)
    if config_path.startswith("gs://"):
        # A config staged next to the wheel by scripts/submit.sh, read with the batch's credentials.
        from evi_udf.errors import StorageError
        from evi_udf.storage import Storage

        try:
            text = Storage(anonymous_buckets=()).read_bytes(config_path).decode("utf-8")
        except (StorageError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_path}: {exc}") from exc
    else:
        try:
            text = Path(config_path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigError(f"config file {config_path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {config_path} must hold a mapping of sections")
    for override in overrides:
        _apply_override(data, override)
    return data


def config_from_mapping(data: Mapping[str, Any], today: dt.date | None = None) -> JobConfig:
    """Build and validate a :class:`JobConfig` from plain data (as parsed from YAML).

    Relative catalog dates are resolved against ``today`` (default: today in UTC).
    """
    day = today or dt.datetime.now(dt.timezone.utc).date()
    return _build_dataclass(JobConfig, resolve_relative_dates(data, day), prefix="")


def _apply_override(data: dict[str, Any], override: str) -> None:
    key_path, separator, raw_value = override.partition("=")
    if not separator or not key_path.strip():
        raise ConfigError(f"override {override!r} must look like section.key=value")
    keys = _override_keys(key_path.strip().split("."))
    target = data
    for key in keys[:-1]:
        child = target.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {key} is not a section")
        target = child
    try:
        target[keys[-1]] = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except (yaml.YAMLError, ValueError):
        # Not YAML (or an impossible date YAML rejects): keep the text, so the type check of the key
        # reports what is wrong with it.
        target[keys[-1]] = raw_value


def _override_keys(parts: list[str]) -> list[str]:
    """Split a dotted override into keys; below a mapping setting the rest is one key.

    ``dataproc.properties.spark.executor.instances`` names the property ``spark.executor.instances``
    of the mapping ``dataproc.properties``, not a nested section.
    """
    cls: Any = JobConfig
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            break
        hint = typing.get_type_hints(cls).get(part)
        if typing.get_origin(hint) is dict:
            return [*parts[: depth + 1], ".".join(parts[depth + 1 :])] if depth + 1 < len(parts) else parts
        cls = hint
    return parts


def _build_dataclass(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, Mapping):
        _fail(prefix.rstrip(".") or "config", f"must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        _fail(f"{prefix}{unknown[0]}", f"unknown key (known keys here: {known})")
    values = {}
    for name, field in fields.items():
        key = f"{prefix}{name}"
        if name in data:
            values[name] = _convert(hints[name], data[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            if dataclasses.is_dataclass(hints[name]):
                values[name] = _build_dataclass(hints[name], {}, prefix=f"{key}.")
            else:
                _fail(key, "is required")
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}{exc}") from None


def _scalar_text(value: Any) -> Any:
    # YAML reads true, OFF and 4 as booleans and numbers; an environment variable or Spark property
    # wants text (GDAL and Spark both read true/false as booleans).
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build_dataclass(hint, value, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _convert(inner, value, key)
    if origin is Literal:
        if value not in args:
            _fail(key, f"must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            _fail(key, f"must be a mapping of names to values, got {value!r}")
        key_hint, value_hint = args
        return {
            _convert(key_hint, str(name), f"{key}.{name}"): _convert(
                value_hint, _scalar_text(item), f"{key}.{name}"
            )
            for name, item in value.items()
        }
    if origin is tuple:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            _fail(key, f"must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], item, f"{key}[{i}]") for i, item in enumerate(value))
        if len(value) != len(args):
            _fail(key, f"must have exactly {len(args)} items, got {len(value)}")
        return tuple(
            _convert(arg, item, f"{key}[{i}]") for i, (arg, item) in enumerate(zip(args, value, strict=True))
        )
    if hint is bool:
        if not isinstance(value, bool):
            _fail(key, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, f"must be a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(key, f"must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # YAML reads 3.0 as a number (and 2.10 as 2.1): a version or name must be quoted.
            _fail(key, f"must be text, got the number {value!r}; quote it, e.g. {key}='\"{value}\"'")
        if not isinstance(value, str):
            _fail(key, f"must be text, got {value!r}")
        return value
    if hint is dt.date:
        if isinstance(value, dt.datetime):
            _fail(key, f"must be a date like 2023-01-31, got a date-time {value!r}")
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            _fail(key, f"must be a date like 2023-01-31, got {value!r}")
    raise TypeError(f"config field {key} has a type the loader does not handle: {hint!r}")
