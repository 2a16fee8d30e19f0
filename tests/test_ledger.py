"""The ledger of groups: record names, scene-set fingerprints, planning, superseded files, orphans, and
the commit record itself; the storage primitives it relies on (listing, unique staging names)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import threading
from pathlib import Path

from evi_udf.config import config_from_mapping
from evi_udf.run.ledger import (
    ORPHAN_GRACE,
    Commit,
    Ledger,
    latest_commits,
    parse_record_uri,
    record_name,
    superseded_files,
)
from evi_udf.run.planning import PlannedGroup, decide_groups
from evi_udf.storage import Storage
from evi_udf.task.group import GroupKey, SceneRef
from evi_udf.task.identity import fingerprint_of, parameter_hash, scene_set_fingerprint
from evi_udf.task.names import group_outputs

UTC = dt.timezone.utc
KEY = GroupKey("55HBU", "2022-01", dt.date(2022, 1, 1), dt.date(2022, 1, 31))


def config_at(root: Path):
    return config_from_mapping({"catalog": {"index_uri": "index.csv.gz"}, "output": {"root": str(root)}})


def ref(product: str, baseline: str, generation: dt.datetime | None) -> SceneRef:
    return SceneRef(
        granule_id=f"G_{product}",
        product_id=product,
        mgrs_tile="55HBU",
        sensing_time=dt.datetime(2022, 1, 13, 0, 27, 9),
        cloud_cover=10.0,
        base_url=f"/archive/{product}.SAFE",
        level="L2A",
        processing_baseline=baseline,
        generation_time=generation,
    )


def commit(
    at: dt.datetime,
    attempt: str,
    status: str = "ok",
    scenes: int = 3,
    fingerprint: str = "0" * 16,
    **key: str,
) -> Commit:
    tile, period, params = key.get("tile", "55HBU"), key.get("period", "2022-01"), key.get("params", "a" * 12)
    uri = (
        f"/out/ledger/native/{params}/{period}/{tile}/{record_name(at, attempt, status, scenes, fingerprint)}"
    )
    parsed = parse_record_uri(uri, "/out/ledger")
    assert parsed is not None
    return parsed


def test_a_record_name_says_everything_the_driver_needs() -> None:
    at = dt.datetime(2026, 12, 2, 3, 15, 0, 123456, tzinfo=UTC)
    name = record_name(at, "1a2b3c4d", "partial", 7, "0123456789abcdef")
    assert name == "20261202T031500123456Z_1a2b3c4d_partial_7s_0123456789abcdef.parquet"
    uri = f"gs://bucket/evi/ledger/epsg3577_10m/{'b' * 12}/2022-01-01_2022-02-28/54HYD/{name}"
    parsed = parse_record_uri(uri, "gs://bucket/evi/ledger")
    assert parsed == Commit(
        uri=uri,
        grid="epsg3577_10m",
        parameter_hash="b" * 12,
        period="2022-01-01_2022-02-28",
        mgrs_tile="54HYD",
        committed_at=at,
        attempt="1a2b3c4d",
        status="partial",
        scene_count=7,
        fingerprint="0123456789abcdef",
    )
    assert parsed.commit_id == "20261202T031500123456Z-1a2b3c4d"
    assert parsed.group == ("54HYD", "2022-01-01_2022-02-28", "b" * 12)
    for other in (
        uri.replace(".parquet", ".json"),
        uri.replace("_partial_", "_maybe_"),
        f"gs://bucket/evi/ledger/native/{name}",
        f"gs://bucket/evi/ledger/native/x/2022-01/54HYD/.{name}.1234.partial",
    ):
        assert parse_record_uri(other, "gs://bucket/evi/ledger") is None


def test_the_fingerprint_is_the_products_baselines_and_generation_times_in_any_order() -> None:
    gen = dt.datetime(2023, 6, 14, 9, 41, 27)
    scenes = [
        ref("P1", "05.10", gen),
        ref("P2", "02.14", None),
        ref("P3", "04.00", gen.replace(microsecond=5)),
    ]
    # By hand: sha256 of the sorted lines "<product>|<baseline>|<generation, microseconds>".
    lines = ["P1|05.10|2023-06-14T09:41:27.000000", "P2|02.14|", "P3|04.00|2023-06-14T09:41:27.000005"]
    expected = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
    assert fingerprint_of(scenes) == expected
    assert fingerprint_of(list(reversed(scenes))) == expected
    assert scene_set_fingerprint(reversed(lines)) == expected
    # An aware time is the same instant as its naive UTC spelling.
    aware = [ref("P1", "05.10", gen.replace(tzinfo=UTC)), *scenes[1:]]
    assert fingerprint_of(aware) == expected
    variants = [
        scenes[:2],  # a product vanished
        [*scenes, ref("P4", "05.10", gen)],  # a new one arrived
        [ref("P1", "05.11", gen), *scenes[1:]],  # reprocessed under a new baseline
        [ref("P1", "05.10", gen + dt.timedelta(seconds=1)), *scenes[1:]],  # regenerated
    ]
    assert len({fingerprint_of(v) for v in variants} | {expected}) == len(variants) + 1


def test_groups_are_new_changed_failed_done_or_overwritten() -> None:
    t = dt.datetime(2026, 12, 1, tzinfo=UTC)
    params = "a" * 12

    def planned(tile: str, scenes: int, fingerprint: str) -> PlannedGroup:
        return PlannedGroup(
            GroupKey(tile, "2022-01", dt.date(2022, 1, 1), dt.date(2022, 1, 31)), scenes, fingerprint
        )

    commits = [
        commit(t, "00000001", fingerprint="1" * 16, tile="55HBU"),
        # Done earlier from another scene set, then remade: the latest counts.
        commit(t, "00000002", fingerprint="9" * 16, tile="55HCU"),
        commit(t + dt.timedelta(hours=1), "00000003", fingerprint="2" * 16, tile="55HCU"),
        commit(t, "00000004", status="failed", fingerprint="3" * 16, tile="54HYD"),
        commit(t, "00000005", scenes=2, fingerprint="4" * 16, tile="54HXD"),
        commit(t, "00000006", status="partial", fingerprint="5" * 16, tile="55HDU"),
        # Another parameter set's commit does not make the group done.
        commit(t, "00000007", fingerprint="6" * 16, tile="55HEU", params="b" * 12),
        commit(t, "00000008", fingerprint="7" * 16, tile="55HFU"),
    ]
    groups = [
        planned("55HBU", 3, "1" * 16),
        planned("55HCU", 3, "2" * 16),
        planned("54HYD", 3, "3" * 16),
        planned("54HXD", 3, "8" * 16),
        planned("55HDU", 3, "5" * 16),
        planned("55HEU", 3, "6" * 16),
        planned("55HFU", 3, "0" * 16),
    ]
    plans = {p.group.key.mgrs_tile: p for p in decide_groups(groups, commits, params, overwrite=False)}
    assert {tile: p.state for tile, p in plans.items()} == {
        "55HBU": "done",
        "55HCU": "done",
        "54HYD": "failed",
        "54HXD": "changed",
        "55HDU": "done",
        "55HEU": "new",
        "55HFU": "changed",
    }
    assert plans["54HXD"].reason == "scene set changed: 2 -> 3 scenes"
    assert "not the same products" in plans["55HFU"].reason
    assert "some scenes failed" in plans["55HDU"].reason
    assert plans["55HCU"].current.attempt == "00000003"
    again = {p.group.key.mgrs_tile: p.state for p in decide_groups(groups, commits, params, overwrite=True)}
    assert again["55HBU"] == again["55HCU"] == "overwrite"
    assert again["55HEU"] == "new"


def test_superseded_files_wait_until_the_tables_hold_the_newer_commit(tmp_path: Path) -> None:
    config = config_at(tmp_path)
    params = parameter_hash(config.raster)
    t = dt.datetime(2026, 12, 1, tzinfo=UTC)
    old = commit(t, "0000000a", tile="55HBU", params=params)
    new = commit(t + dt.timedelta(minutes=5), "0000000b", tile="55HBU", params=params)
    retried = commit(t + dt.timedelta(minutes=6), "0000000b", tile="55HBU", params=params)
    other = commit(t, "0000000c", tile="55HBU", params="f" * 12)
    assert latest_commits([old, new, other])[new.group] == new
    # The tables still hold the old commit: nothing may go.
    assert superseded_files([old, new, other], {old.group: old.commit_id}, config) == []
    doomed = superseded_files([old, new, other], {new.group: new.commit_id}, config)
    outputs = group_outputs(config, KEY, "0000000a").uris
    assert doomed == [old.uri, *outputs]
    assert outputs[0].endswith(f"S2_EVI_55HBU_2022-01_median_{params}_0000000a.tif")
    # A commit of the same attempt (a retried task) shares its outputs with the current one.
    assert superseded_files([new, retried], {retried.group: retried.commit_id}, config) == [new.uri]


def test_a_commit_record_holds_the_rows_and_the_group_identity(tmp_path: Path) -> None:
    config = config_at(tmp_path / "out")
    ledger = Ledger(config.output.root, Storage())
    gen = dt.datetime(2023, 6, 14, 9, 41, 27)
    scenes = [ref("P1", "05.10", gen), ref("P2", "02.14", None)]
    outputs = group_outputs(config, KEY, "12345678")
    records = [
        {
            "kind": "composite",
            "mgrs_tile": "55HBU",
            "period": "2022-01",
            "valid_pixels": 41,
            "raster_uri": outputs.cog_uri,
        },
        {"kind": "scene", "mgrs_tile": "55HBU", "product_id": "P1", "evi_mean": 0.5},
        {"kind": "failure", "mgrs_tile": "55HBU", "product_id": "P2", "stage": "read", "message": "boom"},
    ]
    at = dt.datetime(2026, 12, 2, 3, 4, 5, 6, tzinfo=UTC)
    stamped = ledger.commit(config, KEY, scenes, "12345678", records, "run-9", lambda: at)
    (found,) = ledger.list_commits()
    assert (found.status, found.scene_count, found.fingerprint) == ("partial", 2, fingerprint_of(scenes))
    assert found.commit_id == "20261202T030405000006Z-12345678"
    assert {r["commit_id"] for r in stamped} == {found.commit_id}
    assert {r["run_id"] for r in stamped} == {"run-9"}
    rows, metadata = ledger.read_record(found.uri)
    assert [r["kind"] for r in rows] == ["commit", "composite", "scene", "failure"]
    commit_row = rows[0]
    assert (commit_row["scene_count"], commit_row["scenes_used"], commit_row["scenes_failed"]) == (2, 1, 1)
    assert commit_row["raster_uri"] == outputs.cog_uri
    assert commit_row["record_uri"] == found.uri
    assert commit_row["committed_at"] == at
    assert rows[2]["evi_mean"] == 0.5 and rows[3]["message"] == "boom"
    assert metadata["products"] == [
        {"product_id": "P1", "processing_baseline": "05.10", "generation_time": "2023-06-14T09:41:27.000000"},
        {"product_id": "P2", "processing_baseline": "02.14", "generation_time": None},
    ]
    assert metadata["parameter_hash"] == parameter_hash(config.raster)
    assert metadata["outputs"] == list(outputs.uris)


def test_orphans_of_attempts_that_never_committed_go_when_old_enough(tmp_path: Path) -> None:
    config = config_at(tmp_path / "out")
    ledger = Ledger(config.output.root, Storage())
    now = dt.datetime.now(UTC)
    committed = group_outputs(config, KEY, "0000aaaa")
    orphan_old = group_outputs(config, KEY, "0000bbbb")
    orphan_young = group_outputs(config, KEY, "0000cccc")
    for outputs in (committed, orphan_old, orphan_young):
        for uri in outputs.uris:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            Path(uri).write_bytes(b"x")
    stranger = Path(committed.prefix) / "notes.txt"
    stranger.write_text("not ours")
    old = (now - ORPHAN_GRACE - dt.timedelta(minutes=1)).timestamp()
    for uri in (*orphan_old.uris, *committed.uris, str(stranger)):
        os.utime(uri, (old, old))
    ledger.commit(
        config,
        KEY,
        [],
        "0000aaaa",
        [{"kind": "composite", "raster_uri": committed.cog_uri}],
        "r",
        lambda: now,
    )
    remaining = sorted(p.name for p in Path(committed.prefix).iterdir())
    expected = sorted([*(Path(u).name for u in (*committed.uris, *orphan_young.uris)), "notes.txt"])
    assert remaining == expected


def test_publishing_the_same_name_from_two_threads_never_mixes_files(tmp_path: Path) -> None:
    store, target = Storage(), tmp_path / "out" / "x.bin"
    sources = []
    for n in range(2):
        source = tmp_path / f"source{n}"
        source.write_bytes(bytes([n]) * 2_000_000)
        sources.append(source)
    errors: list[Exception] = []

    def publish(source: Path) -> None:
        try:
            for _ in range(20):
                store.publish(source, str(target), overwrite=True)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(s,)) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert target.read_bytes() in (sources[0].read_bytes(), sources[1].read_bytes())
    listed = store.list_objects(str(tmp_path / "out"))
    assert [item.uri for item in listed] == [str(target)]
