"""The zone views: each zone's statistics merged over the tiles that counted its pixels.

A group writes one part per zone (``evi_zone_scene_parts``, ``evi_zone_composite_parts``): the zone's
pixels on the ground its tile owns. A zone wholly on one tile has one part with its final statistics;
a zone on several tiles has a part from each, with sums and an int16-step histogram. The views merge
the parts exactly, in SQL, whenever they are queried, so they always agree with the parts (and so
with the commits and the rasters): no second table to fall behind after a killed run.

* counts and sums add; the mean is the summed EVI over the valid pixels;
* the standard deviation pools the parts' squared deviations: ``M2 = sum(m2_i + s_i^2 / n_i) -
  S^2 / N`` (Chan et al.);
* min and max are the parts' extremes; p10, p50 and p90 come from the summed histogram: the smallest
  step whose running count reaches ``ceil(q * N)`` (numpy's ``inverted_cdf``), or a whole zone's own.

The same view is written for BigQuery (``evi_zone_scenes`` and ``evi_zone_composites`` in the dataset)
and for DuckDB over the local Parquet tables (``python -m evi_udf.outputs.zone_views --parquet out/local``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Literal

Dialect = Literal["bigquery", "duckdb"]

#: view name -> (parts table, the columns that identify one merged row, extra aggregated columns)
ZONE_VIEWS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "evi_zone_scenes": (
        "evi_zone_scene_parts",
        ("zone_id", "acquisition", "period", "parameter_hash"),
        ("MIN(sensing_time) AS sensing_time",),
    ),
    "evi_zone_composites": (
        "evi_zone_composite_parts",
        ("zone_id", "period", "period_start", "period_end", "parameter_hash"),
        (),
    ),
}
QUANTILES = (("evi_p10", 0.10), ("evi_p50", 0.50), ("evi_p90", 0.90))


def zone_view_sql(view: str, source: str, dialect: Dialect) -> str:
    """The SELECT of ``view`` over the parts table ``source`` (a quoted table name or a DuckDB
    ``read_parquet(...)``) in ``dialect``."""
    _, keys, extra = ZONE_VIEWS[view]
    key_list = ", ".join(keys)
    all_true = "LOGICAL_AND" if dialect == "bigquery" else "BOOL_AND"

    def ratio(numerator: str, denominator: str) -> str:
        if dialect == "bigquery":
            return f"SAFE_DIVIDE({numerator}, {denominator})"
        return f"CASE WHEN {denominator} > 0 THEN ({numerator}) / ({denominator}) END"

    if dialect == "bigquery":
        # The two arrays zipped by an equi-join on their offsets (not counts[OFFSET(i)]: the
        # BigQuery emulator shifts that index by one).
        unnest = (
            f"SELECT {', '.join('p.' + k for k in keys)}, step, n FROM parts AS p "
            "CROSS JOIN UNNEST(p.evi_steps) AS step WITH OFFSET AS i "
            "JOIN UNNEST(p.evi_step_counts) AS n WITH OFFSET AS j ON i = j WHERE NOT p.zone_whole"
        )
    else:
        unnest = (
            f"SELECT {key_list}, UNNEST(evi_steps) AS step, UNNEST(evi_step_counts) AS n "
            "FROM parts WHERE NOT zone_whole"
        )
    whole_quantiles = ",\n    ".join(f"ANY_VALUE({name}) AS whole_{name}" for name, _ in QUANTILES)
    split_quantiles = ",\n    ".join(
        f"MIN(CASE WHEN r.below >= GREATEST(1, CEIL({q} * m.valid_pixels - 1e-9)) THEN r.step END) "
        f"/ 10000.0 AS {name}"
        for name, q in QUANTILES
    )
    chosen = ",\n  ".join(
        f"CASE WHEN m.zone_whole THEN m.whole_{name} ELSE q.{name} END AS {name}" for name, _ in QUANTILES
    )
    mean = ratio("m.evi_sum", "m.valid_pixels")
    extra_select = "".join(f"\n    {column}," for column in extra)
    extra_out = "".join(f"\n  m.{column.rsplit(' AS ', 1)[1]}," for column in extra)
    join_keys = " AND ".join(f"r.{k} = m.{k}" for k in keys)
    quantile_keys = " AND ".join(f"q.{k} = m.{k}" for k in keys)
    out_keys = ", ".join(f"m.{k}" for k in keys)
    return f"""WITH parts AS (
  SELECT * FROM {source}
),
merged AS (
  SELECT
    {key_list},
    ARRAY_AGG(DISTINCT mgrs_tile ORDER BY mgrs_tile) AS mgrs_tiles,{extra_select}
    {all_true}(zone_whole) AS zone_whole,
    SUM(total_pixels) AS total_pixels,
    SUM(valid_pixels) AS valid_pixels,
    SUM(masked_pixels) AS masked_pixels,
    SUM(nodata_pixels) AS nodata_pixels,
    SUM(invalid_pixels) AS invalid_pixels,
    SUM(evi_sum) AS evi_sum,
    SUM(evi_m2 + CASE WHEN valid_pixels > 0 THEN evi_sum * evi_sum / valid_pixels ELSE 0 END) AS evi_sq,
    MIN(evi_min) AS evi_min,
    MAX(evi_max) AS evi_max,
    {whole_quantiles}
  FROM parts
  GROUP BY {key_list}
),
steps AS (
  SELECT {key_list}, step, SUM(n) AS n FROM ({unnest}) GROUP BY {key_list}, step
),
running AS (
  SELECT {key_list}, step, SUM(n) OVER (PARTITION BY {key_list} ORDER BY step) AS below FROM steps
),
quantiles AS (
  SELECT
    {out_keys},
    {split_quantiles}
  FROM running AS r JOIN merged AS m ON {join_keys}
  GROUP BY {out_keys}
)
SELECT
  {out_keys},
  m.mgrs_tiles,{extra_out}
  m.total_pixels,
  m.valid_pixels,
  m.masked_pixels,
  m.nodata_pixels,
  m.invalid_pixels,
  {ratio("m.masked_pixels", "m.total_pixels - m.nodata_pixels")} AS masked_fraction,
  {mean} AS evi_mean,
  SQRT(GREATEST({ratio("m.evi_sq", "m.valid_pixels")} - POW({mean}, 2), 0)) AS evi_std,
  m.evi_min,
  m.evi_max,
  {chosen}
FROM merged AS m
LEFT JOIN quantiles AS q ON {quantile_keys}
"""


def duckdb_views(root: str) -> str:
    """``CREATE VIEW`` statements for DuckDB over the Parquet tables under ``<root>/tables``."""
    statements = []
    for view, (parts, _, _) in ZONE_VIEWS.items():
        source = f"read_parquet('{root.rstrip('/')}/tables/{parts}/*.parquet', union_by_name = true)"
        statements.append(f"CREATE OR REPLACE VIEW {view} AS\n{zone_view_sql(view, source, 'duckdb')};")
    return "\n\n".join(statements) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the zone views for DuckDB over a local output root's Parquet tables."""
    parser = argparse.ArgumentParser(prog="python -m evi_udf.outputs.zone_views", description=main.__doc__)
    parser.add_argument("--parquet", required=True, help="the output root of a local run, e.g. out/local")
    args = parser.parse_args(argv)
    print(duckdb_views(args.parquet), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
