"""Decoding only what can contribute: ours against decoding every band, on a clear and a cloudy month.

For each cloud profile of the sample generator (``clear``: a dry month; ``cloudy``: a fifth of the
dates nearly clear, the rest 40-90 % cloud in cells tens to hundreds of km across) one tile-month of
``--scenes`` L2A acquisitions is generated at ``--factor`` and measured, each run in a fresh child
process, methods interleaved, ``--repeat`` times (medians):

* ``decode``: decoding B02, B04, B08 and SCL of every scene, every block (``bench/speed.py``'s
  floor: what any pipeline that decodes everything cannot beat);
* ``ours``: ``process_group`` with the default configuration (the cloud mask is read first, the
  bands of a block only where the mask keeps a pixel);
* ``ours_decode_all``: the same with ``raster.skip_masked_blocks: false``;
* ``odc``: the peer a Python user would build, odc-stac + xarray + dask + ``write_cog``
  (``bench/odc_peer.py``), on the same scenes with the same pixel rules.

The share of (scene, block) pairs whose SCL keeps no pixel is counted from the SCL files directly
(numpy, not our code), and the two variants of ours are checked to write identical composites.
Targets: ours <= 0.7 x decode on the cloudy month, <= 1.15 x on the clear one; on the cloudy month
ours >= 2 x faster than the odc-stac peer with < 1/3 of its peak memory. The peer's composite is
compared with ours pixel by pixel.

    .venv/bin/python bench/mask_skip.py [--factor 2] [--scenes 6] [--repeat 3] [--work bench/data]

Results go to ``bench/results/mask_skip.json``; ``bench/report.py`` writes them into BENCHMARKS.md.
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

from speed import _own_peak, child_decode, log, measure, warm_page_cache  # noqa: E402

RESULTS = REPO / "bench" / "results" / "mask_skip.json"
PROFILES = ("clear", "cloudy")
SEED = 21
TILE = "55HBU"
BLOCK = 1024
TARGETS = {"clear": 1.15, "cloudy": 0.7}
# On the cloudy month: the peer's time over ours at least this, our peak RSS over its at most this.
ODC_SPEEDUP_TARGET = 2.0
ODC_MEMORY_TARGET = 1 / 3


def archive(work: Path, profile: str, factor: int, scenes: int) -> Path:
    """The sample month of ``profile`` under ``work``, generated on first use."""
    root = work / f"month_{profile}_f{factor}_{scenes}"
    if not (root / ".complete").exists():
        from evi_udf.sample.generate import SampleSpec, generate_archive

        shutil.rmtree(root, ignore_errors=True)
        started = time.perf_counter()
        log(f"generating {root}")
        generate_archive(
            SampleSpec(
                out=root,
                tiles=(TILE,),
                scenes_per_tile=scenes,
                resolution_factor=factor,
                seed=SEED,
                cloud_profile=profile,
            )
        )
        (root / ".complete").write_text(f"{time.perf_counter() - started:.0f} s\n")
    return root


def selection(index: str) -> Any:
    from evi_udf.config import CatalogConfig
    from evi_udf.index.catalog import read_index_pandas, select_scenes_pandas

    catalog = CatalogConfig(
        index_uri=index, period="all", geometric_quality="any", tiles=(TILE,), max_cloud_cover=90.0
    )
    scenes, _ = select_scenes_pandas(read_index_pandas(index), catalog)
    return scenes


def child_scenes(index: str) -> dict[str, Any]:
    """The selected scenes, their index cloud cover and the share of blocks their SCL keeps nothing of."""
    import numpy as np
    import rasterio
    from s2_product import band_files

    scenes = selection(index)
    overcast, blocks = 0, 0
    for base in scenes.base_url:
        with rasterio.open(band_files(Path(base))["SCL"]) as dataset:
            scl = dataset.read(1)
        step = BLOCK // 2  # 20 m pixels per 10 m block
        for row in range(0, scl.shape[0], step):
            for col in range(0, scl.shape[1], step):
                blocks += 1
                overcast += not np.isin(scl[row : row + step, col : col + step], (4, 5, 6)).any()
    return {
        "base_urls": list(scenes.base_url),
        "cloud_cover": [round(float(c), 1) for c in scenes.cloud_cover],
        "blocks": blocks,
        "overcast_blocks": overcast,
    }


def child_ours(index: str, out: str, skip: str) -> dict[str, Any]:
    from evi_udf.config import config_from_mapping
    from evi_udf.run.process import process_group
    from evi_udf.run.udf import group_key_from_pandas, scene_refs_from_pandas

    scenes = selection(index)
    config = config_from_mapping(
        {
            "catalog": {"index_uri": index},
            "output": {"root": out},
            "raster": {"skip_masked_blocks": skip == "skip"},
        }
    )
    started = time.perf_counter()
    result = process_group(group_key_from_pandas(scenes), scene_refs_from_pandas(scenes), config)
    seconds = time.perf_counter() - started
    if result.composite is None or result.failures:
        raise SystemExit(f"processing failed: {result.failures}")
    return {"seconds": seconds, "cog": result.composite.raster_uri, **_own_peak()}


def child_same(first: str, second: str) -> dict[str, Any]:
    """Whether two composites (EVI and clear-count COGs) hold the same pixels."""
    import numpy as np
    import rasterio

    same = True
    for suffix in ("", "_clear_count"):
        paths = [p.removesuffix(".tif") + suffix + ".tif" for p in (first, second)]
        with rasterio.open(paths[0]) as a, rasterio.open(paths[1]) as b:
            same &= bool(np.array_equal(a.read(1), b.read(1), equal_nan=True))
    return {"identical": same}


def child_agreement(ours: str, other: str) -> dict[str, Any]:
    """How far another float EVI COG is from ours: validity agreement and differences where both have one."""
    import numpy as np
    import rasterio

    with rasterio.open(ours) as a, rasterio.open(other) as b:
        if a.shape != b.shape or not a.transform.almost_equals(b.transform) or a.crs != b.crs:
            raise SystemExit(f"{other}: not on the grid of {ours}")
        x, y = a.read(1).astype(np.float64), b.read(1).astype(np.float64)
    valid_x, valid_y = np.isfinite(x), np.isfinite(y)
    both = valid_x & valid_y
    difference = np.abs(x[both] - y[both])
    return {
        "validity_agreement": float((valid_x == valid_y).mean()),
        "pixels_both_valid": int(both.sum()),
        "share_equal": float((difference == 0).mean()) if both.any() else 1.0,
        "share_within_1e-6": float((difference <= 1e-6).mean()) if both.any() else 1.0,
        "max_abs_difference": float(difference.max()) if both.any() else 0.0,
    }


def child_archive(work: str, profile: str, factor: str, scenes: str) -> dict[str, Any]:
    return {"root": str(archive(Path(work), profile, int(factor), int(scenes)))}


def child(kind: str, args: list[str]) -> dict[str, Any]:
    functions = {
        "archive": child_archive,
        "scenes": child_scenes,
        "ours": child_ours,
        "same": child_same,
        "agreement": child_agreement,
    }
    if kind == "decode":
        return child_decode(args)
    return functions[kind](*args)


def run(kind: str, *args: str) -> dict[str, Any]:
    return measure([sys.executable, str(Path(__file__).resolve()), "--child", kind, *args])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=int, default=2, help="resolution factor (1 = full size)")
    parser.add_argument("--scenes", type=int, default=6, help="acquisitions in the month (5 days apart)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method and month (medians)")
    parser.add_argument("--work", type=Path, default=Path("bench/data"), help="data and scratch folder")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument(
        "--profiles", nargs="+", default=list(PROFILES), choices=PROFILES, help="months to (re)measure"
    )
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
        "parameters": {"factor": args.factor, "scenes": args.scenes, "repeat": args.repeat, "seed": SEED},
        "months": {},
    }
    if set(args.profiles) != set(PROFILES) and args.output.exists():
        # Re-measuring some months keeps the others' results.
        record["months"] = json.loads(args.output.read_text())["months"]
    for profile in args.profiles:
        # Generated in a child: the harness's own peak RSS would become every later child's floor
        # (Linux carries ru_maxrss through fork and exec).
        root = Path(run("archive", str(work), profile, str(args.factor), str(args.scenes))["root"])
        index = str(root / "L2" / "index.csv.gz")
        scenes = run("scenes", index)
        warm_page_cache(scenes["base_urls"])
        runs: dict[str, list[dict[str, Any]]] = {"decode": [], "ours": [], "ours_decode_all": [], "odc": []}
        for attempt in range(args.repeat):
            out = work / "mask_skip" / profile / str(attempt)
            shutil.rmtree(out, ignore_errors=True)
            runs["decode"].append(run("decode", *scenes["base_urls"]))
            runs["ours"].append(run("ours", index, str(out / "skip"), "skip"))
            runs["ours_decode_all"].append(run("ours", index, str(out / "all"), "all"))
            odc_cog = str(out / "odc" / "evi_median.tif")
            peer = [sys.executable, str(BENCH / "odc_peer.py"), odc_cog, *scenes["base_urls"]]
            runs["odc"].append({**measure(peer), "cog": odc_cog})
            log(
                f"{profile} #{attempt}: "
                + ", ".join(f"{name} {rows[-1]['seconds']:.1f} s" for name, rows in runs.items())
            )
        same = run("same", runs["ours"][0]["cog"], runs["ours_decode_all"][0]["cog"])["identical"]
        odc_agreement = run("agreement", runs["ours"][0]["cog"], runs["odc"][0]["cog"])
        medians = {
            name: {
                "seconds": statistics.median([r["seconds"] for r in rows]),
                "peak_rss_mib": statistics.median([r["peak_rss_mib"] for r in rows]),
            }
            for name, rows in runs.items()
        }
        ratio = medians["ours"]["seconds"] / medians["decode"]["seconds"]
        record["months"][profile] = {
            "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            **{k: v for k, v in scenes.items() if k != "base_urls"},
            "scenes": len(scenes["base_urls"]),
            "medians": medians,
            "runs": runs,
            "identical_outputs": same,
            "ours_over_decode": ratio,
            "ours_over_decode_all": medians["ours"]["seconds"] / medians["ours_decode_all"]["seconds"],
            "target": TARGETS[profile],
            "met": ratio <= TARGETS[profile],
            "odc_agreement": odc_agreement,
            "odc_over_ours": medians["odc"]["seconds"] / medians["ours"]["seconds"],
            "ours_rss_over_odc": medians["ours"]["peak_rss_mib"] / medians["odc"]["peak_rss_mib"],
        }
        if profile == "cloudy":
            month = record["months"][profile]
            faster = month["odc_over_ours"] >= ODC_SPEEDUP_TARGET
            month["odc_met"] = faster and month["ours_rss_over_odc"] < ODC_MEMORY_TARGET
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(record, indent=2) + "\n")
        log(
            f"{profile}: ours / decode {ratio:.2f} (target <= {TARGETS[profile]}), identical {same}; "
            f"odc / ours {record['months'][profile]['odc_over_ours']:.2f}, "
            f"equal to odc {odc_agreement['share_equal']:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
