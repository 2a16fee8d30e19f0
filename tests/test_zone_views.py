"""The zone views merge the parts of zones over tiles exactly: DuckDB over Parquet parts, against numpy
on every zone's pixels."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evi_udf.outputs.rows import SceneRow, table_arrow_schema
from evi_udf.outputs.zone_views import duckdb_views
from evi_udf.run.process import GroupResult
from evi_udf.run.udf import acquisition_of, zone_records
from evi_udf.task.group import GroupKey
from evi_udf.zones.statistics import NO_ZONE, ZoneCollector, block_zones

KEY_A = GroupKey("55HBU", "2022-01", dt.date(2022, 1, 1), dt.date(2022, 1, 31))
KEY_B = GroupKey("54HYD", "2022-01", dt.date(2022, 1, 1), dt.date(2022, 1, 31))
PRODUCT = {
    "55HBU": "S2B_MSIL2A_20220113T002709_N0510_R016_T55HBU_20230614T094127",
    "54HYD": "S2B_MSIL2A_20220113T002709_N0400_R016_T54HYD_20220113T022334",
}
ZONE_IDS = {0: "field-a", 1: "field-b", 2: "district", 3: "cloudy"}


def scene_row(tile: str) -> SceneRow:
    """A scene row with only what zone_records reads filled in meaningfully."""
    values = dict.fromkeys(SceneRow.__dataclass_fields__, None)
    values.update(
        granule_id=f"granule-{tile}",
        product_id=PRODUCT[tile],
        mgrs_tile=tile,
        sensing_time=dt.datetime(2022, 1, 13, 0, 27, 9),
    )
    return SceneRow(**values)


def tile_statistics(labels: np.ndarray, evi: np.ndarray, clear: np.ndarray, whole: list[int]):
    collector = ZoneCollector(np.array(whole), -1.0, 1.0)
    collector.add([block_zones(labels)], evi, np.ones(labels.shape, dtype=bool), clear)
    return collector.result()


def test_views_merge_zone_parts_over_tiles_as_numpy_on_all_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    shape = (80, 90)
    tiles = {}
    everything = {zone: [] for zone in ZONE_IDS}
    masked = dict.fromkeys(ZONE_IDS, 0)
    observed = dict.fromkeys(ZONE_IDS, 0)
    for key, whole in ((KEY_A, [0, 1]), (KEY_B, [])):
        labels = rng.choice([NO_ZONE, 2, 3, *whole], size=shape)
        evi = rng.uniform(-0.2, 0.9, shape).astype(np.float32)
        clear = rng.random(shape) > 0.25
        clear[labels == 3] = False  # zone 3 is under cloud on both tiles
        evi[~clear] = np.nan
        for zone in ZONE_IDS:
            inside = labels == zone
            everything[zone].append(evi[inside & np.isfinite(evi)].astype(np.float64))
            masked[zone] += int((inside & ~clear).sum())
            observed[zone] += int(inside.sum())
        statistics = tile_statistics(labels, evi, clear, whole)
        result = GroupResult(None, [scene_row(key.mgrs_tile)], [], None, [statistics], statistics)
        tiles[key.mgrs_tile] = zone_records(key, result, ZONE_IDS, "abcdef012345")
    # The composite rows need a composite: here the same statistics stand for it.
    root = tmp_path / "out"
    for kind, table in (
        ("zone_scene", "evi_zone_scene_parts"),
        ("zone_composite", "evi_zone_composite_parts"),
    ):
        folder = root / "tables" / table
        folder.mkdir(parents=True)
        records = [r for rows in tiles.values() for r in rows if r["kind"] == kind]
        schema = table_arrow_schema(kind)
        if not records:
            pq.write_table(schema.empty_table(), folder / "part.parquet")
            continue
        frame = pd.DataFrame(records).assign(run_id="run", commit_id="commit").reindex(columns=schema.names)
        pq.write_table(
            pa.Table.from_pandas(frame, schema=schema, preserve_index=False), folder / "part.parquet"
        )
    assert not any(r["kind"] == "zone_composite" for rows in tiles.values() for r in rows)  # no composite row

    connection = duckdb.connect()
    connection.execute(duckdb_views(str(root)))
    got = connection.execute("SELECT * FROM evi_zone_scenes ORDER BY zone_id").df()
    assert list(got["zone_id"]) == sorted(ZONE_IDS.values())
    for zone, zone_id in ZONE_IDS.items():
        row = got[got["zone_id"] == zone_id].iloc[0]
        values = np.concatenate(everything[zone])
        steps = np.rint(values * 10_000) / 10_000
        assert row["acquisition"] == acquisition_of(PRODUCT["55HBU"]) == "S2B_20220113T002709_R016"
        assert list(row["mgrs_tiles"]) == (["55HBU"] if zone in (0, 1) else ["54HYD", "55HBU"])
        assert row["total_pixels"] == observed[zone]
        assert row["valid_pixels"] == values.size
        assert row["masked_fraction"] == pytest.approx(masked[zone] / observed[zone], abs=1e-12)
        if values.size == 0:
            assert pd.isna(row["evi_mean"]) and pd.isna(row["evi_p50"])
            continue
        assert row["evi_mean"] == pytest.approx(values.mean(), abs=1e-9)
        assert row["evi_std"] == pytest.approx(values.std(), abs=1e-7)
        assert row["evi_min"] == pytest.approx(steps.min(), abs=1e-12)
        assert row["evi_max"] == pytest.approx(steps.max(), abs=1e-12)
        for name, q in (("evi_p10", 0.1), ("evi_p50", 0.5), ("evi_p90", 0.9)):
            assert row[name] == pytest.approx(np.quantile(steps, q, method="inverted_cdf"), abs=1e-12), name
