"""Spark entry point of the Sentinel-2 EVI pipeline.

    spark-submit spark_jobs/evi_job.py --config conf/local.yaml [--set section.key=value ...] [--overwrite]

Parses arguments, loads the configuration, builds the SparkSession, runs the job and exits non-zero
when the run fails its own rules (more than ``run.max_failed_group_share`` of the groups failed) or
cannot run at all.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="evi_job.py", description="Sentinel-2 EVI composites and statistics"
    )
    parser.add_argument("--config", required=True, help="YAML job configuration, e.g. conf/local.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    parser.add_argument("--overwrite", action="store_true", help="reprocess groups that are already done")
    args = parser.parse_args(argv)

    from evi_udf.config import load_config
    from evi_udf.errors import EviError
    from evi_udf.outputs.sinks import sink_for
    from evi_udf.run.job import run
    from evi_udf.run.session import build_session

    overrides = [*args.set, *(["run.overwrite=true"] if args.overwrite else [])]
    try:
        config = load_config(args.config, overrides)
        sink = sink_for(config)
    except EviError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    spark = build_session("sentinel2-evi")
    try:
        report = run(spark, config, sink)
    except EviError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        spark.stop()
    return 0 if report.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
