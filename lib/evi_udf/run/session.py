"""Building the SparkSession: called by entry points and test fixtures, never at import time."""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path
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
    ship_wheels_to_executors(session)
    explicit = "spark.sql.shuffle.partitions" in (conf or {}) or session.sparkContext.getConf().contains(
        "spark.sql.shuffle.partitions"
    )
    if session.sparkContext.master.startswith("local") and not explicit:
        # One machine: 200 shuffle partitions (the default, sized for clusters) only add task overhead.
        session.conf.set("spark.sql.shuffle.partitions", "8")
    return session


def ship_wheels_to_executors(session: SparkSession) -> list[str]:
    """Make the wheels given with ``--py-files`` importable on the executors too; return what was added.

    ``spark-submit`` puts a ``--py-files`` wheel on the driver's ``sys.path``, but PySpark adds only
    ``.zip``, ``.egg`` and ``.jar`` files to the executors' path (``SparkContext.PACKAGE_EXTENSIONS``),
    so executors would import whatever copy of ``evi_udf`` their image has, or fail to import it. A pure
    Python wheel is a zip archive with the packages at its root, so the same bytes under a ``.zip``
    name are importable there, ahead of the image's site-packages.
    """
    shipped: list[str] = []
    for entry in list(sys.path):
        source = Path(entry)
        if source.suffix == ".whl" and source.is_file():
            folder = tempfile.mkdtemp(prefix="evi-pyfiles-")
            # Spark has its own copy once addPyFile returns; this one goes when the driver exits.
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            target = Path(folder) / f"{source.stem}.zip"
            shutil.copyfile(source, target)
            session.sparkContext.addPyFile(str(target))
            shipped.append(str(target))
    return shipped
