"""Statistics sinks: where the result tables go (local Parquet, or BigQuery in the cloud)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evi_udf.config import JobConfig
    from evi_udf.outputs.sinks.protocol import ResultSink


def sink_for(config: JobConfig) -> ResultSink:
    """The sink ``config.sink`` names, built without touching the network."""
    if config.sink.kind == "parquet":
        from evi_udf.outputs.sinks.parquet import ParquetSink

        return ParquetSink(config.output.root)
    from evi_udf.outputs.sinks.bigquery import BigQuerySink

    client = emulator_client(config)
    return BigQuerySink(config.sink.project or "", config.sink.dataset, config.sink.location, client=client)


def emulator_client(config: JobConfig) -> object | None:
    """A BigQuery client for ``sink.api_endpoint`` (the emulator, anonymous); None for real BigQuery,
    where each user builds its own with Application Default Credentials."""
    if not config.sink.api_endpoint:
        return None
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=config.sink.project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=config.sink.api_endpoint),
    )
