"""The fingerprints that decide what a rerun remakes: Python and Spark SQL forms give the same values,
and both are the hash the module documents (computed here with hashlib, by hand)."""

from __future__ import annotations

import datetime as dt
import hashlib

import pandas as pd
import pytest
import shapely

from evi_udf.task.group import SceneRef
from evi_udf.task.identity import (
    fingerprint_column,
    fingerprint_of,
    group_fingerprint,
    scene_line_column,
    zone_line_column,
    zone_set_fingerprint,
)

UTC = dt.timezone.utc


def sha16(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def scene(product: str, baseline: str, generated: dt.datetime | None) -> SceneRef:
    return SceneRef(
        granule_id=f"G_{product}",
        product_id=product,
        mgrs_tile="55HBU",
        sensing_time=dt.datetime(2022, 1, 13, 0, 6, 49),
        cloud_cover=1.0,
        base_url=f"gs://b/{product}.SAFE",
        level="L2A",
        processing_baseline=baseline,
        generation_time=generated,
    )


SCENES = {
    ("55HBU", "2022-01"): [
        scene(
            "S2B_MSIL2A_20220113T000000_N0400_R016_T55HBU_20220113T020000",
            "04.00",
            dt.datetime(2022, 1, 13, 2, 0, 0, 123456),
        ),
        # The same datatake reprocessed: another line, and a generation time with no microseconds.
        scene(
            "S2B_MSIL2A_20220113T000000_N0510_R016_T55HBU_20240101T000000",
            "05.10",
            dt.datetime(2024, 1, 1, 0, 0, 0),
        ),
        scene("S2A_MSIL2A_20220118T000000_N0400_R016_T55HBU_20220118T020000", "04.00", None),
    ],
    ("55HCU", "2022-01"): [
        # An aware time is the same instant as its UTC naive form.
        scene(
            "S2A_MSIL2A_20220118T000000_N0400_R016_T55HCU_20220118T020000",
            "04.00",
            dt.datetime(2022, 1, 18, 13, 0, 0, 500000, tzinfo=dt.timezone(dt.timedelta(hours=11))),
        ),
    ],
}


def test_scene_fingerprint_is_the_documented_hash() -> None:
    scenes = SCENES[("55HBU", "2022-01")]
    lines = sorted(
        [
            "S2B_MSIL2A_20220113T000000_N0400_R016_T55HBU_20220113T020000|04.00|2022-01-13T02:00:00.123456",
            "S2B_MSIL2A_20220113T000000_N0510_R016_T55HBU_20240101T000000|05.10|2024-01-01T00:00:00.000000",
            "S2A_MSIL2A_20220118T000000_N0400_R016_T55HBU_20220118T020000|04.00|",
        ]
    )
    assert fingerprint_of(scenes) == sha16("\n".join(lines))
    assert fingerprint_of(reversed(scenes)) == fingerprint_of(scenes)
    # 13:00:00.5 at UTC+11 is 02:00:00.5 UTC.
    aware = SCENES[("55HCU", "2022-01")]
    line = "S2A_MSIL2A_20220118T000000_N0400_R016_T55HCU_20220118T020000|04.00|2022-01-18T02:00:00.500000"
    assert fingerprint_of(aware) == sha16(line)


def test_zone_fingerprint_is_the_documented_hash() -> None:
    wkb = shapely.to_wkb(shapely.box(144.0, -37.0, 144.1, -36.9))
    line = f"zone|field-1|{hashlib.sha256(wkb).hexdigest()[:16]}"
    assert zone_set_fingerprint([("field-1", wkb)]) == sha16(line)
    assert zone_set_fingerprint([("field-1", wkb), ("field-1", wkb)]) == sha16(line)  # a set
    assert zone_set_fingerprint([]) is None
    combined = sha16("\n".join(sorted(["scenes|" + "a" * 16, "zones|" + "b" * 16])))
    assert group_fingerprint("a" * 16, "b" * 16) == combined
    assert group_fingerprint("a" * 16, None) == "a" * 16


@pytest.mark.integration
def test_spark_forms_equal_the_python_forms(spark) -> None:  # type: ignore[no-untyped-def]
    rows = [
        {
            "mgrs_tile": tile,
            "period": period,
            "product_id": s.product_id,
            "processing_baseline": s.processing_baseline,
            "generation_time": None
            if s.generation_time is None
            else pd.Timestamp(s.generation_time).tz_convert("UTC").tz_localize(None)
            if s.generation_time.tzinfo
            else pd.Timestamp(s.generation_time),
        }
        for (tile, period), scenes in SCENES.items()
        for s in scenes
    ]
    frame = spark.createDataFrame(
        pd.DataFrame(rows),
        "mgrs_tile string, period string, product_id string, processing_baseline string, "
        "generation_time timestamp",
    )
    in_spark = {
        (r.mgrs_tile, r.period): r.fingerprint
        for r in frame.groupBy("mgrs_tile", "period")
        .agg(fingerprint_column(scene_line_column()).alias("fingerprint"))
        .collect()
    }
    assert in_spark == {key: fingerprint_of(scenes) for key, scenes in SCENES.items()}

    geometries = {
        "field-1": shapely.box(144.0, -37.0, 144.1, -36.9),
        "farm-ü": shapely.Polygon([(144.2, -37.0), (144.3, -37.0), (144.25, -36.9)]),
    }
    zones = [("55HBU", zone_id, shapely.to_wkb(g)) for zone_id, g in geometries.items()]
    # A zone listed twice for a tile counts once, as in the task.
    zones.append(zones[0])
    zone_frame = spark.createDataFrame(zones, "mgrs_tile string, zone_id string, wkb binary")
    (row,) = (
        zone_frame.groupBy("mgrs_tile")
        .agg(fingerprint_column(zone_line_column(), distinct=True).alias("fingerprint"))
        .collect()
    )
    assert row.fingerprint == zone_set_fingerprint((zone_id, wkb) for _, zone_id, wkb in zones)
    assert zone_frame.select(zone_line_column().alias("line")).first().line.startswith("zone|field-1|")
