"""STAC for the outputs: one item per composite, and per output root a catalog, a collection per
parameter set, a catalog per period and a GeoParquet listing of the items.

Items are written by the task that makes the composite; they load as they are with odc-stac
(``odc.stac.load``) and stackstac (``stackstac.stack`` on the item JSON):

- one single-band COG per asset (``evi``, ``clear_count``), each with ``raster:bands`` (data type,
  nodata, scale and offset, unit, resolution) from the raster extension v1.1.0, so that clients
  return EVI as float with no data masked;
- the projection extension v1.1.0 with ``proj:epsg`` (what stackstac reads; pystac rewrites it into
  v2.0.0's ``proj:code`` when it loads an item), a true WKT2 ``proj:wkt2``, ``proj:shape``,
  ``proj:transform`` and ``proj:bbox``;
- absolute hrefs and a ``self`` link; a counter-clockwise footprint ring without repeated vertices.

The catalog files are made by the driver after each run from the tables (one query), so a STAC
browser or ``pystac`` walks every current composite of the root: ``<root>/stac/catalog.json`` ->
``<root>/stac/<grid>-<parameter hash>/collection.json`` -> ``.../<period>/catalog.json`` -> items.
``.../items/<period>.parquet`` lists the same items as GeoParquet (geometry as WKB), for DuckDB and
BigQuery.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pyproj import CRS, Transformer

STAC_VERSION = "1.1.0"
PROJECTION_EXTENSION = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"
RASTER_EXTENSION = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
STAC_FOLDER = "stac"
ROOT_CATALOG_ID = "sentinel2-evi"
# Sentinel-2 data are free under the Copernicus terms; the derived EVI keeps them.
LICENSE_LINK = {
    "rel": "license",
    "href": "https://sentinels.copernicus.eu/documents/247904/690755/Sentinel_Data_Legal_Notice",
    "title": "Legal notice on the use of Copernicus Sentinel Data and Service Information",
}
# Points per edge of the densified footprint: the tile's edges are curved in longitude/latitude.
FOOTPRINT_POINTS_PER_EDGE = 10


# ------------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------------


def footprint_ring(
    crs: Any, bounds: tuple[float, float, float, float], points_per_edge: int = FOOTPRINT_POINTS_PER_EDGE
) -> list[tuple[float, float]]:
    """The outline of ``bounds`` (in ``crs``) in WGS84 longitude/latitude, densified.

    Counter-clockwise (RFC 7946: the exterior ring of a GeoJSON polygon), closed, with no repeated
    consecutive vertex: south-west, along the south edge to the east, north, west and back down.
    """
    left, bottom, right, top = bounds
    steps = np.linspace(0.0, 1.0, points_per_edge + 1)[:-1]  # each edge without its last corner
    xs = np.r_[
        left + steps * (right - left),
        np.full(points_per_edge, right),
        right - steps * (right - left),
        np.full(points_per_edge, left),
    ]
    ys = np.r_[
        np.full(points_per_edge, bottom),
        bottom + steps * (top - bottom),
        np.full(points_per_edge, top),
        top - steps * (top - bottom),
    ]
    lon, lat = Transformer.from_crs(CRS.from_user_input(crs), 4326, always_xy=True).transform(xs, ys)
    ring = [(round(float(x), 7), round(float(y), 7)) for x, y in zip(lon, lat, strict=True)]
    return [*ring, ring[0]]


def ring_area(ring: Sequence[tuple[float, float]]) -> float:
    """Signed area of a closed ring (shoelace): positive when counter-clockwise."""
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:], strict=True))


def ring_wkt(ring: Sequence[tuple[float, float]]) -> str:
    """A closed ring as a WKT polygon."""
    return "POLYGON ((" + ", ".join(f"{x:.7f} {y:.7f}" for x, y in ring) + "))"


def ring_of_wkt(wkt: str) -> list[tuple[float, float]]:
    """The exterior ring of a single-ring WKT polygon (as :func:`ring_wkt` writes it)."""
    inner = wkt.strip()[len("POLYGON") :].strip().removeprefix("((").removesuffix("))")
    return [(float(x), float(y)) for x, y in (point.split() for point in inner.split(","))]


def polygon_wkb(ring: Sequence[tuple[float, float]]) -> bytes:
    """A one-ring polygon as ISO WKB (little endian), the GeoParquet geometry encoding."""
    header = struct.pack("<BIII", 1, 3, 1, len(ring))
    return header + b"".join(struct.pack("<dd", x, y) for x, y in ring)


def bbox_of(ring: Sequence[tuple[float, float]]) -> list[float]:
    """[west, south, east, north] of a ring."""
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    return [min(lons), min(lats), max(lons), max(lats)]


# ------------------------------------------------------------------------------------------------
# Where the catalog files live
# ------------------------------------------------------------------------------------------------


def stac_root(root: str) -> str:
    return f"{root.rstrip('/')}/{STAC_FOLDER}"


def root_catalog_uri(root: str) -> str:
    return f"{stac_root(root)}/catalog.json"


def collection_id(grid: str, params: str) -> str:
    return f"sentinel2-evi-{grid}-{params}"


def collection_uri(root: str, grid: str, params: str) -> str:
    return f"{stac_root(root)}/{grid}-{params}/collection.json"


def period_catalog_uri(root: str, grid: str, params: str, period: str) -> str:
    return f"{stac_root(root)}/{grid}-{params}/{period}/catalog.json"


def items_listing_uri(root: str, grid: str, params: str, period: str) -> str:
    return f"{stac_root(root)}/{grid}-{params}/items/{period}.parquet"


# ------------------------------------------------------------------------------------------------
# Items
# ------------------------------------------------------------------------------------------------


def _utc(day: dt.date, end: bool = False) -> str:
    moment = dt.datetime.combine(day, dt.time(23, 59, 59) if end else dt.time(0, 0))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def evi_band(output_dtype: str, resolution: float) -> dict[str, Any]:
    """The ``raster:bands`` entry of the EVI asset."""
    if output_dtype == "int16":
        return {
            "data_type": "int16",
            "nodata": -32768,
            "scale": 0.0001,
            "offset": 0.0,
            "unit": "1",
            "spatial_resolution": resolution,
        }
    return {"data_type": "float32", "nodata": "nan", "unit": "1", "spatial_resolution": resolution}


def count_band(resolution: float) -> dict[str, Any]:
    """The ``raster:bands`` entry of the clear-observation count asset."""
    return {"data_type": "uint16", "nodata": 65535, "unit": "count", "spatial_resolution": resolution}


def item_assets(output_dtype: str, resolution: float) -> dict[str, dict[str, Any]]:
    """What every item's assets are (the collection's ``item_assets``), hrefs aside."""
    return {
        "evi": {
            "title": "Enhanced Vegetation Index composite",
            "description": "EVI = 2.5 (B08 - B04) / (B08 + 6 B04 - 7.5 B02 + 1) on surface reflectance, "
            "composited over the period; apply scale and offset (EVI x 10000 stored as int16).",
            "type": COG_MEDIA_TYPE,
            "roles": ["data"],
            "raster:bands": [evi_band(output_dtype, resolution)],
        },
        "clear_count": {
            "title": "Clear observations",
            "description": "Number of clear, valid observations that made each pixel of the composite.",
            "type": COG_MEDIA_TYPE,
            "roles": ["data", "count"],
            "raster:bands": [count_band(resolution)],
        },
        "thumbnail": {"title": "Quick-look", "type": "image/png", "roles": ["thumbnail"]},
    }


def composite_item(
    *,
    item_id: str,
    root: str,
    grid_name: str,
    params: str,
    period: str,
    period_start: dt.date,
    period_end: dt.date,
    crs: Any,
    shape: tuple[int, int],
    transform: Sequence[float],
    ring: Sequence[tuple[float, float]],
    hrefs: Mapping[str, str],
    output_dtype: str,
    properties: Mapping[str, Any],
) -> dict[str, Any]:
    """The STAC item of one composite, as a JSON-ready dict (see the module docstring).

    ``hrefs`` maps ``self``, ``evi``, ``clear_count`` and ``thumbnail`` to absolute URIs.
    """
    parsed = CRS.from_user_input(crs)
    height, width = shape
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    bounds = [c, f + e * height, c + a * width, f]
    resolution = abs(a)
    assets = item_assets(output_dtype, resolution)
    for name in ("evi", "clear_count", "thumbnail"):
        assets[name] = {"href": hrefs[name], **assets[name]}
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [PROJECTION_EXTENSION, RASTER_EXTENSION],
        "id": item_id,
        "collection": collection_id(grid_name, params),
        "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]},
        "bbox": bbox_of(ring),
        "properties": {
            "datetime": None,
            "start_datetime": _utc(period_start),
            "end_datetime": _utc(period_end, end=True),
            "proj:epsg": parsed.to_epsg(),
            "proj:wkt2": parsed.to_wkt(version="WKT2_2019"),
            "proj:shape": [height, width],
            "proj:transform": [a, b, c, d, e, f],
            "proj:bbox": bounds,
            "gsd": resolution,
            **properties,
        },
        "links": [
            {"rel": "self", "href": hrefs["self"], "type": "application/geo+json"},
            {
                "rel": "collection",
                "href": collection_uri(root, grid_name, params),
                "type": "application/json",
            },
            {
                "rel": "parent",
                "href": period_catalog_uri(root, grid_name, params, period),
                "type": "application/json",
            },
            {"rel": "root", "href": root_catalog_uri(root), "type": "application/json"},
        ],
        "assets": assets,
    }


def to_json(document: Mapping[str, Any]) -> str:
    """A STAC document as strict JSON (a NaN or infinity anywhere is an error, not invalid JSON)."""
    return json.dumps(document, indent=2, allow_nan=False)


# ------------------------------------------------------------------------------------------------
# Catalog, collections, period catalogs, GeoParquet listing
# ------------------------------------------------------------------------------------------------


def root_catalog(root: str, collections: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The root catalog of an output root; ``collections`` are (id, URI) pairs."""
    return {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": ROOT_CATALOG_ID,
        "title": "Sentinel-2 EVI composites",
        "description": "EVI composites of Sentinel-2 L2A surface reflectance by MGRS tile and period.",
        "links": [
            {"rel": "self", "href": root_catalog_uri(root), "type": "application/json"},
            {"rel": "root", "href": root_catalog_uri(root), "type": "application/json"},
            *(
                {"rel": "child", "href": uri, "type": "application/json", "title": cid}
                for cid, uri in sorted(collections)
            ),
        ],
    }


def collection(
    *,
    root: str,
    grid_name: str,
    params: str,
    method: str,
    parameters: Mapping[str, Any],
    output_dtype: str,
    resolution: float,
    groups: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The collection of one parameter set, from its current groups.

    ``groups`` are dicts with ``period``, ``period_start``, ``period_end`` (dates), ``footprint_wkt``
    and ``epsg``; the extents cover them all and the summaries list what they hold.
    """
    boxes = [bbox_of(ring_of_wkt(g["footprint_wkt"])) for g in groups]
    spatial = (
        [
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        ]
        if boxes
        else [-180.0, -90.0, 180.0, 90.0]
    )
    starts = [g["period_start"] for g in groups]
    ends = [g["period_end"] for g in groups]
    temporal = [_utc(min(starts)), _utc(max(ends), end=True)] if groups else [None, None]
    periods = sorted({str(g["period"]) for g in groups})
    epsgs = sorted({int(g["epsg"]) for g in groups if g.get("epsg") is not None})
    uri = collection_uri(root, grid_name, params)
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [PROJECTION_EXTENSION, RASTER_EXTENSION],
        "id": collection_id(grid_name, params),
        "title": f"Sentinel-2 EVI, {method} composites, {grid_name} grid",
        "description": (
            f"Enhanced Vegetation Index composites ({method}) of Sentinel-2 L2A surface reflectance per "
            f"MGRS tile and period, on the {grid_name} grid; raster parameters {params}: "
            f"{json.dumps(parameters, sort_keys=True, default=str)}"
        ),
        "license": "other",
        "keywords": ["Sentinel-2", "EVI", "vegetation index", "composite"],
        "providers": [{"name": "Copernicus / ESA", "roles": ["producer", "licensor"]}],
        "extent": {"spatial": {"bbox": [spatial]}, "temporal": {"interval": [temporal]}},
        "summaries": {
            "proj:epsg": epsgs,
            "gsd": [resolution],
            "evi:method": [method],
            "evi:parameter_hash": [params],
            "evi:periods": periods,
        },
        "item_assets": item_assets(output_dtype, resolution),
        "links": [
            {"rel": "self", "href": uri, "type": "application/json"},
            {"rel": "root", "href": root_catalog_uri(root), "type": "application/json"},
            {"rel": "parent", "href": root_catalog_uri(root), "type": "application/json"},
            LICENSE_LINK,
            *(
                {
                    "rel": "child",
                    "href": period_catalog_uri(root, grid_name, params, period),
                    "type": "application/json",
                    "title": period,
                }
                for period in periods
            ),
        ],
    }


def period_catalog(
    *, root: str, grid_name: str, params: str, period: str, item_hrefs: Iterable[str]
) -> dict[str, Any]:
    """The catalog of one period of a collection, linking its current items."""
    uri = period_catalog_uri(root, grid_name, params, period)
    return {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": f"{collection_id(grid_name, params)}-{period}",
        "description": f"EVI composites of {period}",
        "links": [
            {"rel": "self", "href": uri, "type": "application/json"},
            {"rel": "root", "href": root_catalog_uri(root), "type": "application/json"},
            {"rel": "parent", "href": collection_uri(root, grid_name, params), "type": "application/json"},
            *({"rel": "item", "href": href, "type": "application/geo+json"} for href in sorted(item_hrefs)),
        ],
    }


def geoparquet_listing(items: Sequence[Mapping[str, Any]]) -> Any:
    """The items as a GeoParquet 1.1 table (pyarrow): one row per item, geometry as WKB.

    Columns: ``id``, ``collection``, ``mgrs_tile``, ``period``, ``start_datetime``, ``end_datetime``,
    ``epsg``, ``evi_href``, ``clear_count_href``, ``thumbnail_href``, ``item_href``, ``valid_pixels``,
    ``bbox`` (struct xmin, ymin, xmax, ymax: GeoParquet's bbox covering) and ``geometry``.
    """
    import pyarrow as pa

    def when(text: str) -> dt.datetime:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)

    rows = []
    for item in items:
        ring = [tuple(p) for p in item["geometry"]["coordinates"][0]]
        west, south, east, north = item["bbox"]
        props = item["properties"]
        rows.append(
            {
                "id": item["id"],
                "collection": item.get("collection"),
                "mgrs_tile": props.get("evi:mgrs_tile"),
                "period": props.get("evi:period"),
                "start_datetime": when(props["start_datetime"]),
                "end_datetime": when(props["end_datetime"]),
                "epsg": props.get("proj:epsg"),
                "evi_href": item["assets"]["evi"]["href"],
                "clear_count_href": item["assets"]["clear_count"]["href"],
                "thumbnail_href": item["assets"]["thumbnail"]["href"],
                "item_href": next(link["href"] for link in item["links"] if link["rel"] == "self"),
                "valid_pixels": props.get("evi:valid_pixels"),
                "bbox": {"xmin": west, "ymin": south, "xmax": east, "ymax": north},
                "geometry": polygon_wkb(ring),
            }
        )
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("collection", pa.string()),
            ("mgrs_tile", pa.string()),
            ("period", pa.string()),
            ("start_datetime", pa.timestamp("us", tz="UTC")),
            ("end_datetime", pa.timestamp("us", tz="UTC")),
            ("epsg", pa.int64()),
            ("evi_href", pa.string()),
            ("clear_count_href", pa.string()),
            ("thumbnail_href", pa.string()),
            ("item_href", pa.string()),
            ("valid_pixels", pa.int64()),
            (
                "bbox",
                pa.struct([(name, pa.float64()) for name in ("xmin", "ymin", "xmax", "ymax")]),
            ),
            ("geometry", pa.binary()),
        ]
    )
    boxes = [r["bbox"] for r in rows]
    extent = (
        [
            min(b["xmin"] for b in boxes),
            min(b["ymin"] for b in boxes),
            max(b["xmax"] for b in boxes),
            max(b["ymax"] for b in boxes),
        ]
        if boxes
        else []
    )
    # No "crs": GeoParquet's default, OGC:CRS84 (WGS84 longitude/latitude).
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": ["Polygon"],
                "orientation": "counterclockwise",
                "edges": "planar",
                "bbox": extent,
                "covering": {
                    "bbox": {
                        "xmin": ["bbox", "xmin"],
                        "ymin": ["bbox", "ymin"],
                        "xmax": ["bbox", "xmax"],
                        "ymax": ["bbox", "ymax"],
                    }
                },
            }
        },
    }
    table = pa.Table.from_pylist(rows, schema=schema)
    return table.replace_schema_metadata({b"geo": json.dumps(geo, allow_nan=False).encode()})


# ------------------------------------------------------------------------------------------------
# Publishing the catalog of an output root (driver, after the tables are loaded)
# ------------------------------------------------------------------------------------------------

CURRENT_COLUMNS: tuple[str, ...] = (
    "mgrs_tile",
    "period",
    "period_start",
    "period_end",
    "footprint_wkt",
    "stac_uri",
    "raster_uri",
    "valid_pixels",
)


def listing_items(
    groups: Sequence[Mapping[str, Any]], root: str, grid_name: str, params: str, epsg: Any
) -> list[dict[str, Any]]:
    """Minimal STAC items (what the GeoParquet listing holds) of current composites, from table rows.

    ``epsg`` maps a row to its CRS code (the tile's UTM zone, or the shared grid's).
    """
    items = []
    for g in groups:
        ring = ring_of_wkt(g["footprint_wkt"])
        stem = str(g["raster_uri"]).rsplit("/", 1)[-1].removesuffix(".tif")
        base = str(g["raster_uri"]).removesuffix(".tif")
        items.append(
            {
                "id": stem,
                "collection": collection_id(grid_name, params),
                "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]},
                "bbox": bbox_of(ring),
                "properties": {
                    "start_datetime": _utc(g["period_start"]),
                    "end_datetime": _utc(g["period_end"], end=True),
                    "proj:epsg": epsg(g),
                    "evi:mgrs_tile": g["mgrs_tile"],
                    "evi:period": g["period"],
                    "evi:valid_pixels": int(g["valid_pixels"]),
                },
                "links": [{"rel": "self", "href": g["stac_uri"]}],
                "assets": {
                    "evi": {"href": g["raster_uri"]},
                    "clear_count": {"href": f"{base}_clear_count.tif"},
                    "thumbnail": {"href": f"{base}.png"},
                },
            }
        )
    return items


def publish_catalog(
    store: Any,
    config: Any,
    current: Any,
    periods: Iterable[str],
) -> list[str]:
    """Write the root catalog, this parameter set's collection, and the catalogs and GeoParquet
    listings of ``periods``; returns the URIs written.

    ``current`` is a frame of this parameter set's current composites (:data:`CURRENT_COLUMNS`), as
    the tables hold them after the load step.
    """
    import tempfile
    from pathlib import Path

    import pyarrow.parquet as pq

    from evi_udf.raster.grid import mgrs_tile_epsg
    from evi_udf.task.identity import grid_name as name_of_grid
    from evi_udf.task.identity import parameter_hash

    raster, root = config.raster, config.output.root
    grid, params = name_of_grid(raster), parameter_hash(raster)
    shared_epsg = CRS.from_user_input(raster.grid.crs).to_epsg() if raster.grid.kind == "shared" else None

    def epsg(group: Mapping[str, Any]) -> int | None:
        return shared_epsg if raster.grid.kind == "shared" else mgrs_tile_epsg(str(group["mgrs_tile"]))

    groups = [
        {**row, "period_start": _as_date(row["period_start"]), "period_end": _as_date(row["period_end"])}
        for row in current.to_dict("records")
    ]
    groups = [{**g, "epsg": epsg(g)} for g in groups]
    documents: dict[str, str | bytes] = {}
    wanted = set(periods)
    for period in sorted(wanted):
        members = [g for g in groups if g["period"] == period]
        documents[period_catalog_uri(root, grid, params, period)] = to_json(
            period_catalog(
                root=root,
                grid_name=grid,
                params=params,
                period=period,
                item_hrefs=[g["stac_uri"] for g in members],
            )
        )
        documents[items_listing_uri(root, grid, params, period)] = b""  # filled below
    parameters = json.loads(json.dumps(_asdict(raster), default=str))
    documents[collection_uri(root, grid, params)] = to_json(
        collection(
            root=root,
            grid_name=grid,
            params=params,
            method=raster.compositor,
            parameters=parameters,
            output_dtype=raster.output_dtype,
            resolution=raster.grid.resolution,
            groups=groups,
        )
    )
    listed = [
        item.uri
        for item in store.list_objects(stac_root(root) + "/")
        if item.uri.endswith("/collection.json")
    ]
    children = {collection_uri(root, grid, params), *listed}
    documents[root_catalog_uri(root)] = to_json(
        root_catalog(root, [(f"{ROOT_CATALOG_ID}-{uri.rsplit('/', 2)[-2]}", uri) for uri in children])
    )
    written = []
    with tempfile.TemporaryDirectory(prefix="evi_stac_") as scratch:
        for number, (uri, text) in enumerate(sorted(documents.items())):
            local = Path(scratch) / f"{number}{Path(uri).suffix}"
            if uri.endswith(".parquet"):
                period = uri.rsplit("/", 1)[-1].removesuffix(".parquet")
                members = [g for g in groups if g["period"] == period]
                pq.write_table(geoparquet_listing(listing_items(members, root, grid, params, epsg)), local)
            else:
                local.write_text(str(text), encoding="utf-8")
            store.publish(local, uri, overwrite=True)
            written.append(uri)
    return written


def _as_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    import pandas as pd

    return pd.Timestamp(value).date()


def _asdict(config: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(config)
