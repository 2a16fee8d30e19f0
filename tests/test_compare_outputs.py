"""scripts/compare_outputs.py, the acceptance tool of a change that must not change outputs: two runs of
the job on the same small sample are equal for it, whatever their run ids, times and attempt tokens;
a changed pixel, a changed table value and a missing group are each found and named."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import rasterio
from helpers import REPO, spark_submit

from evi_udf.sample.generate import SampleSpec, generate_archive


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_outputs", REPO / "scripts" / "compare_outputs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_outputs"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


compare_outputs = _load_script()


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two output roots made by two runs of the job on the same tiny sample (2 tiles x 1 month)."""
    work = tmp_path_factory.mktemp("compare")
    archive = work / "archive"
    generate_archive(
        SampleSpec(out=archive, tiles=("55HBU", "54HYD"), scenes_per_tile=3, resolution_factor=61, seed=3)
    )
    made = []
    for name in ("old", "new"):
        config = work / f"{name}.yaml"
        config.write_text(
            f"catalog:\n  index_uri: {archive}/L2/index.csv.gz\n  start_date: 2022-01-01\n"
            f"  end_date: 2022-01-31\n  period: month\noutput:\n  root: {work / name}\n"
            f"zones:\n  uri: {archive}/zones.parquet\n",
            encoding="utf-8",
        )
        result = spark_submit(config)
        assert result.returncode == 0, result.stderr[-3000:]
        made.append(work / name)
    return made[0], made[1]


def _copy(root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    return copy


def _evi_cog(root: Path, tile: str) -> Path:
    (cog,) = (
        p for p in (root / "evi").rglob(f"S2_EVI_{tile}_*.tif") if not p.name.endswith("_clear_count.tif")
    )
    return cog


def test_the_normaliser_replaces_what_differs_between_runs_and_nothing_else() -> None:
    normalizer = compare_outputs.Normalizer(["/data/out/local"])
    text = (
        "/data/out/local/ledger/native/0eb45b8d41a6/2022-01/55HCU/"
        "20261206T001152686282Z_c986b40e_ok_4s_77ee4c7004937ed8.parquet "
        "20261206T001152686282Z-c986b40e 20261206T001129Z-1a6146 "
        "S2_EVI_55HCU_2022-01_first_by_date_0eb45b8d41a6_c986b40e_clear_count.tif "
        "S2B_MSIL2A_20220113T002709_N0214_R016_T55HCU_20220113T021523"
    )
    assert normalizer.text(text) == (
        "<root>/ledger/native/0eb45b8d41a6/2022-01/55HCU/<commit>_ok_4s_77ee4c7004937ed8.parquet "
        "<commit> <run> S2_EVI_55HCU_2022-01_first_by_date_0eb45b8d41a6_<attempt>_clear_count.tif "
        # Product ids and their dates are data: they stay.
        "S2B_MSIL2A_20220113T002709_N0214_R016_T55HCU_20220113T021523"
    )


@pytest.mark.integration
@pytest.mark.slow
def test_two_runs_on_the_same_inputs_are_equal(
    roots: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = roots
    # The runs really differ in what the tool must ignore: run ids and attempt tokens.
    assert {p.name for p in (old / "runs").iterdir()}.isdisjoint(p.name for p in (new / "runs").iterdir())
    assert _evi_cog(old, "55HBU").name != _evi_cog(new, "55HBU").name
    assert compare_outputs.compare_roots(old, new) == []
    assert compare_outputs.main([str(old), str(new)]) == 0
    assert capsys.readouterr().out.startswith("equal: ")


@pytest.mark.integration
@pytest.mark.slow
def test_a_changed_pixel_is_found(
    roots: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = roots
    changed = _copy(new, tmp_path)
    # Written in place: the file stays a valid GeoTIFF (only its COG layout's optimisations may go).
    with rasterio.open(_evi_cog(changed, "54HYD"), "r+", IGNORE_COG_LAYOUT_BREAK="YES") as cog:
        window = rasterio.windows.Window(90, 90, 1, 1)
        pixel = cog.read(1, window=window)
        cog.write(np.where(np.isnan(pixel), np.float32(0.25), pixel + np.float32(0.01)), 1, window=window)
    differences = compare_outputs.compare_roots(old, changed)
    assert [(d.area, d.what) for d in differences] == [
        ("evi", "pixels differ at full resolution: 1 of 32400 values")
    ]
    assert differences[0].where.startswith("native/2022-01/54HYD/median/")
    assert compare_outputs.main([str(old), str(changed)]) == 1
    out = capsys.readouterr().out
    assert "1 difference(s)" in out and "54HYD" in out and "pixels differ" in out


@pytest.mark.integration
@pytest.mark.slow
def test_a_changed_table_value_is_found(roots: tuple[Path, Path], tmp_path: Path) -> None:
    old, new = roots
    changed = _copy(new, tmp_path)
    (part,) = (changed / "tables" / "evi_composites").glob("55HBU_*.parquet")
    table = pq.read_table(part)
    index = table.column_names.index("evi_mean")
    table = table.set_column(index, "evi_mean", pc.add(table.column("evi_mean"), 0.001))
    pq.write_table(table, part)
    differences = compare_outputs.compare_roots(old, changed)
    assert len(differences) == 1, differences
    (difference,) = differences
    assert (difference.area, difference.where) == ("tables", "evi_composites")
    assert "mgrs_tile=55HBU, period=2022-01" in difference.what
    assert difference.what.count("->") == 1 and "evi_mean:" in difference.what


@pytest.mark.integration
@pytest.mark.slow
def test_a_missing_group_is_found(roots: tuple[Path, Path], tmp_path: Path) -> None:
    old, new = roots
    changed = _copy(new, tmp_path)
    # The group 54HYD x 2022-01 as a run that never made it leaves it: no outputs, record or rows.
    shutil.rmtree(changed / "evi" / "native" / "2022-01" / "54HYD")
    (ledger,) = (changed / "ledger").glob("native/*/2022-01/54HYD")
    shutil.rmtree(ledger)
    for part in (changed / "tables").glob("*/54HYD_2022-01_*.parquet"):
        part.unlink()
    differences = compare_outputs.compare_roots(old, changed)
    found = {(d.area, d.what) for d in differences}
    assert ("evi", "group missing in NEW") in found
    assert ("ledger", "group missing in NEW") in found
    assert any(
        d.area == "tables" and d.where == "evi_commits" and "mgrs_tile=54HYD" in d.what for d in differences
    )
    groups = [d.where for d in differences if d.what == "group missing in NEW"]
    assert all("54HYD" in where and "2022-01" in where for where in groups)
    # The other group is still equal: nothing about 55HBU is reported.
    assert not any("55HBU" in str(d) for d in differences)


def test_a_root_that_is_not_a_folder_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert compare_outputs.main([str(tmp_path / "missing"), str(tmp_path)]) == 2
    assert "not a folder" in capsys.readouterr().err
