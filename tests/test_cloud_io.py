"""The raster core with gs:// inputs and outputs, against the GCS emulator.

The sample archive is generated with gs:// BASE_URLs, uploaded to an emulator bucket, processed from
there into another bucket, and compared with the same group processed from the local copy.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from evi_udf.config import config_from_mapping
from evi_udf.index.catalog import read_index_pandas, select_scenes_pandas
from evi_udf.run.process import process_group
from evi_udf.run.udf import group_key_from_pandas, scene_refs_from_pandas
from evi_udf.sample.generate import SampleSpec, generate_archive
from evi_udf.storage import Storage


def upload_tree(root: Path, bucket: str) -> None:
    from google.cloud import storage

    target = storage.Client().bucket(bucket)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        target.blob(path.relative_to(root).as_posix()).upload_from_filename(str(path))


def one_group(index: Path, output_root: str):
    config = config_from_mapping(
        {
            "catalog": {"index_uri": str(index), "period": "all", "geometric_quality": "any"},
            "output": {"root": output_root},
            "raster": {"block_size": 256},
        }
    )
    scenes, _ = select_scenes_pandas(read_index_pandas(str(index)), config.catalog)
    return config, group_key_from_pandas(scenes), scene_refs_from_pandas(scenes)


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory, gcs_emulator: str) -> dict[str, object]:
    from google.cloud import storage

    source, output = f"s2-{uuid.uuid4().hex[:6]}", f"evi-{uuid.uuid4().hex[:6]}"
    client = storage.Client()
    client.create_bucket(source)
    client.create_bucket(output)
    spec = dict(tiles=("55HBU",), scenes_per_tile=3, resolution_factor=61, seed=9)
    remote = tmp_path_factory.mktemp("remote")
    generate_archive(SampleSpec(out=remote, bucket_url=f"gs://{source}", **spec))
    upload_tree(remote, source)
    local = tmp_path_factory.mktemp("local")
    generate_archive(SampleSpec(out=local, **spec))
    return {"source": source, "output": output, "remote": remote, "local": local}


@pytest.mark.integration
def test_gs_inputs_and_outputs_give_the_same_composite_as_local_files(archives, tmp_path: Path) -> None:
    config, key, refs = one_group(
        archives["remote"] / "L2" / "index.csv.gz", f"gs://{archives['output']}/run"
    )
    assert all(ref.base_url.startswith(f"gs://{archives['source']}/L2/tiles/55/H/BU/") for ref in refs)
    remote = process_group(key, refs, config)
    assert remote.failures == []
    assert remote.composite.raster_uri.startswith(f"gs://{archives['output']}/run/evi/native/")
    store = Storage()
    for uri in (remote.composite.raster_uri, remote.composite.stac_uri, remote.composite.quicklook_uri):
        assert store.exists(uri), uri
    cog = store.fetch(remote.composite.raster_uri, tmp_path)
    assert cog_validate(str(cog))[0]

    local_config, local_key, local_refs = one_group(
        archives["local"] / "L2" / "index.csv.gz", str(tmp_path / "l")
    )
    local = process_group(local_key, local_refs, local_config)
    with rasterio.open(cog) as from_gcs, rasterio.open(local.composite.raster_uri) as from_disk:
        np.testing.assert_array_equal(from_gcs.read(), from_disk.read())
    assert [r.valid_pixels for r in remote.scenes] == [r.valid_pixels for r in local.scenes]


@pytest.mark.integration
def test_a_missing_object_fails_its_scene_only(archives, tmp_path: Path) -> None:
    from google.cloud import storage

    config, key, refs = one_group(
        archives["remote"] / "L2" / "index.csv.gz", f"gs://{archives['output']}/gone"
    )
    victim = refs[-1]
    bucket = storage.Client().bucket(archives["source"])
    prefix = victim.base_url.removeprefix(f"gs://{archives['source']}/")
    b08 = next(b for b in bucket.list_blobs(prefix=prefix) if b.name.endswith("_B08_10m.jp2"))
    b08.delete()
    try:
        result = process_group(key, refs, config)
    finally:
        # The buckets are shared by this module's tests: put the object back.
        bucket.blob(b08.name).upload_from_filename(str(archives["remote"] / b08.name))
    assert [(f.product_id, f.stage, f.error_class) for f in result.failures] == [
        (victim.product_id, "storage", "StorageError")
    ]
    assert f"gs://{archives['source']}/{b08.name}: object not found" in result.failures[0].message
    assert result.composite is not None and result.composite.scene_count == len(refs) - 1


@pytest.mark.integration
def test_a_gs_index_is_read_in_a_local_session_without_the_gcs_connector(spark, archives) -> None:
    from evi_udf.config import CatalogConfig
    from evi_udf.index.catalog import select_scenes

    index_uri = f"gs://{archives['source']}/L2/index.csv.gz"
    from_gcs = select_scenes(spark, CatalogConfig(index_uri=index_uri, period="month")).scenes.toPandas()
    local_index = str(archives["remote"] / "L2" / "index.csv.gz")
    expected, _ = select_scenes_pandas(read_index_pandas(local_index), CatalogConfig(index_uri=local_index))
    assert sorted(from_gcs.product_id) == sorted(expected.product_id)
    # 3 dates; the 05.10 duplicate replaces its original and the third date's FAILED flag filters it.
    assert len(from_gcs) == 2


@pytest.mark.integration
def test_a_missing_gs_index_fails_with_its_uri(spark, archives) -> None:
    from evi_udf.config import CatalogConfig
    from evi_udf.errors import CatalogError
    from evi_udf.index.catalog import select_scenes

    uri = f"gs://{archives['source']}/nope/index.csv.gz"
    with pytest.raises(
        CatalogError, match=f"cannot read the Sentinel-2 index {uri}: {uri}: object not found"
    ):
        select_scenes(spark, CatalogConfig(index_uri=uri))


@pytest.mark.integration
def test_transient_gcs_errors_are_retried_and_lose_nothing(
    archives, gcs_emulator, tmp_path: Path, monkeypatch
) -> None:
    import dataclasses

    from faulty_proxy import faulty_proxy

    config, key, refs = one_group(
        archives["remote"] / "L2" / "index.csv.gz", f"gs://{archives['output']}/flaky"
    )
    clean_config = dataclasses.replace(
        config, output=dataclasses.replace(config.output, root=str(tmp_path / "c"))
    )
    clean = process_group(key, refs, clean_config)
    # Every download of a B08 object answers 503 twice before requests go through.
    with faulty_proxy(gcs_emulator, "_B08_10m.jp2", failures=2) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", str(proxy["url"]))
        flaky = process_group(key, refs, config)
    assert proxy["failed"] == 2
    assert flaky.failures == []
    assert [r.valid_pixels for r in flaky.scenes] == [r.valid_pixels for r in clean.scenes]
    assert flaky.composite.valid_pixels == clean.composite.valid_pixels
