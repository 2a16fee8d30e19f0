"""Product (``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml``) and tile (``MTD_TL.xml``) metadata.

The radiometric offset and quantification come from each product's own metadata, never from its
date: products reprocessed with baseline 05.xx carry the -1000 offset whatever year they were sensed.
The band files come from the ``IMAGE_FILE`` (or ``IMAGE_FILE_2A``) entries, the safest way to find
them, or for the oldest L1C format from ``IMAGE_ID`` inside the tile's granule folder. Every number
read is checked to be finite and in range. Parsing uses only the standard library.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping

from evi_udf.errors import MetadataError

# The order of band_id in offset lists and Spectral_Information (ESA's band index).
BAND_NAMES_BY_ID: tuple[str, ...] = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)
_IMAGE_NAME = re.compile(r"_(?P<band>B\d[\dA]|SCL|AOT|WVP|TCI)(?:_(?P<res>\d+)m)?$")
_NATIVE_RESOLUTION = {"B02": 10, "B03": 10, "B04": 10, "B08": 10, "SCL": 20}


@dataclasses.dataclass(frozen=True)
class ProductMetadata:
    """What the pipeline needs from a product's main metadata file."""

    source: str
    level: str
    processing_baseline: str
    quantification: float
    offsets: Mapping[str, float]
    band_files: Mapping[tuple[str, int | None], str]

    @property
    def has_offsets(self) -> bool:
        return bool(self.offsets)

    def offset(self, band: str) -> float:
        """The additive offset of ``band`` (``B04``); 0 for products without an offset list.

        Raises
        ------
        MetadataError
            If the product has an offset list that does not cover ``band``.
        """
        if not self.offsets:
            return 0.0
        if band not in self.offsets:
            raise MetadataError(f"{self.source}: offset list has no entry for band {band}")
        return self.offsets[band]

    def band_file(self, band: str) -> str:
        """Path of ``band`` relative to the .SAFE folder (with ``.jp2``), at its native resolution.

        Raises
        ------
        MetadataError
            If the metadata lists no file for the band.
        """
        native = _NATIVE_RESOLUTION.get(band)
        for key in ((band, native), (band, None)):
            if key in self.band_files:
                return self.band_files[key]
        candidates = sorted(res for name, res in self.band_files if name == band and res is not None)
        if candidates:
            return self.band_files[(band, candidates[0])]
        raise MetadataError(f"{self.source}: no IMAGE_FILE for band {band}")


@dataclasses.dataclass(frozen=True)
class TileGeocoding:
    """A granule's grid at one resolution: CRS, size and upper-left corner."""

    epsg: int
    resolution: int
    rows: int
    cols: int
    ulx: float
    uly: float
    xdim: float
    ydim: float


@dataclasses.dataclass(frozen=True)
class TileMetadata:
    """What the pipeline needs from ``MTD_TL.xml``."""

    source: str
    tile_id: str
    sensing_time: dt.datetime
    geocoding: Mapping[int, TileGeocoding]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse(xml_bytes: bytes, source: str) -> ET.Element:
    try:
        return ET.fromstring(xml_bytes)
    except ET.ParseError as exc:
        raise MetadataError(f"{source}: not valid XML ({exc})") from exc


def _iter_named(root: ET.Element, name: str) -> Iterator[ET.Element]:
    for element in root.iter():
        if _local(element.tag) == name:
            yield element


def _text(root: ET.Element, name: str, source: str) -> str:
    for element in _iter_named(root, name):
        if element.text and element.text.strip():
            return element.text.strip()
    raise MetadataError(f"{source}: required element {name} is missing or empty")


def _number(text: str, name: str, source: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise MetadataError(f"{source}: {name} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise MetadataError(f"{source}: {name} is not a finite number: {text!r}")
    return value


def _band_names(root: ET.Element) -> dict[str, str]:
    # Spectral_Information maps band_id to physical band ("B2"); fall back to ESA's fixed order.
    names = {str(i): name for i, name in enumerate(BAND_NAMES_BY_ID)}
    for element in _iter_named(root, "Spectral_Information"):
        band_id, physical = element.get("bandId"), element.get("physicalBand")
        if band_id is not None and physical:
            names[band_id] = physical if len(physical) == 3 else f"B0{physical[1:]}"
    return names


# Where each product metadata format keeps what the pipeline needs (ESA's product specifications):
# compact naming (L1C 02.04+, L2A 02.09+) and Collection-1 (04.00+, 05.xx) use QUANTIFICATION_VALUE
# (L1C) / BOA_QUANTIFICATION_VALUE (L2A) and IMAGE_FILE; the 2017-2018 L2A format (PSD 14.2, baselines
# 02.05-02.08, Sen2Cor 2.4/2.5) uses L2A_BOA_QUANTIFICATION_VALUE and IMAGE_FILE_2A; the oldest L1C
# format (PSD 13, 2015-2016) lists each tile's granule as <Granules granuleIdentifier=...> with
# IMAGE_ID entries, several tiles per product.
QUANTIFICATION_TAGS = {
    "L1C": ("QUANTIFICATION_VALUE",),
    "L2A": ("BOA_QUANTIFICATION_VALUE", "L2A_BOA_QUANTIFICATION_VALUE"),
}
OFFSET_TAGS = {"L1C": "RADIO_ADD_OFFSET", "L2A": "BOA_ADD_OFFSET"}
BAND_FILE_TAGS = ("IMAGE_FILE", "IMAGE_FILE_2A")
GRANULE_TAGS = ("Granule", "Granules")
# Products from processing baseline 04.00 on carry an offset list; reading one without it as offset 0
# would shift reflectance by 0.1.
FIRST_BASELINE_WITH_OFFSETS = "04.00"


def parse_product_metadata(
    xml_bytes: bytes, source: str, tile: str | None = None, granule_id: str | None = None
) -> ProductMetadata:
    """Parse a product's metadata (``MTD_MSIL1C.xml``, ``MTD_MSIL2A.xml`` or the oldest
    ``S2A_OPER_MTD_SAFL1C_...xml``) in any of the formats the public bucket holds.

    Parameters
    ----------
    xml_bytes
        The file's content.
    source
        Its path or URI, used in error messages.
    tile, granule_id
        The tile (``51RWP``) and granule being read: a product of the oldest L1C format holds several
        tiles' granules, and only this one's band files are returned. With neither, the product must
        hold one granule.

    Raises
    ------
    MetadataError
        If the XML is malformed, the format is unknown (the message names the tags it looked for),
        a value is missing, not finite or out of range, the product has no granule of the tile, a
        band file path leaves the product folder, or a product of baseline 04.00 or later has no
        offset list.
    """
    root = _parse(xml_bytes, source)
    root_name = _local(root.tag)
    if root_name.startswith("Level-2A"):
        level = "L2A"
    elif root_name.startswith("Level-1C"):
        level = "L1C"
    else:
        raise MetadataError(
            f"{source}: root element {root_name} is neither a Level-1C nor a Level-2A product"
        )
    baseline = _text(root, "PROCESSING_BASELINE", source)
    if not re.fullmatch(r"\d{2}\.\d{2}", baseline):
        raise MetadataError(f"{source}: PROCESSING_BASELINE {baseline!r} is not like 04.00")
    quantification = _quantification(root, level, source)
    names = _band_names(root)
    offset_tag = OFFSET_TAGS[level]
    offsets = {}
    for element in _iter_named(root, offset_tag):
        band_id = element.get("band_id")
        if band_id not in names:
            raise MetadataError(f"{source}: {offset_tag} has unknown band_id {band_id!r}")
        offset = _number((element.text or "").strip(), offset_tag, source)
        if not abs(offset) < quantification:
            raise MetadataError(
                f"{source}: {offset_tag} of band {names[band_id]} is {offset}, not a finite offset smaller "
                f"than the quantification value {quantification}"
            )
        offsets[names[band_id]] = offset
    if not offsets and baseline >= FIRST_BASELINE_WITH_OFFSETS:
        raise MetadataError(
            f"{source}: processing baseline {baseline} products carry a {offset_tag} list, but this one "
            f"has none (reading it with offset 0 would shift reflectance by about 0.1)"
        )
    files = _band_files(root, source, tile, granule_id)
    return ProductMetadata(source, level, baseline, quantification, offsets, files)


def _quantification(root: ET.Element, level: str, source: str) -> float:
    tags = QUANTIFICATION_TAGS[level]
    for tag in tags:
        found = [e for e in _iter_named(root, tag) if e.text and e.text.strip()]
        if found:
            value = _number(found[0].text.strip(), tag, source)  # type: ignore[union-attr]
            if not (math.isfinite(value) and value > 0):
                raise MetadataError(f"{source}: {tag} must be a finite positive number, got {value}")
            return value
    raise MetadataError(f"{source}: no quantification value ({' or '.join(tags)}) for a {level} product")


def _granules(root: ET.Element) -> list[ET.Element]:
    return [element for element in root.iter() if _local(element.tag) in GRANULE_TAGS]


def _band_files(
    root: ET.Element, source: str, tile: str | None, granule_id: str | None
) -> dict[tuple[str, int | None], str]:
    granules = _granules(root)
    if len(granules) > 1:
        granules = _granules_of(granules, source, tile, granule_id)
    scope: list[ET.Element] = granules or [root]
    files: dict[tuple[str, int | None], str] = {}
    for element in (e for part in scope for e in part.iter() if _local(e.tag) in BAND_FILE_TAGS):
        _add_band_file(files, (element.text or "").strip(), source)
    if not files:
        # The oldest L1C format: IMAGE_ID names the file inside GRANULE/<granuleIdentifier>/IMG_DATA.
        for granule in granules:
            for element in granule:
                if _local(element.tag) == "IMAGE_ID" and element.text and element.text.strip():
                    identifier = granule.get("granuleIdentifier") or ""
                    _add_band_file(files, f"GRANULE/{identifier}/IMG_DATA/{element.text.strip()}", source)
    if not files:
        raise MetadataError(
            f"{source}: lists no band files: none of {', '.join(BAND_FILE_TAGS)} or IMAGE_ID (in "
            f"{' or '.join(GRANULE_TAGS)} elements) found"
        )
    return files


def _granules_of(
    granules: list[ET.Element], source: str, tile: str | None, granule_id: str | None
) -> list[ET.Element]:
    """The granules of the tile being read, out of a multi-tile product."""
    identifiers = [g.get("granuleIdentifier") or "" for g in granules]
    if granule_id:
        exact = [g for g, identifier in zip(granules, identifiers, strict=True) if identifier == granule_id]
        if exact:
            return exact
    if tile:
        pattern = re.compile(rf"_T{re.escape(tile)}(?:_|$)")
        chosen = [
            g for g, identifier in zip(granules, identifiers, strict=True) if pattern.search(identifier)
        ]
        if chosen:
            return chosen
    raise MetadataError(
        f"{source}: holds {len(granules)} granules and none is of tile {tile or '?'} "
        f"(granule {granule_id or '?'}): {', '.join(identifiers)}"
    )


def _add_band_file(files: dict[tuple[str, int | None], str], relative: str, source: str) -> None:
    parts = relative.replace("\\", "/").split("/")
    if relative.startswith("/") or ".." in parts or ":" in parts[0]:
        raise MetadataError(f"{source}: band file {relative!r} is not a path inside the product folder")
    match = _IMAGE_NAME.search(relative)
    if match:
        resolution = int(match["res"]) if match["res"] else None
        files[(match["band"], resolution)] = f"{relative}.jp2"


def parse_tile_metadata(xml_bytes: bytes, source: str) -> TileMetadata:
    """Parse a granule's ``MTD_TL.xml``: its id, sensing time and geocoding per resolution.

    Raises
    ------
    MetadataError
        If the XML is malformed or the geocoding is incomplete.
    """
    root = _parse(xml_bytes, source)
    code = _text(root, "HORIZONTAL_CS_CODE", source)
    match = re.fullmatch(r"EPSG:(\d+)", code)
    if not match:
        raise MetadataError(f"{source}: HORIZONTAL_CS_CODE {code!r} is not like EPSG:32755")
    epsg = int(match[1])
    sizes = {}
    for element in _iter_named(root, "Size"):
        resolution = int(element.get("resolution", "0"))
        sizes[resolution] = (
            int(_number(_text(element, "NROWS", source), "NROWS", source)),
            int(_number(_text(element, "NCOLS", source), "NCOLS", source)),
        )
    geocoding = {}
    for element in _iter_named(root, "Geoposition"):
        resolution = int(element.get("resolution", "0"))
        if resolution not in sizes:
            raise MetadataError(f"{source}: Geoposition at {resolution} m has no matching Size")
        values = {
            name: _number(_text(element, name, source), name, source)
            for name in ("ULX", "ULY", "XDIM", "YDIM")
        }
        rows, cols = sizes[resolution]
        geocoding[resolution] = TileGeocoding(
            epsg, resolution, rows, cols, values["ULX"], values["ULY"], values["XDIM"], values["YDIM"]
        )
    if not geocoding:
        raise MetadataError(f"{source}: Tile_Geocoding has no Geoposition")
    sensing_text = _text(root, "SENSING_TIME", source)
    try:
        sensing = dt.datetime.fromisoformat(sensing_text.replace("Z", "+00:00"))
    except ValueError:
        raise MetadataError(f"{source}: SENSING_TIME {sensing_text!r} is not an ISO-8601 time") from None
    return TileMetadata(source, _text(root, "TILE_ID", source), sensing, geocoding)


def parse_cloud_mask_gml(xml_bytes: bytes, source: str) -> list[dict[str, object]]:
    """Opaque and cirrus cloud polygons of a pre-04.00 L1C ``MSK_CLOUDS_B00.gml``, as GeoJSON-like dicts.

    Coordinates are in the tile's CRS (the GML's ``srsName``). An empty mask (no cloud) gives ``[]``.

    Raises
    ------
    MetadataError
        If the XML is malformed or a polygon's coordinate list is not pairs of numbers.
    """
    root = _parse(xml_bytes, source)
    polygons: list[dict[str, object]] = []
    for polygon in _iter_named(root, "Polygon"):
        rings = []
        for element in polygon.iter():
            if _local(element.tag) != "posList":
                continue
            try:
                numbers = [float(value) for value in (element.text or "").split()]
            except ValueError:
                raise MetadataError(f"{source}: posList holds something other than numbers") from None
            if len(numbers) % 2 or len(numbers) < 8:
                raise MetadataError(
                    f"{source}: posList needs at least 4 coordinate pairs, got {len(numbers)} values"
                )
            rings.append(list(zip(numbers[0::2], numbers[1::2], strict=True)))
        if rings:
            polygons.append({"type": "Polygon", "coordinates": rings})
    return polygons
