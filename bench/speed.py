"""Per-tile speed against the JPEG2000 decoding limit and against what users would write instead.

On the same sample tiles (``evi_udf.sample.generate``, L2A, 3 scenes per tile after the catalog's dedupe) and
in the same run, each in a fresh child process, ``--repeat`` times (medians reported):

* ``decode``: only decoding B02, B04, B08 and SCL of the tile's scenes with rasterio under
  ``evi_udf.raster.io.GDAL_ENV`` (the floor: nothing can be faster than reading its inputs);
* ``ours``: the raster core's ``process_group`` for the tile (EVI median composite COG, statistics,
  quick-look, STAC item);
* ``naive``: ``bench/naive_evi.py``, whole bands in numpy, ``np.nanmedian``, GeoTIFF, then COG;
* ``gdal_cli``: ``bench/gdal_cli.py``, Debian's gdalwarp / gdal_calc.py / gdalbuildvrt /
  gdal_translate doing the same composite;

plus peak RSS of each (``ru_maxrss``; for the CLI the max over its commands), the equality of the
naive and CLI composites with ours (max |dEVI|, share of pixels within one int16 step, agreement of
the nodata masks), and the Spark job on ``--spark-tiles`` tiles (``spark-submit --master local[2]``),
whose overhead is what the job's wall time holds beyond the groups' own ``processing_seconds``.

Results go to ``bench/results/speed.json``; ``bench/report.py`` writes them into BENCHMARKS.md.

    .venv/bin/python bench/speed.py [--factors 1 2] [--repeat 3] [--tiles 55HBU 54HXD] [--spark-tiles 8]
        [--spark-factor 1] [--work bench/data]

Run it from the repository root. Sample archives are generated once per (factor, tiles) under
``--work`` and reused; full-size tiles take minutes each to generate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
RESULTS = REPO / "bench" / "results" / "speed.json"
METHODS = ("decode", "ours", "naive", "gdal_cli")
SCENES = 3
SEED = 11
# MGRS tiles of one area (south-eastern Australia, UTM zones 54 and 55) for the Spark run, in the
# order --spark-tiles takes them; 54HYD and 55HBU overlap across the zone boundary.
SPARK_TILE_POOL = (
    "55HBU",
    "55HCU",
    "55HDU",
    "55HBV",
    "55HCV",
    "55HDV",
    "54HYD",
    "54HXD",
    "55HBT",
    "55HCT",
    "55HDT",
    "54HXC",
)
SPARK_SLOTS = 2  # local[2]
INT16_STEP = 1e-4  # the EVI scaling of our int16 COG
COMPARE_ROWS = 1024  # rows per chunk when comparing composites: bounded memory at full size


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def archive_path(work: Path, factor: int, tiles: tuple[str, ...]) -> Path:
    """Where the sample archive of ``tiles`` at ``factor`` lives under ``work``."""
    return work / f"s2_f{factor}_{'-'.join(tiles)}"


def superset_archive(work: Path, factor: int, tiles: tuple[str, ...]) -> Path | None:
    """A complete archive at ``factor`` under ``work`` that already holds ``tiles``, if there is one.

    A tile's pixels depend only on the seed and the tile, not on the other tiles of the archive, so
    a larger archive serves as well and saves generating full-size tiles again (about 7 minutes
    each here). The first tile must match: only it gets the 05.10 reprocessing. The index's extra
    rows (quality flags, a row without files) differ between archives, which ``geometric_quality:
    any`` ignores; :func:`selected_scenes` still checks each tile's 3 scenes.
    """
    prefix = f"s2_f{factor}_"
    for candidate in sorted(work.glob(f"{prefix}*")):
        held = tuple(candidate.name[len(prefix) :].split("-"))
        if (candidate / ".complete").exists() and archive_serves(held, tiles):
            return candidate
    return None


def archive_serves(held: tuple[str, ...], tiles: tuple[str, ...]) -> bool:
    """Whether an archive generated for ``held`` serves ``tiles`` (see :func:`superset_archive`)."""
    return bool(held) and held[0] == tiles[0] and set(tiles) <= set(held)


def child_archive(work: Path, factor: int, tiles: tuple[str, ...]) -> Path:
    """The sample archive of ``tiles`` at ``factor`` under ``work``, generated on first use.

    ``scenes_per_tile=3`` gives exactly 3 selected L2A scenes per tile with ``geometric_quality:
    any``: the generator adds, besides the 3 acquisitions, a 05.10 reprocessing of the first tile's
    first scene (the catalog keeps one of the two), an index row without files (rejected: empty
    BASE_URL) and an empty and a FAILED quality flag (kept by ``any``). :func:`selected_scenes`
    checks it.
    """
    reusable = superset_archive(work, factor, tiles)
    if reusable is not None:
        return reusable
    root = archive_path(work, factor, tiles)
    done = root / ".complete"
    if not done.exists():
        from evi_udf.sample.generate import SampleSpec, generate_archive

        # BASE_URLs in the index hold the absolute folder, so a half-written archive is regenerated
        # in place rather than written elsewhere and renamed.
        shutil.rmtree(root, ignore_errors=True)
        started = time.perf_counter()
        log(f"generating {root} ({len(tiles)} tile(s), factor {factor}); full-size tiles take minutes")
        generate_archive(
            SampleSpec(out=root, tiles=tiles, scenes_per_tile=SCENES, resolution_factor=factor, seed=SEED)
        )
        done.write_text(f"{time.perf_counter() - started:.0f} s\n")
        log(f"generated {root} in {time.perf_counter() - started:.0f} s")
    return root


def selected_scenes(root: Path, tiles: tuple[str, ...]) -> dict[str, list[dict[str, str]]]:
    """Per tile, the scenes the catalog selects (``period: all``, ``geometric_quality: any``).

    Raises
    ------
    SystemExit
        If a tile does not get exactly :data:`SCENES` distinct acquisitions.
    """
    from evi_udf.config import CatalogConfig
    from evi_udf.index.catalog import read_index_pandas, select_scenes_pandas

    index = str(root / "L2" / "index.csv.gz")
    raw = read_index_pandas(index)
    scenes, _ = select_scenes_pandas(
        raw, CatalogConfig(index_uri=index, level="L2A", period="all", geometric_quality="any")
    )
    selected = {}
    for tile in tiles:
        rows = scenes[scenes.mgrs_tile == tile].sort_values("sensing_time")
        if len(rows) != SCENES or rows.sensing_time.dt.date.nunique() != SCENES:
            raise SystemExit(f"{root}: {tile} has {len(rows)} selected scenes, expected {SCENES}")
        selected[tile] = [
            {
                "product_id": row.product_id,
                "base_url": row.base_url,
                "baseline": row.processing_baseline,
            }
            for row in rows.itertuples()
        ]
    return selected


def warm_page_cache(safes: list[str]) -> None:
    """Read the inputs once so that the first measured method does not pay for the disk alone."""
    for safe in safes:
        for path in Path(safe).rglob("*.jp2"):
            with path.open("rb") as handle:
                while handle.read(16 << 20):
                    pass


# ---------------------------------------------------------------------------------------------
# Children (each measurement runs in a fresh process)
# ---------------------------------------------------------------------------------------------
def child_decode(safes: list[str]) -> dict[str, Any]:
    """Decode B02, B04, B08 (10 m) and SCL (20 m) of the scenes, nothing else.

    Reads go by strips one JPEG2000 tile high and the band wide: GDAL then decodes the strip's
    tiles in parallel on its GDAL_NUM_THREADS workers (tile-level parallelism), the fastest way
    rasterio offers to turn the files into pixels, with memory of one strip.
    """
    import rasterio
    from rasterio.windows import Window

    from evi_udf.raster.io import GDAL_ENV

    sys.path.insert(0, str(BENCH))
    from s2_product import band_files

    files = [path for safe in safes for path in band_files(Path(safe)).values()]
    pixels = 0
    started = time.perf_counter()
    with rasterio.Env(**GDAL_ENV):
        for path in files:
            with rasterio.open(path) as dataset:
                strip = dataset.block_shapes[0][0]
                for row in range(0, dataset.height, strip):
                    height = min(strip, dataset.height - row)
                    block = dataset.read(1, window=Window(0, row, dataset.width, height))
                    pixels += block.size
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "pixels_decoded": pixels, "files": len(files), **_own_peak()}


def child_ours(index: str, tile: str, out: str) -> dict[str, Any]:
    """Run ``process_group`` on the tile's scenes as the catalog selects them."""
    from evi_udf.config import CatalogConfig, config_from_mapping
    from evi_udf.index.catalog import read_index_pandas, select_scenes_pandas
    from evi_udf.run.process import process_group
    from evi_udf.run.udf import group_key_from_pandas, scene_refs_from_pandas

    catalog = CatalogConfig(index_uri=index, period="all", geometric_quality="any", tiles=(tile,))
    scenes, _ = select_scenes_pandas(read_index_pandas(index), catalog)
    # int16, as the recorded results were measured (and as the comparison below reads our COG).
    config = config_from_mapping(
        {"catalog": {"index_uri": index}, "output": {"root": out}, "raster": {"output_dtype": "int16"}}
    )
    started = time.perf_counter()
    result = process_group(group_key_from_pandas(scenes), scene_refs_from_pandas(scenes), config)
    seconds = time.perf_counter() - started
    if result.composite is None or result.failures:
        raise SystemExit(f"processing failed: {result.failures}")
    return {
        "seconds": seconds,
        "processing_seconds": result.composite.processing_seconds,
        "scenes": len(result.scenes),
        "pixels": result.composite.total_pixels,
        "cog": result.composite.raster_uri,
        **_own_peak(),
    }


def jvm_peak_mib(spark: Any) -> float:
    """Peak RSS (VmHWM) of the JVM behind ``spark``, in MiB: the Java side of a PySpark driver."""
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _own_peak() -> dict[str, float]:
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def helper(kind: str, *args: str) -> Any:
    """Run a non-measured step (data, comparison, versions) in a child and return its JSON.

    The harness itself imports only the standard library and holds no arrays: a child's
    ``ru_maxrss`` starts at its parent's peak RSS (Linux carries the high-water mark through fork
    and exec), so a big harness would inflate every measured figure.
    """
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", kind, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"helper {kind} {' '.join(args)} failed ({done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one child; return its JSON line plus its wall time and ``wait4`` peak RSS.

    ``wait4_peak_rss_mib`` is the largest RSS of the child or of any process it waited for, a
    cross-check of the figure the child reports itself.
    """
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True, cwd=REPO)
    stdout = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed with status {status}")
    measured = json.loads(stdout.strip().splitlines()[-1])
    measured.update(wall_seconds=wall, wait4_peak_rss_mib=usage.ru_maxrss / 1024)
    return measured


# ---------------------------------------------------------------------------------------------
# Equality of the composites
# ---------------------------------------------------------------------------------------------
def compare(ours_cog: Path, other_cog: Path) -> dict[str, Any]:
    """EVI of ``other_cog`` (float, NaN or nodata = no value) against our int16 COG, chunk by chunk.

    Returns max |dEVI| and the share of pixels within one int16 step (1e-4) over pixels where both
    have a value, and the share of all pixels where both agree on having a value.
    """
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    both = within = agree = only_ours = only_other = total = 0
    max_diff = 0.0
    with rasterio.open(ours_cog) as ours, rasterio.open(other_cog) as other:
        if (ours.width, ours.height) != (other.width, other.height) or not ours.transform.almost_equals(
            other.transform
        ):
            raise SystemExit(f"{other_cog}: not on the grid of {ours_cog}")
        scale, offset = ours.scales[0], ours.offsets[0]
        for row in range(0, ours.height, COMPARE_ROWS):
            window = Window(0, row, ours.width, min(COMPARE_ROWS, ours.height - row))
            steps = ours.read(1, window=window)
            ours_valid = steps != ours.nodata
            ours_evi = steps.astype(np.float64) * scale + offset
            values = other.read(1, window=window).astype(np.float64)
            other_valid = np.isfinite(values)
            if other.nodata is not None and np.isfinite(other.nodata):
                other_valid &= values != other.nodata
            common = ours_valid & other_valid
            diff = np.abs(ours_evi[common] - values[common])
            if diff.size:
                max_diff = max(max_diff, float(diff.max()))
            # A hair over one step: float32 inputs on the other side are not exact decimals.
            within += int((diff <= INT16_STEP * (1 + 1e-3)).sum())
            both += int(common.sum())
            agree += int((ours_valid == other_valid).sum())
            only_ours += int((ours_valid & ~other_valid).sum())
            only_other += int((other_valid & ~ours_valid).sum())
            total += steps.size
    return {
        "max_abs_diff": max_diff,
        "share_within_one_step": within / both if both else float("nan"),
        "mask_agreement": agree / total,
        "pixels": total,
        "valid_both": both,
        "valid_only_ours": only_ours,
        "valid_only_other": only_other,
    }


# ---------------------------------------------------------------------------------------------
# Spark
# ---------------------------------------------------------------------------------------------
def spark_env() -> dict[str, str]:
    """Spark's Python workers use this interpreter; loopback keeps local Spark off the network."""
    return {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }


def run_spark(work: Path, factor: int, tiles: tuple[str, ...], attempt: int) -> dict[str, Any]:
    """One ``spark-submit`` of the job on every tile of the archive; group times from the sink."""
    root = Path(helper("archive", str(work), str(factor), *tiles)["root"])
    out = work / "runs" / f"spark_f{factor}_{len(tiles)}tiles" / str(attempt)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    config = out / "job.yaml"
    config.write_text(
        "catalog:\n"
        f"  index_uri: {root / 'L2' / 'index.csv.gz'}\n"
        "  level: L2A\n"
        "  geometric_quality: any\n"
        "  period: all\n"
        "raster:\n  output_dtype: int16\n"
        f"output:\n  root: {out / 'out'}\n"
    )
    command = [
        str(Path(sys.executable).parent / "spark-submit"),
        "--master",
        f"local[{SPARK_SLOTS}]",
        "--conf",
        "spark.log.level=WARN",
        "--conf",
        "spark.ui.enabled=false",
        str(REPO / "spark_jobs" / "evi_job.py"),
        "--config",
        str(config),
        "--overwrite",
    ]
    log(f"spark-submit on {len(tiles)} tiles at factor {factor} (attempt {attempt + 1})")
    started = time.perf_counter()
    with (out / "spark.log").open("w") as spark_log:
        finished = subprocess.run(
            command, env=spark_env(), cwd=REPO, stdout=spark_log, stderr=subprocess.STDOUT, check=False
        )
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"spark-submit failed ({finished.returncode}); see {out / 'spark.log'}")
    tables = helper("spark_tables", str(out / "out"))
    if len(tables["group_seconds"]) != len(tiles):
        raise SystemExit(f"spark run made {len(tables['group_seconds'])} composites, expected {len(tiles)}")
    group_sum = sum(tables["group_seconds"].values())
    return {
        "attempt": attempt,
        "factor": factor,
        "tiles": list(tiles),
        "slots": SPARK_SLOTS,
        "wall_seconds": wall,
        **tables,
        "group_seconds_sum": group_sum,
        # Share of the task slots' time (slots x wall time) not spent inside process_group.
        "overhead_share": 1 - group_sum / (SPARK_SLOTS * wall),
    }


def child_spark_tables(out: str) -> dict[str, Any]:
    """Per-group ``processing_seconds`` from the job's Parquet sink and the job's own wall time."""
    import pandas as pd

    composites = pd.read_parquet(Path(out) / "tables" / "evi_composites")
    report = json.loads(next((Path(out) / "runs").glob("*.json")).read_text())
    return {
        "run_wall_seconds": float(report["wall_seconds"]),
        "scenes": int(composites.scene_count.sum()),
        "group_seconds": {
            row.mgrs_tile: float(row.processing_seconds) for row in composites.itertuples(index=False)
        },
    }


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------
def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians per (factor, tile, method) and the ratios the issue asks for."""
    summary = []
    keys = sorted({(r["factor"], r["tile"]) for r in runs})
    for factor, tile in keys:
        medians: dict[str, dict[str, float]] = {}
        for method in METHODS:
            mine = [r for r in runs if (r["factor"], r["tile"], r["method"]) == (factor, tile, method)]
            if mine:
                medians[method] = {
                    "seconds": statistics.median(r["seconds"] for r in mine),
                    "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in mine),
                    "runs": len(mine),
                    "min_seconds": min(r["seconds"] for r in mine),
                    "max_seconds": max(r["seconds"] for r in mine),
                }
        ours = medians["ours"]["seconds"]
        summary.append(
            {
                "factor": factor,
                "tile": tile,
                "pixels_per_side": 10980 // factor,
                "medians": medians,
                "ratios": {
                    "ours_over_decode": ours / medians["decode"]["seconds"],
                    "naive_over_ours": medians["naive"]["seconds"] / ours,
                    "gdal_cli_over_ours": medians["gdal_cli"]["seconds"] / ours,
                },
            }
        )
    return summary


def _command_output(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else ""


def environment() -> dict[str, Any]:
    """Machine and software versions, for the report."""
    import numpy
    import pyspark
    import rasterio

    import evi_udf

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    os_release = dict(
        line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
    )
    commit = _command_output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": cpu,
            "memory_gib": round(memory_kib / 1024**2, 1),
            "os": os_release.get("PRETTY_NAME", "").strip('"'),
            "platform": platform.platform(),
        },
        "versions": {
            "python": platform.python_version(),
            "numpy": numpy.__version__,
            "rasterio": rasterio.__version__,
            "rasterio_gdal": rasterio.__gdal_version__,
            "pyspark": pyspark.__version__,
            "java": _command_output(["java", "-version"]),
            "debian_gdal": _command_output(["gdalinfo", "--version"]),
            "debian_numpy": _command_output(
                ["/usr/bin/python3", "-c", "import numpy; print(numpy.__version__)"]
            ),
            "evi_udf": evi_udf.__version__,
            "commit": commit,
        },
    }


def log(message: str) -> None:
    """Progress on stderr (stdout of children is their JSON result)."""
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def ensure_gdal_tools() -> None:
    """Install gdal-bin and python3-gdal with bench/install_gdal.sh when a tool is missing."""
    if all(shutil.which(t) for t in ("gdalbuildvrt", "gdal_calc.py", "gdalwarp", "gdal_translate")):
        return
    subprocess.run([str(BENCH / "install_gdal.sh")], check=True)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
def run_tile_methods(
    work: Path, factor: int, tile: str, scenes: list[dict[str, str]], attempt: int, root: Path
) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """One measurement of every method on one tile; returns the rows and the COGs made."""
    safes = [scene["base_url"] for scene in scenes]
    runs_dir = work / "runs" / f"f{factor}_{tile}" / str(attempt)
    shutil.rmtree(runs_dir, ignore_errors=True)
    runs_dir.mkdir(parents=True)
    me = [sys.executable, str(Path(__file__).resolve()), "--child"]
    commands = {
        "decode": [*me, "decode", *safes],
        "ours": [*me, "ours", str(root / "L2" / "index.csv.gz"), tile, str(runs_dir / "ours")],
        "naive": [sys.executable, str(BENCH / "naive_evi.py"), str(runs_dir / "naive.tif"), *safes],
        # Debian's own Python runs the CLI driver: the user of the GDAL tools has no project venv.
        "gdal_cli": [
            "/usr/bin/python3",
            str(BENCH / "gdal_cli.py"),
            str(runs_dir / "gdal_cli.tif"),
            str(runs_dir / "gdal_cli_scratch"),
            *safes,
        ],
    }
    rows, cogs = [], {}
    for method, command in commands.items():
        measured = measure(command)
        rows.append({"factor": factor, "tile": tile, "method": method, "attempt": attempt, **measured})
        log(
            f"f{factor} {tile} #{attempt + 1} {method}: {measured['seconds']:.1f} s, "
            f"peak RSS {measured['peak_rss_mib']:.0f} MiB"
        )
    cogs["ours"] = Path(rows[1]["cog"])
    cogs["naive"] = runs_dir / "naive.tif"
    cogs["gdal_cli"] = runs_dir / "gdal_cli.tif"
    return rows, cogs


def run_child(kind: str, args: list[str]) -> Any:
    """Dispatch ``--child KIND ARGS``: measured steps and the harness's helpers."""
    if kind == "decode":
        return child_decode(args)
    if kind == "ours":
        return child_ours(*args)
    if kind == "archive":
        work, factor, *tiles = args
        root = child_archive(Path(work), int(factor), tuple(tiles))
        return {"root": str(root), "scenes": selected_scenes(root, tuple(tiles))}
    if kind == "compare":
        return compare(Path(args[0]), Path(args[1]))
    if kind == "environment":
        return environment()
    if kind == "spark_tables":
        return child_spark_tables(args[0])
    raise SystemExit(f"unknown child {kind}")


def main() -> int:
    """Run every measurement and write the results JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2], help="resolution factors")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method and factor (medians)")
    parser.add_argument("--tiles", nargs="+", default=["55HBU"], help="tiles measured one by one")
    parser.add_argument(
        "--spark-tiles",
        type=int,
        default=8,
        help=f"tiles of the Spark run, the first N of {' '.join(SPARK_TILE_POOL)}; 0 skips it",
    )
    parser.add_argument("--spark-factor", type=int, default=1, help="resolution factor of the Spark run")
    parser.add_argument("--spark-repeat", type=int, default=1, help="Spark runs (median reported)")
    parser.add_argument("--work", type=Path, default=Path("bench/data"), help="data and scratch folder")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child[0], args.child[1:])))
        return 0
    if not 0 <= args.spark_tiles <= len(SPARK_TILE_POOL):
        parser.error(f"--spark-tiles must be between 0 and {len(SPARK_TILE_POOL)}")
    ensure_gdal_tools()
    work = args.work.resolve()
    tiles = tuple(args.tiles)
    record: dict[str, Any] = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **helper("environment"),
        "parameters": {
            "factors": args.factors,
            "repeat": args.repeat,
            "tiles": list(tiles),
            "scenes_per_tile": SCENES,
            "seed": SEED,
            "spark_tiles": args.spark_tiles,
            "spark_factor": args.spark_factor,
            "spark_repeat": args.spark_repeat,
        },
        "scenes": {},
        "runs": [],
        "comparisons": [],
        "spark": [],
        "summary": [],
        "complete": False,
    }
    spark_tiles = SPARK_TILE_POOL[: args.spark_tiles]
    if args.spark_factor in args.factors and archive_serves(spark_tiles, tiles):
        # Generate the Spark run's archive first: it holds the measured tiles, which then are not
        # generated a second time (superset_archive).
        helper("archive", str(work), str(args.spark_factor), *spark_tiles)
    for factor in args.factors:
        archive = helper("archive", str(work), str(factor), *tiles)
        root = Path(archive["root"])
        for tile, scenes in archive["scenes"].items():
            record["scenes"][tile] = scenes
            warm_page_cache([scene["base_url"] for scene in scenes])
            for attempt in range(args.repeat):
                rows, cogs = run_tile_methods(work, factor, tile, scenes, attempt, root)
                record["runs"] += rows
                if attempt == 0:
                    for method in ("naive", "gdal_cli"):
                        compared = helper("compare", str(cogs["ours"]), str(cogs[method]))
                        record["comparisons"].append(
                            {"factor": factor, "tile": tile, "method": method, **compared}
                        )
                        log(
                            f"f{factor} {tile} {method} vs ours: max |dEVI| {compared['max_abs_diff']:.2e}, "
                            f"within one step {compared['share_within_one_step']:.6%}, "
                            f"mask agreement {compared['mask_agreement']:.6%}"
                        )
                else:
                    # Keep the first attempt's outputs for inspection; the others only cost disk.
                    shutil.rmtree(work / "runs" / f"f{factor}_{tile}" / str(attempt), ignore_errors=True)
            record["summary"] = summarize(record["runs"])
            _write(args.output, record)
    if args.spark_tiles:
        for attempt in range(args.spark_repeat):
            measured = run_spark(work, args.spark_factor, spark_tiles, attempt)
            record["spark"].append(measured)
            log(
                f"spark: {measured['wall_seconds']:.1f} s wall, groups {measured['group_seconds_sum']:.1f} s "
                f"in {SPARK_SLOTS} slots, overhead {measured['overhead_share']:.1%}"
            )
            _write(args.output, record)
    record["complete"] = True
    _write(args.output, record)
    log(f"wrote {args.output}")
    return 0


def _write(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
