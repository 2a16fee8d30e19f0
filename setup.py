"""Packaging for the Sentinel-2 EVI pipeline: installs the ``evi_udf`` library from ``lib/``.

Dependency ranges follow Dataproc Serverless runtime 2.3 (Spark 3.5, Python 3.11); the exact
versions a fresh machine gets are pinned in ``constraints.txt``.
"""

from setuptools import find_packages, setup

RUNTIME_REQUIREMENTS = [
    "pyspark>=3.5.3,<3.6",
    "rasterio>=1.4.3,<1.5",
    "numpy>=2.0,<2.4",
    # pyspark 3.5 warns that pandas 3 is not supported.
    "pandas>=2.2,<3",
    "pyarrow>=15,<22",
    "google-cloud-storage>=2.16,<4",
    "google-cloud-bigquery>=3.20,<4",
    "mgrs>=1.4,<2",
    "pyyaml>=6,<7",
    "pystac>=1.10,<2",
]

DEV_REQUIREMENTS = [
    "pytest>=8,<10",
    "ruff>=0.6",
    "rio-cogeo>=5,<8",
    "duckdb>=1.1,<3",
    # The GCS emulator the storage tests start on loopback (no cloud account needed).
    "gcp-storage-emulator>=2024.8",
]

setup(
    name="evi-udf",
    version="0.1.0",
    description="Sentinel-2 EVI composites on Dataproc Serverless with PySpark pandas UDFs",
    python_requires=">=3.10",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    install_requires=RUNTIME_REQUIREMENTS,
    extras_require={"dev": DEV_REQUIREMENTS},
    entry_points={"console_scripts": ["evi-sample=evi_udf.sample:main"]},
)
