"""Reading a full-size JPEG2000 band from GCS: whole-file download vs GDAL's /vsigs/ range reads.

The same band (55HBU B08, 10980 x 10980 px) is uploaded to the GCS emulator on loopback and read
block by block (1024 px, as the raster core does) in two ways, each in a fresh child process:

* download: ``Storage.fetch`` (google-cloud-storage, CRC32C-verified) then local reads;
* vsigs: GDAL reads ``/vsigs/...`` directly, with the pipeline's GDAL environment.

A counting proxy between the reader and the emulator records HTTP requests and bytes. Loopback has
no network latency, so the times here only bound the CPU cost; the request count is what scales with
real GCS latency (each request costs one round trip, tens of milliseconds from Dataproc).

    .venv/bin/python bench/gcs_read.py [--work bench/data] [--factor 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def child(mode: str, uri: str, scratch: str) -> None:
    import rasterio
    from rasterio.windows import Window

    from evi_udf.raster.io import GDAL_ENV
    from evi_udf.storage import Storage

    started = time.perf_counter()
    env = dict(GDAL_ENV)
    if mode == "download":
        path = str(Storage().fetch(uri, Path(scratch)))
    else:
        endpoint = os.environ["STORAGE_EMULATOR_HOST"].rstrip("/") + "/"
        env.update(CPL_GS_ENDPOINT=endpoint, GS_NO_SIGN_REQUEST="YES")
        path = "/vsigs/" + uri.removeprefix("gs://")
    with rasterio.Env(**env), rasterio.open(path) as dataset:
        for row in range(0, dataset.height, 1024):
            for col in range(0, dataset.width, 1024):
                dataset.read(
                    1,
                    window=Window(col, row, min(1024, dataset.width - col), min(1024, dataset.height - row)),
                )
    print(json.dumps({"seconds": time.perf_counter() - started}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("bench/data"))
    parser.add_argument(
        "--factor", type=int, default=1, help="resolution factor of the band (1 = full size, the result)"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    from faulty_proxy import faulty_proxy
    from memory import archive_for

    root = archive_for(args.work, args.factor)
    band = next((root / "L2").rglob("*_B08_10m.jp2"))
    from conftest import _free_port, _start_server

    port = _free_port()
    emulator = _start_server(
        [
            str(Path(sys.executable).parent / "gcp-storage-emulator"),
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
        ],
        f"http://127.0.0.1:{port}/storage/v1/b?project=x",
        "GCS emulator",
    )
    results = []
    try:
        os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
        from google.cloud import storage

        bucket = storage.Client().create_bucket("bench")
        bucket.blob("B08.jp2").upload_from_filename(str(band))
        for mode in ("download", "vsigs", "download", "vsigs"):
            with faulty_proxy(f"http://127.0.0.1:{port}") as counts:
                env = {**os.environ, "STORAGE_EMULATOR_HOST": str(counts["url"])}
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        mode,
                        "gs://bench/B08.jp2",
                        str(args.work / "gcs_scratch"),
                    ],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                if out.returncode != 0:
                    print(out.stderr[-3000:], file=sys.stderr)
                    return 1
                measured = json.loads(out.stdout.strip().splitlines()[-1])
            measured.update(
                mode=mode, requests=counts["requests"], bytes=counts["bytes"], file_bytes=band.stat().st_size
            )
            print(json.dumps(measured))
            results.append(measured)
    finally:
        emulator.terminate()
    record = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "band": band.name,
        "results": results,
    }
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/gcs_read.json").write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
