"""Catalog rules on pandas: parsing, filters, dedupe, periods, header checks.

Every expected value below was worked out by hand from the rows written in the test (the index format
is described in docs/sentinel2.md), never copied from a run of the code.
"""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import pandas as pd
import pytest

from evi_udf.config import CatalogConfig
from evi_udf.errors import IndexSchemaError
from evi_udf.index.catalog import (
    CORRUPT_RECORD_COLUMN,
    INDEX_COLUMNS,
    INDEX_HEADER,
    REJECTED_COLUMNS,
    SCENE_COLUMNS,
    main,
    parse_index,
    plan_groups,
    read_index_pandas,
    select_scenes_pandas,
)

BUCKET = "gs://gcp-public-data-sentinel-2"
L2_TILES = f"{BUCKET}/L2/tiles"
TIME_HINT = "is not a UTC time like 2015-12-23T02:39:13.886000Z"

# Realistic rows, as in docs/sentinel2.md.
OLD_L1C = {
    "GRANULE_ID": "S2A_OPER_MSI_L1C_TL_SGS__20151223T041908_A002617_T51RWP_N02.01",
    "PRODUCT_ID": "S2A_OPER_PRD_MSIL1C_PDMC_20151223T100202_R046_V20151223T023913_20151223T023913",
    "DATATAKE_IDENTIFIER": "GS2A_20151223T023902_002617_N02.01",
    "MGRS_TILE": "51RWP",
    "SENSING_TIME": "2015-12-23T02:39:13.886000Z",
    "TOTAL_SIZE": "",
    "CLOUD_COVER": "33.0",
    "GEOMETRIC_QUALITY_FLAG": "PASSED",
    "GENERATION_TIME": "2015-12-23T10:02:02.000000Z",
    "NORTH_LAT": "31.71",
    "SOUTH_LAT": "30.70",
    "WEST_LON": "122.88",
    "EAST_LON": "124.06",
    "BASE_URL": f"{BUCKET}/tiles/51/R/WP/S2A_MSIL1C_20151223T023913_N0201_R046_T51RWP_20151223T100202.SAFE",
}
NEW_L1C = {
    "GRANULE_ID": "L1C_T14SPJ_A009976_20170520T172251",
    "PRODUCT_ID": "S2A_MSIL1C_20170520T171301_N0205_R112_T14SPJ_20170520T172251",
    "DATATAKE_IDENTIFIER": "GS2A_20170520T171301_009976_N02.05",
    "MGRS_TILE": "14SPJ",
    "SENSING_TIME": "2017-05-20T17:22:51.610000Z",
    "TOTAL_SIZE": "791412345",
    "CLOUD_COVER": "0.954463",
    "GEOMETRIC_QUALITY_FLAG": "PASSED",
    "GENERATION_TIME": "2017-05-20T17:22:51.000000Z",
    "NORTH_LAT": "37.04",
    "SOUTH_LAT": "36.03",
    "WEST_LON": "-97.88",
    "EAST_LON": "-96.63",
    "BASE_URL": f"{BUCKET}/tiles/14/S/PJ/S2A_MSIL1C_20170520T171301_N0205_R112_T14SPJ_20170520T172251.SAFE",
}
L2A_214 = {
    "GRANULE_ID": "L2A_T29SND_A019940_20201230T112446",
    "PRODUCT_ID": "S2B_MSIL2A_20201230T112359_N0214_R037_T29SND_20201230T132319",
    "DATATAKE_IDENTIFIER": "GS2B_20201230T112359_019940_N02.14",
    "MGRS_TILE": "29SND",
    "SENSING_TIME": "2020-12-30T11:24:46.335000Z",
    "TOTAL_SIZE": "850123456",
    "CLOUD_COVER": "5.0",
    "GEOMETRIC_QUALITY_FLAG": "PASSED",
    "GENERATION_TIME": "2020-12-30T13:23:19.000000Z",
    "NORTH_LAT": "38.84",
    "SOUTH_LAT": "37.85",
    "WEST_LON": "-8.43",
    "EAST_LON": "-7.17",
    "BASE_URL": f"{L2_TILES}/29/S/ND/S2B_MSIL2A_20201230T112359_N0214_R037_T29SND_20201230T132319.SAFE",
}
# The same datatake reprocessed as Collection-1 (baseline 05.10) in 2023.
L2A_510 = {
    **L2A_214,
    "GRANULE_ID": "L2A_T29SND_A019940_20230415T093012",
    "PRODUCT_ID": "S2B_MSIL2A_20201230T112359_N0510_R037_T29SND_20230415T093012",
    "DATATAKE_IDENTIFIER": "GS2B_20201230T112359_019940_N05.10",
    "TOTAL_SIZE": "861234567",
    "GENERATION_TIME": "2023-04-15T09:30:12.000000Z",
    "BASE_URL": f"{L2_TILES}/29/S/ND/S2B_MSIL2A_20201230T112359_N0510_R037_T29SND_20230415T093012.SAFE",
}
L2A_55HBU = {
    "GRANULE_ID": "L2A_T55HBU_A031000_20230214T012345",
    "PRODUCT_ID": "S2B_MSIL2A_20230214T000239_N0509_R030_T55HBU_20230214T012345",
    "DATATAKE_IDENTIFIER": "GS2B_20230214T000239_031000_N05.09",
    "MGRS_TILE": "55HBU",
    "SENSING_TIME": "2023-02-14T00:06:49.024000Z",
    "TOTAL_SIZE": "1034567890",
    "CLOUD_COVER": "12.5",
    "GEOMETRIC_QUALITY_FLAG": "PASSED",
    "GENERATION_TIME": "2023-02-14T01:23:45.000000Z",
    "NORTH_LAT": "-36.05",
    "SOUTH_LAT": "-37.05",
    "WEST_LON": "143.10",
    "EAST_LON": "144.35",
    "BASE_URL": f"{L2_TILES}/55/H/BU/S2B_MSIL2A_20230214T000239_N0509_R030_T55HBU_20230214T012345.SAFE",
}


def l2a(
    granule: str,
    tile: str = "55HBU",
    sensing: str = "2023-02-14T00:06:49.024000Z",
    baseline: str = "0509",
    generation: str = "2023-02-14T01:23:45.000000Z",
    **fields: str,
) -> dict[str, str]:
    """A valid L2A row; ``granule`` also makes the datatake unique so rows never dedupe by accident."""
    stamp = sensing[:19].replace("-", "").replace(":", "")
    gen = generation[:19].replace("-", "").replace(":", "")
    product = f"S2B_MSIL2A_{stamp}_N{baseline}_R030_T{tile}_{gen}"
    row = {
        **L2A_55HBU,
        "GRANULE_ID": granule,
        "PRODUCT_ID": product,
        "DATATAKE_IDENTIFIER": f"GS2B_{stamp}_{granule}_N{baseline[:2]}.{baseline[2:]}",
        "MGRS_TILE": tile,
        "SENSING_TIME": sensing,
        "GENERATION_TIME": generation,
        "BASE_URL": f"{BUCKET}/L2/tiles/{tile[:2]}/{tile[2]}/{tile[3:]}/{product}.SAFE",
    }
    row.update(fields)
    return row


def line(row: dict[str, str]) -> str:
    return ",".join(row[column] for column in INDEX_COLUMNS)


def write_index(directory: Path, rows: list[dict[str, str] | str], name: str = "index.csv") -> Path:
    """Write an index file; a row given as a string is written as that exact line."""
    text = "\n".join([INDEX_HEADER, *(r if isinstance(r, str) else line(r) for r in rows)]) + "\n"
    path = directory / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def select(directory: Path, rows: list[dict[str, str] | str], **settings: object):
    path = write_index(directory, rows)
    config = CatalogConfig(index_uri=str(path), **settings)
    return select_scenes_pandas(read_index_pandas(path), config)


def granules(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["granule_id"])


def reasons(rejected: pd.DataFrame) -> dict[str | None, str]:
    return dict(zip(rejected["granule_id"], rejected["reason"], strict=True))


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def test_read_index_pandas_gzip_fields_and_field_count(tmp_path: Path) -> None:
    too_many = line(L2A_55HBU) + ",extra"
    too_few = ",".join(L2A_55HBU[c] for c in INDEX_COLUMNS[:13])
    path = write_index(tmp_path, [OLD_L1C, "", too_many, too_few], name="index.csv.gz")
    raw = read_index_pandas(path)
    assert list(raw.columns) == [*INDEX_COLUMNS, CORRUPT_RECORD_COLUMN]
    assert len(raw) == 3  # the blank line is skipped, as Spark does
    assert raw.loc[0, "TOTAL_SIZE"] is None
    assert raw.loc[0, "MGRS_TILE"] == "51RWP"
    assert raw.loc[0, CORRUPT_RECORD_COLUMN] is None
    # Spark keeps the first 14 fields of a long row and pads a short one with nulls.
    assert raw.loc[1, "BASE_URL"] == L2A_55HBU["BASE_URL"]
    assert raw.loc[1, CORRUPT_RECORD_COLUMN] == too_many
    assert raw.loc[2, "EAST_LON"] == "144.35"
    assert raw.loc[2, "BASE_URL"] is None
    assert raw.loc[2, CORRUPT_RECORD_COLUMN] == too_few


def test_header_mismatch_names_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "index.csv"
    bad_header = INDEX_HEADER.replace("DATATAKE_IDENTIFIER", "DATATAKE_ID")
    path.write_text(bad_header + "\n" + line(L2A_55HBU) + "\n", encoding="utf-8")
    with pytest.raises(IndexSchemaError) as caught:
        read_index_pandas(path)
    message = str(caught.value)
    assert str(path) in message
    assert "column 3: expected DATATAKE_IDENTIFIER, found 'DATATAKE_ID'" in message
    assert f"expected: {INDEX_HEADER}" in message
    assert f"found:    {bad_header}" in message


def test_header_missing_columns_and_empty_file(tmp_path: Path) -> None:
    short = tmp_path / "short.csv"
    short.write_text("GRANULE_ID,PRODUCT_ID\n", encoding="utf-8")
    with pytest.raises(IndexSchemaError, match="expected 14 columns, found 2"):
        read_index_pandas(short)
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(IndexSchemaError, match="the file is empty"):
        read_index_pandas(empty)


def test_header_only_index_gives_empty_frames(tmp_path: Path) -> None:
    scenes, rejected = select(tmp_path, [])
    assert scenes.empty and list(scenes.columns) == list(SCENE_COLUMNS)
    assert rejected.empty and list(rejected.columns) == list(REJECTED_COLUMNS)
    assert plan_groups(scenes).empty


# --------------------------------------------------------------------------------------------------
# Parsing: derived columns
# --------------------------------------------------------------------------------------------------


def test_derived_columns_of_realistic_rows() -> None:
    raw = pd.DataFrame([OLD_L1C, NEW_L1C, L2A_214, L2A_55HBU], columns=list(INDEX_COLUMNS))
    parsed = parse_index(raw).set_index("granule_id")
    assert parsed["reason"].isna().all()

    old = parsed.loc[OLD_L1C["GRANULE_ID"]]
    assert (old["level"], old["mission"], old["processing_baseline"]) == ("L1C", "S2A", "02.01")
    assert old["datatake_key"] == "GS2A_20151223T023902_002617"
    assert (old["utm_zone"], old["latitude_band"], old["epsg"]) == (51, "R", 32651)
    assert old["sensing_time"] == pd.Timestamp("2015-12-23 02:39:13.886")
    assert old["sensing_date"] == pd.Timestamp("2015-12-23")
    assert pd.isna(old["total_size"])
    assert old["generation_time"] == pd.Timestamp("2015-12-23 10:02:02")

    new = parsed.loc[NEW_L1C["GRANULE_ID"]]
    assert (new["level"], new["processing_baseline"], new["epsg"]) == ("L1C", "02.05", 32614)
    assert new["total_size"] == 791412345
    assert new["cloud_cover"] == pytest.approx(0.954463)

    l2a_row = parsed.loc[L2A_214["GRANULE_ID"]]
    assert (l2a_row["level"], l2a_row["mission"], l2a_row["processing_baseline"]) == ("L2A", "S2B", "02.14")
    assert (l2a_row["epsg"], l2a_row["geometric_quality"]) == (32629, "PASSED")

    south = parsed.loc[L2A_55HBU["GRANULE_ID"]]
    assert (south["utm_zone"], south["latitude_band"], south["epsg"]) == (55, "H", 32755)
    assert south["processing_baseline"] == "05.09"
    assert (south["north_lat"], south["south_lat"], south["west_lon"], south["east_lon"]) == (
        -36.05,
        -37.05,
        143.10,
        144.35,
    )


def test_processing_baseline_sources_in_order() -> None:
    old_safe = f"{BUCKET}/tiles/51/R/WP/{OLD_L1C['PRODUCT_ID']}.SAFE"
    rows = [
        # BASE_URL wins over PRODUCT_ID when they disagree.
        {**L2A_214, "BASE_URL": L2A_510["BASE_URL"]},
        # A trailing slash on the folder still counts.
        {**L2A_214, "GRANULE_ID": "g-slash", "BASE_URL": L2A_214["BASE_URL"] + "/"},
        # Empty BASE_URL: PRODUCT_ID N0214.
        {**L2A_214, "GRANULE_ID": "g-product", "BASE_URL": ""},
        # Old naming everywhere: no N-number in the .SAFE name nor PRODUCT_ID, GRANULE_ID ends _N02.01.
        {**OLD_L1C, "BASE_URL": old_safe},
        # Only the datatake carries the baseline.
        {**OLD_L1C, "GRANULE_ID": "g-datatake", "BASE_URL": old_safe,
         "DATATAKE_IDENTIFIER": "GS2A_20151223T023902_002617_N02.04"},
    ]  # fmt: skip
    parsed = parse_index(pd.DataFrame(rows, columns=list(INDEX_COLUMNS)))
    assert list(parsed["processing_baseline"]) == ["05.10", "02.14", "02.14", "02.01", "02.04"]
    assert list(parsed["datatake_key"]) == [
        "GS2B_20201230T112359_019940",
        "GS2B_20201230T112359_019940",
        "GS2B_20201230T112359_019940",
        "GS2A_20151223T023902_002617",
        "GS2A_20151223T023902_002617",
    ]


# --------------------------------------------------------------------------------------------------
# Parsing: malformed rows
# --------------------------------------------------------------------------------------------------


def malformed_rows() -> tuple[list[dict[str, str] | str], dict[str, str]]:
    """Rows each broken in one way (granule ids name the defect) and their hand-written reasons."""
    no_n_product = "S2B_MSIL2A_20230214T000239_R030_T55HBU_20230214T012345"
    rows: list[dict[str, str] | str] = [
        l2a("bad-tile-prefix", MGRS_TILE="T55HBU"),
        l2a("bad-tile-letter", MGRS_TILE="55HIU"),
        l2a("bad-sensing-day", SENSING_TIME="2023-02-30T00:06:49.024000Z"),
        l2a("bad-sensing-text", SENSING_TIME="14/02/2023 00:06"),
        l2a("bad-cloud-text", CLOUD_COVER="abc"),
        l2a("bad-cloud-range", CLOUD_COVER="100.5"),
        l2a("bad-cloud-empty", CLOUD_COVER=""),
        l2a("bad-flag", GEOMETRIC_QUALITY_FLAG="OK"),
        l2a("bad-north", NORTH_LAT="north"),
        l2a("bad-south-range", SOUTH_LAT="-95.0"),
        l2a("bad-west-range", WEST_LON="200.0"),
        l2a("bad-lat-order", NORTH_LAT="-37.05", SOUTH_LAT="-36.05"),
        l2a("bad-size-negative", TOTAL_SIZE="-5"),
        l2a("bad-size-fraction", TOTAL_SIZE="12.5"),
        l2a("bad-generation", GENERATION_TIME="not-a-time"),
        l2a("bad-level", PRODUCT_ID="S2B_MSIXYZ_20230214T000239_N0509_R030_T55HBU_20230214T012345"),
        l2a("bad-mission", PRODUCT_ID="X9Z_MSIL2A_20230214T000239_N0509_R030_T55HBU_20230214T012345"),
        l2a("bad-baseline", PRODUCT_ID=no_n_product, DATATAKE_IDENTIFIER="GS2B_20230214T000239_031000",
            BASE_URL=f"{BUCKET}/L2/tiles/55/H/BU/{no_n_product}.SAFE"),
        l2a("bad-datatake", DATATAKE_IDENTIFIER=""),
        l2a("bad-two-fields", CLOUD_COVER="abc", GEOMETRIC_QUALITY_FLAG="OK"),
        l2a("", ),
        l2a("bad-product-empty", PRODUCT_ID=""),
    ]  # fmt: skip
    expected = {
        "bad-tile-prefix": "MGRS_TILE 'T55HBU' is not an MGRS tile like 55HBU",
        "bad-tile-letter": "MGRS_TILE '55HIU' is not an MGRS tile like 55HBU",
        "bad-sensing-day": f"SENSING_TIME '2023-02-30T00:06:49.024000Z' {TIME_HINT}",
        "bad-sensing-text": f"SENSING_TIME '14/02/2023 00:06' {TIME_HINT}",
        "bad-cloud-text": "CLOUD_COVER 'abc' is not a number",
        "bad-cloud-range": "CLOUD_COVER '100.5' is outside [0, 100]",
        "bad-cloud-empty": "CLOUD_COVER is empty",
        "bad-flag": "GEOMETRIC_QUALITY_FLAG 'OK' is not PASSED, FAILED or empty",
        "bad-north": "NORTH_LAT 'north' is not a number",
        "bad-south-range": "SOUTH_LAT '-95.0' is outside [-90, 90]",
        "bad-west-range": "WEST_LON '200.0' is outside [-180, 180]",
        "bad-lat-order": "SOUTH_LAT '-36.05' is north of NORTH_LAT '-37.05'",
        "bad-size-negative": "TOTAL_SIZE '-5' is not a non-negative whole number",
        "bad-size-fraction": "TOTAL_SIZE '12.5' is not a non-negative whole number",
        "bad-generation": f"GENERATION_TIME 'not-a-time' {TIME_HINT}",
        "bad-level": "PRODUCT_ID 'S2B_MSIXYZ_20230214T000239_N0509_R030_T55HBU_20230214T012345' "
        "names no processing level (MSIL1C or MSIL2A)",
        "bad-mission": "PRODUCT_ID 'X9Z_MSIL2A_20230214T000239_N0509_R030_T55HBU_20230214T012345' "
        "does not start with a Sentinel-2 mission (S2A_, S2B_, S2C_)",
        "bad-baseline": "processing baseline not found in BASE_URL, PRODUCT_ID, GRANULE_ID or "
        "DATATAKE_IDENTIFIER",
        "bad-datatake": "DATATAKE_IDENTIFIER is empty",
        "bad-two-fields": "CLOUD_COVER 'abc' is not a number; "
        "GEOMETRIC_QUALITY_FLAG 'OK' is not PASSED, FAILED or empty",
        "bad-product-empty": "PRODUCT_ID is empty",
    }
    return rows, expected


def test_each_malformed_kind_is_rejected_with_field_and_value(tmp_path: Path) -> None:
    rows, expected = malformed_rows()
    too_many = line(l2a("bad-too-many")) + ",extra"
    too_few = ",".join(l2a("bad-too-few")[c] for c in INDEX_COLUMNS[:13])
    scenes, rejected = select(tmp_path, [L2A_55HBU, *rows, too_many, too_few])

    assert granules(scenes) == [L2A_55HBU["GRANULE_ID"]]
    assert set(rejected["stage"]) == {"parse"}
    found = reasons(rejected)
    assert found.pop(None) == "GRANULE_ID is empty"
    assert found.pop("bad-too-many") == f"wrong number of fields: expected 14, found 15 in line {too_many!r}"
    assert found.pop("bad-too-few") == f"wrong number of fields: expected 14, found 13 in line {too_few!r}"
    assert found == expected


def test_rejected_rows_keep_the_raw_text(tmp_path: Path) -> None:
    too_few = ",".join(l2a("bad-too-few")[c] for c in INDEX_COLUMNS[:13])
    _, rejected = select(tmp_path, [l2a("bad-cloud-text", CLOUD_COVER="abc", TOTAL_SIZE=""), too_few])
    by_id = rejected.set_index("granule_id")
    assert by_id.loc["bad-cloud-text", "cloud_cover"] == "abc"
    assert by_id.loc["bad-cloud-text", "total_size"] is None
    assert by_id.loc["bad-cloud-text", "sensing_time"] == "2023-02-14T00:06:49.024000Z"
    assert by_id.loc["bad-too-few", "east_lon"] == "144.35"
    assert by_id.loc["bad-too-few", "base_url"] is None


# --------------------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------------------


def test_level_filter(tmp_path: Path) -> None:
    rows = [OLD_L1C, NEW_L1C, L2A_55HBU]
    scenes, _ = select(tmp_path, rows, level="L1C")
    assert granules(scenes) == sorted([OLD_L1C["GRANULE_ID"], NEW_L1C["GRANULE_ID"]])
    scenes, _ = select(tmp_path, rows, level="L2A")
    assert granules(scenes) == [L2A_55HBU["GRANULE_ID"]]


def test_dates_are_inclusive_utc_calendar_dates(tmp_path: Path) -> None:
    rows = [
        l2a("before", sensing="2022-12-31T23:59:59.999999Z"),
        l2a("first-day", sensing="2023-01-01T00:00:00.000000Z"),
        l2a("last-day-late", sensing="2023-01-31T23:59:59.999000Z"),
        l2a("after", sensing="2023-02-01T00:00:00.000000Z"),
    ]
    scenes, rejected = select(tmp_path, rows, start_date=dt.date(2023, 1, 1), end_date=dt.date(2023, 1, 31))
    assert granules(scenes) == ["first-day", "last-day-late"]
    assert rejected.empty
    assert list(scenes.set_index("granule_id").loc[["first-day", "last-day-late"], "sensing_date"]) == [
        dt.date(2023, 1, 1),
        dt.date(2023, 1, 31),
    ]
    scenes, _ = select(tmp_path, rows, start_date=dt.date(2023, 1, 31))
    assert granules(scenes) == ["after", "last-day-late"]
    scenes, _ = select(tmp_path, rows, end_date=dt.date(2022, 12, 31))
    assert granules(scenes) == ["before"]


def test_tiles_filter_accepts_file_name_form(tmp_path: Path) -> None:
    rows = [l2a("hbu", tile="55HBU"), l2a("hcu", tile="55HCU"), l2a("snd", tile="29SND")]
    scenes, _ = select(tmp_path, rows, tiles=("T55HBU", "29SND"))
    assert granules(scenes) == ["hbu", "snd"]
    scenes, _ = select(tmp_path, rows)
    assert granules(scenes) == ["hbu", "hcu", "snd"]


def antimeridian_rows() -> list[dict[str, str]]:
    box = {"NORTH_LAT": "-19.90", "SOUTH_LAT": "-20.90"}
    return [
        l2a("crossing-01KAB", tile="01KAB", WEST_LON="179.80", EAST_LON="-179.10", **box),
        l2a("east-60KZF", tile="60KZF", WEST_LON="179.10", EAST_LON="179.90", **box),
        l2a("west-01KBB", tile="01KBB", WEST_LON="-179.90", EAST_LON="-179.20", **box),
        l2a("far-01KCB", tile="01KCB", WEST_LON="-178.90", EAST_LON="-178.20", **box),
        L2A_55HBU,
    ]


@pytest.mark.parametrize(
    ("bbox", "expected"),
    [
        # Query crossing the antimeridian: [179, 180] + [-180, -179].
        ((179.0, -21.0, -179.0, -19.0), ["crossing-01KAB", "east-60KZF", "west-01KBB"]),
        # East of 179.5 only: the crossing scene's [179.8, 180] part and 60KZF.
        ((179.5, -21.0, 179.95, -19.0), ["crossing-01KAB", "east-60KZF"]),
        # West of the antimeridian only: the crossing scene's [-180, -179.1] part and 01KBB.
        ((-179.5, -21.0, -179.0, -19.0), ["crossing-01KAB", "west-01KBB"]),
        # 55HBU's north edge is -36.05: a box ending at -36.0 misses it, one touching it hits it.
        ((143.0, -36.0, 145.0, -35.0), []),
        ((143.0, -36.5, 145.0, -36.05), [L2A_55HBU["GRANULE_ID"]]),
        # Longitudes right, latitudes wrong: nothing.
        ((179.0, -30.0, -179.0, -25.0), []),
    ],
)
def test_bbox_filter_with_antimeridian(tmp_path: Path, bbox: tuple[float, ...], expected: list[str]) -> None:
    scenes, _ = select(tmp_path, antimeridian_rows(), bbox=bbox)
    assert granules(scenes) == sorted(expected)


def test_cloud_cover_limit_is_inclusive(tmp_path: Path) -> None:
    rows = [l2a("c30", CLOUD_COVER="30.0"), l2a("c30-5", CLOUD_COVER="30.5"), l2a("c0", CLOUD_COVER="0")]
    scenes, _ = select(tmp_path, rows, max_cloud_cover=30.0)
    assert granules(scenes) == ["c0", "c30"]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("passed", ["passed"]),
        ("passed_or_missing", ["missing", "passed"]),
        ("any", ["failed", "missing", "passed"]),
    ],
)
def test_geometric_quality_rules(tmp_path: Path, rule: str, expected: list[str]) -> None:
    rows = [
        l2a("passed", GEOMETRIC_QUALITY_FLAG="PASSED"),
        l2a("failed", GEOMETRIC_QUALITY_FLAG="FAILED"),
        l2a("missing", GEOMETRIC_QUALITY_FLAG=""),
    ]
    scenes, rejected = select(tmp_path, rows, geometric_quality=rule)
    assert granules(scenes) == expected
    assert rejected.empty
    quality = dict(zip(scenes["granule_id"], scenes["geometric_quality"], strict=True))
    assert quality["passed"] == "PASSED"
    if "missing" in quality:
        assert quality["missing"] is None


def test_malformed_rows_are_reported_only_when_no_known_filter_excludes_them(tmp_path: Path) -> None:
    too_many = line(l2a("corrupt")) + ",extra"
    rows = [
        # Bad cloud cover, but sensed in 2015: the date filter excludes it.
        l2a("bad-cloud-2015", sensing="2015-07-01T10:00:00.000000Z", CLOUD_COVER="abc"),
        # Bad cloud cover inside the dates: reported.
        l2a("bad-cloud-2023", CLOUD_COVER="abc"),
        # Bad cloud cover on an L1C product: the level filter excludes it.
        {**NEW_L1C, "GRANULE_ID": "bad-cloud-l1c", "CLOUD_COVER": "abc",
         "SENSING_TIME": "2023-02-14T00:06:49.024000Z"},
        # Bad sensing time on tile 55HBU: the date filter is unknown, the tile filter decides.
        l2a("bad-time-55HBU", SENSING_TIME="yesterday"),
        # Bad tile inside the dates: tile filter unknown, reported whatever the tiles.
        l2a("bad-tile", MGRS_TILE="55HIU"),
        too_many,
    ]  # fmt: skip
    dates = {"start_date": dt.date(2023, 1, 1), "end_date": dt.date(2023, 12, 31)}
    _, rejected = select(tmp_path, rows, tiles=("55HBU",), **dates)
    assert sorted(rejected["granule_id"]) == ["bad-cloud-2023", "bad-tile", "bad-time-55HBU", "corrupt"]
    # Another tile excludes the rows whose tile is known, and the corrupt line, which names 55HBU
    # only: the bad tile remains.
    _, rejected = select(tmp_path, rows, tiles=("14SPJ",), **dates)
    assert sorted(rejected["granule_id"]) == ["bad-tile"]


def test_corrupt_rows_are_judged_by_their_text_not_their_shifted_fields(tmp_path: Path) -> None:
    # Too many fields: no field of the row can be trusted, not even a FAILED quality flag or an L1C id;
    # the line's text still says which tile and date it is about.
    failed = line(l2a("corrupt-failed", GEOMETRIC_QUALITY_FLAG="FAILED")) + ",extra"
    l1c = line({**NEW_L1C, "GRANULE_ID": "corrupt-l1c"}) + ",extra"
    other_tile = line(l2a("corrupt-55HCU", tile="55HCU")) + ",extra"
    old = line(l2a("corrupt-2019", sensing="2019-03-01T00:06:49.024000Z")) + ",extra"
    rows = [failed, l1c, other_tile, old]
    both = ("55HBU", "14SPJ")
    _, rejected = select(tmp_path, rows, geometric_quality="passed", tiles=both)
    assert sorted(rejected["granule_id"]) == ["corrupt-2019", "corrupt-failed", "corrupt-l1c"]
    assert set(rejected["stage"]) == {"parse"}
    # The first date of the line is its SENSING_TIME: 2019 is outside 2023.
    dates = {"start_date": dt.date(2023, 1, 1), "end_date": dt.date(2023, 12, 31)}
    _, rejected = select(tmp_path, rows, tiles=both, **dates)
    assert sorted(rejected["granule_id"]) == ["corrupt-failed"]  # the L1C line is from 2017
    # A bbox over Kansas (zone 14) keeps the line whose product id names 14SPJ; 55HBU and 55HCU
    # (zone 55, Victoria) are elsewhere.
    _, rejected = select(tmp_path, rows, bbox=(-98.5, 36.0, -97.0, 37.5))
    assert sorted(rejected["granule_id"]) == ["corrupt-l1c"]
    # Without tiles, dates or bbox every corrupt line may belong to the query.
    _, rejected = select(tmp_path, rows)
    assert len(rejected) == 4


def test_a_bbox_meets_the_utm_zones_of_the_tiles_that_reach_it() -> None:
    from evi_udf.index.rules import bbox_utm_zones

    # Melbourne (144.9 E) is in zone 55 (144-150 E); tiles of zone 54 reach ~1.3 degrees east of
    # 144 E at 38 S, so both are candidates; zone 56 starts 5 degrees away.
    assert bbox_utm_zones((144.8, -38.0, 145.0, -37.7)) == [54, 55]
    # Across the antimeridian (Fiji): zones 60 and 1; at 17.5 S tiles reach 1.1 degrees past their
    # zone, not far enough for zones 59 (ends at 174 E) or 2 (starts at 174 W).
    assert bbox_utm_zones((179.0, -17.5, -179.0, -16.0)) == [1, 60]
    # Southern Norway (8 E, 60 N) is 32V, wider than 6 degrees: its neighbours 31 and 33 are listed.
    assert {31, 32, 33} <= set(bbox_utm_zones((7.9, 59.9, 8.1, 60.1)))
    # From 80 degrees on every zone may meet the bbox.
    assert bbox_utm_zones((0.0, 80.5, 1.0, 81.0)) == list(range(1, 61))


def test_empty_base_url_is_rejected_at_select_only_when_selected(tmp_path: Path) -> None:
    rows = [
        l2a("no-url", BASE_URL=""),
        l2a("no-url-cloudy", BASE_URL="", CLOUD_COVER="95.0"),
        l2a("with-url"),
    ]
    scenes, rejected = select(tmp_path, rows, max_cloud_cover=90.0)
    assert granules(scenes) == ["with-url"]
    assert list(rejected["granule_id"]) == ["no-url"]
    assert list(rejected["stage"]) == ["select"]
    assert list(rejected["reason"]) == ["empty BASE_URL"]
    assert rejected.loc[0, "base_url"] is None
    assert rejected.loc[0, "cloud_cover"] == "12.5"


# --------------------------------------------------------------------------------------------------
# Dedupe
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["old-first", "new-first"])
def test_reprocessed_duplicate_keeps_newest_baseline(tmp_path: Path, order: str) -> None:
    rows = [L2A_214, L2A_510] if order == "old-first" else [L2A_510, L2A_214]
    scenes, rejected = select(tmp_path, rows)
    assert len(scenes) == 1
    kept = scenes.iloc[0]
    assert kept["granule_id"] == "L2A_T29SND_A019940_20230415T093012"
    assert kept["processing_baseline"] == "05.10"
    # Product ids, not granule ids: a reprocessing can keep the granule id of what it replaces.
    assert kept["replaces"] == L2A_214["PRODUCT_ID"]
    assert kept["datatake_key"] == "GS2B_20201230T112359_019940"
    assert kept["total_size"] == 861234567
    assert len(rejected) == 1
    superseded = rejected.iloc[0]
    assert superseded["granule_id"] == "L2A_T29SND_A019940_20201230T112446"
    assert superseded["stage"] == "dedupe"
    assert superseded["reason"] == (
        f"superseded by {L2A_510['PRODUCT_ID']} (granule L2A_T29SND_A019940_20230415T093012, baseline 05.10)"
    )
    assert superseded["base_url"] == L2A_214["BASE_URL"]
    assert superseded["total_size"] == "850123456"


def dedupe_rows() -> list[dict[str, str]]:
    def take(granule: str, datatake: str, baseline: str, generation: str) -> dict[str, str]:
        datatake_id = f"GS2B_20230214T000239_{datatake}_N{baseline[:2]}.{baseline[2:]}"
        return l2a(granule, baseline=baseline, generation=generation, DATATAKE_IDENTIFIER=datatake_id)

    late, early = "2023-03-01T00:00:00.000000Z", "2023-02-14T01:23:45.000000Z"
    return [
        # Three baselines of datatake 1: 05.10 supersedes the others.
        take("t1-0509", "000001", "0509", late),
        take("t1-0214", "000001", "0214", late),
        take("t1-0510", "000001", "0510", early),
        # Same baseline, other generation times: parts of one acquisition (a split delivery), all kept;
        # the newest generation is the primary part, an empty one counts as oldest.
        take("t2-early", "000002", "0509", early),
        take("t2-late", "000002", "0509", late),
        {**take("t2-none", "000002", "0509", early), "GENERATION_TIME": ""},
        # Same baseline and generation time: both parts too.
        take("t3-a", "000003", "0509", early),
        take("t3-b", "000003", "0509", early),
        # Same datatake on another tile is another acquisition.
        {**take("t3-other-tile", "000003", "0509", early), "MGRS_TILE": "55HCU"},
    ]


def test_dedupe_keeps_every_part_of_the_newest_baseline(tmp_path: Path) -> None:
    rows = dedupe_rows()
    scenes, rejected = select(tmp_path, rows)
    product = {row["GRANULE_ID"]: row["PRODUCT_ID"] for row in rows}
    assert sorted(scenes["granule_id"]) == sorted(
        ["t1-0510", "t2-early", "t2-late", "t2-none", "t3-a", "t3-b", "t3-other-tile"]
    )
    acquisitions = scenes.groupby("acquisition_id")["granule_id"].agg(lambda g: sorted(g)).to_dict()
    assert sorted(acquisitions.values()) == [
        ["t1-0510"],
        ["t2-early", "t2-late", "t2-none"],
        ["t3-a", "t3-b"],
        ["t3-other-tile"],
    ]
    assert acquisitions["55HBU_GS2B_20230214T000239_000002"] == ["t2-early", "t2-late", "t2-none"]
    replaces = dict(zip(scenes["granule_id"], scenes["replaces"], strict=True))
    assert replaces["t1-0510"] == f"{product['t1-0214']},{product['t1-0509']}"
    assert {g: r for g, r in replaces.items() if g != "t1-0510"} == dict.fromkeys(
        replaces.keys() - {"t1-0510"}
    )

    superseded = f"superseded by {product['t1-0510']} (granule t1-0510, baseline 05.10)"
    assert reasons(rejected) == {"t1-0214": superseded, "t1-0509": superseded}
    assert set(rejected["stage"]) == {"dedupe"}


def test_dedupe_does_not_depend_on_row_order(tmp_path: Path) -> None:
    import random

    rows = dedupe_rows()
    (tmp_path / "a").mkdir()
    reference = select(tmp_path / "a", rows)
    for seed in range(5):
        shuffled = list(rows)
        random.Random(seed).shuffle(shuffled)
        (tmp_path / f"s{seed}").mkdir()
        again = select(tmp_path / f"s{seed}", shuffled)
        for left, right in zip(reference, again, strict=True):
            pd.testing.assert_frame_equal(left, right)


# --------------------------------------------------------------------------------------------------
# Periods and the plan
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "sensing", "label", "start", "end"),
    [
        ("day", "2023-02-14T23:59:59.999000Z", "2023-02-14", dt.date(2023, 2, 14), dt.date(2023, 2, 14)),
        ("month", "2023-02-14T00:06:49.024000Z", "2023-02", dt.date(2023, 2, 1), dt.date(2023, 2, 28)),
        ("month", "2024-02-10T00:06:49.024000Z", "2024-02", dt.date(2024, 2, 1), dt.date(2024, 2, 29)),
        ("quarter", "2023-02-14T00:06:49.024000Z", "2023-Q1", dt.date(2023, 1, 1), dt.date(2023, 3, 31)),
        ("quarter", "2023-11-05T00:06:49.024000Z", "2023-Q4", dt.date(2023, 10, 1), dt.date(2023, 12, 31)),
        ("year", "2023-02-14T00:06:49.024000Z", "2023", dt.date(2023, 1, 1), dt.date(2023, 12, 31)),
    ],
)
def test_period_keys(
    tmp_path: Path, period: str, sensing: str, label: str, start: dt.date, end: dt.date
) -> None:
    scenes, _ = select(tmp_path, [l2a("g", sensing=sensing)], period=period)
    assert (scenes.loc[0, "period"], scenes.loc[0, "period_start"], scenes.loc[0, "period_end"]) == (
        label,
        start,
        end,
    )


def test_period_all_uses_config_dates_else_selection_range(tmp_path: Path) -> None:
    rows = [
        l2a("feb", sensing="2023-02-14T00:06:49.024000Z"),
        l2a("may", sensing="2023-05-03T23:10:00.000000Z"),
    ]
    scenes, _ = select(tmp_path, rows, period="all")
    assert set(scenes["period"]) == {"2023-02-14_2023-05-03"}
    assert set(scenes["period_start"]) == {dt.date(2023, 2, 14)}
    assert set(scenes["period_end"]) == {dt.date(2023, 5, 3)}

    scenes, _ = select(
        tmp_path, rows, period="all", start_date=dt.date(2023, 1, 1), end_date=dt.date(2023, 6, 30)
    )
    assert set(scenes["period"]) == {"2023-01-01_2023-06-30"}

    scenes, _ = select(tmp_path, rows, period="all", start_date=dt.date(2023, 1, 1))
    assert set(scenes["period"]) == {"2023-01-01_2023-05-03"}
    assert set(scenes["period_end"]) == {dt.date(2023, 5, 3)}


def test_plan_groups_one_row_per_tile_and_period(tmp_path: Path) -> None:
    rows = [
        l2a("hbu-feb-late", sensing="2023-02-20T00:06:49.024000Z"),
        l2a("hbu-feb-early", sensing="2023-02-04T00:06:49.024000Z"),
        l2a("hbu-mar", sensing="2023-03-06T00:06:49.024000Z"),
        l2a("hcu-feb", tile="55HCU", sensing="2023-02-04T00:06:49.024000Z"),
        L2A_214,
        L2A_510,
    ]
    scenes, _ = select(tmp_path, rows, period="month")
    plan = plan_groups(scenes)
    assert list(plan.columns) == [
        "mgrs_tile", "period", "period_start", "period_end", "scene_count", "granule_ids"
    ]  # fmt: skip
    assert plan[["mgrs_tile", "period", "scene_count"]].values.tolist() == [
        ["29SND", "2020-12", 1],
        ["55HBU", "2023-02", 2],
        ["55HBU", "2023-03", 1],
        ["55HCU", "2023-02", 1],
    ]
    assert plan.loc[1, "granule_ids"] == ["hbu-feb-early", "hbu-feb-late"]
    assert plan.loc[0, "granule_ids"] == ["L2A_T29SND_A019940_20230415T093012"]
    assert (plan.loc[0, "period_start"], plan.loc[0, "period_end"]) == (
        dt.date(2020, 12, 1),
        dt.date(2020, 12, 31),
    )


def test_scene_columns_and_types(tmp_path: Path) -> None:
    scenes, _ = select(tmp_path, [l2a("g", TOTAL_SIZE="", GENERATION_TIME="", GEOMETRIC_QUALITY_FLAG="")])
    assert list(scenes.columns) == list(SCENE_COLUMNS)
    row = scenes.iloc[0]
    assert row["sensing_time"] == pd.Timestamp("2023-02-14 00:06:49.024")
    assert row["sensing_time"].tzinfo is None
    assert row["sensing_date"] == dt.date(2023, 2, 14)
    assert pd.isna(row["total_size"]) and pd.isna(row["generation_time"])
    assert row["geometric_quality"] is None
    assert (row["utm_zone"], row["epsg"], row["level"], row["mission"]) == (55, 32755, "L2A", "S2B")
    assert row["base_url"].endswith("S2B_MSIL2A_20230214T000649_N0509_R030_T55HBU_20230214T012345.SAFE")


# --------------------------------------------------------------------------------------------------
# CLI error path (the Spark path is in test_catalog_spark.py)
# --------------------------------------------------------------------------------------------------


def test_cli_exits_1_with_message_on_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("catalog:\n  index_uri: index.csv\n", encoding="utf-8")
    assert main(["--config", str(config), "--set", "catalog.max_cloud_cover=140"]) == 1
    assert "catalog.max_cloud_cover: must be between 0 and 100, got 140" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read config file" in capsys.readouterr().err
