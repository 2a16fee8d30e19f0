"""Statistics sinks: where the result tables go (local Parquet; BigQuery in the cloud)."""
