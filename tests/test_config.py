"""The job configuration: loading, overrides, and errors that name the key."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path

import pytest

from evi_udf.config import CatalogConfig, JobConfig, config_from_mapping, load_config
from evi_udf.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_local_config_loads_with_the_values_in_the_file() -> None:
    config = load_config(REPO / "conf" / "local.yaml")
    assert isinstance(config, JobConfig)
    assert config.catalog.index_uri == "data/sample/L2/index.csv.gz"
    assert config.catalog.level == "L2A"
    assert config.catalog.start_date == dt.date(2022, 1, 1)
    assert config.catalog.end_date == dt.date(2022, 2, 28)
    assert config.catalog.tiles == ()
    assert config.catalog.bbox is None
    assert config.catalog.period == "month"


def test_config_is_frozen() -> None:
    config = config_from_mapping({"catalog": {"index_uri": "x.csv.gz"}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.catalog.max_cloud_cover = 3.0  # type: ignore[misc]


def test_defaults_apply_for_keys_not_given() -> None:
    config = config_from_mapping({"catalog": {"index_uri": "x.csv.gz"}})
    assert config.catalog == CatalogConfig(index_uri="x.csv.gz")
    assert config.catalog.max_cloud_cover == 100.0
    assert config.catalog.geometric_quality == "passed_or_missing"
    assert config.output.root == str(Path("out").resolve())


def test_overrides_parse_values_as_yaml_and_normalise_tiles(tmp_path: Path) -> None:
    path = write_config(tmp_path, "catalog:\n  index_uri: a.csv.gz\n")
    config = load_config(
        path,
        [
            "catalog.tiles=[T55HBU, 55hcu, 55HBU]",
            "catalog.max_cloud_cover=30",
            "catalog.bbox=[143.5, -38.1, 145.0, -37.0]",
            "catalog.start_date=2022-01-05",
            "output.root=gs://bucket/evi",
        ],
    )
    # T-prefixed and lower-case forms are the same tiles; duplicates collapse in order.
    assert config.catalog.tiles == ("55HBU", "55HCU")
    assert config.catalog.max_cloud_cover == 30.0
    assert isinstance(config.catalog.max_cloud_cover, float)
    assert config.catalog.bbox == (143.5, -38.1, 145.0, -37.0)
    assert config.catalog.start_date == dt.date(2022, 1, 5)
    assert config.output.root == "gs://bucket/evi"


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "message"),
    [
        ("catalog:\n  index_uri: a\n  max_clod_cover: 3\n", [], "catalog.max_clod_cover: unknown key"),
        (
            "catalog:\n  index_uri: a\n",
            ["catalog.max_cloud_cover=140"],
            "catalog.max_cloud_cover: must be between 0 and 100, got 140",
        ),
        (
            "catalog:\n  index_uri: a\n",
            ["catalog.max_cloud_cover=lots"],
            "catalog.max_cloud_cover: must be a number",
        ),
        ("catalog:\n  level: L2A\n", [], "catalog.index_uri: is required"),
        ("catalog:\n  index_uri: a\n", ["catalog.level=L3"], "catalog.level: must be one of L1C, L2A"),
        ("catalog:\n  index_uri: a\n", ["catalog.period=week"], "catalog.period: must be one of day, month"),
        (
            "catalog:\n  index_uri: a\n",
            ["catalog.tiles=[55HBU, 99ZZZ]"],
            "catalog.tiles: '99ZZZ' is not an MGRS tile",
        ),
        (
            "catalog:\n  index_uri: a\n",
            ["catalog.start_date=2022-13-01"],
            "catalog.start_date: must be a date",
        ),
        (
            "catalog:\n  index_uri: a\n  start_date: 2022-03-01\n  end_date: 2022-01-01\n",
            [],
            "catalog.start_date: 2022-03-01 is after end_date 2022-01-01",
        ),
        ("catalog:\n  index_uri: a\n", ["catalog.bbox=[1, 2, 3]"], "catalog.bbox: must have exactly 4 items"),
        (
            "catalog:\n  index_uri: a\n",
            ["catalog.bbox=[10, 5, 20, 1]"],
            "catalog.bbox: latitudes must satisfy",
        ),
        (
            "catalog:\n  index_uri: a\n",
            ["catalog.bbox=[190, 1, 20, 5]"],
            "catalog.bbox: longitudes must be within",
        ),
        ("catalog:\n  index_uri: a\n", ["outputs.root=x"], "outputs: unknown key"),
        ("catalog:\n  index_uri: a\n", ["catalog.max_cloud_cover"], "must look like section.key=value"),
        ("catalog: [1, 2]\n", [], "catalog: must be a mapping"),
        ("- just\n- a list\n", [], "must hold a mapping of sections"),
    ],
)
def test_bad_settings_fail_with_a_message_naming_the_key(
    tmp_path: Path, yaml_text: str, overrides: list[str], message: str
) -> None:
    path = write_config(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    assert message in str(caught.value)


def test_unreadable_config_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="cannot read config file .*nope.yaml"):
        load_config(missing)


def test_to_dict_is_plain_data() -> None:
    config = config_from_mapping(
        {"catalog": {"index_uri": "a", "start_date": "2022-01-01", "tiles": ["55HBU"]}}
    )
    plain = config.to_dict()
    assert plain["catalog"]["start_date"] == "2022-01-01"
    assert plain["catalog"]["tiles"] == ["55HBU"]


@pytest.mark.parametrize(
    ("period", "start", "end", "expected"),
    [
        # Today is Wednesday 2026-12-02 (UTC). 45 days back is 2026-10-18, whose month starts on the 1st.
        ("month", "-45d", "today", (dt.date(2026, 10, 1), dt.date(2026, 12, 2))),
        ("day", "-45d", "yesterday", (dt.date(2026, 10, 18), dt.date(2026, 12, 1))),
        ("quarter", "-45d", "today", (dt.date(2026, 10, 1), dt.date(2026, 12, 2))),
        ("year", "-2w", "today", (dt.date(2026, 1, 1), dt.date(2026, 12, 2))),
        ("all", "-2w", "-1d", (dt.date(2026, 11, 18), dt.date(2026, 12, 1))),
        # Calendar months: 2026-12-02 minus 10 months is 2026-02-02 (month start 2026-02-01).
        ("month", "-10m", "today", (dt.date(2026, 2, 1), dt.date(2026, 12, 2))),
        # An absolute start is kept as written, even mid-period.
        ("month", "2026-11-15", "TODAY", (dt.date(2026, 11, 15), dt.date(2026, 12, 2))),
    ],
)
def test_relative_dates_count_from_the_run_day_and_start_whole_periods(
    period: str, start: str, end: str, expected: tuple[dt.date, dt.date]
) -> None:
    today = dt.date(2026, 12, 2)
    data = {"catalog": {"index_uri": "x", "period": period, "start_date": start, "end_date": end}}
    catalog = config_from_mapping(data, today=today).catalog
    assert (catalog.start_date, catalog.end_date) == expected


def test_months_back_stay_inside_short_months() -> None:
    data = {"catalog": {"index_uri": "x", "period": "day", "start_date": "-1m", "end_date": "today"}}
    # 2024-03-31 minus one month: February 2024 has 29 days.
    catalog = config_from_mapping(data, today=dt.date(2024, 3, 31)).catalog
    assert catalog.start_date == dt.date(2024, 2, 29)


def test_a_malformed_relative_date_names_the_key() -> None:
    for bad in ("-45", "45d", "-3y", "tomorrow"):
        with pytest.raises(ConfigError, match="catalog.start_date: must be a date like 2023-01-31"):
            config_from_mapping(
                {"catalog": {"index_uri": "x", "start_date": bad}}, today=dt.date(2026, 12, 2)
            )


# Each Dataproc limit just inside and just past its edge (Google's "Spark properties" page: total
# memory per core 1024m-7424m standard / 24576m premium; disk >= 250g standard, listed sizes on premium
# and >= 750g with 16 cores; ttl 10 minutes to 14 days; batch ids of at most 63 characters).
DATAPROC_EDGES = [
    # 4 executor cores x 7424m = 29696m, of which 8g (8192m) is overhead: heap 21504m is the most.
    ({"executor_memory": "21504m"}, None),
    ({"executor_memory": "21505m"}, "executor_memory: executor_memory + executor_memory_overhead"),
    # 4 driver cores x 1024m = 4096m at the least: heap 1024m + overhead 3072m.
    ({"driver_memory": "1024m", "driver_memory_overhead": "3072m"}, None),
    ({"driver_memory": "1024m", "driver_memory_overhead": "3071m"}, "is 1024m per core"),
    ({"driver_memory": "1023m", "driver_memory_overhead": "8g"}, "driver_memory: must be at least 1024m"),
    # Premium: 24576m per core, so 4 x 24576m - 2048m of overhead = 96256m of heap.
    ({"compute_tier": "premium", "driver_memory": "96256m"}, None),
    ({"compute_tier": "premium", "driver_memory": "96257m"}, "24576m per core on the premium"),
    ({"driver_memory": "96g"}, "7424m per core on the standard compute tier"),
    ({"executor_disk_size": "250g"}, None),
    ({"executor_disk_size": "249g"}, "between 250g and 9000g"),
    ({"executor_disk_size": "9000g"}, None),
    ({"executor_disk_size": "9001g"}, "between 250g and 9000g"),
    ({"disk_tier": "premium", "executor_disk_size": "375g"}, None),
    ({"disk_tier": "premium", "executor_disk_size": "376g"}, "must be one of 375g, 750g"),
    (
        {
            "disk_tier": "premium",
            "executor_cores": 16,
            "executor_memory": "16g",
            "executor_disk_size": "375g",
        },
        "with 16 executor cores must be one of 750g",
    ),
    (
        {
            "disk_tier": "premium",
            "executor_cores": 16,
            "executor_memory": "16g",
            "executor_disk_size": "750g",
        },
        None,
    ),
    # 16 cores need 16 x 1024m: the default 4g + 8g is too little.
    ({"executor_cores": 16}, "over 16 cores is 768m per core"),
    ({"ttl": "10m"}, None),
    ({"ttl": "599s"}, "ttl: must be between 10m and 14d"),
    ({"ttl": "14d"}, None),
    ({"ttl": "20161m"}, "ttl: must be between 10m and 14d"),
    ({"batch_prefix": "e" * 40}, None),
    ({"batch_prefix": "e" * 41}, "batch_prefix: use 1-40 lowercase letters"),
    ({"region": "australia-southeast1"}, None),
    ({"region": "US"}, "region: must be a Google Cloud region like us-central1"),
    ({"region": "us-central"}, "region: must be a Google Cloud region"),
    ({"runtime_version": "3.0"}, None),
    ({"runtime_version": 3.0}, "runtime_version: must be text, got the number 3.0; quote it"),
]


@pytest.mark.parametrize(("settings", "error"), DATAPROC_EDGES)
def test_dataproc_limits_are_checked_at_their_edges(settings: dict, error: str | None) -> None:
    data = {"catalog": {"index_uri": "x"}, "dataproc": settings}
    if error is None:
        config_from_mapping(data)
    else:
        with pytest.raises(ConfigError, match=re.escape(error)):
            config_from_mapping(data)


def test_the_longest_batch_prefix_makes_a_valid_batch_id() -> None:
    from evi_udf.deploy.submit import BATCH_ID, new_batch_id

    config = config_from_mapping({"catalog": {"index_uri": "x"}, "dataproc": {"batch_prefix": "e" * 40}})
    batch_id = new_batch_id(config.dataproc.batch_prefix)
    assert len(batch_id) == 63 and BATCH_ID.fullmatch(batch_id)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"run": {"mosaic_size": 100_000_000}}, "run.mosaic_size: must be between 0 (no mosaic) and 8192"),
        ({"raster": {"scl_clear_classes": []}}, "raster.scl_clear_classes: must list at least one class"),
        (
            {"raster": {"grid": {"kind": "shared", "crs": "EPSG:3577", "resolution": 0.001}}},
            "raster.grid.resolution: must be between 1 and 100000 metres, got 0.001",
        ),
        (
            {"raster": {"grid": {"kind": "shared", "crs": "EPSG:3577", "origin": [float("nan"), 0]}}},
            "raster.grid.origin: must be two finite coordinates",
        ),
        (
            {"raster": {"evi_min_denominator": float("inf")}},
            "raster.evi_min_denominator: must be a finite number",
        ),
        ({"raster": {"evi_min_denominator": 0.0}}, "raster.evi_min_denominator: must be positive"),
        ({"raster": {"evi_valid_max": float("nan")}}, "raster.evi_valid_max: must be a finite number"),
        ({"output": {"root": "  "}}, "output.root: must name a local folder or gs://bucket[/prefix]"),
        (
            {"output": {"root": "s3://bucket/evi"}},
            "output.root: 's3://bucket/evi': only local folders and gs://",
        ),
        ({"output": {"root": "file:///tmp/evi"}}, "only local folders and gs://"),
        ({"output": {"root": "gs:///evi"}}, "gs:// needs a bucket name"),
    ],
)
def test_values_that_would_break_a_run_late_are_refused_when_loading(section: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_mapping({"catalog": {"index_uri": "x"}, **section})


def test_a_home_relative_output_root_is_expanded() -> None:
    config = config_from_mapping({"catalog": {"index_uri": "x"}, "output": {"root": "~/evi-out"}})
    assert config.output.root == str(Path.home() / "evi-out")
    gs = config_from_mapping({"catalog": {"index_uri": "x"}, "output": {"root": "gs://bucket/evi/"}})
    assert gs.output.root == "gs://bucket/evi"
