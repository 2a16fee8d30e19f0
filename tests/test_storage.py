"""The URI layer against the GCS emulator (real google-cloud-storage client) and local files."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from evi_udf.errors import StorageError
from evi_udf.storage import Storage, parse_gs_uri


@pytest.fixture
def bucket(gcs_emulator: str) -> str:
    from google.cloud import storage

    name = f"evi-{uuid.uuid4().hex[:8]}"
    storage.Client().create_bucket(name)
    return name


def test_parse_gs_uri() -> None:
    path = parse_gs_uri("gs://gcp-public-data-sentinel-2/L2/index.csv.gz")
    assert (path.bucket, path.key) == ("gcp-public-data-sentinel-2", "L2/index.csv.gz")
    for bad in ("gs://only-bucket", "gs:///key", "s3://b/k", "gs://b/"):
        with pytest.raises(StorageError, match="gs://"):
            parse_gs_uri(bad)


@pytest.mark.integration
def test_publish_read_fetch_and_exists_on_gcs(bucket: str, tmp_path: Path) -> None:
    store = Storage()
    local = tmp_path / "evi.tif"
    local.write_bytes(b"\x49\x49\x2a\x00" + bytes(range(256)) * 100)
    uri = f"gs://{bucket}/evi/native/2022-01/55HBU/evi.tif"
    assert not store.exists(uri)
    store.publish(local, uri, overwrite=False)
    assert store.exists(uri)
    assert store.read_bytes(uri) == local.read_bytes()
    fetched = store.fetch(uri, tmp_path / "cache")
    assert fetched == tmp_path / "cache" / bucket / "evi/native/2022-01/55HBU/evi.tif"
    assert fetched.read_bytes() == local.read_bytes()
    assert not list((tmp_path / "cache").rglob("*.partial"))


@pytest.mark.integration
def test_publishing_over_an_existing_object_needs_overwrite(bucket: str, tmp_path: Path) -> None:
    store = Storage()
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    uri = f"gs://{bucket}/out/x.json"
    store.publish(first, uri, overwrite=False)
    with pytest.raises(StorageError, match=f"{uri}: already exists"):
        store.publish(second, uri, overwrite=False)
    assert store.read_bytes(uri) == b"first"
    store.publish(second, uri, overwrite=True)
    assert store.read_bytes(uri) == b"second"


@pytest.mark.integration
def test_missing_objects_fail_with_the_uri(bucket: str, tmp_path: Path) -> None:
    store = Storage()
    uri = f"gs://{bucket}/nope/MTD_MSIL2A.xml"
    with pytest.raises(StorageError, match=f"{uri}: object not found"):
        store.read_bytes(uri)
    with pytest.raises(StorageError, match=f"{uri}: object not found"):
        store.fetch(uri, tmp_path)
    assert not list(tmp_path.rglob("*.partial"))


def test_local_paths_use_the_same_rules(tmp_path: Path) -> None:
    store = Storage()
    source = tmp_path / "source.txt"
    source.write_text("composite")
    target = tmp_path / "out" / "deep" / "x.txt"
    store.publish(source, str(target), overwrite=False)
    assert target.read_text() == "composite"
    with pytest.raises(StorageError, match="already exists"):
        store.publish(source, str(target), overwrite=False)
    assert store.fetch(str(target), tmp_path / "unused") == target
    with pytest.raises(StorageError, match="missing.xml: file not found"):
        store.read_bytes(str(tmp_path / "missing.xml"))


@pytest.mark.integration
def test_a_staged_config_is_read_from_gcs(bucket: str, tmp_path: Path) -> None:
    """What a Dataproc batch does with ``--config gs://DEPS/evi-udf/<batch>/config.yaml``."""
    from evi_udf.config import load_config
    from evi_udf.errors import ConfigError

    local = tmp_path / "config.yaml"
    local.write_text(
        "catalog:\n  index_uri: gs://s2/L2/index.csv.gz\n  max_cloud_cover: 35\noutput:\n  root: gs://out/evi\n",
        encoding="utf-8",
    )
    uri = f"gs://{bucket}/evi-udf/evi-test/config.yaml"
    Storage().publish(local, uri, overwrite=False)
    config = load_config(uri, ["catalog.period=quarter"])
    assert config.catalog.max_cloud_cover == 35.0
    assert config.catalog.period == "quarter"
    assert config == load_config(local, ["catalog.period=quarter"])
    with pytest.raises(ConfigError, match=f"gs://{bucket}/evi-udf/missing.yaml"):
        load_config(f"gs://{bucket}/evi-udf/missing.yaml")


@pytest.mark.parametrize("key", ["/etc/passwd", "L2/../../outside.jp2", "L2//x.jp2"])
def test_an_object_name_cannot_land_outside_the_download_folder(key: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="object name is not a plain relative path"):
        Storage().fetch(f"gs://bucket/{key}", tmp_path / "inputs")
    assert not list(tmp_path.rglob("*")) or all(
        p.is_relative_to(tmp_path / "inputs") for p in tmp_path.rglob("*")
    )
