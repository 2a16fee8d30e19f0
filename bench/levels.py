"""Coarse outputs from JPEG2000 resolution levels: speed, and the difference to averaged 10 m EVI.

On the clear and the cloudy month of ``bench/mask_skip.py`` (the sample at ``--factor``, whose bands
are ``10 * factor`` m: factor 2 makes 20 m bands, and every resolution below is scaled alike, so a
"60 m" output is 6 band pixels wide as on real Sentinel-2), each run a fresh child process, methods
interleaved, ``--repeat`` times (medians):

* ``native``: ``process_group`` on the tile's own grid (the "10 m" output);
* ``levels``: a shared grid 6x coarser than the bands (the "60 m" output, in the tile's CRS, anchored
  at its corner), default ``raster.coarse_reads: resolution_levels``: the bands decoded at their 4x
  level ("40 m"), the composite resampled onto the grid;
* ``full``: the same grid with ``coarse_reads: full``: bands decoded whole, the "10 m" composite
  resampled onto the grid.

Both coarse runs use ``raster.resampling: average``, so ``full`` is the "10 m" EVI composite averaged
over each output pixel, the reference the difference is measured against (per pixel where both have
a value: percentiles of |levels - full|, the mean difference, shares within 0.01 / 0.02 / 0.05).
Target: ``levels`` >= 5x faster than ``native``.

    .venv/bin/python bench/levels.py [--factor 2] [--scenes 6] [--repeat 3] [--work bench/data]

Results go to ``bench/results/levels.json``; ``bench/report.py`` writes them into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from mask_skip import PROFILES, archive, selection  # noqa: E402
from speed import _own_peak, log, measure, warm_page_cache  # noqa: E402

RESULTS = REPO / "bench" / "results" / "levels.json"
COARSE = 6  # output pixel / band pixel: 60 m from 10 m bands
SPEEDUP_TARGET = 5.0


def child_run(index: str, out: str, method: str) -> dict[str, Any]:
    import rasterio

    from evi_udf.config import config_from_mapping
    from evi_udf.run.process import process_group
    from evi_udf.run.udf import group_key_from_pandas, scene_refs_from_pandas

    scenes = selection(index)
    with rasterio.open(_band(scenes.base_url.iloc[0])) as band:
        left, top, resolution, epsg = band.transform.c, band.transform.f, band.res[0], band.crs.to_epsg()
    raster: dict[str, Any] = {}
    if method != "native":
        raster = {
            "grid": {
                "kind": "shared",
                "crs": f"EPSG:{epsg}",
                "resolution": COARSE * resolution,
                "origin": [left, top],
            },
            "resampling": "average",
            "coarse_reads": "resolution_levels" if method == "levels" else "full",
        }
    config = config_from_mapping({"catalog": {"index_uri": index}, "output": {"root": out}, "raster": raster})
    started = time.perf_counter()
    result = process_group(group_key_from_pandas(scenes), scene_refs_from_pandas(scenes), config)
    seconds = time.perf_counter() - started
    if result.composite is None or result.failures:
        raise SystemExit(f"processing failed: {result.failures}")
    return {"seconds": seconds, "cog": result.composite.raster_uri, **_own_peak()}


def _band(base_url: str) -> Path:
    return next(Path(base_url).glob("GRANULE/*/IMG_DATA/R10m/*_B02_10m.jp2"))


def child_difference(levels: str, full: str) -> dict[str, Any]:
    """The distribution of levels - full over the pixels where both have a value."""
    import numpy as np
    import rasterio

    with rasterio.open(levels) as a, rasterio.open(full) as b:
        if a.shape != b.shape or a.transform != b.transform:
            raise SystemExit(f"{levels} and {full} are not on one grid")
        x, y = a.read(1).astype(np.float64), b.read(1).astype(np.float64)
    valid_x, valid_y = np.isfinite(x), np.isfinite(y)
    both = valid_x & valid_y
    difference = x[both] - y[both]
    magnitude = np.abs(difference)
    percentiles = (50, 90, 95, 99, 100)
    return {
        "pixels": int(x.size),
        "valid_levels": int(valid_x.sum()),
        "valid_full": int(valid_y.sum()),
        "both_valid": int(both.sum()),
        "abs_percentiles": dict(
            zip([str(p) for p in percentiles], np.percentile(magnitude, percentiles).tolist(), strict=True)
        ),
        "mean_difference": float(difference.mean()),
        "share_within": {str(t): float((magnitude <= t).mean()) for t in (0.01, 0.02, 0.05)},
    }


def child(kind: str, args: list[str]) -> dict[str, Any]:
    if kind == "run":
        return child_run(*args)
    if kind == "difference":
        return child_difference(*args)
    if kind == "archive":
        work, profile, factor, scenes = args
        return {"root": str(archive(Path(work), profile, int(factor), int(scenes)))}
    if kind == "scenes":
        return {"base_urls": list(selection(args[0]).base_url)}
    raise SystemExit(f"unknown child {kind}")


def run(kind: str, *args: str) -> dict[str, Any]:
    return measure([sys.executable, str(Path(__file__).resolve()), "--child", kind, *args])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=int, default=2, help="resolution factor (1 = full size)")
    parser.add_argument("--scenes", type=int, default=6, help="acquisitions in the month (5 days apart)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method and month (medians)")
    parser.add_argument("--work", type=Path, default=Path("bench/data"), help="data and scratch folder")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1:])))
        return 0
    from speed import helper

    work = args.work.resolve()
    record: dict[str, Any] = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **helper("environment"),
        "parameters": {
            "factor": args.factor,
            "scenes": args.scenes,
            "repeat": args.repeat,
            "coarse": COARSE,
            "band_metres": 10 * args.factor,
        },
        "months": {},
    }
    methods = ("native", "levels", "full")
    for profile in PROFILES:
        # Generated in a child, so that the harness's peak RSS stays small (children inherit it).
        root = Path(run("archive", str(work), profile, str(args.factor), str(args.scenes))["root"])
        index = str(root / "L2" / "index.csv.gz")
        warm_page_cache(run("scenes", index)["base_urls"])
        runs: dict[str, list[dict[str, Any]]] = {method: [] for method in methods}
        for attempt in range(args.repeat):
            out = work / "levels" / profile / str(attempt)
            shutil.rmtree(out, ignore_errors=True)
            for method in methods:
                runs[method].append(run("run", index, str(out / method), method))
            timings = ", ".join(f"{m} {rows[-1]['seconds']:.1f} s" for m, rows in runs.items())
            log(f"{profile} #{attempt}: {timings}")
        medians = {
            method: {
                "seconds": statistics.median([r["seconds"] for r in rows]),
                "peak_rss_mib": statistics.median([r["peak_rss_mib"] for r in rows]),
            }
            for method, rows in runs.items()
        }
        speedup = medians["native"]["seconds"] / medians["levels"]["seconds"]
        record["months"][profile] = {
            "medians": medians,
            "runs": runs,
            "native_over_levels": speedup,
            "full_over_levels": medians["full"]["seconds"] / medians["levels"]["seconds"],
            "target": SPEEDUP_TARGET,
            "met": speedup >= SPEEDUP_TARGET,
            "difference": run("difference", runs["levels"][0]["cog"], runs["full"][0]["cog"]),
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(record, indent=2) + "\n")
        log(f"{profile}: native / levels {speedup:.1f} (target >= {SPEEDUP_TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
