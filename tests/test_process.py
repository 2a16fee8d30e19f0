"""A group of scenes end to end: composite COG, statistics and failure rows.

Expected values are computed independently in the tests: DNs read straight from the JPEG2000 files
with rasterio, the offset from the baseline in the product name (-1000 from N0400 on), the SCL
upsampled by repetition, EVI and the median in float64 numpy.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import gzip
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import mgrs
import numpy as np
import pystac
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from evi_udf.config import JobConfig, config_from_mapping
from evi_udf.run.process import GroupResult, process_group
from evi_udf.sample.generate import SampleSpec, generate_archive
from evi_udf.task.group import GroupKey, SceneRef
from evi_udf.zones.pixels import ZoneInput
from evi_udf.zones.statistics import merge_parts, summarize

FACTOR = 30  # 366 px bands at 300 m: several 256 px blocks per tile
PIXELS = 10980 // FACTOR
JANUARY = GroupKey("55HBU", "2022-01", dt.date(2022, 1, 1), dt.date(2022, 1, 31))


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("s2")
    generate_archive(
        SampleSpec(
            out=root,
            levels=("L1C", "L2A"),
            tiles=("55HBU", "54HYD"),
            scenes_per_tile=4,
            resolution_factor=FACTOR,
            seed=3,
        )
    )
    return root


def index_rows(root: Path, level: str) -> list[dict[str, str]]:
    path = root / "L2" / "index.csv.gz" if level == "L2A" else root / "index.csv.gz"
    with gzip.open(path, "rt", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["BASE_URL"]]


def baseline_number(row: dict[str, str]) -> int:
    return int(row["PRODUCT_ID"].split("_N")[1][:4])


def scene_refs(
    rows: list[dict[str, str]],
    tile: str,
    level: str,
    root: Path | None = None,
    original: Path | None = None,
    newest_only: bool = True,
) -> list[SceneRef]:
    chosen: dict[str, dict[str, str]] = {}
    for row in rows:
        if row["MGRS_TILE"] != tile:
            continue
        datatake = row["DATATAKE_IDENTIFIER"].rsplit("_N", 1)[0]
        if (
            not newest_only
            or datatake not in chosen
            or baseline_number(row) > baseline_number(chosen[datatake])
        ):
            chosen[datatake if newest_only else row["PRODUCT_ID"]] = row
    refs = []
    for row in chosen.values():
        base = row["BASE_URL"]
        if root is not None and original is not None:
            base = base.replace(original.resolve().as_posix(), root.resolve().as_posix())
        number = baseline_number(row)
        refs.append(
            SceneRef(
                row["GRANULE_ID"],
                row["PRODUCT_ID"],
                row["MGRS_TILE"],
                dt.datetime.fromisoformat(row["SENSING_TIME"].replace("Z", "")),
                float(row["CLOUD_COVER"]),
                base,
                level,
                f"{number // 100:02d}.{number % 100:02d}",
            )
        )
    return sorted(refs, key=lambda r: r.sensing_time)


def job_config(out: Path, **raster: object) -> JobConfig:
    """A config writing int16 composites (the comparisons below count in EVI steps of 0.0001)."""
    return config_from_mapping(
        {
            "catalog": {"index_uri": "unused"},
            "output": {"root": str(out)},
            "raster": {"block_size": 256, "output_dtype": "int16", **raster},
        }
    )


def expected_scene_evi(ref: SceneRef) -> np.ndarray:
    """EVI of one L2A scene in float64, NaN where not clear or not valid."""
    return expected_scene(ref)[0]


def expected_scene(ref: SceneRef) -> tuple[np.ndarray, np.ndarray]:
    """EVI of one L2A scene in float64 (NaN where not clear or not valid) and where it has data.

    Where it has data: SCL has data (class 0 is no data) and, where SCL keeps the pixel as clear, the
    three bands hold valid DNs; a pixel SCL does not keep is masked whatever its bands hold.
    """
    granule = next(Path(ref.base_url).glob("GRANULE/*/IMG_DATA"))
    offset = -1000.0 if int(ref.processing_baseline.replace(".", "")) >= 400 else 0.0
    dn = {}
    for band in ("B02", "B04", "B08"):
        with rasterio.open(next(granule.glob(f"R10m/*_{band}_10m.jp2"))) as dataset:
            dn[band] = dataset.read(1).astype(np.float64)
    with rasterio.open(next(granule.glob("R20m/*_SCL_20m.jp2"))) as dataset:
        scl = np.kron(dataset.read(1), np.ones((2, 2), dtype=np.uint8))
    blue, red, nir = ((dn[b] + offset) / 10000 for b in ("B02", "B04", "B08"))
    bad_dn = np.zeros(scl.shape, dtype=bool)
    for values in dn.values():
        bad_dn |= (values == 0) | (values == 65535)
    denominator = nir + 6 * red - 7.5 * blue + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        evi = 2.5 * (nir - red) / denominator
    clear_class = np.isin(scl, [4, 5, 6])
    invalid = bad_dn | ~clear_class | (np.abs(denominator) < 1e-3) | ~(np.abs(evi) <= 1)
    return np.where(invalid, np.nan, evi), (scl != 0) & (~clear_class | ~bad_dn)


def read_cog(uri: str) -> tuple[np.ndarray, np.ndarray, rasterio.Affine]:
    """(EVI steps, clear count, transform) of a composite: its EVI COG and its clear-count COG."""
    count_uri = uri.removesuffix(".tif") + "_clear_count.tif"
    for path in (uri, count_uri):
        assert cog_validate(path)[0], cog_validate(path)
    with rasterio.open(uri) as dataset, rasterio.open(count_uri) as counts:
        assert (dataset.dtypes, dataset.nodata, dataset.scales, dataset.offsets) == (
            ("int16",),
            -32768,
            (0.0001,),
            (0.0,),
        )
        assert (dataset.descriptions, dataset.units) == (("EVI",), ("1",))
        assert "0.0001" in dataset.tags()["EVI_ENCODING"]
        assert (counts.dtypes, counts.nodata, counts.descriptions) == (
            ("uint16",),
            65535,
            ("clear_observations",),
        )
        assert (counts.transform, counts.crs) == (dataset.transform, dataset.crs)
        return dataset.read(1), counts.read(1), dataset.transform


def assert_composite_matches(result: GroupResult, refs: list[SceneRef]) -> None:
    expected_scenes = [expected_scene(ref) for ref in refs]
    stack = np.stack([evi for evi, _ in expected_scenes])
    # A pixel no scene has data for (outside the swath, saturated) has no count either.
    covered = np.any([has_data for _, has_data in expected_scenes], axis=0)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(stack, axis=0)
    expected = np.where(np.isnan(median), -32768, np.rint(median * 10000)).astype(np.int64)
    assert result.composite is not None
    evi, count, _ = read_cog(result.composite.raster_uri)
    np.testing.assert_array_equal(evi == -32768, expected == -32768)
    # float32 in the pipeline, float64 here: at most one quantization step apart.
    assert np.abs(evi.astype(np.int64) - expected).max() <= 1
    np.testing.assert_array_equal(count, np.where(covered, np.isfinite(stack).sum(axis=0), 65535))


@pytest.mark.integration
# The quick-look PNG is not georeferenced by design; rasterio warns when it opens it.
@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_median_composite_and_statistics_equal_an_independent_computation(
    archive: Path, tmp_path: Path
) -> None:
    refs = scene_refs(index_rows(archive, "L2A"), "55HBU", "L2A")
    assert len(refs) == 4
    result = process_group(JANUARY, refs, job_config(tmp_path))
    assert result.failures == []
    assert_composite_matches(result, refs)
    composite = result.composite
    evi, _, _ = read_cog(composite.raster_uri)
    valid = evi[evi != -32768] / 10000
    assert composite.valid_pixels == valid.size
    assert composite.total_pixels == evi.size
    assert composite.statistics.evi_mean == pytest.approx(valid.mean(), abs=1e-9)
    assert composite.statistics.evi_p50 == pytest.approx(
        np.quantile(valid, 0.5, method="inverted_cdf"), abs=1e-9
    )
    assert composite.scene_count == 4
    assert 0 < composite.processing_seconds < 600  # the whole call, timed by process_group
    for row, ref in zip(result.scenes, refs, strict=True):
        expected = expected_scene_evi(ref)
        assert row.product_id == ref.product_id
        assert row.valid_pixels == int(np.isfinite(expected).sum())
        assert row.statistics.evi_mean == pytest.approx(np.nanmean(expected), abs=1e-6)
        expected_offset = -1000.0 if "_N05" in ref.product_id or "_N04" in ref.product_id else 0.0
        assert (row.offset_b02, row.offset_b04, row.offset_b08) == (expected_offset,) * 3
        assert row.product_ids == [ref.product_id]
    for suffix in ("raster_uri", "stac_uri", "quicklook_uri"):
        assert Path(getattr(composite, suffix)).is_file()
    item = pystac.Item.from_file(composite.stac_uri)
    assert item.properties["proj:code"] == "EPSG:32755"
    assert (item.properties["start_datetime"], item.properties["end_datetime"]) == (
        "2022-01-01T00:00:00Z",
        "2022-01-31T23:59:59Z",
    )
    inputs = {entry["product_id"]: entry for entry in item.properties["evi:inputs"]}
    assert set(inputs) == {ref.product_id for ref in refs}
    for ref in refs:
        expected_offset = -1000.0 if int(ref.processing_baseline.replace(".", "")) >= 400 else 0.0
        assert inputs[ref.product_id]["processing_baseline"] == ref.processing_baseline
        assert inputs[ref.product_id]["offsets"] == {
            "B02": expected_offset,
            "B04": expected_offset,
            "B08": expected_offset,
        }
    assert Path(composite.raster_uri).name == Path(item.assets["evi"].href).name
    with rasterio.open(composite.quicklook_uri) as png:
        assert png.count == 4 and max(png.width, png.height) <= 512


@pytest.mark.integration
def test_a_product_and_its_reprocessing_give_the_same_evi(archive: Path, tmp_path: Path) -> None:
    refs = scene_refs(index_rows(archive, "L2A"), "55HBU", "L2A", newest_only=False)
    old = next(r for r in refs if "_N0214_" in r.product_id and r.sensing_time.day == 13)
    new = next(r for r in refs if "_N0510_" in r.product_id)
    result = process_group(JANUARY, [old, new], job_config(tmp_path))
    old_row, new_row = sorted(result.scenes, key=lambda r: r.processing_baseline)
    assert (old_row.offset_b04, new_row.offset_b04) == (0.0, -1000.0)
    # Same reflectance through different offsets: same EVI, apart from dark water pixels that the
    # pre-04.00 product clipped at DN 1.
    assert abs(old_row.statistics.evi_mean - new_row.statistics.evi_mean) < 1e-3
    assert abs(old_row.valid_pixels - new_row.valid_pixels) <= 0.01 * new_row.valid_pixels


def copy_archive(archive: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "archive"
    shutil.copytree(archive, copy)
    return copy


@pytest.mark.integration
def test_missing_band_file_fails_that_scene_only(archive: Path, tmp_path: Path) -> None:
    root = copy_archive(archive, tmp_path)
    refs = scene_refs(index_rows(archive, "L2A"), "55HBU", "L2A", root=root, original=archive)
    broken = refs[1]
    b04 = next(Path(broken.base_url).glob("GRANULE/*/IMG_DATA/R10m/*_B04_10m.jp2"))
    b04.unlink()
    result = process_group(JANUARY, refs, job_config(tmp_path / "out"))
    assert len(result.failures) == 1
    failure = result.failures[0]
    assert (failure.product_id, failure.granule_id, failure.stage) == (
        broken.product_id,
        broken.granule_id,
        "read",
    )
    assert b04.name in failure.message
    assert_composite_matches(result, [r for r in refs if r is not broken])
    assert result.composite.scenes_failed == 1


@pytest.mark.integration
def test_corrupt_jpeg2000_fails_that_scene_and_the_composite_restarts_without_it(
    archive: Path, tmp_path: Path
) -> None:
    root = copy_archive(archive, tmp_path)
    refs = scene_refs(index_rows(archive, "L2A"), "55HBU", "L2A", root=root, original=archive)
    broken = refs[2]
    b08 = next(Path(broken.base_url).glob("GRANULE/*/IMG_DATA/R10m/*_B08_10m.jp2"))
    data = b08.read_bytes()
    b08.write_bytes(data[: len(data) // 2])  # a truncated download
    result = process_group(JANUARY, refs, job_config(tmp_path / "out"))
    assert [f.product_id for f in result.failures] == [broken.product_id]
    assert result.failures[0].stage == "read" and b08.name in result.failures[0].message
    assert_composite_matches(result, [r for r in refs if r is not broken])
    assert {row.product_id for row in result.scenes} == {r.product_id for r in refs if r is not broken}


@pytest.mark.integration
def test_a_swath_edge_tile_equals_an_independent_computation(tmp_path: Path) -> None:
    """Outside the swath a scene has no data: the composite there comes from the other scenes only,
    and a pixel no scene covers has neither EVI nor a count."""
    # 54HXD at 100 m (1098 px): the second acquisition has a slanted swath edge over half the tile.
    archive = tmp_path / "s2"
    generate_archive(
        SampleSpec(out=archive, tiles=("54HXD",), scenes_per_tile=2, resolution_factor=10, seed=5)
    )
    key = GroupKey("54HXD", "2022-01", dt.date(2022, 1, 1), dt.date(2022, 1, 31))
    refs = scene_refs(index_rows(archive, "L2A"), "54HXD", "L2A")
    result = process_group(key, refs, job_config(tmp_path / "out"))
    assert result.failures == []
    assert_composite_matches(result, refs)
    expected = [expected_scene(ref) for ref in refs]
    nodata_share = [float((~has_data).mean()) for _, has_data in expected]
    assert max(nodata_share) > 0.3  # the edge is really there
    for row, (evi, has_data) in zip(result.scenes, expected, strict=True):
        assert row.nodata_pixels == int((~has_data).sum())
        assert row.valid_pixels == int(np.isfinite(evi).sum())


@pytest.mark.integration
def test_bad_metadata_xml_fails_that_scene(archive: Path, tmp_path: Path) -> None:
    root = copy_archive(archive, tmp_path)
    refs = scene_refs(index_rows(archive, "L2A"), "55HBU", "L2A", root=root, original=archive)
    (Path(refs[0].base_url) / "MTD_MSIL2A.xml").write_text("<Level-2A_User_Product><oops>")
    result = process_group(JANUARY, refs, job_config(tmp_path / "out"))
    assert [(f.product_id, f.stage, f.error_class) for f in result.failures] == [
        (refs[0].product_id, "metadata", "MetadataError")
    ]
    assert "MTD_MSIL2A.xml: not valid XML" in result.failures[0].message
    assert_composite_matches(result, refs[1:])


@pytest.mark.integration
def test_group_with_no_usable_scene_is_a_failure_not_an_exception(archive: Path, tmp_path: Path) -> None:
    refs = scene_refs(index_rows(archive, "L2A"), "55HBU", "L2A")
    gone = [
        SceneRef(
            r.granule_id,
            r.product_id,
            r.mgrs_tile,
            r.sensing_time,
            r.cloud_cover,
            str(tmp_path / "missing"),
            r.level,
            r.processing_baseline,
        )
        for r in refs[:2]
    ]
    result = process_group(JANUARY, gone, job_config(tmp_path / "out"))
    assert result.composite is None and result.scenes == []
    assert [f.product_id for f in result.failures] == [r.product_id for r in gone] + [None]
    assert "no usable scene" in result.failures[-1].message


@pytest.mark.integration
def test_neighbouring_tiles_across_utm_zones_line_up_on_a_shared_grid(archive: Path, tmp_path: Path) -> None:
    rows = index_rows(archive, "L2A")
    config = job_config(tmp_path, grid={"kind": "shared", "crs": "EPSG:3577", "resolution": 300.0})
    results = {}
    for tile in ("55HBU", "54HYD"):
        key = GroupKey(tile, "2022-01", dt.date(2022, 1, 1), dt.date(2022, 1, 31))
        results[tile] = process_group(key, scene_refs(rows, tile, "L2A"), config)
        assert results[tile].failures == []
    (a_evi, _, a_transform), (b_evi, _, b_transform) = (
        read_cog(r.composite.raster_uri) for r in results.values()
    )
    # Both on the same lattice: origins differ by whole pixels.
    for a, b in ((a_transform.c, b_transform.c), (a_transform.f, b_transform.f)):
        assert (a - b) / 300.0 == pytest.approx(round((a - b) / 300.0), abs=1e-9)
    assert a_transform.a == b_transform.a == 300.0
    # Paste both into one frame and compare the overlap.
    dx = round((b_transform.c - a_transform.c) / 300.0)
    dy = round((a_transform.f - b_transform.f) / 300.0)
    rows_a, cols_a = np.mgrid[0 : a_evi.shape[0], 0 : a_evi.shape[1]]
    rb, cb = rows_a - dy, cols_a - dx
    inside = (rb >= 0) & (cb >= 0) & (rb < b_evi.shape[0]) & (cb < b_evi.shape[1])
    a_vals = a_evi[inside]
    b_vals = b_evi[rb[inside], cb[inside]]
    both = (a_vals != -32768) & (b_vals != -32768)
    assert both.sum() > 500  # the zone-boundary overlap is several km wide
    difference = np.abs(a_vals[both].astype(int) - b_vals[both].astype(int)) / 10000
    # The same ground seen through two UTM grids: differences are resampling and per-tile noise only.
    assert np.median(difference) < 0.02
    assert np.corrcoef(a_vals[both], b_vals[both])[0, 1] > 0.95


@pytest.mark.integration
def test_l1c_groups_use_the_classi_raster_and_the_gml_polygons(archive: Path, tmp_path: Path) -> None:
    refs = scene_refs(index_rows(archive, "L1C"), "54HYD", "L1C")
    assert {r.processing_baseline for r in refs} == {"02.14", "04.00"}
    key = GroupKey("54HYD", "2022-01", dt.date(2022, 1, 1), dt.date(2022, 1, 31))
    result = process_group(key, refs, job_config(tmp_path))
    assert result.failures == []
    read_cog(result.composite.raster_uri)
    by_product = {row.product_id: row for row in result.scenes}
    for ref in refs:
        row = by_product[ref.product_id]
        if ref.cloud_cover > 5:
            # Clouds are masked by whichever mask the baseline provides.
            assert row.masked_pixels > 0, ref.product_id
        assert row.masked_fraction == pytest.approx(ref.cloud_cover / 100, abs=0.1)


def split_product(
    ref: SceneRef, out: Path, keep_columns: slice, generation: dt.datetime, name: str
) -> SceneRef:
    """A copy of ``ref``'s product that has data only in ``keep_columns`` of its 10 m bands (and in the
    SCL pixels over them, no data elsewhere): one part of a tile ESA delivered as two products (same
    datatake and baseline, other generation time)."""
    from evi_udf.sample.generate import JP2_OPTIONS

    source = Path(ref.base_url)
    target = out / f"{source.stem}_{name}.SAFE"
    shutil.copytree(source, target)
    for band in ("B02", "B04", "B08"):
        (path,) = target.glob(f"GRANULE/*/IMG_DATA/R10m/*_{band}_10m.jp2")
        with rasterio.open(path) as dataset:
            profile, data = dataset.profile, dataset.read(1)
        kept = np.zeros_like(data)
        kept[:, keep_columns] = data[:, keep_columns]
        path.unlink()
        with rasterio.open(path, "w", **{**profile, "driver": "JP2OpenJPEG", **JP2_OPTIONS}) as dataset:
            dataset.write(kept, 1)
    (scl_path,) = target.glob("GRANULE/*/IMG_DATA/R20m/*_SCL_20m.jp2")
    with rasterio.open(scl_path) as dataset:
        profile, scl = dataset.profile, dataset.read(1)
    # A 20 m pixel has data if either of its 10 m columns is kept.
    scl_kept = np.zeros_like(scl)
    columns = slice(keep_columns.start // 2, -(-keep_columns.stop // 2))
    scl_kept[:, columns] = scl[:, columns]
    scl_path.unlink()
    with rasterio.open(scl_path, "w", **{**profile, "driver": "JP2OpenJPEG", **JP2_OPTIONS}) as dataset:
        dataset.write(scl_kept, 1)
    product = f"{ref.product_id}_{name}"
    return SceneRef(
        ref.granule_id + f"_{name}",
        product,
        ref.mgrs_tile,
        ref.sensing_time,
        ref.cloud_cover,
        str(target),
        ref.level,
        ref.processing_baseline,
        generation_time=generation,
        acquisition_id="55HBU_split",
    )


@pytest.mark.integration
def test_a_tile_delivered_in_two_parts_is_one_observation_equal_to_the_whole(
    archive: Path, tmp_path: Path
) -> None:
    refs = scene_refs(index_rows(archive, "L2A"), "55HBU", "L2A")
    whole = refs[1]
    half = PIXELS // 2
    # Part A (older) covers the west half plus 10 columns, part B (newer) the east half: they overlap.
    part_a = split_product(whole, tmp_path, slice(0, half + 10), dt.datetime(2022, 1, 18, 5), "a")
    part_b = split_product(whole, tmp_path, slice(half, PIXELS), dt.datetime(2022, 1, 18, 7), "b")
    others = [ref for ref in refs if ref is not whole]
    merged = process_group(JANUARY, [*others, part_a, part_b], job_config(tmp_path / "split"))
    reference = process_group(JANUARY, [*others, whole], job_config(tmp_path / "whole"))
    assert merged.failures == [] and reference.failures == []
    evi, count, _ = read_cog(merged.composite.raster_uri)
    expected_evi, expected_count, _ = read_cog(reference.composite.raster_uri)
    np.testing.assert_array_equal(evi, expected_evi)
    np.testing.assert_array_equal(count, expected_count)
    assert merged.composite.scene_count == reference.composite.scene_count == len(refs)
    (row,) = [r for r in merged.scenes if r.product_id.startswith(whole.product_id)]
    (expected,) = [r for r in reference.scenes if r.product_id == whole.product_id]
    assert row.product_ids == [part_b.product_id, part_a.product_id]  # newest generation first
    assert row.product_id == part_b.product_id
    for name in ("valid_pixels", "masked_pixels", "nodata_pixels", "invalid_pixels"):
        assert getattr(row, name) == getattr(expected, name), name
    assert row.statistics.evi_mean == pytest.approx(expected.statistics.evi_mean, abs=1e-9)
    # Either part alone is only half of the observation.
    alone = process_group(JANUARY, [*others, part_a], job_config(tmp_path / "alone"))
    (row_a,) = [r for r in alone.scenes if r.product_id == part_a.product_id]
    assert row_a.nodata_pixels > expected.nodata_pixels + PIXELS * (half - 20)


def jp2_tile_data(path: Path) -> dict[int, tuple[int, int]]:
    """Byte range of each JPEG2000 tile's coded data (after its SOD marker), from the SOT markers."""
    import struct

    data = path.read_bytes()
    tiles: dict[int, tuple[int, int]] = {}
    start = data.find(b"\xff\x90")
    while start >= 0:
        length, tile, part_length = struct.unpack(">HHI", data[start + 2 : start + 10])
        assert length == 10 and part_length > 0, path
        sod = data.find(b"\xff\x93", start)
        tiles[tile] = (sod + 2, start + part_length)
        start = data.find(b"\xff\x90", start + part_length)
        if start >= 0 and start != tiles[tile][1]:
            raise AssertionError(f"{path}: tile-parts are not contiguous")
    return tiles


def rewrite_jp2(path: Path, change: Callable[[np.ndarray], None]) -> None:
    from evi_udf.sample.generate import JP2_OPTIONS

    with rasterio.open(path) as dataset:
        profile, data = dataset.profile, dataset.read(1)
    change(data)
    path.unlink()
    with rasterio.open(path, "w", **{**profile, "driver": "JP2OpenJPEG", **JP2_OPTIONS}) as dataset:
        dataset.write(data, 1)


def comparable(result: GroupResult) -> tuple[object, ...]:
    """A group's pixels and rows without what names or times the attempt."""
    assert result.composite is not None
    evi, count, _ = read_cog(result.composite.raster_uri)
    timeless = ("processed_at", "processing_seconds", "raster_uri", "stac_uri", "quicklook_uri")
    composite = {k: v for k, v in dataclasses.asdict(result.composite).items() if k not in timeless}
    return evi.tobytes(), count.tobytes(), composite, result.scenes, result.failures


@pytest.mark.integration
def test_bands_are_not_decoded_where_the_cloud_mask_keeps_no_pixel(tmp_path: Path) -> None:
    """A block that SCL calls all cloud is never decoded: its JPEG2000 tiles can even be unreadable.

    55HBU at 100 m: 1098 px bands in 2 x 2 JPEG2000 tiles of 1024 px, read in 1024 px blocks.
    """
    archive = tmp_path / "s2"
    generate_archive(
        SampleSpec(out=archive, tiles=("55HBU",), scenes_per_tile=3, resolution_factor=10, seed=8)
    )
    refs = scene_refs(index_rows(archive, "L2A"), "55HBU", "L2A")
    cloudy = refs[0]
    granule = next(Path(cloudy.base_url).glob("GRANULE/*/IMG_DATA"))
    (scl,) = granule.glob("R20m/*_SCL_20m.jp2")

    def overcast_first_tile(values: np.ndarray) -> None:
        values[:512, :512] = 9  # cloud, high probability: the first 1024 px block at 20 m

    rewrite_jp2(scl, overcast_first_tile)
    intact = process_group(JANUARY, refs, job_config(tmp_path / "a", block_size=1024))
    decoded = process_group(
        JANUARY, refs, job_config(tmp_path / "b", block_size=1024, skip_masked_blocks=False)
    )
    assert intact.failures == [] and intact.composite is not None
    assert comparable(intact) == comparable(decoded)
    assert_composite_matches(intact, refs)

    # Fill the first tile of each 10 m band with 0xFF, which OpenJPEG refuses to decode.
    for band in ("B02", "B04", "B08"):
        (path,) = granule.glob(f"R10m/*_{band}_10m.jp2")
        data = bytearray(path.read_bytes())
        tiles = jp2_tile_data(path)
        assert sorted(tiles) == [0, 1, 2, 3]
        first, end = tiles[0]
        data[first:end] = b"\xff" * (end - first)
        path.write_bytes(bytes(data))
        with rasterio.open(path) as dataset:
            dataset.read(1, window=Window(1024, 1024, 74, 74))  # the other tiles still decode
            with pytest.raises(rasterio.errors.RasterioIOError):
                dataset.read(1, window=Window(0, 0, 1024, 1024))
    skipped = process_group(JANUARY, refs, job_config(tmp_path / "c", block_size=1024))
    assert comparable(skipped) == comparable(intact)
    # Decoding everything reads the broken tile: the scene fails.
    everything = process_group(
        JANUARY, refs, job_config(tmp_path / "d", block_size=1024, skip_masked_blocks=False)
    )
    assert [(f.product_id, f.stage) for f in everything.failures] == [(cloudy.product_id, "read")]


def test_merging_parts_takes_the_first_valid_value() -> None:
    from evi_udf.run.process import merge_parts

    nan = np.nan
    newest = (
        np.array([0.5, nan, nan, nan]),
        np.array([True, True, False, False]),
        np.array([True, False, False, False]),
    )
    older = (
        np.array([0.1, 0.2, 0.3, nan]),
        np.array([True, True, True, False]),
        np.array([True, True, True, False]),
    )
    values, has_data, clear = merge_parts([newest, older])
    np.testing.assert_array_equal(values, [0.5, 0.2, 0.3, nan])
    np.testing.assert_array_equal(has_data, [True, True, True, False])
    np.testing.assert_array_equal(clear, [True, True, True, False])
    assert np.isnan(newest[0][1])  # the inputs are not changed


def level_of(path: Path, factor: int) -> np.ndarray:
    """The JPEG2000 resolution level ``factor`` times coarser, as GDAL decodes it."""
    with rasterio.open(path) as full:
        index = full.overviews(1).index(factor)
    with rasterio.open(path, overview_level=index) as level:
        return level.read(1).astype(np.float64)


def expected_coarse_scene(ref: SceneRef, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """EVI of one L2A scene from its bands' resolution level ``factor`` (float64), and where it has
    data: clear only where every SCL pixel under a coarse pixel is clear, data where any has data."""
    granule = next(Path(ref.base_url).glob("GRANULE/*/IMG_DATA"))
    offset = -1000.0 if int(ref.processing_baseline.replace(".", "")) >= 400 else 0.0
    dn = {b: level_of(next(granule.glob(f"R10m/*_{b}_10m.jp2")), factor) for b in ("B02", "B04", "B08")}
    rows, cols = dn["B02"].shape
    with rasterio.open(next(granule.glob("R20m/*_SCL_20m.jp2"))) as dataset:
        scl = dataset.read(1)
    per_cell = factor // 2  # 20 m SCL pixels along a coarse pixel
    padded = np.zeros((rows * per_cell, cols * per_cell), dtype=scl.dtype)  # past the edge: no data
    padded[: scl.shape[0], : scl.shape[1]] = scl
    cells = padded.reshape(rows, per_cell, cols, per_cell).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    all_clear = np.isin(cells, [4, 5, 6]).all(axis=2)
    any_data = (cells != 0).any(axis=2)
    blue, red, nir = ((dn[b] + offset) / 10000 for b in ("B02", "B04", "B08"))
    bad_dn = np.zeros((rows, cols), dtype=bool)
    for values in dn.values():
        bad_dn |= (values == 0) | (values == 65535)
    denominator = nir + 6 * red - 7.5 * blue + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        evi = 2.5 * (nir - red) / denominator
    invalid = bad_dn | ~all_clear | (np.abs(denominator) < 1e-3) | ~(np.abs(evi) <= 1)
    return np.where(invalid, np.nan, evi), any_data & (~all_clear | ~bad_dn)


@pytest.mark.integration
def test_a_coarse_grid_reads_the_bands_jpeg2000_resolution_level(tmp_path: Path) -> None:
    """A grid 4x (and 5x) coarser than the bands: made from their 4x resolution level, SCL read whole.

    55HBU at 100 m: 1098 px bands with the sample's 5 levels below full resolution (ESA's 6 levels, capped
    for the small raster).
    """
    archive = tmp_path / "s2"
    generate_archive(
        SampleSpec(out=archive, tiles=("55HBU",), scenes_per_tile=3, resolution_factor=10, seed=8)
    )
    refs = scene_refs(index_rows(archive, "L2A"), "55HBU", "L2A")
    band = next(Path(refs[0].base_url).glob("GRANULE/*/IMG_DATA/R10m/*_B02_10m.jp2"))
    with rasterio.open(band) as dataset:
        assert dataset.overviews(1) == [2, 4, 8, 16]
        left, top, pixels = dataset.transform.c, dataset.transform.f, dataset.width
    coarse = 4 * 100.0
    # The grid anchored at the tile's corner: its pixels are the level's pixels, the warp is exact.
    grid = {"kind": "shared", "crs": "EPSG:32755", "resolution": coarse, "origin": [left, top]}
    config = job_config(tmp_path / "levels", grid=grid, block_size=256)
    result = process_group(JANUARY, refs, config)
    assert result.failures == [] and result.composite is not None
    expected_scenes = [expected_coarse_scene(ref, 4) for ref in refs]
    stack = np.stack([evi for evi, _ in expected_scenes])
    covered = np.any([has_data for _, has_data in expected_scenes], axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(stack, axis=0)
    expected = np.where(np.isnan(median), -32768, np.rint(median * 10000)).astype(np.int64)
    evi, count, transform = read_cog(result.composite.raster_uri)
    assert (transform.a, transform.c, transform.f) == (coarse, left, top)
    assert evi.shape == expected.shape == (-(-pixels // 4), -(-pixels // 4))
    np.testing.assert_array_equal(evi == -32768, expected == -32768)
    assert np.abs(evi.astype(np.int64) - expected).max() <= 1
    np.testing.assert_array_equal(count, np.where(covered, np.isfinite(stack).sum(axis=0), 65535))
    # Per scene: coarse pixels counted as the mask and the bands say.
    for ref, (scene_evi, has_data) in zip(refs, expected_scenes, strict=True):
        row = next(r for r in result.scenes if r.product_id == ref.product_id)
        assert row.valid_pixels == int(np.isfinite(scene_evi).sum())
        assert row.nodata_pixels == int((~has_data).sum())

    # 5x coarser still reads the 4x level (the coarsest not coarser than the grid), then resamples.
    grid_5x = {**grid, "resolution": 5 * 100.0}
    five = process_group(JANUARY, refs, job_config(tmp_path / "five", grid=grid_5x))
    full = process_group(JANUARY, refs, job_config(tmp_path / "full", grid=grid_5x, coarse_reads="full"))
    assert five.failures == full.failures == []
    assert five.composite.parameter_hash != full.composite.parameter_hash
    five_evi, _, _ = read_cog(five.composite.raster_uri)
    full_evi, _, _ = read_cog(full.composite.raster_uri)
    both = (five_evi != -32768) & (full_evi != -32768)
    assert both.mean() > 0.3
    # Averaged reflectance vs averaged EVI over the same ground: close, not equal.
    difference = np.abs(five_evi[both].astype(int) - full_evi[both].astype(int)) / 10000
    assert 0 < np.median(difference) < 0.05


def test_the_resolution_level_is_the_coarsest_power_of_two_within_the_grid() -> None:
    from evi_udf.raster.grid import PixelGrid
    from evi_udf.run.process import resolution_level

    native = PixelGrid("EPSG:32755", 10.0, 199980.0, 6100000.0, 10980, 10980)

    def level(**raster: object) -> int:
        return resolution_level(native, job_config(Path("/tmp/unused"), **raster).raster)

    def shared(resolution: float) -> dict[str, object]:
        return {"kind": "shared", "crs": "EPSG:3577", "resolution": resolution}

    assert level() == 1  # the native grid is the bands' own
    assert [level(grid=shared(r)) for r in (10, 15, 19.9, 20, 30, 60, 79.9, 80, 160, 1000)] == [
        1,
        1,
        1,
        2,
        2,
        4,
        4,
        8,
        16,
        16,
    ]
    assert level(grid=shared(60), coarse_reads="full") == 1
    assert native.coarsened(4) == PixelGrid("EPSG:32755", 40.0, 199980.0, 6100000.0, 2745, 2745)
    assert native.coarsened(8).width == 1373  # 1372.5: the last column reaches past the tile
    assert native.coarsened(4).refined(4) == dataclasses.replace(native, resolution=10.0)


def test_coarse_reads_change_the_parameter_hash_only_where_they_can_change_pixels() -> None:
    from evi_udf.task.identity import parameter_hash

    def hashes(grid: dict[str, object]) -> set[str]:
        return {
            parameter_hash(job_config(Path("/tmp/unused"), grid=grid, coarse_reads=reads).raster)
            for reads in ("resolution_levels", "full")
        }

    assert len(hashes({"kind": "native"})) == 1
    assert len(hashes({"kind": "shared", "crs": "EPSG:3577", "resolution": 10.0})) == 1
    assert len(hashes({"kind": "shared", "crs": "EPSG:3577", "resolution": 60.0})) == 2


def pixel_centres_lonlat(grid_path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Longitude and latitude of every pixel centre of a band file's grid, and its CRS."""
    with rasterio.open(grid_path) as dataset:
        rows, cols = np.meshgrid(np.arange(dataset.height), np.arange(dataset.width), indexing="ij")
        x, y = rasterio.transform.xy(dataset.transform, rows.ravel(), cols.ravel())
        crs = dataset.crs.to_string()
        shape = (dataset.height, dataset.width)
    lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(x, y)
    return np.asarray(lon).reshape(shape), np.asarray(lat).reshape(shape), crs


def mgrs_owner(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    converter = mgrs.MGRS()
    flat = [
        converter.toMGRS(b, a, MGRSPrecision=0)[:5] for a, b in zip(lon.ravel(), lat.ravel(), strict=True)
    ]
    return np.array(flat).reshape(lon.shape)


def zone_expectation(evi: np.ndarray, inside: np.ndarray) -> dict[str, float]:
    """A zone's statistics from its pixels' EVI (float64, NaN = no valid value), by numpy."""
    values = evi[inside & np.isfinite(evi)]
    steps = np.rint(values * 10_000) / 10_000
    return {
        "pixels": int(inside.sum()),
        "valid": values.size,
        "mean": values.mean() if values.size else np.nan,
        "std": values.std() if values.size else np.nan,
        "min": steps.min() if values.size else np.nan,
        "max": steps.max() if values.size else np.nan,
        **{
            f"p{q}": np.quantile(steps, q / 100, method="inverted_cdf") if values.size else np.nan
            for q in (10, 50, 90)
        },
    }


def assert_zone_matches(summary: object, index: int, want: dict[str, float], mean_tolerance: float) -> None:
    assert summary.pixels[index] == want["pixels"]
    assert summary.valid[index] == want["valid"]
    if want["valid"] == 0:
        assert np.isnan(summary.mean[index])
        return
    assert summary.mean[index] == pytest.approx(want["mean"], abs=mean_tolerance)
    assert summary.std[index] == pytest.approx(want["std"], abs=mean_tolerance)
    # Quantized statistics: float32 in the pipeline, float64 here, at most one int16 step apart.
    for name in ("min", "max", "p10", "p50", "p90"):
        got = summary.quantiles[name][index] if name.startswith("p") else getattr(summary, name)[index]
        assert abs(got - want[name]) <= 1e-4 + 1e-9, name


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_zone_statistics_per_scene_and_composite_equal_numpy_on_each_zones_pixels(
    archive: Path, tmp_path: Path
) -> None:
    """Zones on 55HBU, one reaching across 144 E into 54HYD: each scene's and the composite's zone
    statistics equal numpy's on the pixels each zone has on the tiles (pixel centres inside, owned
    as the mgrs library names them); the zone across the boundary, merged over both tiles, is
    counted once."""
    refs = {tile: scene_refs(index_rows(archive, "L2A"), tile, "L2A") for tile in ("55HBU", "54HYD")}
    band = {
        tile: next(Path(refs[tile][0].base_url).glob("GRANULE/*/IMG_DATA/R10m/*_B04_10m.jp2"))
        for tile in refs
    }
    lon, lat, crs = pixel_centres_lonlat(band["55HBU"])
    west, east = float(lon.min()), float(lon.max())
    south, north = float(lat.min()), float(lat.max())
    mid_lon, mid_lat = (west + east) / 2, (south + north) / 2
    # A tiny field inside one pixel, away from its centre: it has no pixel centre.
    with rasterio.open(band["55HBU"]) as dataset:
        cx, cy = rasterio.transform.xy(dataset.transform, 100, 200)
    tiny_x, tiny_y = cx + 80.0, cy - 60.0
    tiny = shapely.box(tiny_x - 20, tiny_y - 20, tiny_x + 20, tiny_y + 20)
    to_lonlat = Transformer.from_crs(crs, 4326, always_xy=True)
    tiny_lonlat = shapely.transform(
        tiny.segmentize(5), lambda xy: np.column_stack(to_lonlat.transform(*xy.T))
    )
    zones = [
        shapely.box(mid_lon - 0.2, mid_lat - 0.15, mid_lon + 0.1, mid_lat + 0.1),  # 0: a district
        shapely.box(mid_lon - 0.05, mid_lat - 0.05, mid_lon, mid_lat),  # 1: a farm inside it
        shapely.Polygon(
            [(143.9, mid_lat), (144.2, mid_lat + 0.1), (144.15, mid_lat - 0.12)]
        ),  # 2: across 144 E
        tiny_lonlat,  # 3
    ]
    numbers = [10, 11, 12, 13]  # run-wide numbers, not positions
    results = {
        tile: process_group(
            dataclasses.replace(JANUARY, mgrs_tile=tile),
            refs[tile],
            job_config(tmp_path / tile),
            zones=ZoneInput(numbers, zones),
        )
        for tile in refs
    }
    hbu = results["55HBU"]
    assert hbu.failures == [] and len(hbu.zone_scenes) == len(hbu.scenes) == 4
    owner = mgrs_owner(lon, lat)
    inside = [shapely.contains_xy(zone, lon, lat) & (owner == "55HBU") for zone in zones]
    inside[3] = np.zeros(lon.shape, dtype=bool)
    inside[3][100, 200] = True
    assert all(mask.any() for mask in inside)

    # Each scene: zones 10, 11 and 13 are wholly on 55HBU (final here), 12 is split with 54HYD.
    for statistics, ref in zip(hbu.zone_scenes, refs["55HBU"], strict=True):
        evi, _ = expected_scene(ref)
        assert statistics.whole.zone.tolist() == [10, 11, 13]
        assert statistics.split.zone.tolist() == [12]
        for position, number in enumerate([10, 11, 13]):
            zone = numbers.index(number)
            assert_zone_matches(statistics.whole, position, zone_expectation(evi, inside[zone]), 1e-6)
        # The split zone's part on this tile: its pixels here only.
        part = summarize(statistics.split)
        assert_zone_matches(part, 0, zone_expectation(evi, inside[2]), 1e-6)

    # The composite, and zone 12 over both tiles: each tile's owned pixels, merged.
    def composite_evi(tile: str) -> np.ndarray:
        stack = np.stack([expected_scene(ref)[0] for ref in refs[tile]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(stack, axis=0)

    hbu_composite = composite_evi("55HBU")
    whole = hbu.zone_composite.whole
    for position, number in enumerate([10, 11, 13]):
        zone = numbers.index(number)
        assert_zone_matches(whole, position, zone_expectation(hbu_composite, inside[zone]), 1e-6)
    hyd_lon, hyd_lat, _ = pixel_centres_lonlat(band["54HYD"])
    hyd_inside = shapely.contains_xy(zones[2], hyd_lon, hyd_lat) & (mgrs_owner(hyd_lon, hyd_lat) == "54HYD")
    assert hyd_inside.any()
    hyd = results["54HYD"]
    assert hyd.zone_composite.split.zone.tolist() == [12]
    merged = summarize(merge_parts([hbu.zone_composite.split, hyd.zone_composite.split]))
    both = np.concatenate([hbu_composite[inside[2]], composite_evi("54HYD")[hyd_inside]])
    assert_zone_matches(merged, 0, zone_expectation(both, np.ones(both.shape, dtype=bool)), 1e-6)
    # Counted once: the merged pixels are the two tiles' owned pixels, fewer than both tiles see.
    seen_by_both = (
        shapely.contains_xy(zones[2], lon, lat).sum() + shapely.contains_xy(zones[2], hyd_lon, hyd_lat).sum()
    )
    assert merged.pixels[0] == inside[2].sum() + hyd_inside.sum() < seen_by_both
