"""The whole job the way it runs in the cloud, against the two emulators on loopback.

The sample archive (gs:// BASE_URLs) is uploaded to an emulator bucket; spark-submit reads the gs://
index, downloads the bands, publishes COGs to another bucket and loads the statistics into the
BigQuery emulator, which the real google-cloud-bigquery client then queries. Run twice, the tables
hold exactly the same rows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import rasterio
from helpers import sample_in_gcs_emulator, spark_submit

from evi_udf.storage import Storage

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.integration
@pytest.mark.slow
def test_job_against_gcs_and_bigquery_emulators(
    tmp_path, gcs_emulator, bigquery_emulator_url, bigquery_emulator
):
    source, output, dataset = sample_in_gcs_emulator(
        tmp_path / "archive", tiles=("55HBU", "54HYD"), scenes_per_tile=6, resolution_factor=61, seed=4
    )
    config = tmp_path / "cloud.yaml"
    config.write_text(
        f"catalog:\n  index_uri: gs://{source}/L2/index.csv.gz\n  start_date: 2022-01-01\n"
        f"  end_date: 2022-02-28\n  period: month\n"
        f"raster:\n  block_size: 256\n"
        f"output:\n  root: gs://{output}/run1\n"
        f"storage:\n  anonymous_buckets: []\n"
        f"sink:\n  kind: bigquery\n  project: evi-test\n  dataset: {dataset}\n"
        f"  api_endpoint: {bigquery_emulator_url}\n",
        encoding="utf-8",
    )
    env = {"STORAGE_EMULATOR_HOST": gcs_emulator}

    def table(name: str) -> list[dict]:
        # The emulator types GEOGRAPHY results as BYTES, which the client cannot decode: read WKT.
        columns = (
            "* EXCEPT (footprint), ST_ASTEXT(footprint) AS footprint" if name == "evi_composites" else "*"
        )
        sql = f"SELECT {columns} FROM `evi-test.{dataset}.{name}`"
        return [dict(row) for row in bigquery_emulator.query(sql).result()]

    first = spark_submit(config, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    composites, scenes, rejected = table("evi_composites"), table("evi_scenes"), table("evi_rejected")
    # 2 tiles x 2 months; 12 products - 1 FAILED flag = 11 scenes; 2 rejected index rows.
    assert sorted((r["mgrs_tile"], r["period"]) for r in composites) == [
        ("54HYD", "2022-01"),
        ("54HYD", "2022-02"),
        ("55HBU", "2022-01"),
        ("55HBU", "2022-02"),
    ]
    assert len(scenes) == 11
    assert sorted(r["stage"] for r in rejected) == ["dedupe", "select"]
    assert table("evi_failures") == []
    store = Storage()
    for row in composites:
        assert row["raster_uri"].startswith(f"gs://{output}/run1/evi/native/")
        local = store.fetch(row["raster_uri"], tmp_path / "fetched")
        with rasterio.open(local) as cog:
            band = cog.read(1, masked=True)
            # The table's statistics describe the published raster.
            assert int(band.count()) == row["valid_pixels"]
            values = band.astype("float64") * cog.scales[0] + cog.offsets[0]
            assert float(values.mean()) == pytest.approx(row["evi_mean"], abs=1e-9)
    series = [
        dict(r)
        for r in bigquery_emulator.query(
            f"SELECT CAST(sensing_time AS DATE) AS day, evi_mean FROM `evi-test.{dataset}.evi_scenes` "
            "WHERE mgrs_tile = '55HBU' ORDER BY day"
        ).result()
    ]
    assert len(series) == 6

    second = spark_submit(config, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "0 to process" in second.stdout
    for name, before in (("evi_composites", composites), ("evi_scenes", scenes), ("evi_rejected", rejected)):
        after = table(name)
        key = sorted(
            str(sorted((k, str(v)) for k, v in row.items() if k not in ("run_id",))) for row in after
        )
        assert len(after) == len(before), name
        assert key == sorted(
            str(sorted((k, str(v)) for k, v in row.items() if k not in ("run_id",))) for row in before
        ), name
