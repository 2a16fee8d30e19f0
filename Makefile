# Two commands on a fresh machine:
#   make run   - generate the bundled Sentinel-2 sample (first time) and run the pipeline on it locally
#   make test  - lint, build the docs and run the test suite
# Both install what they need first (Java 17 if missing, .venv with pinned dependencies).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SAMPLE := data/sample
CONFIG ?= conf/local.yaml
# Spark workers must use the venv's interpreter; loopback keeps local Spark off the network.
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
export SPARK_LOCAL_IP := 127.0.0.1

.PHONY: setup run plan run-emulators test lint docs sample bench clean wheel

setup:
	@scripts/bootstrap.sh

$(SAMPLE)/L2/index.csv.gz: | setup
	$(PY) -m evi_udf.sample.generate --out $(SAMPLE) --level L2A --resolution-factor 10 --seed 0

# A sample generated before zones existed gets its zones file alone.
$(SAMPLE)/zones.parquet: | $(SAMPLE)/L2/index.csv.gz
	$(PY) -m evi_udf.sample.generate --out $(SAMPLE) --zones-only --seed 0

sample: $(SAMPLE)/L2/index.csv.gz $(SAMPLE)/zones.parquet

# ARGS passes job options, e.g. make run ARGS=--overwrite
run: setup sample
	$(VENV)/bin/spark-submit --master 'local[2]' --conf spark.ui.showConsoleProgress=true --conf spark.log.level=WARN \
		spark_jobs/evi_job.py --config $(CONFIG) $(ARGS)

# The cloud-shaped run on one machine: GCS and BigQuery emulators, gs:// in and out, BigQuery tables.
run-emulators: setup
	$(PY) scripts/run_emulators.py $(ARGS)

# The plan only: the groups the config selects, each new / changed / failed / done with the reason
# (from the output root's commit records), and the rejected index rows. Nothing is processed. The
# sample is generated only for the default local config: another config plans its own index as is.
plan: setup $(if $(filter conf/local.yaml,$(CONFIG)),sample)
	$(PY) -m evi_udf.cli.plan --config $(CONFIG) --master 'local[2]' $(ARGS)

# The wheel Dataproc batches run (scripts/submit.sh and scripts/build_image.sh build it themselves).
wheel: setup
	$(PY) -m pip wheel -q --no-deps --no-build-isolation --wheel-dir dist .

lint: setup
	$(VENV)/bin/ruff check lib tests spark_jobs bench scripts

# The documentation site (mkdocs.yml, docs/) into site/ (git-ignored). --strict makes every warning
# an error: a broken link or anchor, a page missing from the nav.
docs: setup
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir site

test: setup lint docs
	$(PY) -m pytest

# Benchmarks are not part of `make test`: full-size tiles take long (~80 min on 2 cores, plus ~60 min
# to generate the sample tiles the first time). The speed tiles are 55HBU (fully covered) and 54HXD
# (a swath edge leaves one scene without data over half the tile). BENCH_ARGS, MEMORY_ARGS,
# GCS_ARGS, MASK_ARGS, LEVELS_ARGS, DRIVER_ARGS and INDEX_ARGS override the options of the speed,
# memory, GCS-read, mask-skip, resolution-level, driver and index-size benchmarks; a quick check of the
# whole chain (not results):
#   make bench BENCH_ARGS="--factors 10 --repeat 1 --spark-tiles 2 --spark-factor 10" \
#       MEMORY_ARGS="--factors 10" GCS_ARGS="--factor 10" MASK_ARGS="--factor 10 --repeat 1" \
#       LEVELS_ARGS="--factor 10 --repeat 1" DRIVER_ARGS="--sizes 20 40" INDEX_ARGS="--rows 100000"
BENCH_ARGS ?= --factors 1 2 --repeat 3 --tiles 55HBU 54HXD --spark-tiles 8 --spark-factor 1
MEMORY_ARGS ?= --factors 1 2
GCS_ARGS ?= --factor 1
MASK_ARGS ?= --factor 2 --scenes 6 --repeat 3
LEVELS_ARGS ?= --factor 2 --scenes 6 --repeat 3
DRIVER_ARGS ?= --sizes 100 1000
INDEX_ARGS ?= --rows 5000000 20000000
ZONES_ARGS ?= --factor 2 --scenes 4 --zones 100000 --repeat 2
bench: setup
	bench/install_gdal.sh
	$(PY) bench/speed.py $(BENCH_ARGS) --work bench/data
	$(PY) bench/memory.py $(MEMORY_ARGS) --work bench/data
	$(PY) bench/gcs_read.py $(GCS_ARGS) --work bench/data
	$(PY) bench/mask_skip.py $(MASK_ARGS) --work bench/data
	$(PY) bench/levels.py $(LEVELS_ARGS) --work bench/data
	$(PY) bench/driver.py $(DRIVER_ARGS) --work bench/data
	$(PY) bench/index_size.py $(INDEX_ARGS) --work bench/data
	$(PY) bench/zones.py $(ZONES_ARGS) --work bench/data
	$(PY) bench/report.py

clean:
	rm -rf $(SAMPLE) out site
