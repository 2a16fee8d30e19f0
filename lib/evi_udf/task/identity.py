"""The identity of a group's work: its raster parameters (and their hash), its output grid's name and
the fingerprint of the scene set (and zones) it is made from.

A group is done when a commit record of the same parameter hash and fingerprint exists
(:mod:`evi_udf.run.ledger`), so these functions decide what a rerun remakes: they must give the same
value on the driver (which plans, in Spark or pandas) and in the task (which commits). Each
fingerprint therefore has its Python form and its Spark SQL form side by side here, and
``tests/test_identity.py`` checks that they agree.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from evi_udf.config import RasterConfig
from evi_udf.task.group import SceneRef

if TYPE_CHECKING:
    from pyspark.sql import Column

# Hex digits of the scene-set fingerprint kept in record names (64 bits).
FINGERPRINT_DIGITS = 16
# The text form of generation times inside the fingerprint; Spark's date_format pattern is the same.
GENERATION_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
SPARK_GENERATION_TIME_PATTERN = "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"

# Settings that change how a composite is computed, never what it holds: outside the hash, so that
# changing them does not make every group new.
NOT_IN_PARAMETER_HASH = frozenset({"skip_masked_blocks"})
# Grid resolution (m) from which ``raster.coarse_reads`` can change a composite (Sentinel-2's 10 m x 2).
COARSE_READS_MIN_RESOLUTION = 20.0


def parameter_hash(config: RasterConfig) -> str:
    """A short stable hash of everything that changes the pixels or statistics of a composite."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in NOT_IN_PARAMETER_HASH}
    if config.grid.kind == "native" or config.grid.resolution < COARSE_READS_MIN_RESOLUTION:
        # Composites on grids finer than 20 m are made from 10 m reads whatever it says: their names
        # (and the commits of earlier versions) stay as they were.
        settings.pop("coarse_reads")
    payload = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def grid_name(config: RasterConfig) -> str:
    """The output grid's name in paths and rows: ``native`` or e.g. ``epsg3577_10m``."""
    grid_config = config.grid
    if grid_config.kind == "native":
        return "native"
    return f"{grid_config.crs}_{grid_config.resolution:g}m".replace(":", "").lower()


def scene_line(product_id: str, baseline: str, generation_time: str) -> str:
    """One product's line in a scene-set fingerprint; ``generation_time`` in
    :data:`GENERATION_TIME_FORMAT` (UTC) or empty when the index has none."""
    return f"{product_id}|{baseline}|{generation_time}"


def format_generation_time(value: dt.datetime | None) -> str:
    """A generation time as the fingerprint spells it (naive values are UTC)."""
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.strftime(GENERATION_TIME_FORMAT)


def scene_set_fingerprint(lines: Iterable[str]) -> str:
    """The identity of a group's scene set: a hash of its :func:`scene_line` lines, in any order."""
    digest = hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()
    return digest[:FINGERPRINT_DIGITS]


def zone_line(zone_id: str, wkb: bytes) -> str:
    """One zone's line in a tile's zone fingerprint: its id and a hash of its geometry (WKB)."""
    return f"zone|{zone_id}|{hashlib.sha256(wkb).hexdigest()[:FINGERPRINT_DIGITS]}"


def zone_set_fingerprint(zones: Iterable[tuple[str, bytes]]) -> str | None:
    """The fingerprint of the zones a tile is given, as (zone id, WKB) pairs; ``None`` for none.

    A zone given twice counts once (a set of :func:`zone_line` lines).
    """
    lines = {zone_line(zone_id, wkb) for zone_id, wkb in zones}
    return scene_set_fingerprint(lines) if lines else None


def group_fingerprint(scene_fingerprint: str, zone_fingerprint: str | None) -> str:
    """What a group's commit is made of: its scene set and, when the run has zones on its tile, the
    fingerprint of those zones (:func:`scene_set_fingerprint` of their :func:`zone_line` lines).
    Without zones it is the scene set's fingerprint, so adding zones elsewhere remakes no group."""
    if zone_fingerprint is None:
        return scene_fingerprint
    return scene_set_fingerprint([f"scenes|{scene_fingerprint}", f"zones|{zone_fingerprint}"])


def fingerprint_of(scenes: Iterable[SceneRef]) -> str:
    """:func:`scene_set_fingerprint` of the scenes a group was given."""
    return scene_set_fingerprint(
        scene_line(s.product_id, s.processing_baseline, format_generation_time(s.generation_time))
        for s in scenes
    )


# Spark SQL forms of the functions above, for the driver's plan (one Spark job for every group).
# Spark's sha2 of a string hashes its UTF-8 bytes and gives the lowercase hex digest, as hashlib does;
# array_sort orders strings by their UTF-8 bytes, which is code point order, as Python's sorted().


def scene_line_column() -> Column:
    """:func:`scene_line` of each scene row (``product_id``, ``processing_baseline``,
    ``generation_time`` in the session time zone, which must be UTC)."""
    from pyspark.sql import functions as F

    generation = F.coalesce(F.date_format("generation_time", SPARK_GENERATION_TIME_PATTERN), F.lit(""))
    return F.concat_ws("|", "product_id", "processing_baseline", generation)


def zone_line_column() -> Column:
    """:func:`zone_line` of each zone row (``zone_id``, ``wkb``)."""
    from pyspark.sql import functions as F

    return F.concat(
        F.lit("zone|"), "zone_id", F.lit("|"), F.substring(F.sha2("wkb", 256), 1, FINGERPRINT_DIGITS)
    )


def fingerprint_column(lines: Column, distinct: bool = False) -> Column:
    """The aggregate :func:`scene_set_fingerprint` of a group's ``lines`` (``distinct``: of their
    set, as :func:`zone_set_fingerprint` takes it)."""
    from pyspark.sql import functions as F

    collected = F.collect_set(lines) if distinct else F.collect_list(lines)
    joined = F.concat_ws("\n", F.array_sort(collected))
    return F.substring(F.sha2(joined, 256), 1, FINGERPRINT_DIGITS)
