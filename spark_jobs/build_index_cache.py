"""Spark entry point: convert the Sentinel-2 index CSV once into the partitioned Parquet cache.

    spark-submit spark_jobs/build_index_cache.py --source gs://gcp-public-data-sentinel-2/L2/index.csv.gz \
        --out gs://BUCKET/sentinel2/L2/index-20261201.parquet

The gzip index (several GB) is read by a single task in every run that uses it; the cache is read in
parallel and pruned by UTM zone and year. Point ``catalog.index_uri`` at ``--out`` afterwards. On
Dataproc: ``scripts/submit.sh --index-cache gs://...parquet``.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build_index_cache.py", description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="the index CSV (.csv or .csv.gz, local or gs://)")
    parser.add_argument("--out", required=True, help="the cache to write, named *.parquet (replaced)")
    args = parser.parse_args(argv)

    from evi_udf.errors import EviError
    from evi_udf.index.cache import write_index_parquet
    from evi_udf.run.session import build_session

    started = time.monotonic()
    spark = build_session("sentinel2-index-cache")
    try:
        summary = write_index_parquet(spark, args.source, args.out)
    except EviError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        spark.stop()
    print(
        f"index cache {summary.uri}: {summary.rows:,} rows ({summary.corrupt_rows:,} with the wrong number "
        f"of fields) in {summary.partitions:,} partitions, {time.monotonic() - started:.1f} s\n"
        f"use it with: --set catalog.index_uri={summary.uri}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
