"""Where one attempt at a group publishes its files: the COG, the clear-count COG, the STAC item and
the quick-look, under names that carry a random attempt token (:mod:`evi_udf.run.ledger`)."""

from __future__ import annotations

import dataclasses
import secrets

from evi_udf.config import JobConfig, RasterConfig
from evi_udf.task.group import GroupKey
from evi_udf.task.identity import grid_name, parameter_hash

# Longest first: "_clear_count.tif" must not be read as an attempt ending in "_clear_count".
OUTPUT_SUFFIXES: tuple[str, ...] = ("_clear_count.tif", ".tif", ".json", ".png")


def new_attempt() -> str:
    """A random token naming one attempt's outputs (8 hex digits)."""
    return secrets.token_hex(4)


@dataclasses.dataclass(frozen=True)
class GroupOutputs:
    """Where one attempt at a group publishes its COG, STAC item and quick-look."""

    prefix: str
    stem: str

    @property
    def cog_uri(self) -> str:
        return f"{self.prefix}/{self.stem}.tif"

    @property
    def stac_uri(self) -> str:
        return f"{self.prefix}/{self.stem}.json"

    @property
    def quicklook_uri(self) -> str:
        return f"{self.prefix}/{self.stem}.png"

    @property
    def count_uri(self) -> str:
        return f"{self.prefix}/{self.stem}_clear_count.tif"

    @property
    def uris(self) -> tuple[str, ...]:
        """Every file of the attempt: the EVI COG, the clear-count COG, the STAC item, the quick-look."""
        return (self.cog_uri, self.count_uri, self.stac_uri, self.quicklook_uri)


def output_prefix(root: str, grid: str, key: GroupKey) -> str:
    """Where a group's files go: ``<root>/evi/<grid>/<period>/<tile>``."""
    return f"{root.rstrip('/')}/evi/{grid}/{key.period}/{key.mgrs_tile}"


def output_stem_base(key: GroupKey, raster: RasterConfig) -> str:
    """The part of an output name shared by every attempt at a group for one parameter set."""
    return f"S2_EVI_{key.mgrs_tile}_{key.period}_{raster.compositor}_{parameter_hash(raster)}"


def group_outputs(config: JobConfig, key: GroupKey, attempt: str) -> GroupOutputs:
    """The output names of one attempt at a group."""
    return GroupOutputs(
        output_prefix(config.output.root, grid_name(config.raster), key),
        f"{output_stem_base(key, config.raster)}_{attempt}",
    )
