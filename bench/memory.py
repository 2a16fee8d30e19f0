"""Peak memory of the raster core on full-size tiles (issue: bounded memory).

Generates (once) a sample archive of one tile with 3 L2A scenes at each resolution factor, then runs
``process_group`` on it in a fresh child process per measurement and reads the child's peak resident
set size (``ru_maxrss``). Results are printed and written to ``bench/results/memory.json``;
``bench/report.py`` turns them into BENCHMARKS.md.

    .venv/bin/python bench/memory.py [--factors 1 2] [--work bench/data] [--repeat 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

TILE = "55HBU"
SCENES = 3


def archive_for(work: Path, factor: int) -> Path:
    """The tile's archive, shared with bench/speed.py and generated (once) in a child process.

    Generating in this process would raise its peak RSS, and Linux carries a parent's high-water mark
    into the ``ru_maxrss`` of every child it then starts: the measurements would start from it.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from speed import helper

    return Path(helper("archive", str(work.resolve()), str(factor), TILE)["root"])


def run_child(root: Path, out: Path) -> None:
    """In the child: select the tile's scenes with the catalog and process them as one group."""
    from evi_udf.config import CatalogConfig, config_from_mapping
    from evi_udf.index.catalog import read_index_pandas, select_scenes_pandas
    from evi_udf.run.process import process_group
    from evi_udf.run.udf import group_key_from_pandas, scene_refs_from_pandas

    index = str(root / "L2" / "index.csv.gz")
    scenes, _ = select_scenes_pandas(
        read_index_pandas(index), CatalogConfig(index_uri=index, period="all", geometric_quality="any")
    )
    config = config_from_mapping(
        {"catalog": {"index_uri": index}, "output": {"root": str(out)}, "raster": {"output_dtype": "int16"}}
    )
    started = time.perf_counter()
    result = process_group(group_key_from_pandas(scenes), scene_refs_from_pandas(scenes), config)
    elapsed = time.perf_counter() - started
    if result.composite is None or result.failures:
        raise SystemExit(f"processing failed: {result.failures}")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "peak_rss_mib": peak_kib / 1024,
                "scenes": len(result.scenes),
                "pixels": result.composite.total_pixels,
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--work", type=Path, default=Path("bench/data"))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--child", nargs=2, metavar=("ARCHIVE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(Path(args.child[0]), Path(args.child[1]))
        return 0
    results = []
    for factor in args.factors:
        root = archive_for(args.work, factor)
        for attempt in range(args.repeat):
            out = args.work / f"out_f{factor}_{attempt}"
            child = subprocess.run(
                [sys.executable, __file__, "--child", str(root), str(out)],
                capture_output=True,
                text=True,
                check=False,
            )
            if child.returncode != 0:
                print(child.stderr, file=sys.stderr)
                return 1
            measured = json.loads(child.stdout.strip().splitlines()[-1])
            measured.update(factor=factor, pixels_per_side=10980 // factor)
            print(json.dumps(measured))
            results.append(measured)
    record = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": __import__("os").cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "tile": TILE,
        "scenes": SCENES,
        "results": results,
    }
    destination = Path("bench/results/memory.json")
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
