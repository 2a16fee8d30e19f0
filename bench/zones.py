"""Zone statistics in the block walk: the cost of 100,000 small zones on one tile, in time and memory.

One tile-month of the sample (the clear month of ``bench/mask_skip.py``, ``--scenes`` L2A
acquisitions at ``--factor``) is processed by ``process_group`` without zones and with ``--zones``
random fields (squares and triangles of 20-150 m across, some overlapping, about 1 % larger farms
that hold several fields) inside the tile, each run in a fresh child process, alternating,
``--repeat`` times (medians). Reported: wall time, peak RSS, the ratio to the run without zones
(target: at most 1.15 in time), the time spent preparing the zones (transform, clip, layers) and how
many zones got pixels.

    .venv/bin/python bench/zones.py [--factor 2] [--scenes 4] [--zones 100000] [--repeat 2]

Results go to ``bench/results/zones.json``; ``bench/report.py`` writes them into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from mask_skip import TILE, archive, selection  # noqa: E402
from speed import _own_peak, helper, log, measure  # noqa: E402

RESULTS = REPO / "bench" / "results" / "zones.json"
SEED = 14
TIME_TARGET = 1.15


def child_zones(index: str, count: str, out: str) -> dict[str, Any]:
    """Write ``count`` random fields inside the tile's owned ground as GeoParquet (lon/lat)."""
    import json as json_module

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely
    from pyproj import Transformer

    from evi_udf.raster.grid import mgrs_square_origin
    from evi_udf.zones.pixels import owned_area

    rng = np.random.default_rng(SEED)
    epsg, west, south = mgrs_square_origin(TILE)
    ground = owned_area(TILE)
    n = int(count)
    # Field centres inside the ground the tile owns (55HBU owns the part of its square east of 144 E).
    x, y = np.zeros(0), np.zeros(0)
    while x.size < n:
        cx = rng.uniform(west + 200, west + 99_800, 2 * n)
        cy = rng.uniform(south + 200, south + 99_800, 2 * n)
        inside = shapely.contains_xy(ground, cx, cy)
        x, y = np.concatenate([x, cx[inside]]), np.concatenate([y, cy[inside]])
    x, y = x[:n], y[:n]
    size = rng.uniform(20, 150, n)
    farms = rng.random(n) < 0.01
    size[farms] = rng.uniform(500, 2000, farms.sum())
    triangles = rng.random(n) < 0.3
    polygons = []
    for i in range(n):
        half = size[i] / 2
        if triangles[i]:
            polygons.append(
                shapely.Polygon([(x[i] - half, y[i] - half), (x[i] + half, y[i] - half), (x[i], y[i] + half)])
            )
        else:
            polygons.append(shapely.box(x[i] - half, y[i] - half, x[i] + half, y[i] + half))
    # Clipped to the owned ground, so that every field is this tile's (a few are cut at its edge).
    geometries = shapely.intersection(np.array(polygons, dtype=object), ground)
    to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
    lonlat = shapely.transform(
        geometries, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1]))
    )
    table = pa.table(
        {"zone_id": [f"field-{i:06d}" for i in range(n)], "geometry": shapely.to_wkb(lonlat).tolist()}
    )
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {"geometry": {"encoding": "WKB", "geometry_types": []}},
    }
    pq.write_table(table.replace_schema_metadata({b"geo": json_module.dumps(geo).encode()}), out)
    return {"zones": n, "farms": int(farms.sum()), "path": out}


def child_process(index: str, out: str, zones_path: str) -> dict[str, Any]:
    """``process_group`` on the tile-month, with the zones of ``zones_path`` ('-' for none)."""
    import rasterio
    from s2_product import band_files

    from evi_udf.config import ZonesConfig, config_from_mapping
    from evi_udf.raster.io import dataset_grid
    from evi_udf.run.process import process_group
    from evi_udf.run.udf import group_key_from_pandas, scene_refs_from_pandas
    from evi_udf.zones.input import read_zones
    from evi_udf.zones.pixels import ZoneInput, tile_zones

    scenes = selection(index)
    config = config_from_mapping({"catalog": {"index_uri": index}, "output": {"root": out}})
    zones = None
    record: dict[str, Any] = {}
    if zones_path != "-":
        started = time.perf_counter()
        zone_set = read_zones(ZonesConfig(uri=zones_path))
        record["read_seconds"] = time.perf_counter() - started
        zones = ZoneInput(list(range(len(zone_set))), list(zone_set.geometries))
        # The preparation process_group does (transform, clip, layers), timed apart here.
        with rasterio.open(band_files(Path(scenes.base_url.iloc[0]))["B04"]) as dataset:
            grid = dataset_grid(dataset)
        started = time.perf_counter()
        prepared = tile_zones(TILE, grid, zones.numbers, zones.geometries)
        record["prepare_seconds"] = time.perf_counter() - started
        record["layers"] = prepared.layers
        record["drawn_with_every_touched_pixel"] = int(prepared.touched.sum())
        del prepared
    started = time.perf_counter()
    result = process_group(group_key_from_pandas(scenes), scene_refs_from_pandas(scenes), config, zones=zones)
    record["seconds"] = time.perf_counter() - started
    if result.composite is None or result.failures:
        raise SystemExit(f"processing failed: {result.failures}")
    if result.zone_composite is not None:
        composite = result.zone_composite
        record["zones_with_pixels"] = int(composite.whole.zone.size + composite.split.zone.size)
        record["zones_with_valid_pixels"] = int((composite.whole.valid > 0).sum())
    return {**record, **_own_peak()}


def child_archive(work: str, factor: str, scenes: str) -> dict[str, Any]:
    root = archive(Path(work), "clear", int(factor), int(scenes))
    return {"root": str(root), "index": str(root / "L2" / "index.csv.gz")}


CHILDREN = {"archive": child_archive, "zones": child_zones, "process": child_process}


def run(kind: str, *args: str) -> dict[str, Any]:
    return measure([sys.executable, str(Path(__file__).resolve()), "--child", kind, *args])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=int, default=2, help="resolution factor (1 = full size)")
    parser.add_argument("--scenes", type=int, default=4, help="acquisitions in the month")
    parser.add_argument("--zones", type=int, default=100_000, help="fields on the tile")
    parser.add_argument("--repeat", type=int, default=2, help="runs per variant (medians)")
    parser.add_argument("--work", type=Path, default=Path("bench/data"), help="data and scratch folder")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](*args.child[1:])))
        return 0
    work = args.work.resolve()
    sample = helper_run("archive", str(work), str(args.factor), str(args.scenes))
    zones_file = work / f"zones_{args.zones}.parquet"
    if not zones_file.exists():
        helper_run("zones", sample["index"], str(args.zones), str(zones_file))
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    for repeat in range(args.repeat):
        for variant, path in (("without", "-"), ("with", str(zones_file))):
            out = work / f"zones_out_{variant}"
            runs[variant].append(run("process", sample["index"], str(out), path))
            log(f"run {repeat + 1}, {variant} zones: {runs[variant][-1]['seconds']:.1f} s")
    without = statistics.median(r["seconds"] for r in runs["without"])
    with_zones = statistics.median(r["seconds"] for r in runs["with"])
    record = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **helper("environment"),
        "parameters": {
            "tile": TILE,
            "factor": args.factor,
            "pixels": 10980 // args.factor,
            "scenes": args.scenes,
            "zones": args.zones,
            "repeat": args.repeat,
        },
        "runs": runs,
        "seconds_without": without,
        "seconds_with": with_zones,
        "ratio": with_zones / without,
        "peak_rss_mib_without": statistics.median(r["peak_rss_mib"] for r in runs["without"]),
        "peak_rss_mib_with": statistics.median(r["peak_rss_mib"] for r in runs["with"]),
        "target": TIME_TARGET,
        "met": with_zones / without <= TIME_TARGET,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    log(f"zones: {with_zones:.1f} s vs {without:.1f} s without ({record['ratio']:.2f}x)")
    return 0


def helper_run(kind: str, *args: str) -> dict[str, Any]:
    """A setup step in a child (not measured)."""
    return run(kind, *args)


if __name__ == "__main__":
    sys.exit(main())
