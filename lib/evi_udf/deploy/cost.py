"""What a run will cost on Dataproc Serverless, estimated before it runs.

The estimate multiplies the scenes a run would process by a measured cost per scene and prices the
executors' and driver's Data Compute Units (DCUs) the way Google bills them. It is arithmetic on the
plan (:mod:`evi_udf.cli.plan`) and the ``dataproc`` settings; nothing is read or requested.

The basis, and what it leaves out:

- **Seconds per scene** (:data:`CORE_SECONDS_PER_SCENE`): the Spark run of ``bench/speed.py`` (8
  groups of 3 full-size L2A scenes, 10980 x 10980 px, through ``spark-submit --master local[2]`` on
  2 vCPUs of an AMD EPYC), wall time x task slots / scenes: Spark, decoding, compositing and publishing
  included. ``tests/test_cost.py`` checks the constant against ``bench/results/speed.json``.
  Not included: reading the JPEG2000 files from Google's bucket (the benchmark reads local files;
  three 10 m bands of roughly 80-130 MB per scene) and the difference between that CPU and Dataproc's.
- **DCUs** (Google's pricing page): 0.6 per vCPU, 0.1 per GiB of memory up to 8 GiB per vCPU and 0.2
  per GiB above; memory is heap plus overhead. Billed per second, at least one minute.
- **Price**: list price per DCU-hour in us-central1 (standard $0.06, premium $0.089); other regions
  and committed-use discounts differ. Shuffle storage is ignored (a run shuffles a few rows per
  group).
- **Executors**: one task slot per group, so ``ceil(groups / executor_cores)`` executors, within
  ``min_executors`` and ``max_executors``, busy for the whole run (dynamic allocation releases
  idle executors sooner, so this errs high), plus :data:`STARTUP_SECONDS` for the batch to start.
"""

from __future__ import annotations

import dataclasses
import math

from evi_udf.config import DataprocConfig, size_mib

# bench/results/speed.json, "spark" run: 742.24 s wall x 2 slots / 24 scenes.
CORE_SECONDS_PER_SCENE = 61.85
BASIS = "bench/speed.py Spark run: 10980 px L2A scenes from local disk, 2 vCPU AMD EPYC"
# Batch start (provisioning the driver and the first executors) and the driver's plan and load
# steps, observed on Dataproc Serverless as one to two minutes; the upper end.
STARTUP_SECONDS = 120.0
DCU_PER_VCPU = 0.6
DCU_PER_GIB = 0.1
DCU_PER_GIB_ABOVE = 0.2
GIB_PER_VCPU_AT_BASE_RATE = 8.0
MINIMUM_BILLED_SECONDS = 60.0
# USD per DCU-hour, us-central1 list price.
PRICE_PER_DCU_HOUR = {"standard": 0.06, "premium": 0.089}


@dataclasses.dataclass(frozen=True)
class CostEstimate:
    """A run's estimated size, duration and list price."""

    scenes: int
    groups: int
    executors: int
    executor_cores: int
    wall_seconds: float
    dcu_per_hour: float
    dcu_hours: float
    price_usd: float
    tier: str

    def describe(self) -> str:
        """Two lines for a terminal: the estimate, then its basis."""
        if self.scenes == 0:
            return "estimate: nothing to process (no DCU beyond the batch's start)"
        return (
            f"estimate: {self.scenes} scenes in {self.groups} groups on {self.executors} executors x "
            f"{self.executor_cores} cores: ~{self.wall_seconds / 3600:.2f} h, "
            f"~{self.dcu_hours:.1f} DCU-hours ({self.dcu_per_hour:.1f} DCU while running), "
            f"~${self.price_usd:.2f} at the {self.tier} list price "
            f"(${PRICE_PER_DCU_HOUR[self.tier]}/DCU-hour, us-central1)\n"
            f"basis: {CORE_SECONDS_PER_SCENE} core-seconds per scene ({BASIS}); reading from "
            "Google's bucket and a different CPU add to it"
        )


def node_dcu(cores: int, memory: str, overhead: str) -> float:
    """DCUs of one driver or executor: its vCPUs and its memory (heap plus overhead)."""
    gib = (size_mib(memory) + size_mib(overhead)) / 1024
    base = min(gib, GIB_PER_VCPU_AT_BASE_RATE * cores)
    return DCU_PER_VCPU * cores + DCU_PER_GIB * base + DCU_PER_GIB_ABOVE * (gib - base)


def rate(dataproc: DataprocConfig) -> str:
    """One line: the DCU and list price per hour at ``max_executors``, and per scene processed."""
    executor = node_dcu(dataproc.executor_cores, dataproc.executor_memory, dataproc.executor_memory_overhead)
    driver = node_dcu(dataproc.driver_cores, dataproc.driver_memory, dataproc.driver_memory_overhead)
    price = PRICE_PER_DCU_HOUR[dataproc.compute_tier]
    busiest = driver + dataproc.max_executors * executor
    per_scene = executor * CORE_SECONDS_PER_SCENE / dataproc.executor_cores / 3600
    return (
        f"cost: {busiest:.1f} DCU with {dataproc.max_executors} executors (~${busiest * price:.2f}/hour), "
        f"~{per_scene:.4f} DCU-hours (~${per_scene * price:.4f}) of executor time per scene at the "
        f"{dataproc.compute_tier} list price (us-central1); `make plan` or --plan estimates a run"
    )


def estimate_cost(scenes: int, groups: int, dataproc: DataprocConfig) -> CostEstimate:
    """The estimated DCU-hours and list price of processing ``scenes`` in ``groups`` groups.

    Parameters
    ----------
    scenes, groups
        What the run would process (done groups excluded).
    dataproc
        The batch's driver and executor shapes, executor bounds and compute tier.
    """
    executors = min(
        dataproc.max_executors,
        max(dataproc.min_executors, math.ceil(groups / dataproc.executor_cores)),
    )
    slots = executors * dataproc.executor_cores
    processing = scenes * CORE_SECONDS_PER_SCENE / slots
    wall = max(MINIMUM_BILLED_SECONDS, STARTUP_SECONDS + processing)
    dcu = node_dcu(
        dataproc.driver_cores, dataproc.driver_memory, dataproc.driver_memory_overhead
    ) + executors * node_dcu(
        dataproc.executor_cores, dataproc.executor_memory, dataproc.executor_memory_overhead
    )
    dcu_hours = dcu * wall / 3600
    return CostEstimate(
        scenes=scenes,
        groups=groups,
        executors=executors,
        executor_cores=dataproc.executor_cores,
        wall_seconds=wall,
        dcu_per_hour=dcu,
        dcu_hours=dcu_hours,
        price_usd=dcu_hours * PRICE_PER_DCU_HOUR[dataproc.compute_tier],
        tier=dataproc.compute_tier,
    )
