"""The index at real size: selection and planning on millions of rows, against DuckDB on the same files.

A synthetic index with the real 14 columns is generated (``--rows`` rows over 20,000 MGRS tiles,
2017-2025, values shaped like the real ones: product ids with baselines and generation times, UTM
zones 1-60, cloud cover 0-100, a few hundred corrupt lines with the wrong field count spread over
the world), written as ``index.csv.gz`` and converted to the partitioned Parquet cache
(``write_index_parquet``, Spark ``local[2]``; DuckDB's ``COPY ... PARTITION_BY`` for comparison).
Then, on both files, the query a user plans: one year, 5 tiles, cloud cover < 30, monthly groups.

* ``spark``: :func:`evi_udf.index.catalog.select_scenes` + :func:`~evi_udf.index.catalog.plan_groups` + the
  rejected rows (what ``make plan`` runs), in a session already started (JVM start excluded, and
  measured separately);
* ``duckdb``: the same filter and grouping in SQL over the same file (its own single process, 2
  threads), with no deduplication or validation (a lower bound on any engine's time).

Each measurement is a fresh child process, ``--repeat`` times (medians). Targets: plan within 2x of
DuckDB on the Parquet cache; the conversion reported with its peak memory.

    .venv/bin/python bench/index_size.py [--rows 5000000] [--repeat 2] [--work bench/data]

Results go to ``bench/results/index_size.json``; ``bench/report.py`` writes them into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from speed import _own_peak, helper, jvm_peak_mib, log, measure  # noqa: E402

RESULTS = REPO / "bench" / "results" / "index_size.json"
TILES = 20_000
SEED = 5
YEAR = 2023
QUERY_TILES = 5
MAX_CLOUD = 30.0
CORRUPT_LINES = 300
CHUNK_ROWS = 2_500_000
PLAN_TARGET = 2.0
BANDS = "CDEFGHJKLMNPQRSTUVWX"  # latitude bands, 8 degrees each from 80 S
COLUMN_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"


def tile_names(count: int) -> list[str]:
    """``count`` distinct well-formed MGRS tile names spread over the 60 zones and 20 bands."""
    names: list[str] = []
    index = 0
    while len(names) < count:
        zone = index % 60 + 1
        band = BANDS[(index // 60) % len(BANDS)]
        square = index // (60 * len(BANDS))
        column = COLUMN_LETTERS[square % len(COLUMN_LETTERS)]
        row = ROW_LETTERS[(square // len(COLUMN_LETTERS)) % len(ROW_LETTERS)]
        names.append(f"{zone:02d}{band}{column}{row}")
        index += 1
    return names


def synthetic_rows(rng: Any, names: Any, count: int) -> Any:
    """``count`` index rows as a pyarrow table of text columns (vectorized)."""
    import numpy as np
    import pyarrow as pa

    tile_index = rng.integers(0, TILES, count)
    tiles = names[tile_index]
    zones = tile_index % 60 + 1
    bands = (tile_index // 60) % len(BANDS)
    start = np.datetime64("2017-01-01T00:00:00", "ms")
    span_ms = (np.datetime64("2026-01-01T00:00:00", "ms") - start).astype(np.int64)
    sensing = start + rng.integers(0, span_ms, count).astype("timedelta64[ms]")
    generation = sensing + rng.integers(3_600_000, 30 * 86_400_000, count).astype("timedelta64[ms]")
    baselines = np.array(["N0214", "N0400", "N0500", "N0510"])[rng.integers(0, 4, count)]
    satellites = np.array(["S2A", "S2B"])[rng.integers(0, 2, count)]
    sensing_text = np.datetime_as_string(sensing, unit="us").astype(object) + "Z"
    generation_text = np.datetime_as_string(generation, unit="us").astype(object) + "Z"

    def compact_time(values: np.ndarray) -> np.ndarray:
        text = np.datetime_as_string(values, unit="s")
        return np.char.replace(np.char.replace(text, "-", ""), ":", "").astype(object)

    def padded(values: np.ndarray, width: int) -> np.ndarray:
        return np.char.zfill(values.astype(str), width).astype(object)

    compact, generated = compact_time(sensing), compact_time(generation)
    orbit = rng.integers(1, 144, count)
    absolute = rng.integers(1000, 45000, count)
    south = -80.0 + bands * 8.0 + rng.uniform(0, 7, count)
    west = -180.0 + (zones - 1) * 6.0 + rng.uniform(0, 5, count)
    baseline_text = baselines.astype(object)
    satellite_text = satellites.astype(object)
    tile_text = tiles.astype(object)
    product = (
        satellite_text
        + "_MSIL2A_"
        + compact
        + "_"
        + baseline_text
        + "_R"
        + padded(orbit, 3)
        + "_T"
        + tile_text
    ) + ("_" + generated)
    granule = "L2A_T" + tile_text + "_A" + padded(absolute, 6) + "_" + compact
    datatake = (
        "G"
        + satellite_text
        + "_"
        + compact
        + "_"
        + padded(absolute, 6)
        + "_"
        + np.vectorize(lambda b: f"{b[:3]}.{b[3:]}", otypes=[object])(baselines)
    )
    table = pa.table(
        {
            "GRANULE_ID": granule,
            "PRODUCT_ID": product,
            "DATATAKE_IDENTIFIER": datatake,
            "MGRS_TILE": tiles,
            "SENSING_TIME": sensing_text,
            "TOTAL_SIZE": rng.integers(100_000_000, 900_000_000, count).astype(str),
            "CLOUD_COVER": np.char.mod("%.6f", rng.uniform(0, 100, count)),
            "GEOMETRIC_QUALITY_FLAG": np.array(["PASSED", "PASSED", "PASSED", ""])[rng.integers(0, 4, count)],
            "GENERATION_TIME": generation_text,
            "NORTH_LAT": np.char.mod("%.7f", south + 1.0),
            "SOUTH_LAT": np.char.mod("%.7f", south),
            "WEST_LON": np.char.mod("%.7f", west),
            "EAST_LON": np.char.mod("%.7f", west + 1.3),
            "BASE_URL": "gs://gcp-public-data-sentinel-2/L2/tiles/" + tile_text + "/" + product + ".SAFE",
        }
    )
    return table


def child_generate(path: str, rows: str) -> dict[str, Any]:
    """Write the synthetic ``index.csv.gz`` in chunks of :data:`CHUNK_ROWS` rows (so 20M rows fit in
    memory), each followed by its share of the corrupt lines (a field too many)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from evi_udf.index.columns import INDEX_COLUMNS

    count = int(rows)
    rng = np.random.default_rng(SEED)
    names = np.array(tile_names(TILES))
    destination = Path(path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    corrupt_written = 0
    with pa.CompressedOutputStream(str(destination), "gzip") as stream:
        # The header as the real index spells it (pyarrow would quote the names).
        stream.write((",".join(INDEX_COLUMNS) + "\n").encode())
        for first in range(0, count, CHUNK_ROWS):
            chunk = min(CHUNK_ROWS, count - first)
            table = synthetic_rows(rng, names, chunk)
            assert tuple(table.column_names) == INDEX_COLUMNS
            pacsv.write_csv(table, stream, pacsv.WriteOptions(include_header=False, quoting_style="none"))
            corrupt = CORRUPT_LINES * (first + chunk) // count - corrupt_written
            lines = [
                ",".join(str(table.column(c)[int(i)]) for c in table.column_names) + ",extra"
                for i in rng.integers(0, chunk, corrupt)
            ]
            stream.write(("\n".join(lines) + "\n").encode() if lines else b"")
            corrupt_written += corrupt
    return {"rows": count, "corrupt_lines": corrupt_written, "seconds": time.perf_counter() - started}


def query_tiles() -> list[str]:
    return tile_names(TILES)[1000 : 1000 + QUERY_TILES]


def child_convert_spark(csv: str, cache: str) -> dict[str, Any]:
    from evi_udf.index.cache import write_index_parquet
    from evi_udf.run.session import build_session

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = build_session("evi-bench-index", master="local[2]")
    started = time.perf_counter()
    summary = write_index_parquet(spark, csv, cache)
    seconds = time.perf_counter() - started
    jvm = jvm_peak_mib(spark)
    spark.stop()
    return {"seconds": seconds, "rows": summary.rows, "jvm_peak_rss_mib": jvm, **_own_peak()}


def child_convert_duckdb(csv: str, cache: str) -> dict[str, Any]:
    import duckdb

    shutil.rmtree(cache, ignore_errors=True)
    connection = duckdb.connect()
    connection.execute("SET threads = 2")
    started = time.perf_counter()
    connection.execute(
        f"""COPY (SELECT *, substr(MGRS_TILE, 1, 2) AS utm_zone_part,
            substr(SENSING_TIME, 1, 4) AS sensing_year
        FROM read_csv('{csv}', all_varchar = true, header = true, ignore_errors = true))
        TO '{cache}' (FORMAT parquet, PARTITION_BY (utm_zone_part, sensing_year))"""
    )
    return {"seconds": time.perf_counter() - started, **_own_peak()}


def catalog_config(index: str, driver_selection_max_rows: int) -> Any:
    """The benchmark's query as catalog settings."""
    from evi_udf.config import CatalogConfig

    return CatalogConfig(
        index_uri=index,
        start_date=dt.date(YEAR, 1, 1),
        end_date=dt.date(YEAR, 12, 31),
        tiles=tuple(query_tiles()),
        max_cloud_cover=MAX_CLOUD,
        geometric_quality="any",
        period="month",
        driver_selection_max_rows=driver_selection_max_rows,
    )


def child_plan_driver(index: str, output_root: str) -> dict[str, Any]:
    """What ``make plan`` runs on a local cache: selection on the driver, the ledger listed, no Spark."""
    import dataclasses

    from evi_udf.cli.plan import plan_table
    from evi_udf.config import ZonesConfig, load_config
    from evi_udf.index.arrow import driver_selection_applies

    def no_spark() -> Any:
        raise SystemExit("the plan asked for a Spark session")

    base = load_config(str(REPO / "conf" / "local.yaml"))
    catalog = catalog_config(index, 2_000_000)
    # The plan of the index alone: no zones (conf/local.yaml names the sample's).
    config = dataclasses.replace(
        base, catalog=catalog, output=dataclasses.replace(base.output, root=output_root), zones=ZonesConfig()
    )
    started = time.perf_counter()
    groups, rejected = plan_table(config, no_spark)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "on_driver": driver_selection_applies(catalog),
        "groups": len(groups),
        "scenes": int(groups["scenes"].sum()),
        "rejected": int(rejected["count"].sum()),
        **_own_peak(),
    }


def child_plan_spark(index: str) -> dict[str, Any]:
    from evi_udf.index.catalog import plan_groups, select_scenes
    from evi_udf.run.session import build_session

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    started = time.perf_counter()
    spark = build_session("evi-bench-index", master="local[2]")
    spark.range(1).count()  # the JVM and its first job started
    session_seconds = time.perf_counter() - started
    config = catalog_config(index, 0)  # always in Spark, as for a cache in gs://
    started = time.perf_counter()
    selection = select_scenes(spark, config)
    groups = plan_groups(selection)
    rejected = selection.rejected.count()
    seconds = time.perf_counter() - started
    jvm = jvm_peak_mib(spark)
    spark.stop()
    return {
        "seconds": seconds,
        "session_seconds": session_seconds,
        "groups": len(groups),
        "scenes": int(groups["scene_count"].sum()),
        "rejected": int(rejected),
        "jvm_peak_rss_mib": jvm,
        **_own_peak(),
    }


def child_plan_duckdb(index: str) -> dict[str, Any]:
    import duckdb

    tiles = ", ".join(f"'{t}'" for t in query_tiles())
    if index.endswith(".parquet"):
        source = f"read_parquet('{index}/*/*/*.parquet', hive_partitioning = true)"
    else:
        source = f"read_csv('{index}', all_varchar = true, header = true, ignore_errors = true)"
    connection = duckdb.connect()
    connection.execute("SET threads = 2")
    started = time.perf_counter()
    rows = connection.execute(
        f"""SELECT MGRS_TILE, substr(SENSING_TIME, 1, 7) AS month, count(*) AS scenes
        FROM {source}
        WHERE MGRS_TILE IN ({tiles}) AND SENSING_TIME >= '{YEAR}-01-01' AND SENSING_TIME < '{YEAR + 1}-01-01'
          AND TRY_CAST(CLOUD_COVER AS DOUBLE) <= {MAX_CLOUD}
        GROUP BY ALL"""
    ).fetchall()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "groups": len(rows), "scenes": sum(r[2] for r in rows), **_own_peak()}


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians of each engine's runs and their ratios to DuckDB's (in-process and whole-command)."""

    def median(engine: str, key: str) -> float:
        return statistics.median([r[key] for r in runs[engine]])

    duck, duck_wall = median("duckdb", "seconds"), median("duckdb", "wall_seconds")
    summary: dict[str, Any] = {
        "runs": runs,
        "duckdb_seconds": duck,
        "duckdb_wall_seconds": duck_wall,
        "spark_seconds": median("spark", "seconds"),
        "ratio": median("spark", "seconds") / duck,
        "session_seconds": median("spark", "session_seconds"),
        "same_scenes": runs["spark"][0]["scenes"] == runs["duckdb"][0]["scenes"],
    }
    if runs["driver"]:
        summary.update(
            driver_seconds=median("driver", "seconds"),
            driver_wall_seconds=median("driver", "wall_seconds"),
            driver_ratio=median("driver", "seconds") / duck,
            driver_wall_ratio=median("driver", "wall_seconds") / duck_wall,
            driver_peak_rss_mib=median("driver", "peak_rss_mib"),
            on_driver=all(r["on_driver"] for r in runs["driver"]),
            same_scenes=summary["same_scenes"] and runs["driver"][0]["scenes"] == runs["duckdb"][0]["scenes"],
        )
    return summary


CHILDREN = {
    "generate": child_generate,
    "convert_spark": child_convert_spark,
    "convert_duckdb": child_convert_duckdb,
    "plan_driver": child_plan_driver,
    "plan_spark": child_plan_spark,
    "plan_duckdb": child_plan_duckdb,
}


def run(kind: str, *args: str) -> dict[str, Any]:
    return measure([sys.executable, str(Path(__file__).resolve()), "--child", kind, *args])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[5_000_000], help="index sizes")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement (medians)")
    parser.add_argument("--work", type=Path, default=Path("bench/data"), help="data and scratch folder")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument(
        "--reuse-conversions",
        action="store_true",
        help="keep the caches and conversion figures of the previous results for sizes already converted",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](*args.child[1:])))
        return 0
    work = args.work.resolve()
    previous_record = json.loads(args.output.read_text()) if args.output.exists() else {}
    previous = {size["rows"]: size for size in previous_record.get("sizes", [])}
    previous_when = previous_record.get("when", "?")
    record: dict[str, Any] = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **helper("environment"),
        "parameters": {
            "tiles": TILES,
            "query": f"{YEAR}, {QUERY_TILES} tiles, cloud <= {MAX_CLOUD:g}, monthly",
            "repeat": args.repeat,
            "seed": SEED,
        },
        "sizes": [],
    }
    for rows in args.rows:
        folder = work / f"index_{rows}"
        csv = folder / "index.csv.gz"
        if not (folder / ".complete").exists():
            shutil.rmtree(folder, ignore_errors=True)
            log(f"generating {csv}")
            run("generate", str(csv), str(rows))
            (folder / ".complete").write_text("done\n")
        size: dict[str, Any] = {"rows": rows, "csv_bytes": csv.stat().st_size}
        earlier = previous.get(rows, {})
        converted = (folder / "index.parquet" / "_SUCCESS").exists() and "convert_spark" in earlier
        if args.reuse_conversions and converted:
            log(f"{rows} rows: conversions of {earlier.get('converted_when', previous_when)} reused")
            size["convert_spark"], size["convert_duckdb"] = (
                earlier["convert_spark"],
                earlier["convert_duckdb"],
            )
            size["converted_when"] = earlier.get("converted_when", previous_when)
        else:
            log(f"{rows} rows: converting")
            size["convert_spark"] = run("convert_spark", str(csv), str(folder / "index.parquet"))
            size["convert_duckdb"] = run("convert_duckdb", str(csv), str(folder / "duckdb.parquet"))
            size["converted_when"] = record["when"]
        ledger_root = work / "plan-out"
        ledger_root.mkdir(parents=True, exist_ok=True)
        for source, path in (("parquet", folder / "index.parquet"), ("csv", csv)):
            runs: dict[str, list[dict[str, Any]]] = {"spark": [], "duckdb": [], "driver": []}
            for _ in range(args.repeat):
                if source == "parquet":
                    runs["driver"].append(run("plan_driver", str(path), str(ledger_root)))
                runs["spark"].append(run("plan_spark", str(path)))
                runs["duckdb"].append(run("plan_duckdb", str(path)))
            size[source] = summarize(runs)
            log(
                f"{rows} rows, {source}: {json.dumps({k: v for k, v in size[source].items() if k != 'runs'})}"
            )
        size["target"] = PLAN_TARGET
        size["met"] = size["parquet"]["driver_ratio"] <= PLAN_TARGET
        record["sizes"].append(size)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
