"""Reading and checking the user's zones file before Spark starts.

A file-level problem (missing file, no id column, no or unknown CRS, not a vector file) is a
:class:`~evi_udf.errors.ZonesError` naming the file and the column or setting. A problem of one zone
(no id, a duplicate id, an empty or invalid geometry, not a polygon) rejects that zone with the
reason and keeps the others. Accepted zones are numbered ``0 .. n-1`` in the order of the file and
transformed to longitude/latitude (EPSG:4326), where :mod:`evi_udf.zones.pixels` takes them.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from evi_udf.config import ZonesConfig
from evi_udf.errors import StorageError, ZonesError
from evi_udf.storage import Storage, is_gs

_POLYGONAL = ("Polygon", "MultiPolygon")
_DENSIFY_METRES = 50.0


@dataclasses.dataclass(frozen=True)
class ZoneRejection:
    """A zone that cannot be used: its id as the file gives it (None when missing), its position in
    the file (0-based) and why."""

    zone_id: str | None
    position: int
    reason: str


@dataclasses.dataclass(frozen=True)
class ZoneSet:
    """The accepted zones: ids (text), geometries in longitude/latitude, in file order; the zone
    number of a zone is its position here."""

    uri: str
    ids: np.ndarray
    geometries: np.ndarray
    rejected: list[ZoneRejection]

    def __len__(self) -> int:
        return len(self.ids)


def read_zones(
    config: ZonesConfig, storage: Storage | None = None, bigquery_client: object | None = None
) -> ZoneSet:
    """Read, check and number the zones of ``config.uri`` (a file, or a BigQuery table read with
    ``bigquery_client``, by default one with Application Default Credentials).

    Raises
    ------
    ZonesError
        If the file cannot be read, has no ``config.id_column``, no CRS or an unknown one.
    """
    if config.uri is None:
        raise ZonesError("zones.uri is not set: there are no zones to read")
    uri = config.uri
    if uri.startswith("bq://"):
        return _read_bigquery(uri, config, bigquery_client)
    if is_gs(uri):
        with tempfile.TemporaryDirectory(prefix="evi_zones_") as folder:
            try:
                local = (storage or Storage()).fetch(uri, Path(folder))
            except StorageError as exc:
                raise ZonesError(f"zones file {uri}: {exc}") from exc
            return _read_local(local, uri, config)
    return _read_local(Path(uri), uri, config)


def _read_bigquery(uri: str, config: ZonesConfig, client: object | None) -> ZoneSet:
    """Zones from a BigQuery table: its id column and its GEOGRAPHY column (as WKB, longitude/latitude)."""
    from google.api_core.exceptions import GoogleAPIError
    from google.cloud import bigquery

    table = uri.removeprefix("bq://")
    client = client or bigquery.Client(project=table.split(".", 1)[0])
    sql = (
        f"SELECT CAST(`{config.id_column}` AS STRING) AS zone_id, "
        f"ST_ASBINARY(`{config.geography_column}`) AS wkb FROM `{table}`"
    )
    try:
        rows = list(client.query(sql).result())  # type: ignore[attr-defined]
    except GoogleAPIError as exc:
        raise ZonesError(
            f"zones table {uri}: cannot read zones.id_column {config.id_column!r} and zones.geography_column "
            f"{config.geography_column!r} ({exc})"
        ) from exc
    return check_zones(uri, [r["zone_id"] for r in rows], [r["wkb"] for r in rows], CRS.from_epsg(4326))


def _read_local(path: Path, uri: str, config: ZonesConfig) -> ZoneSet:
    if not path.is_file():
        raise ZonesError(f"zones file {uri}: no such file")
    if path.suffix.lower() in (".parquet", ".geoparquet"):
        ids, wkb, crs = _read_geoparquet(path, uri, config.id_column)
    else:
        ids, wkb, crs = _read_with_gdal(path, uri, config)
    return check_zones(uri, ids, wkb, crs)


def _read_geoparquet(path: Path, uri: str, id_column: str) -> tuple[list[object], list[bytes | None], CRS]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a file that is not Parquet
        raise ZonesError(f"zones file {uri}: cannot read it as GeoParquet: {exc}") from exc
    metadata = (table.schema.metadata or {}).get(b"geo")
    if metadata is None:
        raise ZonesError(f"zones file {uri}: a Parquet file without GeoParquet 'geo' metadata")
    geo = json.loads(metadata)
    column = geo.get("primary_column", "geometry")
    column_meta = geo.get("columns", {}).get(column, {})
    if column_meta.get("encoding", "WKB").upper() != "WKB":
        raise ZonesError(f"zones file {uri}: geometry encoding {column_meta['encoding']!r}; write it as WKB")
    if id_column not in table.column_names:
        raise ZonesError(
            f"zones file {uri}: no column {id_column!r} (zones.id_column); columns: "
            + ", ".join(table.column_names)
        )
    # GeoParquet: a missing crs means OGC:CRS84 (longitude/latitude); null means unknown.
    if "crs" in column_meta and column_meta["crs"] is None:
        raise ZonesError(f"zones file {uri}: the geometry column has an unknown CRS (crs: null)")
    crs = _crs(column_meta.get("crs", "OGC:CRS84"), uri)
    return table.column(id_column).to_pylist(), table.column(column).to_pylist(), crs


def _read_with_gdal(
    path: Path, uri: str, config: ZonesConfig
) -> tuple[list[object], list[bytes | None], CRS]:
    import pyogrio
    import pyogrio.errors

    try:
        info = pyogrio.read_info(path, layer=config.layer)
        if config.id_column not in info["fields"]:
            raise ZonesError(
                f"zones file {uri}: no column {config.id_column!r} (zones.id_column); columns: "
                f"{', '.join(info['fields'])}"
            )
        _, _, geometry, fields = pyogrio.raw.read(path, layer=config.layer, columns=[config.id_column])
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise ZonesError(f"zones file {uri}: cannot read it: {exc}") from exc
    if not info.get("crs"):
        raise ZonesError(f"zones file {uri}: the layer has no CRS; set one (e.g. EPSG:4326) in the file")
    return list(fields[0]), list(geometry), _crs(info["crs"], uri)


def _crs(value: object, uri: str) -> CRS:
    try:
        return CRS.from_user_input(value)
    except CRSError as exc:
        raise ZonesError(f"zones file {uri}: unknown CRS {str(value)[:200]!r}: {exc}") from exc


def check_zones(uri: str, ids: list[object], wkb: list[bytes | None], crs: CRS) -> ZoneSet:
    """Reject the zones that cannot be used, with the reason, and transform the rest to lon/lat."""
    text_ids = [None if value is None or str(value).strip() == "" else str(value) for value in ids]
    geometries = shapely.from_wkb(np.array(wkb, dtype=object), on_invalid="ignore")
    counts: dict[str, int] = {}
    for zone_id in text_ids:
        if zone_id is not None:
            counts[zone_id] = counts.get(zone_id, 0) + 1
    rejected: list[ZoneRejection] = []
    keep = np.zeros(len(text_ids), dtype=bool)
    types = shapely.get_type_id(geometries)
    for position, (zone_id, geometry) in enumerate(zip(text_ids, geometries, strict=True)):
        reason = None
        if zone_id is None:
            reason = "no zone id"
        elif counts[zone_id] > 1:
            reason = f"zone id {zone_id!r} appears {counts[zone_id]} times"
        elif geometry is None or types[position] < 0:
            reason = "no geometry (missing or unreadable WKB)"
        elif shapely.is_empty(geometry):
            reason = "empty geometry"
        elif geometry.geom_type not in _POLYGONAL:
            reason = f"a {geometry.geom_type}, not a Polygon or MultiPolygon"
        elif not shapely.is_valid(geometry):
            reason = f"invalid geometry: {shapely.is_valid_reason(geometry)}"
        if reason is None:
            keep[position] = True
        else:
            rejected.append(ZoneRejection(zone_id, position, reason))
    accepted = geometries[keep]
    lonlat = CRS.from_epsg(4326)
    if not crs.equals(lonlat, ignore_axis_order=True):
        if crs.is_projected:
            # Edges are straight in the file's CRS: densify (every 50 m) before they become lon/lat.
            metres_per_unit = crs.axis_info[0].unit_conversion_factor or 1.0
            accepted = shapely.segmentize(accepted, _DENSIFY_METRES / metres_per_unit)
        transformer = Transformer.from_crs(crs, lonlat, always_xy=True)
        accepted = shapely.transform(
            accepted, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))
        )
    return ZoneSet(
        uri, np.array([i for i, k in zip(text_ids, keep, strict=True) if k], dtype=object), accepted, rejected
    )


def write_zones_geoparquet(path: Path, ids: list[str], geometries: list[object]) -> Path:
    """Write zones (ids, lon/lat shapely geometries) as a GeoParquet file, the format ``zones.uri``
    reads first (WKB geometry, CRS longitude/latitude)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon", "MultiPolygon"]}},
    }
    table = pa.table({"zone_id": ids, "geometry": [shapely.to_wkb(g) for g in geometries]})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata({b"geo": json.dumps(geo).encode()}), path)
    return path
