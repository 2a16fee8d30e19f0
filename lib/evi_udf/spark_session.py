"""Building the SparkSession: called by entry points and test fixtures, never at import time."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Settings every session of this job needs, whatever the cluster.
BASE_SPARK_CONF: dict[str, str] = {
    # Index times are UTC; without this, timestamps shift by the driver's local zone between the
    # JVM, Arrow and pandas.
    "spark.sql.session.timeZone": "UTC",
    # Pandas UDFs and toPandas move data through Arrow, which is much faster than pickled rows.
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


def build_session(
    app_name: str, master: str | None = None, conf: dict[str, str] | None = None
) -> SparkSession:
    """Return a SparkSession with the job's base settings.

    Parameters
    ----------
    app_name
        Shown in the Spark UI and the Dataproc batch.
    master
        Only for local use (e.g. ``local[2]`` in tests); leave ``None`` under ``spark-submit`` and
        Dataproc, where the submitter decides.
    conf
        Extra Spark properties, applied after the base settings.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for key, value in {**BASE_SPARK_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    explicit = "spark.sql.shuffle.partitions" in (conf or {}) or session.sparkContext.getConf().contains(
        "spark.sql.shuffle.partitions"
    )
    if session.sparkContext.master.startswith("local") and not explicit:
        # One machine: 200 shuffle partitions (the default, sized for clusters) only add task overhead.
        session.conf.set("spark.sql.shuffle.partitions", "8")
    return session
