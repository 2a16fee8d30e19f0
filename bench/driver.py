"""The driver's cost per group: the whole job on 100 and on 1,000 tiny groups.

Tiny groups (one L2A scene of 30 x 30 px each: ``--tiles`` MGRS tiles x 20 daily periods) make the
groups' own work negligible, so what remains is the cost that grows with the number of groups on
the driver (planning, listing the ledger, loading the tables, the STAC catalog, the mosaics, the
report) and Spark's per-task overhead. Each size runs twice in a fresh child process with
``local[2]`` and the local Parquet sink: a first run that makes every group, then a rerun that finds
every group done. Reported per run, from the run report's phase timings: the driver's seconds outside
the processing job and per group, the Python driver's and the JVM's peak RSS, and the Spark overhead
share of the processing job (1 - the groups' summed ``processing_seconds`` / (slots x the job's wall
time)). Target: driver seconds per group and peak RSS flat from 100 to 1,000 groups.

    .venv/bin/python bench/driver.py [--sizes 100 1000] [--work bench/data]

Results go to ``bench/results/driver.json``; ``bench/report.py`` writes them into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from speed import helper, jvm_peak_mib, log, measure  # noqa: E402

RESULTS = REPO / "bench" / "results" / "driver.json"
FACTOR = 366  # 30 x 30 px bands
DAYS = 20  # acquisitions per tile, 5 days apart: one group per tile and day
SLOTS = 2
SEED = 31
# Squares of zone 55 in latitude band H (and its neighbour G): 60 distinct tiles.
COLUMNS = "BCDEFG"
ROWS = "UVATSRQPNM"


def tiles(count: int) -> list[str]:
    """``count`` distinct MGRS tiles the sample generator can place."""
    from evi_udf.sample.generate import SampleError, tile_grid

    found = []
    for row in ROWS:
        for column in COLUMNS:
            for band in "HG":
                tile = f"55{band}{column}{row}"
                try:
                    tile_grid(tile)
                except SampleError:
                    continue
                found.append(tile)
                break
            if len(found) == count:
                return found
    raise SystemExit(f"only {len(found)} tiles available, {count} needed")


def child_archive(work: str, count: str) -> dict[str, Any]:
    from evi_udf.sample.generate import SampleSpec, generate_archive

    root = Path(work) / f"driver_{count}tiles_f{FACTOR}"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        generate_archive(
            SampleSpec(
                out=root,
                tiles=tuple(tiles(int(count))),
                scenes_per_tile=DAYS,
                resolution_factor=FACTOR,
                seed=SEED,
            )
        )
        (root / ".complete").write_text("done\n")
    return {"root": str(root)}


def child_run(index: str, out: str, tile_list: str) -> dict[str, Any]:
    import resource

    from evi_udf.config import config_from_mapping
    from evi_udf.outputs.sinks.parquet import ParquetSink
    from evi_udf.run.job import run
    from evi_udf.run.session import build_session

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    config = config_from_mapping(
        {
            "catalog": {
                "index_uri": index,
                "tiles": tile_list.split(","),
                "period": "day",
                "geometric_quality": "any",
            },
            "output": {"root": out},
            "raster": {"quicklook_size": 64},
        }
    )
    spark = build_session("evi-bench-driver", master=f"local[{SLOTS}]")
    started = time.perf_counter()
    report = run(spark, config, ParquetSink(f"{out}/tables"), log=lambda _: None)
    wall = time.perf_counter() - started
    composites = ParquetSink(f"{out}/tables").read("evi_composites")
    jvm = jvm_peak_mib(spark)
    spark.stop()
    groups = report.groups_planned
    process = report.phase_seconds["process"]
    work = float(composites["processing_seconds"].sum()) if report.groups_processed else 0.0
    return {
        "groups": groups,
        "processed": report.groups_processed,
        "skipped": report.groups_skipped,
        "failed": report.groups_failed,
        # Not "wall_seconds": the harness adds that key for the whole child process (JVM start too).
        "run_seconds": wall,
        "phase_seconds": report.phase_seconds,
        "driver_seconds": wall - process,
        "driver_seconds_per_group": (wall - process) / groups,
        "group_seconds_sum": work,
        "spark_overhead_share": 1 - work / (SLOTS * process) if report.groups_processed else None,
        "python_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "jvm_peak_rss_mib": jvm,
    }


def child(kind: str, args: list[str]) -> dict[str, Any]:
    return {"archive": child_archive, "run": child_run}[kind](*args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000], help="groups per run")
    parser.add_argument("--work", type=Path, default=Path("bench/data"), help="data and scratch folder")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1:])))
        return 0
    if any(size % DAYS for size in args.sizes):
        parser.error(f"--sizes must be multiples of {DAYS} (groups = tiles x {DAYS} days)")
    work = args.work.resolve()
    most = max(args.sizes) // DAYS
    archive = run_child("archive", str(work), str(most))["root"]
    index = str(Path(archive) / "L2" / "index.csv.gz")
    all_tiles = run_child_json_tiles(most)
    record: dict[str, Any] = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **helper("environment"),
        "parameters": {"factor": FACTOR, "days": DAYS, "slots": SLOTS, "seed": SEED, "sizes": args.sizes},
        "runs": [],
    }
    for size in args.sizes:
        out = work / "driver_runs" / str(size)
        shutil.rmtree(out, ignore_errors=True)
        chosen = ",".join(all_tiles[: size // DAYS])
        for attempt in ("first", "rerun"):
            measured = measure(
                [sys.executable, str(Path(__file__).resolve()), "--child", "run", index, str(out), chosen]
            )
            record["runs"].append({"size": size, "attempt": attempt, **measured})
            log(
                f"{size} groups, {attempt}: wall {measured['wall_seconds']:.1f} s, driver "
                f"{measured['driver_seconds_per_group'] * 1000:.1f} ms/group, python "
                f"{measured['python_peak_rss_mib']:.0f} MiB, jvm {measured['jvm_peak_rss_mib']:.0f} MiB"
            )
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(record, indent=2) + "\n")
    return 0


def run_child(kind: str, *args: str) -> dict[str, Any]:
    return measure([sys.executable, str(Path(__file__).resolve()), "--child", kind, *args])


def run_child_json_tiles(count: int) -> list[str]:
    # The tile list needs evi_udf (pyproj): computed in a child, as the harness imports only the
    # standard library.
    import subprocess

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(BENCH)!r}); import driver, json; "
            f"print(json.dumps(driver.tiles({count})))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(done.stdout)


if __name__ == "__main__":
    sys.exit(main())
