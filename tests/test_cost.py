"""The cost estimate: Google's DCU rules worked by hand, and the benchmark it is based on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evi_udf.config import DataprocConfig
from evi_udf.deploy.cost import CORE_SECONDS_PER_SCENE, estimate_cost, node_dcu, rate

REPO = Path(__file__).resolve().parents[1]


def test_dcus_follow_googles_rules() -> None:
    # Google's pricing example: a driver or executor of 4 vCPUs and 16 GB is 4 DCUs (2.4 + 1.6), and
    # 12 DCUs for 24 hours cost 12 x 24 x $0.06 = $17.28 in us-central1.
    assert node_dcu(4, "12g", "4g") == pytest.approx(4.0)
    # Memory beyond 8 GiB per vCPU counts double: 4 vCPUs with 48 GiB = 2.4 + 32 x 0.1 + 16 x 0.2.
    assert node_dcu(4, "40g", "8g") == pytest.approx(8.8)
    # Sizes in megabytes: 4 vCPUs, 3 GiB + 7 GiB.
    assert node_dcu(4, "3072m", "7g") == pytest.approx(3.4)


def test_a_run_is_priced_from_its_scenes_groups_and_shapes() -> None:
    shapes = DataprocConfig(
        driver_cores=4,
        driver_memory="12g",
        driver_memory_overhead="4g",
        executor_cores=4,
        executor_memory="12g",
        executor_memory_overhead="4g",
        min_executors=2,
        initial_executors=2,
        max_executors=10,
    )
    # 25 groups need ceil(25 / 4) = 7 executors (28 slots); 100 scenes take 100 x S / 28 seconds
    # after the 120 s start; 4 DCU for the driver and each executor.
    estimate = estimate_cost(100, 25, shapes)
    seconds = 120 + 100 * CORE_SECONDS_PER_SCENE / 28
    assert estimate.executors == 7
    assert estimate.wall_seconds == pytest.approx(seconds)
    assert estimate.dcu_hours == pytest.approx(8 * 4.0 * seconds / 3600)
    assert estimate.price_usd == pytest.approx(8 * 4.0 * seconds / 3600 * 0.06)
    # More groups than slots: max_executors bounds the executors; few groups: min_executors.
    assert estimate_cost(1000, 500, shapes).executors == 10
    assert estimate_cost(3, 1, shapes).executors == 2
    premium = estimate_cost(100, 25, DataprocConfig(**{**shapes.__dict__, "compute_tier": "premium"}))
    assert premium.price_usd == pytest.approx(estimate.dcu_hours * 0.089)
    text = estimate.describe()
    assert "100 scenes in 25 groups on 7 executors x 4 cores" in text
    assert f"~${estimate.price_usd:.2f}" in text
    assert "nothing to process" in estimate_cost(0, 0, shapes).describe()


def test_the_rate_per_scene_is_one_executor_core_for_the_measured_seconds() -> None:
    shapes = DataprocConfig()  # 4-core executors of 4g + 8g = 3.6 DCU; driver 8g + 2g = 3.4 DCU
    per_scene = 3.6 * CORE_SECONDS_PER_SCENE / 4 / 3600
    line = rate(shapes)
    assert f"{3.4 + 20 * 3.6:.1f} DCU with 20 executors" in line
    assert f"~{per_scene:.4f} DCU-hours" in line


def test_the_seconds_per_scene_are_those_the_benchmark_measured() -> None:
    results = json.loads((REPO / "bench" / "results" / "speed.json").read_text())
    (spark_run,) = results["spark"]
    measured = spark_run["run_wall_seconds"] * spark_run["slots"] / spark_run["scenes"]
    assert results["parameters"]["spark_factor"] == 1  # full-size 10980 px bands
    assert measured == pytest.approx(CORE_SECONDS_PER_SCENE, rel=0.01)
