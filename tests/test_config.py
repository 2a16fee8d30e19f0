"""The job configuration: loading, overrides, and errors that name the key."""

from __future__ import annotations

import dataclasses
import datetime as dt
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
    assert config.output.root == "out"


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
