"""The EVI median composite of one tile with Debian's GDAL command-line tools (benchmark baseline).

The pipeline a user builds from ``gdal-bin`` and ``python3-gdal`` with a small driver that reads
each product's BOA offset and quantification from ``MTD_MSIL2A.xml`` and writes the commands:

1. ``gdalinfo -json`` on B02: the 10 m grid size;
2. per scene, ``gdalwarp -r near``: SCL from 20 m onto the 10 m grid;
3. per scene, ``gdal_calc.py``: EVI from B02, B04, B08 and SCL with the product's offsets, the same
   rules as the pipeline (DN 0 / 65535 no data, SCL 4, 5, 6 clear, ``|denominator| >= 1e-3``,
   EVI in [-1, 1]), float32 with nodata -9999;
4. ``gdalbuildvrt -separate``: the scenes' EVI rasters as one band stack;
5. ``gdal_calc.py``: ``nanmedian`` over the stack (``--hideNoData``: gdal_calc would otherwise blank a
   pixel as soon as one scene is nodata there, which is not a median of the clear observations);
6. ``gdal_translate -of COG``.

Each command runs as a child process; its wall time and peak RSS (``ru_maxrss`` from ``wait4``) are
recorded. Only the standard library is imported, and GDAL/PROJ variables of the caller's environment
are not passed on, so the tools run exactly as installed.

    python3 bench/gdal_cli.py OUT_COG SCRATCH_DIR SAFE_DIR [SAFE_DIR ...]

prints one JSON line: ``seconds`` (sum of the commands), ``peak_rss_mib`` (max over the commands)
and every command's figures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from s2_product import CLEAR_SCL, band_files, radiometry  # noqa: E402 - sibling module (stdlib only)

NODATA = -9999


def tool_env() -> dict[str, str]:
    """The caller's environment without GDAL/PROJ/Python-path settings (the tools use their own)."""
    dropped = ("GDAL_", "PROJ_", "CPL_", "VSI_", "PYTHON")
    return {k: v for k, v in os.environ.items() if not k.startswith(dropped)}


def _run(command: list[str], label: str, log: list[dict[str, object]]) -> str:
    """Run one command, append its wall seconds and peak RSS (``wait4``) to ``log``; return its stdout."""
    started = time.perf_counter()
    # Files, not pipes: nothing to drain while waiting, and wait4 (not Popen.wait) keeps the rusage.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, env=tool_env(), stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-3000:]}")
    log.append({"label": label, "seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024})
    return stdout


def evi_expression(offsets: dict[str, float], quantification: float) -> str:
    """The gdal_calc.py expression of one scene's EVI (A=B02, B=B04, C=B08, D=SCL on 10 m)."""
    q = f"{quantification:g}"
    blue, red, nir = (
        f"(({band}.astype(float32)+({offsets[name]:g}))/{q})"
        for band, name in (("A", "B02"), ("B", "B04"), ("C", "B08"))
    )
    den = f"({nir}+6*{red}-7.5*{blue}+1)"
    evi = f"(2.5*({nir}-{red})/{den})"
    has_data = "(A>0)*(A<65535)*(B>0)*(B<65535)*(C>0)*(C<65535)"
    clear = f"isin(D,[{','.join(map(str, CLEAR_SCL))}])"
    valid = f"{has_data}*{clear}*(abs({den})>=0.001)*(abs({evi})<=1)"
    return f"where({valid}, {evi}, {NODATA})"


def composite(safes: list[Path], out_cog: Path, scratch: Path) -> list[dict[str, object]]:
    """Make the composite COG with the GDAL tools; return each command's figures."""
    scratch.mkdir(parents=True, exist_ok=True)
    log: list[dict[str, object]] = []
    first = band_files(safes[0])
    info = json.loads(_run(["gdalinfo", "-json", str(first["B02"])], "gdalinfo", log))
    width, height = info["size"]
    # Tiled intermediates, as the GDAL docs advise for rasters read back by blocks.
    tiled = ["-co", "TILED=YES", "-co", "BLOCKXSIZE=1024", "-co", "BLOCKYSIZE=1024"]
    calc_tiled = [option.replace("-co", "--co") for option in tiled] + ["--co", "COMPRESS=DEFLATE"]
    evi_files = []
    for number, safe in enumerate(safes):
        files = band_files(safe)
        offsets, quantification = radiometry(safe)
        scl = scratch / f"scl_{number}.tif"
        _run(
            ["gdalwarp", "-q", "-overwrite", "-r", "near", "-ts", str(width), str(height), *tiled]
            + [str(files["SCL"]), str(scl)],
            "gdalwarp SCL 20 m -> 10 m",
            log,
        )
        evi = scratch / f"evi_{number}.tif"
        _run(
            ["gdal_calc.py", "--quiet", "--overwrite", "-A", str(files["B02"]), "-B", str(files["B04"])]
            + ["-C", str(files["B08"]), "-D", str(scl), "--type=Float32", f"--NoDataValue={NODATA}"]
            + [*calc_tiled, f"--calc={evi_expression(offsets, quantification)}"]
            + [f"--outfile={evi}"],
            "gdal_calc.py EVI",
            log,
        )
        evi_files.append(evi)
    stack = scratch / "evi_stack.vrt"
    _run(
        ["gdalbuildvrt", "-q", "-overwrite", "-separate", str(stack), *map(str, evi_files)],
        "gdalbuildvrt",
        log,
    )
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: len(evi_files)]
    inputs = []
    for band, letter in enumerate(letters, start=1):
        inputs += [f"-{letter}", str(stack), f"--{letter}_band={band}"]
    layers = ",".join(f"where({letter}=={NODATA},nan,{letter})" for letter in letters)
    median = scratch / "median.tif"
    _run(
        ["gdal_calc.py", "--quiet", "--overwrite", "--hideNoData", *inputs, "--type=Float32"]
        + [f"--NoDataValue={NODATA}", *calc_tiled]
        + [f"--calc=nan_to_num(nanmedian([{layers}],axis=0),nan={NODATA})", f"--outfile={median}"],
        "gdal_calc.py nanmedian",
        log,
    )
    _run(
        ["gdal_translate", "-q", "-of", "COG", "-co", "COMPRESS=DEFLATE", "-co", "PREDICTOR=YES"]
        + ["-co", "NUM_THREADS=ALL_CPUS", str(median), str(out_cog)],
        "gdal_translate -of COG",
        log,
    )
    return log


def main(argv: list[str]) -> int:
    """Command-line entry point: ``OUT_COG SCRATCH_DIR SAFE_DIR...``; prints the figures as JSON."""
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    out_cog, scratch = Path(argv[0]), Path(argv[1])
    out_cog.parent.mkdir(parents=True, exist_ok=True)
    for tool in ("gdalinfo", "gdalwarp", "gdal_calc.py", "gdalbuildvrt", "gdal_translate"):
        if shutil.which(tool) is None:
            print(f"error: {tool} not found; run bench/install_gdal.sh", file=sys.stderr)
            return 2
    log = composite([Path(p) for p in argv[2:]], out_cog, scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    print(
        json.dumps(
            {
                "seconds": sum(float(c["seconds"]) for c in log),
                "peak_rss_mib": max(float(c["peak_rss_mib"]) for c in log),
                "commands": log,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
