#!/usr/bin/env python3
"""Compare two output roots of the local pipeline: are they the same outputs, made by different runs?

    .venv/bin/python scripts/compare_outputs.py OLD_ROOT NEW_ROOT

Exit status 0 when they are equal, 1 with a list of the differences, 2 when a root cannot be read.

Two runs of the same code on the same inputs never write byte-identical roots: run ids, commit ids and
their times differ, and every output name carries a random attempt token
(``S2_EVI_<tile>_<period>_<method>_<hash>_<attempt>.tif``). So files are matched by *group* (grid,
parameter hash, period, tile), never by name, and every text is normalised before it is compared:

* the output root itself (``/work/main/out/local`` in one, ``/tmp/x/out/local`` in the other, as the
  run reports and commit records spell it) becomes ``<root>``;
* commit ids (``20261206T001152686282Z-c986b40e``, also ``_`` in ledger names) become ``<commit>``,
  run ids (``20261206T001129Z-1a6146``) ``<run>``, and the 8-hex attempt token after the 12-hex
  parameter hash in output names ``<attempt>``;
* the columns and keys that are times (``processed_at``, ``committed_at``, ``processing_seconds``; a run
  report's ``started_at``, ``wall_seconds`` and ``phase_seconds``) are left out.

What is compared, area by area:

* ``evi/``: per group, the EVI and clear-count COGs (pixels with NaN equal to NaN, every overview
  level, dtype, nodata, CRS, transform, size, band descriptions, units, scales and offsets, dataset,
  band and image-structure tags except time-like ones), the quick-look PNG's pixels and the STAC item;
* ``tables/``: every table's schema (with the column descriptions) and its rows, matched by the
  table's key columns (tile, period, zone, product, ...), as a multiset;
* ``ledger/``: per group, the number of commit records, their normalised names (status, scene count,
  scene-set fingerprint), their rows and the commit metadata;
* ``stac/``: the catalogs, collections and GeoParquet item listings;
* ``runs/``: the run reports (in order of their start) and the mosaics' pixels.

It depends on rasterio, pyarrow, pandas and numpy only, not on ``evi_udf``: it compares what two
versions of the code wrote, so it must not change with either.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError

# Times and durations: they differ between any two runs.
TIME_COLUMNS = frozenset({"processed_at", "committed_at", "processing_seconds"})
REPORT_TIME_KEYS = frozenset({"started_at", "wall_seconds", "phase_seconds"})
# A TIFF tag whose name says it is a time (GDAL's TIFFTAG_DATETIME, a *_AT stamp) is left out.
TIME_TAG = re.compile(r"(DATETIME|_AT$|CREATED|UPDATED)", re.IGNORECASE)

# Commit ids: the commit time to the microsecond and the attempt (ledger names use "_").
COMMIT_ID = re.compile(r"\d{8}T\d{12}Z[-_][0-9a-f]{8}(?![0-9a-f])")
# Run ids: the run's start to the second and 6 random hex digits.
RUN_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}(?![0-9a-f])")
# The attempt token of an output name follows the 12-hex parameter hash.
ATTEMPT = re.compile(r"(?<=[0-9a-f]{12}_)[0-9a-f]{8}(?![0-9a-f])")
# An EVI output: S2_EVI_<tile>_<period>_<method>_<hash>_<attempt><suffix>.
OUTPUT_NAME = re.compile(
    r"^S2_EVI_(?P<tile>[0-9A-Z]+)_(?P<period>[^_]+)_(?P<method>[a-z_]+)_(?P<hash>[0-9a-f]{12})_"
    r"(?P<attempt>[0-9a-f]{8})(?P<suffix>_clear_count\.tif|\.tif|\.json|\.png)$"
)
# Columns that identify a row of a table, tried in this order (the ones a table has are its key).
KEY_COLUMNS = (
    "kind",
    "parameter_hash",
    "grid",
    "mgrs_tile",
    "period",
    "zone_id",
    "acquisition",
    "product_id",
    "granule_id",
    "index_row_id",
    "stage",
    "piece_row",
    "piece_col",
)
# Shown per area; the rest are counted.
MAX_LISTED = 20


@dataclasses.dataclass(frozen=True)
class Difference:
    """One way the new root differs from the old one."""

    area: str
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.area}: {self.where}: {self.what}"


class Normalizer:
    """Rewrites the parts of a root's texts that differ between runs (see the module docstring).

    Parameters
    ----------
    roots
        Every spelling of the output root that the root's files use (its path on disk and the
        ``output_root`` its run reports name); replaced by ``<root>``, longest first.
    """

    def __init__(self, roots: Iterable[str]) -> None:
        self.roots = sorted({r.rstrip("/") for r in roots if r and r.rstrip("/")}, key=len, reverse=True)

    def text(self, value: str) -> str:
        """The text with roots, commit ids, run ids and attempt tokens replaced by placeholders."""
        for root in self.roots:
            value = value.replace(root, "<root>")
        value = COMMIT_ID.sub("<commit>", value)
        value = RUN_ID.sub("<run>", value)
        return ATTEMPT.sub("<attempt>", value)

    def value(self, value: Any, drop: frozenset[str] = frozenset()) -> Any:
        """A JSON-like value with every text normalised and the keys in ``drop`` left out."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v, drop) for k, v in value.items() if k not in drop}
        if isinstance(value, list | tuple):
            return [self.value(v, drop) for v in value]
        return value


@dataclasses.dataclass
class Root:
    """One output root on disk and the normaliser of its texts."""

    path: Path
    normalizer: Normalizer

    @classmethod
    def open(cls, path: Path) -> Root:
        """Read the root's spellings of itself from its run reports and commit rows."""
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: not a folder")
        # Absolute spellings only: a relative one ("out/local") could match inside other texts.
        roots = {str(path.absolute()), str(path.resolve())}
        for report in sorted((path / "runs").glob("*.json")):
            roots.add(str(json.loads(report.read_text(encoding="utf-8")).get("output_root") or ""))
        commits = path / "tables" / "evi_commits"
        for part in sorted(commits.glob("*.parquet")):
            for uri in pq.read_table(part, columns=["record_uri"]).column("record_uri").to_pylist():
                if uri and "/ledger/" in uri:
                    roots.add(uri.split("/ledger/", 1)[0])
        return cls(path, Normalizer(roots))

    def files(self, area: str) -> list[Path]:
        """Every file under ``<root>/<area>``, sorted."""
        return sorted(p for p in (self.path / area).rglob("*") if p.is_file())


def compare_roots(old: Path, new: Path) -> list[Difference]:
    """Every difference between the outputs in ``old`` and those in ``new`` (empty when equal).

    Parameters
    ----------
    old, new
        Output roots of local runs (``output.root``, e.g. ``out/local``).

    Returns
    -------
    list of Difference
        In the order of the areas: evi, tables, ledger, stac, runs.
    """
    a, b = Root.open(old), Root.open(new)
    differences: list[Difference] = []
    for compare in (_compare_evi, _compare_tables, _compare_ledger, _compare_stac, _compare_runs):
        differences += compare(a, b)
    return differences


# --- evi/: COGs, quick-looks and STAC items, matched by group -------------------------------------


def _evi_outputs(root: Root) -> dict[tuple[str, ...], dict[str, list[Path]]]:
    """{group: {suffix: [files]}}; a group is (grid, period, tile, method, parameter hash)."""
    groups: dict[tuple[str, ...], dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for path in root.files("evi"):
        relative = path.relative_to(root.path / "evi").parts
        match = OUTPUT_NAME.match(path.name)
        if len(relative) != 4 or match is None:
            groups[("unexpected file", path.relative_to(root.path).as_posix())]["file"].append(path)
            continue
        grid = relative[0]
        key = (grid, match["period"], match["tile"], match["method"], match["hash"])
        groups[key][match["suffix"]].append(path)
    return groups


def _compare_evi(old: Root, new: Root) -> list[Difference]:
    a, b = _evi_outputs(old), _evi_outputs(new)
    differences = _missing("evi", "group", a, b, lambda key: "/".join(key))
    for key in sorted(a.keys() & b.keys()):
        where = "/".join(key)
        for suffix in sorted(a[key].keys() | b[key].keys()):
            files_a, files_b = a[key].get(suffix, []), b[key].get(suffix, [])
            if len(files_a) != len(files_b):
                differences.append(
                    Difference("evi", where, f"{len(files_a)} {suffix} file(s) in OLD, {len(files_b)} in NEW")
                )
                continue
            for file_a, file_b in zip(files_a, files_b, strict=True):
                label = f"{where} {suffix}"
                if suffix == ".json":
                    differences += _compare_json("evi", label, old, file_a, new, file_b)
                else:
                    differences += [
                        Difference("evi", label, what) for what in _raster_differences(file_a, file_b)
                    ]
    return differences


def _raster_differences(path_a: Path, path_b: Path) -> list[str]:
    """What differs between two rasters: their description, then the pixels of every overview level."""
    with warnings.catch_warnings():
        # Quick-look PNGs and mosaics have no georeferencing, and need none.
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path_a) as a, rasterio.open(path_b) as b:
            facts_a, facts_b = RasterFacts.of(a), RasterFacts.of(b)
            overviews = len(a.overviews(1)) if a.count else 0
        found = [
            f"{name}: {va!r} -> {vb!r}"
            for name, va, vb in zip(RasterFacts._fields, facts_a, facts_b, strict=True)
            if not _same(va, vb)
        ]
        # Pixels are compared only where they can be: the same shapes at every level.
        shape_a = (facts_a.size, facts_a.count, facts_a.dtypes, facts_a.overviews)
        if shape_a != (facts_b.size, facts_b.count, facts_b.dtypes, facts_b.overviews):
            return found
        # Level None is the full resolution; 0, 1, ... the internal overviews.
        for level in (None, *range(overviews)):
            with (
                rasterio.open(path_a, overview_level=level) as a,
                rasterio.open(path_b, overview_level=level) as b,
            ):
                pixels_a, pixels_b = a.read(), b.read()
            if not _same_pixels(pixels_a, pixels_b):
                changed = int(np.count_nonzero(~_equal_mask(pixels_a, pixels_b)))
                where = "full resolution" if level is None else f"overview {level + 1}"
                return [*found, f"pixels differ at {where}: {changed} of {pixels_a.size} values"]
    return found


class RasterFacts(NamedTuple):
    """Everything about a raster but its pixels, as compared (tags without the time-like ones)."""

    driver: str
    size: tuple[int, int]
    count: int
    dtypes: tuple[str, ...]
    nodata: tuple[float | None, ...]
    crs: str | None
    transform: tuple[float, ...]
    descriptions: tuple[str | None, ...]
    units: tuple[str | None, ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    tags: dict[str, str]
    band_tags: list[dict[str, str]]
    image_structure: dict[str, str]
    overviews: list[list[int]]

    @classmethod
    def of(cls, dataset: Any) -> RasterFacts:
        """The facts of an open rasterio dataset."""

        def untimed(tags: dict[str, str]) -> dict[str, str]:
            return {k: v for k, v in tags.items() if not TIME_TAG.search(k)}

        return cls(
            driver=dataset.driver,
            size=(dataset.width, dataset.height),
            count=dataset.count,
            dtypes=tuple(dataset.dtypes),
            nodata=tuple(dataset.nodatavals),
            crs=dataset.crs.to_wkt() if dataset.crs else None,
            transform=tuple(dataset.transform),
            descriptions=tuple(dataset.descriptions),
            units=tuple(dataset.units),
            scales=tuple(dataset.scales),
            offsets=tuple(dataset.offsets),
            tags=untimed(dataset.tags()),
            band_tags=[untimed(dataset.tags(band)) for band in dataset.indexes],
            image_structure=dataset.tags(ns="IMAGE_STRUCTURE"),
            overviews=[dataset.overviews(band) for band in dataset.indexes],
        )


def _same(a: Any, b: Any) -> bool:
    """Equality with NaN equal to NaN, also inside tuples and lists."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _equal_mask(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    equal = a == b
    if np.issubdtype(a.dtype, np.floating):
        equal |= np.isnan(a) & np.isnan(b)
    return equal


def _same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(_equal_mask(a, b).all())


# --- JSON documents (STAC items, catalogs, run reports) -------------------------------------------


def _compare_json(
    area: str,
    where: str,
    old: Root,
    path_a: Path,
    new: Root,
    path_b: Path,
    drop: frozenset[str] = frozenset(),
) -> list[Difference]:
    doc_a = old.normalizer.value(json.loads(path_a.read_text(encoding="utf-8")), drop)
    doc_b = new.normalizer.value(json.loads(path_b.read_text(encoding="utf-8")), drop)
    return [Difference(area, where, what) for what in _json_differences(doc_a, doc_b, "")]


def _json_differences(a: Any, b: Any, path: str) -> Iterator[str]:
    """Where two JSON values differ, as ``key.path: old -> new``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            here = f"{path}.{key}" if path else key
            if key not in b:
                yield f"{here}: only in OLD"
            elif key not in a:
                yield f"{here}: only in NEW"
            else:
                yield from _json_differences(a[key], b[key], here)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _json_differences(x, y, f"{path}[{index}]")
    elif not _same(a, b):
        yield f"{path or '(document)'}: {_short(a)} -> {_short(b)}"


def _short(value: Any, width: int = 120) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


# --- tables/ and other Parquet files --------------------------------------------------------------


def _compare_tables(old: Root, new: Root) -> list[Difference]:
    names_a = (
        {p.name for p in (old.path / "tables").iterdir() if p.is_dir()}
        if (old.path / "tables").is_dir()
        else set()
    )
    names_b = (
        {p.name for p in (new.path / "tables").iterdir() if p.is_dir()}
        if (new.path / "tables").is_dir()
        else set()
    )
    differences = _missing("tables", "table", {n: 1 for n in names_a}, {n: 1 for n in names_b}, str)
    for name in sorted(names_a & names_b):
        folder_a, folder_b = old.path / "tables" / name, new.path / "tables" / name
        schema_a, schema_b = folder_a / "schema.parquet", folder_b / "schema.parquet"
        if schema_a.is_file() and schema_b.is_file():
            differences += _schema_differences(
                "tables", f"{name} schema", pq.read_schema(schema_a), pq.read_schema(schema_b)
            )
        table_a = _read_parts(sorted(folder_a.glob("*.parquet")))
        table_b = _read_parts(sorted(folder_b.glob("*.parquet")))
        differences += _row_differences("tables", name, old.normalizer, table_a, new.normalizer, table_b)
    return differences


def _read_parts(paths: Sequence[Path]) -> pa.Table:
    """The rows of several Parquet files of one table (as its readers take them: one glob)."""
    tables = [pq.read_table(p) for p in paths]
    tables = [t.replace_schema_metadata(None) for t in tables]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive")


def _schema_differences(area: str, where: str, a: pa.Schema, b: pa.Schema) -> list[Difference]:
    differences = []
    fields_a = {f.name: f for f in a}
    fields_b = {f.name: f for f in b}
    for name in [f.name for f in a if f.name not in fields_b]:
        differences.append(Difference(area, where, f"column {name} only in OLD"))
    for name in [f.name for f in b if f.name not in fields_a]:
        differences.append(Difference(area, where, f"column {name} only in NEW"))
    for name in [f.name for f in a if f.name in fields_b]:
        fa, fb = fields_a[name], fields_b[name]
        if fa.type != fb.type or fa.nullable != fb.nullable:
            differences.append(Difference(area, where, f"column {name}: {fa} -> {fb}"))
        elif (fa.metadata or {}) != (fb.metadata or {}):
            differences.append(Difference(area, where, f"column {name}: description changed"))
    if [f.name for f in a if f.name in fields_b] != [f.name for f in b if f.name in fields_a]:
        differences.append(Difference(area, where, "columns in another order"))
    if (a.metadata or {}).get(b"description") != (b.metadata or {}).get(b"description"):
        differences.append(Difference(area, where, "table description changed"))
    return differences


def _rows(table: pa.Table, normalizer: Normalizer) -> list[dict[str, Any]]:
    """The table's rows as dicts, normalised, without the time columns."""
    kept = [name for name in table.column_names if name not in TIME_COLUMNS]
    return [{k: _canonical(v, normalizer) for k, v in row.items()} for row in table.select(kept).to_pylist()]


def _canonical(value: Any, normalizer: Normalizer) -> Any:
    """A hashable, comparable form: texts normalised, NaN as a marker, lists as tuples."""
    if isinstance(value, str):
        return normalizer.text(value)
    if isinstance(value, float) and math.isnan(value):
        return "<NaN>"
    if isinstance(value, list | tuple):
        return tuple(_canonical(v, normalizer) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _canonical(v, normalizer)) for k, v in value.items()))
    return value


def _row_differences(
    area: str, where: str, norm_a: Normalizer, table_a: pa.Table, norm_b: Normalizer, table_b: pa.Table
) -> list[Difference]:
    """Rows only in one table, and for rows with the same key, the columns whose values differ."""
    rows_a, rows_b = _rows(table_a, norm_a), _rows(table_b, norm_b)
    columns_a = {c for row in rows_a for c in row} or set(table_a.column_names) - TIME_COLUMNS
    columns_b = {c for row in rows_b for c in row} or set(table_b.column_names) - TIME_COLUMNS
    differences = [Difference(area, where, f"column {c} only in OLD") for c in sorted(columns_a - columns_b)]
    differences += [Difference(area, where, f"column {c} only in NEW") for c in sorted(columns_b - columns_a)]
    common = sorted(columns_a & columns_b)
    keys = [c for c in KEY_COLUMNS if c in common]

    def as_tuple(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row.get(c) for c in common)

    count_a, count_b = Counter(map(as_tuple, rows_a)), Counter(map(as_tuple, rows_b))
    only_a, only_b = count_a - count_b, count_b - count_a
    if not only_a and not only_b:
        return differences
    if len(rows_a) != len(rows_b):
        differences.append(Difference(area, where, f"{len(rows_a)} rows in OLD, {len(rows_b)} in NEW"))
    key_index = [common.index(k) for k in keys]

    def key_of(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(row[i] for i in key_index)

    by_key_b: dict[tuple[Any, ...], list[tuple[Any, ...]]] = defaultdict(list)
    for row in only_b.elements():
        by_key_b[key_of(row)].append(row)
    for row in only_a.elements():
        key = key_of(row)
        label = ", ".join(f"{k}={v}" for k, v in zip(keys, key, strict=True)) or "row"
        if by_key_b.get(key):
            other = by_key_b[key].pop(0)
            changed = [
                f"{c}: {_short(x)} -> {_short(y)}"
                for c, x, y in zip(common, row, other, strict=True)
                if x != y
            ]
            differences.append(Difference(area, where, f"{label}: " + "; ".join(changed)))
        else:
            differences.append(Difference(area, where, f"{label}: row only in OLD"))
    for key, remaining in by_key_b.items():
        label = ", ".join(f"{k}={v}" for k, v in zip(keys, key, strict=True)) or "row"
        differences += [Difference(area, where, f"{label}: row only in NEW") for _ in remaining]
    return differences


# --- ledger/: commit records by group --------------------------------------------------------------


def _ledger_groups(root: Root) -> dict[str, list[Path]]:
    """{<grid>/<parameter hash>/<period>/<tile>: its commit records, oldest first}."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in root.files("ledger"):
        groups[path.parent.relative_to(root.path / "ledger").as_posix()].append(path)
    return groups


def _compare_ledger(old: Root, new: Root) -> list[Difference]:
    a, b = _ledger_groups(old), _ledger_groups(new)
    differences = _missing("ledger", "group", a, b, str)
    for group in sorted(a.keys() & b.keys()):
        if len(a[group]) != len(b[group]):
            differences.append(
                Difference("ledger", group, f"{len(a[group])} commit records in OLD, {len(b[group])} in NEW")
            )
            continue
        for record_a, record_b in zip(a[group], b[group], strict=True):
            name_a, name_b = old.normalizer.text(record_a.name), new.normalizer.text(record_b.name)
            if name_a != name_b:
                differences.append(Difference("ledger", group, f"record {name_a} -> {name_b}"))
            table_a, table_b = pq.read_table(record_a), pq.read_table(record_b)
            meta_a = _record_metadata(table_a, old.normalizer)
            meta_b = _record_metadata(table_b, new.normalizer)
            differences += [
                Difference("ledger", f"{group} commit metadata", what)
                for what in _json_differences(meta_a, meta_b, "")
            ]
            differences += _row_differences(
                "ledger",
                f"{group} rows",
                old.normalizer,
                table_a.replace_schema_metadata(None),
                new.normalizer,
                table_b.replace_schema_metadata(None),
            )
    return differences


def _record_metadata(table: pa.Table, normalizer: Normalizer) -> dict[str, Any]:
    """The record's Parquet key-value metadata, JSON values decoded and normalised, times left out."""
    found: dict[str, Any] = {}
    for key, raw in (table.schema.metadata or {}).items():
        text = raw.decode("utf-8", errors="replace")
        try:
            found[key.decode()] = normalizer.value(json.loads(text), TIME_COLUMNS)
        except json.JSONDecodeError:
            found[key.decode()] = normalizer.text(text)
    return found


# --- stac/ and runs/ ------------------------------------------------------------------------------


def _compare_stac(old: Root, new: Root) -> list[Difference]:
    a = {old.normalizer.text(p.relative_to(old.path / "stac").as_posix()): p for p in old.files("stac")}
    b = {new.normalizer.text(p.relative_to(new.path / "stac").as_posix()): p for p in new.files("stac")}
    differences = _missing("stac", "file", a, b, str)
    for name in sorted(a.keys() & b.keys()):
        if name.endswith(".json"):
            differences += _compare_json("stac", name, old, a[name], new, b[name])
        elif name.endswith(".parquet"):
            table_a, table_b = pq.read_table(a[name]), pq.read_table(b[name])
            differences += _row_differences(
                "stac",
                name,
                old.normalizer,
                table_a.replace_schema_metadata(None),
                new.normalizer,
                table_b.replace_schema_metadata(None),
            )
        elif a[name].read_bytes() != b[name].read_bytes():
            differences.append(Difference("stac", name, "contents differ"))
    return differences


def _compare_runs(old: Root, new: Root) -> list[Difference]:
    def reports(root: Root) -> list[Path]:
        found = [
            (json.loads(p.read_text(encoding="utf-8")).get("started_at") or "", p)
            for p in root.files("runs")
            if p.suffix == ".json"
        ]
        return [p for _, p in sorted(found)]

    def mosaics(root: Root) -> dict[str, list[Path]]:
        found: dict[str, list[Path]] = defaultdict(list)
        for path in root.files("runs"):
            if path.suffix == ".png":
                found[root.normalizer.text(path.name)].append(path)
        return found

    differences = []
    reports_a, reports_b = reports(old), reports(new)
    if len(reports_a) != len(reports_b):
        differences.append(
            Difference("runs", "reports", f"{len(reports_a)} run reports in OLD, {len(reports_b)} in NEW")
        )
    for number, (report_a, report_b) in enumerate(zip(reports_a, reports_b, strict=False), start=1):
        differences += _compare_json(
            "runs", f"report {number}", old, report_a, new, report_b, REPORT_TIME_KEYS
        )
    mosaics_a, mosaics_b = mosaics(old), mosaics(new)
    differences += _missing("runs", "mosaic", mosaics_a, mosaics_b, str)
    for name in sorted(mosaics_a.keys() & mosaics_b.keys()):
        for path_a, path_b in zip(mosaics_a[name], mosaics_b[name], strict=False):
            differences += [Difference("runs", name, what) for what in _raster_differences(path_a, path_b)]
    return differences


def _missing(area: str, kind: str, a: dict[Any, Any], b: dict[Any, Any], label: Any) -> list[Difference]:
    """The keys present in only one of the two roots."""
    return [Difference(area, label(key), f"{kind} missing in NEW") for key in sorted(a.keys() - b.keys())] + [
        Difference(area, label(key), f"{kind} missing in OLD") for key in sorted(b.keys() - a.keys())
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 equal, 1 different, 2 unreadable)."""
    parser = argparse.ArgumentParser(
        prog="scripts/compare_outputs.py",
        description="Compare two output roots of the local pipeline (run ids, times, attempts aside).",
    )
    parser.add_argument("old", type=Path, help="the output root to compare against, e.g. a copy of out/local")
    parser.add_argument("new", type=Path, help="the output root to check, e.g. out/local")
    parser.add_argument(
        "--all", action="store_true", help=f"list every difference, not the first {MAX_LISTED} per area"
    )
    args = parser.parse_args(argv)
    try:
        differences = compare_roots(args.old, args.new)
    except (OSError, ValueError, pa.ArrowException, RasterioError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not differences:
        print(f"equal: {args.old} and {args.new} hold the same outputs (run ids, times and attempts aside)")
        return 0
    by_area: dict[str, list[Difference]] = defaultdict(list)
    for difference in differences:
        by_area[difference.area].append(difference)
    print(f"{len(differences)} difference(s) between {args.old} (OLD) and {args.new} (NEW):")
    for area, found in by_area.items():
        shown = found if args.all else found[:MAX_LISTED]
        for difference in shown:
            print(f"  {difference}")
        if len(found) > len(shown):
            print(f"  {area}: ... and {len(found) - len(shown)} more (--all lists them)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
