"""Packaging for the Sentinel-2 EVI pipeline: installs the ``evi_udf`` library from ``lib/``.

Dependency ranges follow Dataproc Serverless runtime 2.3 (Spark 3.5, Python 3.11); the exact
versions a fresh machine gets are pinned in ``constraints.txt``.

PySpark is not a runtime requirement: Dataproc mounts its own Spark into the container, so the image
installs the wheel without it (the custom-container rules forbid a second Spark). Local runs and the
tests get it from the ``spark`` extra.

    pip wheel --no-deps --no-build-isolation -w dist .    # dist/evi_udf-<version>-py3-none-any.whl
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

# One version, defined in the package (evi_udf.__version__) and read here.
VERSION = re.search(
    r'^__version__ = "([^"]+)"',
    Path(__file__).with_name("lib").joinpath("evi_udf/__init__.py").read_text(),
    re.M,
).group(1)

SPARK_REQUIREMENTS = ["pyspark>=3.5.3,<3.6"]

RUNTIME_REQUIREMENTS = [
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
    # Grid and footprint transforms (also a rasterio dependency, used directly here).
    "pyproj>=3.6,<4",
    # HTTP errors of the storage client are caught by type (google-cloud-storage's transport).
    "requests>=2.31,<3",
    # User zones: geometry checks, clipping and layering (shapely); GeoPackage, GeoJSON and
    # FlatGeobuf files (pyogrio, with its own GDAL build that has the vector drivers).
    "shapely>=2.0,<3",
    "pyogrio>=0.10,<1",
]

DEV_REQUIREMENTS = [
    "pytest>=8,<10",
    "ruff>=0.6",
    "rio-cogeo>=5,<8",
    "duckdb>=1.1,<3",
    # The GCS emulator the storage tests start on loopback (no cloud account needed).
    "gcp-storage-emulator>=2024.8",
    # Builds the wheel shipped to Dataproc without fetching a build backend (setuptools < 70.1).
    "wheel>=0.43",
    # The clients users load the STAC items with, tried by the tests, and offline STAC validation.
    "odc-stac>=0.5,<0.6",
    "stackstac>=0.5,<0.6",
    "jsonschema>=4.20,<5",
    # The documentation site (mkdocs.yml, docs/), built with --strict by `make test`.
    "mkdocs>=1.6,<2",
]

setup(
    name="evi-udf",
    version=VERSION,
    description="Sentinel-2 EVI composites on Dataproc Serverless with PySpark pandas UDFs",
    python_requires=">=3.10",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    # The example BigQuery queries travel with the package (evi_udf.outputs.queries loads them).
    package_data={"evi_udf.outputs": ["sql/*.sql"]},
    install_requires=RUNTIME_REQUIREMENTS,
    extras_require={"spark": SPARK_REQUIREMENTS, "dev": SPARK_REQUIREMENTS + DEV_REQUIREMENTS},
    entry_points={"console_scripts": ["evi-sample=evi_udf.sample.generate:main"]},
)
