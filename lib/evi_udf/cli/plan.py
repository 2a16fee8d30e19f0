"""``python -m evi_udf.cli.plan`` (``make plan``): what a run of this configuration would do,
without doing it.

Prints every group the catalog selects with its state and the reason (``new``, ``changed``,
``failed``, ``overwrite`` or ``done``, decided from one listing of the output root's ledger exactly
as :func:`evi_udf.run.job.run` decides it), the estimated DCU-hours and list price of processing the groups
that are not done on Dataproc Serverless (:mod:`evi_udf.deploy.cost`), then the rejected index rows counted
by stage and reason. Nothing is processed or written. On a local Parquet cache of the index no Spark
session starts (:mod:`evi_udf.index.arrow`): the plan takes about as long as DuckDB takes to answer the
same query (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

import pandas as pd

from evi_udf.config import JobConfig
from evi_udf.deploy.cost import estimate_cost
from evi_udf.errors import EviError
from evi_udf.index.catalog import text_table
from evi_udf.run.ledger import Ledger
from evi_udf.run.planning import STATES, plan_run
from evi_udf.storage import Storage

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def plan_table(config: JobConfig, spark: Callable[[], SparkSession]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(groups, rejected counts): one row per group with its state and reason; rejected rows by reason.

    The job's own plan (:func:`evi_udf.run.planning.plan_run`): ``spark`` is called for a session only
    when the selection needs Spark, so a local Parquet cache is planned without one.
    """
    ledger = Ledger(config.output.root, Storage(config.storage.anonymous_buckets, config.storage.project))
    plan = plan_run(config, ledger, spark)
    return plan.table(), plan.selection.rejected_counts()


def print_plan(
    config: JobConfig, spark: Callable[[], SparkSession], out: TextIO | None = None, limit: int = 50
) -> None:
    """Print the groups with their states and the rejected index rows (to stdout by default)."""
    out = out or sys.stdout
    groups, rejected = plan_table(config, spark)
    print(f"index: {config.catalog.index_uri}", file=out)
    print(f"outputs: {config.output.root}", file=out)
    counts = groups["state"].value_counts()
    states = ", ".join(f"{int(counts[s])} {s}" for s in STATES if s in counts)
    print(
        f"{int(groups['scenes'].sum())} scenes in {len(groups)} groups (tile x {config.catalog.period})"
        + (f": {states}" if states else ""),
        file=out,
    )
    if len(groups):
        print(text_table(groups, width=100), file=out)
    todo = groups[groups["state"] != "done"]
    print(estimate_cost(int(todo["scenes"].sum()), len(todo), config.dataproc).describe(), file=out)
    print(f"{int(rejected['count'].sum())} rejected rows", file=out)
    if len(rejected):
        print(text_table(rejected[["count", "stage", "reason"]].head(limit), width=160), file=out)
        if len(rejected) > limit:
            print(f"... and {len(rejected) - limit} more distinct reasons", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    from evi_udf.config import load_config
    from evi_udf.run.session import build_session

    parser = argparse.ArgumentParser(prog="python -m evi_udf.cli.plan", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="job configuration, e.g. conf/local.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    parser.add_argument("--overwrite", action="store_true", help="plan as a run with --overwrite would")
    parser.add_argument("--master", help="Spark master for local runs, e.g. local[2]")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, [*args.set, *(["run.overwrite=true"] if args.overwrite else [])])
        if args.master and args.master.startswith("local"):
            # Local workers must run this interpreter, which has the library and pandas.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        print_plan(config, lambda: build_session("evi-plan", master=args.master))
    except EviError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Run main from the imported module, not from __main__: Spark pickles functions by reference to
    # their module, which executors can import.
    from evi_udf.cli.plan import main as _main

    sys.exit(_main())
