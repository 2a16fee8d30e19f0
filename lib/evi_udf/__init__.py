"""Sentinel-2 EVI composites with PySpark pandas UDFs: the library behind ``spark_jobs/evi_job.py``.

Importing the package has no side effects: no SparkSession, no network, no GDAL environment.
"""

__version__ = "0.1.0"
