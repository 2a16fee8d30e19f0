"""Rewrite BENCHMARKS.md from the measurements in bench/results/*.json.

.venv/bin/python bench/report.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path("bench/results")
TARGET = Path("BENCHMARKS.md")
MEMORY_LIMIT_MIB = 1536
# Targets of the benchmarks issue.
OURS_OVER_DECODE_TARGET = 1.3
ALTERNATIVE_OVER_OURS_TARGET = 3.0
METHOD_NAMES = {
    "decode": "decode only",
    "ours": "ours (`process_group`)",
    "naive": "naive numpy script",
    "gdal_cli": "GDAL CLI pipeline",
}


def memory_section(record: dict) -> list[str]:
    lines = [
        "## Peak memory of the raster core (`bench/memory.py`)",
        "",
        f"Measured {record['when']} on {record['machine']['cpus']} CPUs, "
        f"Python {record['machine']['python']}, {record['machine']['platform']}.",
        "",
        f"Data: the sample archive (`evi_udf.sample.generate`, seed 11), tile {record['tile']}, "
        f"{record['scenes']} L2A scenes "
        "(baselines 02.14 and a 05.10 reprocessing, deduplicated by the catalog), at resolution factors "
        "1 (full 10980 x 10980 px bands) and 2.",
        "",
        "Method: one fresh child process per run calls `process_group` (read, mask, EVI, median "
        "composite, COG, quick-look, STAC) with the default configuration "
        "(1024 px blocks, native grid, int16 zstd COG); "
        "peak RSS is the child's `ru_maxrss`. Target: < 1.5 GB at factor 1, about the same at factor 2.",
        "",
        "| factor | px per side | pixels | peak RSS (MiB) | share of 1.5 GB | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for row in record["results"]:
        lines.append(
            f"| {row['factor']} | {row['pixels_per_side']} | {row['pixels']:,} | {row['peak_rss_mib']:.0f} | "
            f"{row['peak_rss_mib'] / MEMORY_LIMIT_MIB:.0%} | {row['seconds']:.1f} |"
        )
    return lines


def gcs_read_section(record: dict) -> list[str]:
    lines = [
        "",
        "## Reading a band from GCS: download vs `/vsigs/` (`bench/gcs_read.py`)",
        "",
        f"Measured {record['when']}: band {record['band']} (full size, 10980 x 10980 px) uploaded to the GCS "
        "emulator on loopback, read block by block (1024 px) in a fresh process per run, through a proxy "
        "that counts HTTP requests and response bytes. Loopback has no latency, so the times (equal within "
        "noise) show only that neither way costs more CPU; on real GCS each request is a round trip of "
        "tens of milliseconds.",
        "",
        "| mode | requests | bytes transferred | bytes / file size | time (s) |",
        "|---|---|---|---|---|",
    ]
    for row in record["results"]:
        lines.append(
            f"| {row['mode']} | {row['requests']} | {row['bytes']:,} | "
            f"{row['bytes'] / row['file_bytes']:.3f} | {row['seconds']:.1f} |"
        )
    lines += [
        "",
        "Decision: download whole bands (`evi_udf.storage.Storage.fetch`, CRC32C-verified). The pipeline "
        "decodes every tile, so `/vsigs/` moves slightly more bytes in ~70x more requests, and it would "
        "authenticate through GDAL's own GCS code instead of the client library's Application Default "
        "Credentials. Cost: executor disk for one group's bands.",
    ]
    return lines


def _month_times(record: dict) -> str:
    """When each month was measured (``--profiles`` re-measures some months and keeps the others)."""
    times = {name: month.get("when", record["when"]) for name, month in record["months"].items()}
    if len(set(times.values())) == 1:
        return next(iter(times.values()))
    return ", ".join(f"{when} ({name})" for name, when in times.items())


def mask_skip_section(record: dict) -> list[str]:
    """Mask-first decoding on a clear and a cloudy month (``bench/mask_skip.py``)."""
    parameters, machine = record["parameters"], record["machine"]
    px = 10980 // parameters["factor"]
    lines = [
        "",
        "## Decoding only what can contribute: a clear and a cloudy month (`bench/mask_skip.py`)",
        "",
        f"Measured {_month_times(record)} on {machine['cpus']} CPUs ({machine['cpu_model']}). Data: one "
        f"tile-month of {parameters['scenes']} L2A acquisitions of the sample generator (seed "
        f"{parameters['seed']}, factor {parameters['factor']}: {px} x {px} px bands in 1024 px JPEG2000 "
        "tiles) per cloud profile: "
        "`clear` (a dry month) and `cloudy` (a fifth of the dates nearly clear, the rest 40-90 % cloud in "
        "cells tens to hundreds of km across), scenes with index CLOUD_COVER <= 90 %. Each run is a fresh "
        f"child process, methods interleaved, {parameters['repeat']} runs each (medians), inputs in the page "
        "cache. `decode` decodes B02, B04, B08 and SCL of every block of every scene (the floor of any "
        "pipeline that decodes everything); `ours` is `process_group` with the default configuration (SCL "
        "read first, a block's bands decoded only where SCL keeps a pixel); `ours, decode all` sets "
        "`raster.skip_masked_blocks: false`. Overcast blocks are counted from the SCL files with numpy.",
        "",
        "| month | index cloud cover of the scenes (%) | blocks SCL keeps no pixel of | decode (s) "
        "| ours (s) | ours, decode all (s) | ours / decode | target | ours / ours decode all "
        "| identical outputs | peak RSS ours (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, month in record["months"].items():
        medians = month["medians"]
        lines.append(
            f"| {name} | {', '.join(f'{c:g}' for c in month['cloud_cover'])} | "
            f"{month['overcast_blocks']} of {month['blocks']} "
            f"({month['overcast_blocks'] / month['blocks']:.0%}) | "
            f"{medians['decode']['seconds']:.1f} | {medians['ours']['seconds']:.1f} | "
            f"{medians['ours_decode_all']['seconds']:.1f} | {month['ours_over_decode']:.2f} | "
            f"<= {month['target']} ({_met(month['met'])}) | {month['ours_over_decode_all']:.2f} | "
            f"{'yes' if month['identical_outputs'] else '**no**'} | {medians['ours']['peak_rss_mib']:.0f} |"
        )
    if all("odc" in month["medians"] for month in record["months"].values()):
        lines += [
            "",
            "The odc-stac peer (`bench/odc_peer.py`), in the same interleaved runs: STAC items of the same "
            "scenes (per-asset grids, the products' BOA offsets), `odc.stac.load` on the tile's 10 m grid in "
            "2048 px dask chunks (SCL by nearest neighbour), the same pixel rules, EVI per acquisition in "
            "float32, `median(skipna)` over time and odc-geo `write_cog`, on dask's threaded scheduler with "
            "2 threads. Its time is load to COG written (making the items is not counted). Targets on the "
            "cloudy month: ours >= 2x faster, < 1/3 of its peak RSS.",
            "",
            "| month | odc-stac (s) | ours (s) | odc-stac / ours | peak RSS odc-stac (MiB) "
            "| ours / odc-stac RSS | pixels equal to ours | validity agreement | max abs difference "
            "| target |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, month in record["months"].items():
            medians, agreement = month["medians"], month["odc_agreement"]
            target = "-"
            if "odc_met" in month:
                faster = month["odc_over_ours"] >= 2
                smaller = month["ours_rss_over_odc"] < 1 / 3
                target = f"2x faster: {_met(faster)}; < 1/3 memory: {_met(smaller)}"
            lines.append(
                f"| {name} | {medians['odc']['seconds']:.1f} | {medians['ours']['seconds']:.1f} | "
                f"{month['odc_over_ours']:.2f} | {medians['odc']['peak_rss_mib']:.0f} | "
                f"{month['ours_rss_over_odc']:.2f} | {agreement['share_equal']:.4%} | "
                f"{agreement['validity_agreement']:.4%} | {agreement['max_abs_difference']:.2g} | {target} |"
            )
    return lines


def levels_section(record: dict) -> list[str]:
    """Coarse outputs from JPEG2000 resolution levels (``bench/levels.py``)."""
    parameters, machine = record["parameters"], record["machine"]
    band = parameters["band_metres"]
    coarse = parameters["coarse"]
    lines = [
        "",
        "## Coarse outputs from JPEG2000 resolution levels (`bench/levels.py`)",
        "",
        f"Measured {record['when']} on {machine['cpus']} CPUs ({machine['cpu_model']}). Data: the clear "
        f"and cloudy months above ({parameters['scenes']} acquisitions, factor {parameters['factor']}: "
        f"bands of {band} m, so every resolution is scaled by {parameters['factor']}: the output {coarse}x "
        f"coarser than the bands ({coarse * band} m here) stands for 60 m from real 10 m bands). Fresh "
        "child per run, "
        f"methods interleaved, {parameters['repeat']} runs each (medians). `native`: the composite on the "
        f"tile's grid (the \"10 m\" output). `levels`: a shared grid {coarse}x coarser in the tile's CRS, "
        "anchored at its corner, default `raster.coarse_reads: resolution_levels` (bands decoded at their "
        '4x level, the "40 m" one, composite averaged onto the grid); `full`: the same grid with '
        '`coarse_reads: full` (bands decoded whole, the "10 m" composite averaged onto the grid: the '
        "reference for the difference; both coarse runs use `raster.resampling: average`). Target: "
        "`levels` >= 5x faster than `native`.",
        "",
        "| month | native (s) | levels (s) | full (s) | native / levels | target | full / levels "
        "| peak RSS native / levels (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, month in record["months"].items():
        medians = month["medians"]
        lines.append(
            f"| {name} | {medians['native']['seconds']:.1f} | {medians['levels']['seconds']:.1f} | "
            f"{medians['full']['seconds']:.1f} | {month['native_over_levels']:.1f} | "
            f">= {month['target']:g} ({_met(month['met'])}) | {month['full_over_levels']:.1f} | "
            f"{medians['native']['peak_rss_mib']:.0f} / {medians['levels']['peak_rss_mib']:.0f} |"
        )
    lines += [
        "",
        "Difference of the EVI of averaged reflectance (`levels`) to the averaged EVI (`full`), per "
        "output pixel where both have a value. It mixes three effects: EVI is not linear, so the EVI of a "
        "mean differs from the mean of EVIs where a coarse pixel holds different covers; a coarse pixel "
        "is kept only if the mask keeps all of it, while `full` averages whatever 10 m pixels are clear "
        "(so near clouds the two use different scenes); and the median is taken before averaging in "
        "`full`, after it in `levels`.",
        "",
        "| month | pixels with a value (levels / full) | median abs | p90 | p95 | p99 | max | mean "
        "(levels - full) | within 0.01 / 0.02 / 0.05 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, month in record["months"].items():
        diff = month["difference"]
        p = diff["abs_percentiles"]
        within = diff["share_within"]
        lines.append(
            f"| {name} | {diff['valid_levels']} / {diff['valid_full']} of {diff['pixels']} | "
            f"{p['50']:.4f} | {p['90']:.4f} | {p['95']:.4f} | {p['99']:.4f} | {p['100']:.4f} | "
            f"{diff['mean_difference']:+.4f} | {within['0.01']:.0%} / {within['0.02']:.0%} / "
            f"{within['0.05']:.0%} |"
        )
    return lines


def index_size_section(record: dict) -> list[str]:
    """The index at real size against DuckDB (``bench/index_size.py``)."""
    parameters, machine = record["parameters"], record["machine"]
    lines = [
        "",
        "## The index at real size, against DuckDB (`bench/index_size.py`)",
        "",
        f"Measured {record['when']} on {machine['cpus']} CPUs ({machine['cpu_model']}). A synthetic index "
        f"with the real 14 columns over {parameters['tiles']:,} MGRS tiles, 2017-2025, a few hundred "
        "corrupt lines spread over it; the query: "
        f"{parameters['query']}. `make plan`: `evi_udf.cli.plan.plan_table` (selection, groups, the ledger "
        "listed, rejected rows); on the local Parquet cache it selects on the driver with pyarrow and "
        "the pandas rules and starts no Spark (`catalog.driver_selection_max_rows`), on the CSV it "
        "runs in Spark. `spark selection`: `select_scenes` + `plan_groups` + the rejected rows in a "
        "`local[2]` session already started (its start, JVM and first job, is given apart), which is "
        "how a job selects from a cache in `gs://` or a CSV. `duckdb`: the same filter and grouping in "
        "SQL on the same file, 2 threads, no validation or deduplication. Query seconds are measured "
        "inside the process after its imports; command seconds are the whole process (interpreter, "
        f"imports, query). Fresh child per run, {parameters['repeat']} runs each (medians). Targets: "
        "`make plan` within 2x of DuckDB and the job's selection within 3x, on the Parquet cache.",
        "",
        "| rows | file | make plan (s) | make plan command (s) | duckdb query / command (s) "
        "| plan / duckdb (query, command) | spark selection (s) | spark / duckdb | session start (s) "
        "| scenes ours / duckdb | rejected rows | target plan <= 2x, selection <= 3x |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in record["sizes"]:
        for source in ("parquet", "csv"):
            data = size[source]
            first_spark, first_duck = data["runs"]["spark"][0], data["runs"]["duckdb"][0]
            duck = f"{data['duckdb_seconds']:.2f} / {data['duckdb_wall_seconds']:.2f}"
            if source == "parquet" and "driver_seconds" in data:
                plan = f"{data['driver_seconds']:.2f}"
                command = f"{data['driver_wall_seconds']:.2f}"
                ratios = f"{data['driver_ratio']:.1f} / {data['driver_wall_ratio']:.1f}"
                selection_met = data["driver_ratio"] <= 3.0
                target = (
                    f"plan: {_met(size['met'])}; selection on the driver (as the plan): "
                    f"{_met(selection_met)}; in Spark: {_met(data['ratio'] <= 3.0)}"
                )
            else:
                plan, command, ratios = (
                    f"{data['spark_seconds']:.1f} (Spark)",
                    "-",
                    f"{data['ratio']:.1f} / -",
                )
                target = "-"
            lines.append(
                f"| {size['rows']:,} | {source} | {plan} | {command} | {duck} | {ratios} | "
                f"{data['spark_seconds']:.1f} | {data['ratio']:.1f} | {data['session_seconds']:.1f} | "
                f"{first_spark['scenes']} / {first_duck['scenes']} | {first_spark['rejected']} | {target} |"
            )
    lines += [
        "",
        "Converting the CSV.gz into the partitioned Parquet cache (when measured: "
        + ", ".join(
            f"{size['rows']:,} rows {size.get('converted_when', record['when'])}" for size in record["sizes"]
        )
        + "):",
        "",
        "| rows | CSV.gz (MB) | spark (s) | spark JVM peak RSS (MiB) | duckdb (s) | duckdb peak RSS (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for size in record["sizes"]:
        spark, duck = size["convert_spark"], size["convert_duckdb"]
        lines.append(
            f"| {size['rows']:,} | {size['csv_bytes'] / 1e6:.0f} | {spark['seconds']:.0f} | "
            f"{spark['jvm_peak_rss_mib']:.0f} | {duck['seconds']:.0f} | {duck['peak_rss_mib']:.0f} |"
        )
    return lines


def zones_section(record: dict) -> list[str]:
    """Zone statistics in the block walk: 100,000 zones on a tile (``bench/zones.py``)."""
    parameters, machine = record["parameters"], record["machine"]
    with_runs = record["runs"]["with"]
    first = with_runs[0]
    return [
        "",
        "## Zone statistics: 100,000 fields on one tile (`bench/zones.py`)",
        "",
        f"Measured {record['when']} on {machine['cpus']} CPUs ({machine['cpu_model']}). `process_group` on "
        f"{parameters['tile']} ({parameters['pixels']} px, {parameters['scenes']} L2A scenes of the clear "
        f"sample month), without zones and with {parameters['zones']:,} random fields (20-150 m squares and "
        "triangles, 1 % farms of 0.5-2 km over them) inside the tile: per-zone statistics of every scene and "
        "of the composite from the same blocks. Fresh child per run, alternating, "
        f"{parameters['repeat']} runs each (medians). Target: at most {record['target']:g}x the time "
        "without zones.",
        "",
        "| zones | time without (s) | time with (s) | ratio | target | peak RSS without / with (MiB) "
        "| read zones (s) | prepare on the tile (s) | layers | zones drawn with every touched pixel "
        "| zones with pixels |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {parameters['zones']:,} | {record['seconds_without']:.1f} | {record['seconds_with']:.1f} | "
        f"{record['ratio']:.2f} | <= {record['target']:g} ({_met(record['met'])}) | "
        f"{record['peak_rss_mib_without']:.0f} / {record['peak_rss_mib_with']:.0f} | "
        f"{first['read_seconds']:.1f} | {first['prepare_seconds']:.1f} | {first['layers']} | "
        f"{first['drawn_with_every_touched_pixel']:,} | {first['zones_with_pixels']:,} |",
    ]


def driver_section(record: dict) -> list[str]:
    """The driver's cost per group at 100 and 1,000 groups (``bench/driver.py``)."""
    parameters, machine = record["parameters"], record["machine"]
    lines = [
        "",
        "## The driver's cost per group: 100 and 1,000 tiny groups (`bench/driver.py`)",
        "",
        f"Measured {record['when']} on {machine['cpus']} CPUs ({machine['cpu_model']}). The whole job "
        f"(`evi_udf.run.job.run`, `local[{parameters['slots']}]`, Parquet sink) on groups of one "
        f"{10980 // parameters['factor']} x {10980 // parameters['factor']} px L2A scene each (tiles x "
        f"{parameters['days']} daily periods), so that the groups' own work is small and what grows with "
        "the number of groups shows: driver seconds are the run's wall time outside the processing job "
        "(plan, load, clean, STAC, mosaic), from the run report's phase timings; the Spark overhead share "
        "is 1 - the groups' summed processing seconds / (slots x the processing job's wall time). Each "
        "size runs in a fresh process twice: a first run that makes every group, then a rerun that finds "
        "them all done. Target: driver time per group and peak RSS flat from 100 to 1,000 groups.",
        "",
        "| groups | run | run wall (s) | driver (s) | driver per group (ms) "
        "| plan / load / clean / stac / mosaic (s) | Spark overhead share "
        "| peak RSS Python driver (MiB) | peak RSS JVM (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["runs"]:
        phases = row["phase_seconds"]
        steps = " / ".join(f"{phases.get(p, 0):.1f}" for p in ("plan", "load", "clean", "stac", "mosaic"))
        share = row["spark_overhead_share"]
        lines.append(
            f"| {row['groups']} | {row['attempt']} | {row['driver_seconds'] + phases['process']:.1f} | "
            f"{row['driver_seconds']:.1f} | "
            f"{row['driver_seconds_per_group'] * 1000:.1f} | {steps} | "
            f"{'-' if share is None else f'{share:.0%}'} | {row['python_peak_rss_mib']:.0f} | "
            f"{row['jvm_peak_rss_mib']:.0f} |"
        )
    firsts = sorted((r for r in record["runs"] if r["attempt"] == "first"), key=lambda r: r["groups"])
    if len(firsts) >= 2:
        small, large = firsts[0], firsts[-1]
        marginal = (large["driver_seconds"] - small["driver_seconds"]) / (large["groups"] - small["groups"])
        per_group = large["driver_seconds_per_group"] <= small["driver_seconds_per_group"] * 1.1
        python = large["python_peak_rss_mib"] / small["python_peak_rss_mib"]
        jvm = large["jvm_peak_rss_mib"] / small["jvm_peak_rss_mib"]
        load = (large["phase_seconds"]["load"] - small["phase_seconds"]["load"]) / (
            large["groups"] - small["groups"]
        )
        before = small["driver_seconds_per_group"] * 1000
        after = large["driver_seconds_per_group"] * 1000
        lines += [
            "",
            f"From {small['groups']} to {large['groups']} groups (first runs): driver time per group "
            f"{before:.0f} -> {after:.0f} ms ({_met(per_group)}: a fixed ~{small['driver_seconds']:.0f} s, "
            f"mostly planning, plus {marginal * 1000:.0f} ms per extra group, {load * 1000:.0f} ms of it in "
            "the load step, which writes one Parquet part per commit and table); peak RSS "
            f"x{python:.1f} for the Python driver ({_met(python <= 1.2)}: it grows with what the run "
            "collects from its tasks, result rows and mosaic pieces; not profiled further yet) and "
            f"x{jvm:.2f} for the JVM ({_met(jvm <= 1.2)}).",
        ]
    return lines


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def speed_section(record: dict) -> list[str]:
    """The speed section: times, ratios, peak RSS, equality of outputs and the Spark overhead."""
    machine, versions, parameters = record["machine"], record["versions"], record["parameters"]
    lines = [
        "## Speed per tile: decoding limit, ours, and what users would write instead (`bench/speed.py`)",
        "",
    ]
    if not record.get("complete", True):
        lines += ["**Partial run: the command did not finish; the tables hold what was measured.**", ""]
    lines += [
        f"Measured {record['when']} on {machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB RAM, {machine['os']} ({machine['platform']}).",
        "",
        f"Versions: Python {versions['python']}, numpy {versions['numpy']}, rasterio {versions['rasterio']} "
        f"(GDAL {versions['rasterio_gdal']} of the wheel, used by ours, decode-only and the naive script), "
        f"PySpark {versions['pyspark']}, {versions['java']}; the CLI pipeline uses Debian's "
        f"{versions['debian_gdal']} (gdal-bin, python3-gdal) with Debian's numpy {versions['debian_numpy']}; "
        f"evi_udf {versions['evi_udf']} at commit {versions['commit']}.",
        "",
        f"Data: the sample archive (`evi_udf.sample.generate`, seed {parameters['seed']}, "
        f"`--scenes-per-tile {parameters['scenes_per_tile']}`), resolution factors "
        f"{', '.join(map(str, parameters['factors']))} (factor 1 = full 10980 x 10980 px bands). "
        "Per tile, the 3 L2A scenes the catalog selects (`period: all`, `geometric_quality: any`; the "
        "02.14 original of the reprocessed scene is deduplicated away, checked by the benchmark):",
        "",
    ]
    for tile, scenes in record["scenes"].items():
        listed = ", ".join(f"`{s['product_id']}` ({s['baseline']})" for s in scenes)
        lines.append(f"- {tile}: {listed}")
    lines += [
        "",
        f"Method: every measurement runs in a fresh child process, {parameters['repeat']} time(s) per method "
        "and factor, interleaved (decode, ours, naive, CLI, then again); the inputs are read once "
        "beforehand so that all methods read from the page cache. Times are medians, taken inside the "
        "child after its imports (for the CLI: the sum of its commands' wall times). Peak RSS is the "
        "child's `ru_maxrss` (for the CLI the largest of its commands, from `wait4`); the harness imports "
        "only the standard library, because Linux carries a parent's RSS high-water mark into the "
        "`ru_maxrss` of a forked and exec'd child.",
        "",
        "- **decode only** (the limit): rasterio reads B02, B04, B08 (10 m) and SCL (20 m) of the 3 scenes "
        "under `evi_udf.raster.io.GDAL_ENV`, in strips one JPEG2000 tile high (GDAL decodes the strip's "
        "tiles on its own threads), and discards the pixels.",
        "- **ours**: `evi_udf.run.process.process_group` on the tile's group with the default configuration: "
        "median EVI composite on the native grid, int16 zstd COG with overviews and a count band, "
        "statistics, quick-look PNG, STAC item.",
        "- **naive numpy script** (`bench/naive_evi.py`): whole bands into numpy with rasterio (GDAL "
        "defaults), float32 reflectance with each product's BOA offset, SCL mask, EVI, `np.nanmedian` "
        "over the scenes, a float32 GeoTIFF, then a deflate COG. Charitable: float32, not float64.",
        "- **GDAL CLI pipeline** (`bench/gdal_cli.py`, a stdlib driver under Debian's Python that reads "
        "the offsets from `MTD_MSIL2A.xml` and writes the commands): per scene `gdalwarp -r near` of SCL "
        "to 10 m and `gdal_calc.py` for EVI; `gdalbuildvrt -separate` of the scene EVIs; `gdal_calc.py` "
        "`nanmedian` over the stack; `gdal_translate -of COG`.",
        "",
        "All three apply the same pixel rules (DN 0 and 65535 no data, SCL 4/5/6 clear, "
        "|denominator| >= 1e-3, EVI in [-1, 1]); ours does more work besides (count band, statistics, "
        "quick-look, STAC).",
        "",
        "### Time (median seconds) and ratios",
        "",
        "| factor | px per side | tile | decode only | ours | naive | GDAL CLI | ours / decode "
        f"(target <= {OURS_OVER_DECODE_TARGET}) | naive / ours (target >= {ALTERNATIVE_OVER_OURS_TARGET:g}) "
        f"| CLI / ours (target >= {ALTERNATIVE_OVER_OURS_TARGET:g}) | naive / decode | CLI / decode |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["summary"]:
        m, r = row["medians"], row["ratios"]
        decode = m["decode"]["seconds"]
        lines.append(
            f"| {row['factor']} | {row['pixels_per_side']} | {row['tile']} | {decode:.1f} | "
            f"{m['ours']['seconds']:.1f} | {m['naive']['seconds']:.1f} | {m['gdal_cli']['seconds']:.1f} | "
            f"{r['ours_over_decode']:.2f} | {r['naive_over_ours']:.2f} | {r['gdal_cli_over_ours']:.2f} | "
            f"{m['naive']['seconds'] / decode:.2f} | {m['gdal_cli']['seconds'] / decode:.2f} |"
        )
    lines += [
        "",
        "Ours cannot be faster than decoding its inputs, so naive / ours can be at most naive / decode "
        "(likewise for the CLI): where an alternative decodes as efficiently as we do, its ratio to ours "
        "is bounded by how much of its time is decoding, not by our code.",
        "",
        "### Peak RSS (median MiB)",
        "",
        "| factor | tile | decode only | ours | naive | GDAL CLI (largest command) |",
        "|---|---|---|---|---|---|",
    ]
    for row in record["summary"]:
        m = row["medians"]
        lines.append(
            f"| {row['factor']} | {row['tile']} | {m['decode']['peak_rss_mib']:.0f} | "
            f"{m['ours']['peak_rss_mib']:.0f} | {m['naive']['peak_rss_mib']:.0f} | "
            f"{m['gdal_cli']['peak_rss_mib']:.0f} |"
        )
    lines += ["", "### Equality of EVI with ours", ""]
    lines += [
        "Our COG stores EVI as int16 x 1e-4; the others are float32. Over pixels where both have EVI: "
        "max |dEVI| (half a step, 5e-5, is the rounding of our int16) and the share within one int16 step; "
        "over all pixels: the share where both agree on having EVI (nodata masks), and the pixels that "
        "only one side has.",
        "",
        "| factor | tile | vs ours | max abs dEVI | within one step | nodata-mask agreement | "
        "only ours | only theirs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in record["comparisons"]:
        lines.append(
            f"| {c['factor']} | {c['tile']} | {METHOD_NAMES[c['method']]} | {c['max_abs_diff']:.1e} | "
            f"{c['share_within_one_step']:.4%} | {c['mask_agreement']:.4%} | {c['valid_only_ours']:,} | "
            f"{c['valid_only_other']:,} |"
        )
    lines += _breakdown(record)
    lines += _spark(record)
    lines += _verdict(record)
    return lines


def _breakdown(record: dict) -> list[str]:
    """Where the alternatives spend their time (medians over runs, per factor)."""
    lines = [
        "",
        "### Where the alternatives spend their time (median seconds)",
        "",
        "| factor | tile | naive: read + EVI | naive: nanmedian | naive: GeoTIFF | naive: COG | "
        "CLI: gdalwarp SCL | CLI: gdal_calc EVI | CLI: gdalbuildvrt | CLI: gdal_calc nanmedian | "
        "CLI: COG |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["factor"], r["tile"]) for r in record["runs"]})
    for factor, tile in keys:
        naive = [
            r for r in record["runs"] if (r["factor"], r["tile"], r["method"]) == (factor, tile, "naive")
        ]
        cli = [
            r for r in record["runs"] if (r["factor"], r["tile"], r["method"]) == (factor, tile, "gdal_cli")
        ]
        if not naive or not cli:
            continue
        steps = [
            _median([r["steps"][s] for r in naive])
            for s in ("read_and_evi", "nanmedian", "write_geotiff", "cog")
        ]
        labels = ("gdalwarp", "gdal_calc.py EVI", "gdalbuildvrt", "gdal_calc.py nanmedian", "gdal_translate")
        commands = [
            _median([sum(c["seconds"] for c in r["commands"] if c["label"].startswith(label)) for r in cli])
            for label in labels
        ]
        cells = " | ".join(f"{value:.1f}" for value in steps + commands)
        lines.append(f"| {factor} | {tile} | {cells} |")
    return lines


def _spark(record: dict) -> list[str]:
    runs = record.get("spark") or []
    if not runs:
        return []
    lines = [
        "",
        "### Spark overhead",
        "",
        f"`spark-submit --master local[{runs[0]['slots']}] spark_jobs/evi_job.py` on a generated "
        f"config (`period: all`, `geometric_quality: any`, Parquet sink) over {len(runs[0]['tiles'])} "
        f"tiles ({' '.join(runs[0]['tiles'])}) at resolution factor {runs[0]['factor']}, 3 scenes each. "
        "Group times are the composites' `processing_seconds` (the whole `process_group` call, timed in "
        "the task) read back from the Parquet sink. With 2 task slots two groups run at once, so the "
        "overhead is the share of the slots' time (slots x wall time) not spent inside `process_group`: "
        "JVM and session start, catalog, scheduling, Arrow transfer, sinks, mosaic, and slots idle at the "
        "end of the run. `run()` wall time excludes the JVM and session start. Two groups on two cores also "
        "slow each other down; that shows in the group times, not in the overhead.",
        "",
        "| run | spark-submit wall (s) | `run()` wall (s) | sum of group times (s) | mean group time (s) | "
        "overhead share of spark-submit | overhead share of `run()` |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        slots, total = run["slots"], run["group_seconds_sum"]
        lines.append(
            f"| {run['attempt'] + 1} | {run['wall_seconds']:.1f} | {run['run_wall_seconds']:.1f} | "
            f"{total:.1f} | "
            f"{total / len(run['group_seconds']):.1f} | {run['overhead_share']:.1%} | "
            f"{1 - total / (slots * run['run_wall_seconds']):.1%} |"
        )
    return lines


def _verdict(record: dict) -> list[str]:
    """The issue's acceptance targets, checked against the full-size (smallest factor) figures."""
    if not record["summary"]:
        return []
    full = min(row["factor"] for row in record["summary"])
    lines = ["", f"### Targets (factor {full}{' = full size' if full == 1 else ', NOT full size'})", ""]
    for row in (r for r in record["summary"] if r["factor"] == full):
        r, m = row["ratios"], row["medians"]
        lines.append(
            f"- {row['tile']}: ours / decode {r['ours_over_decode']:.2f} (<= {OURS_OVER_DECODE_TARGET}: "
            f"{_met(r['ours_over_decode'] <= OURS_OVER_DECODE_TARGET)}); naive / ours "
            f"{r['naive_over_ours']:.2f} and CLI / ours {r['gdal_cli_over_ours']:.2f} (>= "
            f"{ALTERNATIVE_OVER_OURS_TARGET:g}: "
            f"{_met(r['naive_over_ours'] >= ALTERNATIVE_OVER_OURS_TARGET)}, "
            f"{_met(r['gdal_cli_over_ours'] >= ALTERNATIVE_OVER_OURS_TARGET)}; upper bounds naive / decode "
            f"{m['naive']['seconds'] / m['decode']['seconds']:.2f}, CLI / decode "
            f"{m['gdal_cli']['seconds'] / m['decode']['seconds']:.2f})."
        )
    for tile in sorted({row["tile"] for row in record["summary"]}):
        rss = {
            row["factor"]: row["medians"]["ours"]["peak_rss_mib"]
            for row in record["summary"]
            if row["tile"] == tile
        }
        if 1 in rss and 2 in rss:
            lines.append(
                f"- {tile}: peak RSS of ours {rss[1]:.0f} MiB at factor 1, {rss[2]:.0f} MiB at factor 2 "
                f"(< {MEMORY_LIMIT_MIB} MiB: {_met(max(rss.values()) < MEMORY_LIMIT_MIB)}; "
                f"factor 1 / factor 2 = "
                f"{rss[1] / rss[2]:.2f})."
            )
    for run in record.get("spark") or []:
        lines.append(
            f"- Spark overhead share on {len(run['tiles'])} tiles (factor {run['factor']}): "
            f"{run['overhead_share']:.1%} of spark-submit, "
            f"{1 - run['group_seconds_sum'] / (run['slots'] * run['run_wall_seconds']):.1%} of `run()`."
        )
    return lines


def main() -> int:
    sections = [
        "# Benchmarks",
        "",
        "Written by `bench/report.py` from `bench/results/`; do not edit by hand.",
        "",
    ]
    speed = RESULTS / "speed.json"
    if speed.exists():
        sections += speed_section(json.loads(speed.read_text())) + [""]
    memory = RESULTS / "memory.json"
    if memory.exists():
        sections += memory_section(json.loads(memory.read_text()))
    mask_skip = RESULTS / "mask_skip.json"
    if mask_skip.exists():
        sections += mask_skip_section(json.loads(mask_skip.read_text()))
    levels = RESULTS / "levels.json"
    if levels.exists():
        sections += levels_section(json.loads(levels.read_text()))
    index_size = RESULTS / "index_size.json"
    if index_size.exists():
        sections += index_size_section(json.loads(index_size.read_text()))
    driver = RESULTS / "driver.json"
    if driver.exists():
        sections += driver_section(json.loads(driver.read_text()))
    zones = RESULTS / "zones.json"
    if zones.exists():
        sections += zones_section(json.loads(zones.read_text()))
    gcs = RESULTS / "gcs_read.json"
    if gcs.exists():
        sections += gcs_read_section(json.loads(gcs.read_text()))
    notes = Path("bench/NOTES.md")
    if notes.exists():
        sections += ["", notes.read_text().rstrip()]
    TARGET.write_text("\n".join(sections) + "\n")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
