"""What a run did, for people (a few printed lines) and machines (JSON next to the outputs), and the
run's quick-look mosaic of the composites it made."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from evi_udf.outputs.mosaic import Canvas, MosaicPiece, render
from evi_udf.run.process import evi_to_rgba, write_png
from evi_udf.storage import Storage


@dataclasses.dataclass(frozen=True)
class RunReport:
    """What a run did, for people (printed) and machines (JSON next to the outputs).

    Counts of rows (scenes, failures, rejected index rows) are those of the rows this run wrote to
    the tables: the commits it made, and the rejected lines of its selection.
    """

    run_id: str
    status: str
    started_at: str
    wall_seconds: float
    groups_planned: int
    groups_new: int
    groups_changed: int
    groups_retried: int
    groups_skipped: int
    groups_processed: int
    groups_failed: int
    groups_uncommitted: int
    failed_share: float
    commits_loaded: int
    commits_recovered: int
    scenes_read: int
    scenes_failed: int
    rejected_index_rows: int
    superseded_files_deleted: int
    total_pixels: int
    valid_pixels: int
    output_root: str
    report_uri: str
    stac_catalog: str | None
    mosaics: dict[str, str]
    composites: list[str]
    # Wall seconds of each step on the driver: plan, process (the Spark job that makes the groups),
    # load, clean, stac, mosaic. All but process are the driver's own cost of the run.
    phase_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    # The zones of zones.uri the run used, and those it rejected (id, position in the file, reason).
    zones: int = 0
    zones_rejected: list[dict[str, object]] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the console."""
        return "\n".join(
            [
                f"run {self.run_id}: {self.status.upper()} in {self.wall_seconds:.1f} s",
                f"  groups: {self.groups_planned} planned ({self.groups_new} new, {self.groups_changed} "
                f"changed, {self.groups_retried} retried), {self.groups_processed} processed, "
                f"{self.groups_skipped} skipped (already done), {self.groups_failed} failed",
                f"  tables: {self.commits_loaded} commits loaded "
                f"({self.commits_recovered} made by earlier runs)",
                f"  scenes: {self.scenes_read} read, {self.scenes_failed} failed; "
                f"{self.rejected_index_rows} index rows rejected",
                f"  pixels: {self.valid_pixels:,} valid EVI of {self.total_pixels:,} in the composites",
                *(
                    [f"  zones: {self.zones} used, {len(self.zones_rejected)} rejected (see the report)"]
                    if self.zones or self.zones_rejected
                    else []
                ),
                f"  outputs: {self.output_root} (report {self.report_uri})",
                *([f"  STAC: {self.stac_catalog}"] if self.stac_catalog else []),
                *(f"  mosaic {period}: {uri}" for period, uri in sorted(self.mosaics.items())),
            ]
        )


def new_run_id(now: dt.datetime) -> str:
    """A readable, unique run id: UTC time plus a random suffix."""
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def publish_report(store: Storage, report: RunReport) -> None:
    """Write the report as JSON at ``report.report_uri``."""
    with tempfile.TemporaryDirectory(prefix="evi_run_") as scratch:
        report_file = Path(scratch) / "report.json"
        report_file.write_text(json.dumps(dataclasses.asdict(report), indent=2))
        store.publish(report_file, report.report_uri, overwrite=True)


def publish_mosaics(
    store: Storage, results: pd.DataFrame, canvases: Mapping[str, Canvas], run_id: str, root: str
) -> dict[str, str]:
    """One mosaic PNG per period, pasted from the pieces the tasks returned (no COG is read here)."""
    pieces = results[results["kind"] == "mosaic_piece"] if len(results) else results
    mosaics = {}
    with tempfile.TemporaryDirectory(prefix="evi_run_") as scratch:
        for period, rows in pieces.groupby("period", sort=True) if len(pieces) else []:
            image = render(
                canvases[str(period)],
                [
                    MosaicPiece.from_bytes(
                        int(r.piece_row),
                        int(r.piece_col),
                        int(r.piece_height),
                        int(r.piece_width),
                        r.piece_values,
                    )
                    for r in rows.itertuples(index=False)
                ],
            )
            local = Path(scratch) / f"{period}.png"
            write_png(evi_to_rgba(image), local)
            mosaics[str(period)] = f"{root}/runs/{run_id}_mosaic_{period}.png"
            store.publish(local, mosaics[str(period)], overwrite=True)
    return mosaics
